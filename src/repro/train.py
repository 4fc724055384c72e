"""Fine-tune one model on one dataset over a grid of (lr, wd) configs, the authors' way (PAPER.md section 4).

Every epoch is evaluated on the selection and the report split; a config scores its best selection epoch (or its
last, `selection: last_epoch`), the best config wins, and the report metric is read at that epoch. `run_grid` saves
its whole state after every epoch into a `StateStore` folder (atomic writes, loaded without executing code), so a
run killed at any moment continues where it stopped; on CPU in deterministic mode the resumed result is identical
to an uninterrupted run. No file layout here: callers hand in datasets and folders and get back plain values.
Exercised by `repro finetune` and `repro sweep`.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from repro import failpoints
from repro.ddp import SINGLE, Dist
from repro.errors import ReproError
from repro.state import StateStore, rng_state, scheduler_state, set_rng_state

Metric = Callable[[np.ndarray, np.ndarray], float]


@dataclass(frozen=True)
class Protocol:
    epochs: int
    batch_size: int
    optimizer: str  # "adamw" | "sgd"
    adamw_wd_over_lr: bool
    schedule: str  # "cosine" | "step"
    seed: int
    device: str = "cpu"
    num_workers: int = 0
    selection: str = "best_epoch"  # "best_epoch" (the paper) | "last_epoch"
    precision: str = "fp32"  # "fp32": no autocast anywhere (the authors') | "bf16": bf16 autocast on CUDA
    channels_last: bool = True
    compile: bool = False
    deterministic: bool = False


@dataclass
class ConfigResult:
    lr: float
    wd: float
    curve: list[dict] = field(default_factory=list)  # per epoch: train_loss, select, report
    best_epoch: int | None = None  # 1-based
    diverged: bool = False
    report_scores: np.ndarray | None = None
    state_dict: dict[str, torch.Tensor] | None = None
    train_images: int = 0
    train_seconds: float = 0.0

    @property
    def select_value(self) -> float:
        return -math.inf if self.best_epoch is None else self.curve[self.best_epoch - 1]["select"]

    @property
    def report_value(self) -> float | None:
        return None if self.best_epoch is None else self.curve[self.best_epoch - 1]["report"]

    def summary(self) -> dict:
        """The JSON-able part (no tensors): what run.json and the state file keep of a config."""
        return {"lr": self.lr, "wd": self.wd, "curve": self.curve, "best_epoch": self.best_epoch,
                "diverged": self.diverged, "train_images": self.train_images, "train_seconds": self.train_seconds}


DEVICE_KINDS = "auto, cpu, cuda, cuda:N"


def check_device(device: str, where: str = "finetune.device") -> str:
    """The one device rule: 'auto', 'cpu', 'cuda' or 'cuda:N' for a GPU this machine has; anything else (a
    device kind torch has no backend for here, a GPU index past the last one, CUDA without a driver) is one
    ReproError naming the value and what is valid. Returns the device string unchanged."""
    import re

    match = re.fullmatch(r"(auto|cpu|cuda)(?::(\d+))?", device)
    if match is None or (match.group(2) is not None and match.group(1) != "cuda"):
        raise ReproError(f"{where}: {device!r} is not a device this tool runs on; valid: {DEVICE_KINDS}")
    if match.group(1) == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ReproError(f"{where}: {device!r} but this machine has no usable CUDA device; valid here: auto, cpu")
        if match.group(2) is not None and int(match.group(2)) >= count:
            raise ReproError(f"{where}: {device!r} but this machine has {count} CUDA device(s), cuda:0 to "
                             f"cuda:{count - 1}")
    return device


def resolve_device(device: str, where: str = "finetune.device") -> torch.device:
    check_device(device, where)
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


PRECISIONS = ("fp32", "bf16")


def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype under `finetune.precision`, or None for full fp32 (no autocast is entered at all).
    "bf16" autocasts on a CUDA device that supports bf16 and is fp32 elsewhere (a CPU); bf16 needs no loss scaling,
    so it is the only reduced precision offered."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16 if device.type == "cuda" and torch.cuda.is_bf16_supported() else None
    raise ValueError(f"finetune.precision: {precision!r} is not one of {', '.join(PRECISIONS)}")


def autocast(device: torch.device, dtype: torch.dtype | None):
    """torch.autocast for `dtype`, or no context at all for fp32 (so fp32 never enters autocast)."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def set_deterministic(on: bool) -> None:
    """Deterministic kernels where torch has them (CPU training is deterministic for a fixed thread count)."""
    if on:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    else:
        torch.backends.cudnn.benchmark = True


def make_optimizer(parameters, protocol: Protocol, lr: float, wd: float) -> torch.optim.Optimizer:
    if protocol.optimizer == "adamw":
        # The authors pass weight_decay = wd / lr to AdamW (their sample_train.py); kept as an explicit switch.
        decay = wd / lr if protocol.adamw_wd_over_lr else wd
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=decay)
    if protocol.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=0.9, nesterov=True, weight_decay=wd)
    raise ValueError(f"unknown optimizer {protocol.optimizer!r}")


STEP_MILESTONES = (15, 20, 25)  # the authors' step schedule, gamma 0.1


def make_scheduler(optimizer: torch.optim.Optimizer, protocol: Protocol):
    if protocol.schedule == "cosine":  # stepped once per epoch, T_max = epochs
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=protocol.epochs)
    if protocol.schedule == "step":  # the authors' alternative: x0.1 at epochs 15, 20, 25
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(STEP_MILESTONES), gamma=0.1)
    raise ValueError(f"unknown schedule {protocol.schedule!r}")


def predict(model: nn.Module, dataset, device: torch.device, multilabel: bool, batch_size: int = 256, *,
            channels_last: bool = True, dtype: torch.dtype | None = None, dist: Dist = SINGLE) -> np.ndarray:
    """Class probabilities (N, C) in dataset order. Across ranks (`dist`), each predicts its shard and every rank
    gets all rows (repro.ddp.gather_rows)."""
    if dist.active:
        from torch.utils.data import Subset

        from repro.ddp import gather_rows, shard

        part = predict(model, Subset(dataset, shard(len(dataset), dist)), device, multilabel, batch_size,
                       channels_last=channels_last, dtype=dtype)
        return gather_rows(part, len(dataset), dist)
    if len(dataset) == 0:  # a rank's shard of a split smaller than the world
        return np.zeros((0, _outputs(model)), dtype=np.float32)
    model.eval()
    outputs = []
    memory = torch.channels_last if channels_last else torch.contiguous_format
    with torch.inference_mode(), autocast(device, dtype):
        for images, _ in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            logits = model(images.to(device, memory_format=memory)).float()
            outputs.append((logits.sigmoid() if multilabel else logits.softmax(dim=1)).cpu())
    return torch.cat(outputs).numpy()


def _outputs(model: nn.Module) -> int:
    """The classifier's output width, for an empty prediction: the last Linear (or, as in SqueezeNet, Conv2d)."""
    last = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))][-1]
    return last.out_features if isinstance(last, nn.Linear) else last.out_channels


def train_config(
    build: Callable[[], nn.Module],
    splits: Mapping[str, object],
    targets: Mapping[str, np.ndarray],
    protocol: Protocol,
    lr: float,
    wd: float,
    metric: Metric,
    *,
    select: str,
    report: str,
    multilabel: bool = False,
    on_epoch: Callable[[int, dict], None] | None = None,
    resume: dict | None = None,
    checkpoint: Callable[[ConfigResult, dict, bool], None] | None = None,
) -> ConfigResult:
    """Train one (lr, wd) config for `protocol.epochs`; keep the report scores and weights of its selected epoch.

    `resume` is a snapshot an earlier `checkpoint` call received (model, optimizer, scheduler, RNG states and the
    result so far); `checkpoint(result, snapshot, best_changed)` is called after every epoch.
    """
    from repro import ddp

    dist = ddp.current()
    device = resolve_device(protocol.device)
    if dist.active and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)  # one GPU per process
    dtype = resolve_precision(protocol.precision, device)
    memory = torch.channels_last if protocol.channels_last else torch.contiguous_format
    torch.manual_seed(protocol.seed)  # same init and data order for every config of a grid
    model = build().to(device, memory_format=memory)
    optimizer = make_optimizer(model.parameters(), protocol, lr, wd)
    scheduler = make_scheduler(optimizer, protocol)
    loss_fn: nn.Module = nn.BCEWithLogitsLoss() if multilabel else nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(protocol.seed)
    loading = {"num_workers": protocol.num_workers, "pin_memory": device.type == "cuda",
               "persistent_workers": protocol.num_workers > 0}
    if dist.active:  # each rank its share of the same global batches; augmentation from a per-rank stream
        loader = DataLoader(splits["train"], batch_sampler=ddp.RankBatches(len(splits["train"]),
                                                                           protocol.batch_size, generator, dist),
                            **loading)
        torch.manual_seed(protocol.seed + dist.rank)
    else:
        loader = DataLoader(splits["train"], batch_size=protocol.batch_size, shuffle=True, generator=generator,
                            **loading)
    result = ConfigResult(lr=lr, wd=wd)
    start = 1
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        set_rng_state(resume["rng_ranks"][dist.rank] if dist.active else resume["rng"], generator)
        saved = resume["result"]
        result.curve, result.best_epoch = list(saved["curve"]), saved["best_epoch"]
        result.train_images, result.train_seconds = saved["train_images"], saved["train_seconds"]
        result.state_dict, result.report_scores = resume.get("best_weights"), resume.get("best_scores")
        start = len(result.curve) + 1
    # torch.compile wraps the module; weights and state are always read from the plain one, so files never depend
    # on whether compile was on.
    trained: nn.Module = model
    if dist.active:
        from torch.nn.parallel import DistributedDataParallel

        trained = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    forward = torch.compile(trained) if protocol.compile else trained
    # evaluation never goes through DDP (its forward syncs buffers, and ranks' eval shards differ in batch count)
    evaluate = model if dist.active else forward
    for epoch in range(start, protocol.epochs + 1):
        model.train()
        started, total, count = time.perf_counter(), 0.0, 0
        for images, labels in loader:
            images = images.to(device, non_blocking=True, memory_format=memory)
            labels = labels.to(device, non_blocking=True)
            with autocast(device, dtype):
                logits = forward(images)
            loss = loss_fn(logits.float(), labels.float() if multilabel else labels)
            if dist.active:  # the batch's loss sum and size over all ranks; a NaN on any rank stops every rank
                summed = torch.stack([loss.detach() * len(labels), torch.tensor(float(len(labels)), device=device)])
                torch.distributed.all_reduce(summed)
                batch_loss, batch_images = summed[0].item(), int(summed[1].item())
                # DDP averages gradients over ranks: weighting by the rank's share gives the whole batch's mean
                loss = loss * (len(labels) * dist.world / batch_images)
            else:
                batch_loss, batch_images = loss.item() * len(labels), len(labels)
            if not math.isfinite(batch_loss):
                result.diverged = True
                break
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            failpoints.hit("train.after_batch")
            total += batch_loss
            count += batch_images
        result.train_seconds += time.perf_counter() - started
        result.train_images += count
        if result.diverged:  # a NaN loss ends this config; the grid goes on (recorded as diverged)
            break
        scheduler.step()
        scores = {name: predict(evaluate, splits[name], device, multilabel, channels_last=protocol.channels_last,
                                dtype=dtype, dist=dist) for name in dict.fromkeys((select, report))}
        record = {
            "epoch": epoch,
            "train_loss": total / max(count, 1),
            "select": metric(targets[select], scores[select]),
            "report": metric(targets[report], scores[report]),
        }
        result.curve.append(record)
        improved = (protocol.selection == "last_epoch" or result.best_epoch is None
                    or record["select"] > result.select_value)
        if improved:
            result.best_epoch = epoch
            result.report_scores = scores[report]
            result.state_dict = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        if on_epoch is not None:
            on_epoch(epoch, record)
        if checkpoint is not None:
            snapshot = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler_state(scheduler), "rng": rng_state(generator)}
            if dist.active:  # every rank's streams, so that each resumes its own (rank 0 writes the file)
                snapshot["rng_ranks"] = ddp.all_objects(snapshot["rng"])
            checkpoint(result, snapshot, improved)
    return result


def best_config(results: Sequence[ConfigResult]) -> int | None:
    """Index of the config with the best selection score (first on ties); None if every config diverged."""
    finite = [i for i, r in enumerate(results) if r.best_epoch is not None]
    return max(finite, key=lambda i: results[i].select_value) if finite else None


@dataclass
class GridResult:
    configs: list[ConfigResult]  # curves only; the chosen config's weights are below
    chosen: int | None
    report_scores: np.ndarray | None
    state_dict: dict[str, torch.Tensor] | None
    resumed_from: dict | None = None  # {"config": i, "epoch": e} when a saved state was picked up

    @property
    def train_seconds(self) -> float:
        return sum(r.train_seconds for r in self.configs)

    @property
    def train_images(self) -> int:
        return sum(r.train_images for r in self.configs)


def run_grid(
    build: Callable[[], nn.Module],
    splits: Mapping[str, object],
    targets: Mapping[str, np.ndarray],
    protocol: Protocol,
    grid: Sequence[tuple[float, float]],
    metric: Metric,
    *,
    select: str,
    report: str,
    multilabel: bool = False,
    store: StateStore | None = None,
    identity: str = "",
    on_epoch: Callable[[int, int, dict], None] | None = None,
) -> GridResult:
    """Train every config of `grid` and pick the best by the selection split, saving state after every epoch.

    With a `store`, a saved state whose `identity` matches is resumed: finished configs are not retrained, the
    running one continues from its last finished epoch with its RNG states. Only the current leader's weights are
    kept (in memory and on disk), never one copy per config.
    """
    set_deterministic(protocol.deterministic)
    saved = store.load() if store is not None else None
    if saved is not None and saved.get("identity") != identity:
        saved = None  # made under another config: start over (the stale files go with the next save)
    done: list[ConfigResult] = []
    leader: int | None = None
    leader_file: str | None = None
    leader_weights, leader_scores = None, None
    current = None
    resumed_from = None
    if saved is not None:
        for entry in saved["done"]:
            done.append(ConfigResult(**entry))
        leader, leader_file = saved["leader"], saved["leader_file"]
        if leader_file is not None:
            leader_weights, leader_scores = store.load_best(leader_file)
        current = saved["current"]
        resumed_from = {"config": len(done), "epoch": 0 if current is None else len(current["result"]["curve"])}

    def save(running: dict | None, files: list[str]) -> None:
        if store is None:
            return
        store.save({"version": 1, "identity": identity, "done": [r.summary() for r in done], "leader": leader,
                    "leader_file": leader_file, "current": running, "files": sorted(set(files))})

    for index in range(len(done), len(grid)):
        lr, wd = grid[index]
        resume = None
        best_file = None
        if current is not None and current["index"] == index:
            resume = dict(current)
            best_file = current["best_file"]
            if best_file is not None:
                resume["best_weights"], resume["best_scores"] = store.load_best(best_file)
        current = None

        def checkpoint(result: ConfigResult, snapshot: dict, improved: bool, index=index) -> None:
            nonlocal best_file
            if store is None:
                return
            if improved and result.state_dict is not None:
                best_file = f"best-c{index:03d}-e{result.best_epoch:03d}.safetensors"
                store.save_best(best_file, result.state_dict, result.report_scores)
            if len(result.curve) == protocol.epochs:
                return  # the config is finished; the grid saves it below as done
            save({"index": index, "result": result.summary(), "best_file": best_file, **snapshot},
                 [f for f in (leader_file, best_file) if f])

        callback = None if on_epoch is None else (lambda epoch, rec, i=index: on_epoch(i, epoch, rec))
        result = train_config(build, splits, targets, protocol, lr, wd, metric, select=select, report=report,
                              multilabel=multilabel, on_epoch=callback, resume=resume, checkpoint=checkpoint)
        # The grid leader changes only on a strictly better score: first config wins ties, as in best_config.
        if result.best_epoch is not None and (leader is None or result.select_value > done[leader].select_value):
            leader, leader_file = index, best_file
            leader_weights, leader_scores = result.state_dict, result.report_scores
        result.state_dict, result.report_scores = None, None
        done.append(result)
        save(None, [leader_file] if leader_file else [])
    return GridResult(done, leader, leader_scores, leader_weights, resumed_from)


def protocol_dict(protocol: Protocol) -> dict:
    return asdict(protocol)
