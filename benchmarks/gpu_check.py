"""One prepared measurement of the paper's fine-tuning loop on a GPU: throughput, precision, memory, compile, DDP.

Run on a CUDA machine (about 8 minutes on one H200; see docs/gpu.md):
    `PYTHONPATH=src python benchmarks/gpu_check.py --out gpu_check_out`
and on a machine without CUDA, in seconds, to prove every part's code path (tests/test_gpu_check.py runs this):
    `PYTHONPATH=src python benchmarks/gpu_check.py --smoke --out /tmp/gpu_smoke`

Data: synthetic JPEG files (the embedded digits upscaled to 512 x 512, tinted, quality 90, labels = the digit), written
once into a work folder and shared by every part, plus the decoded-image cache of `repro.datasets.cache` at the
training size. Weights are random init everywhere (the GPU machine has no hub access): throughput, memory and the
DDP start do not depend on the weights; the precision comparison is then a from-scratch one, not a fine-tune of
pretrained weights.

Parts, each with its own time cap (a fresh Python process per part, killed with its DataLoader workers at the cap;
`--smoke` runs them in this process under an alarm instead, to stay fast). Results are saved after every
measurement, so a part stopped at its cap or failing keeps what it measured; the script always prints a table and
exits 0, naming the parts that failed:
- setup: write the JPEG folder and build the cache;
- data: images/s of the two input pipelines alone (no model), the same DataLoader worker count;
- throughput:<model> (three models spanning the study's cost): steady-state training images/s of
  (1) our loop (`repro.train.train_config`, what `repro finetune` runs) over the cache, channels_last, bf16 autocast,
  (2) an authors'-style loop (decode every JPEG every epoch with OpenCV as their datasets/cassava.py:25-27 do, or PIL
      where OpenCV is missing; torchvision PIL transforms, fp32, contiguous, `.item()` twice per step as
      sample_train.py:146-157), and (3) our loop in fp32; the ratios (1)/(2) and (3)/(2) come from the same process;
  also peak GPU memory per run (torch.cuda.max_memory_allocated) and nvidia-smi's utilisation sampled during the
  timed epochs (where nvidia-smi exists), and evaluation images/s (repro.train.predict) in bf16 and fp32;
- precision: the same short training from the same seed in fp32 and in bf16 (deterministic kernels), held-out
  accuracy per epoch and the difference, and fp32 from another seed for the scale a seed alone moves it;
- ddp: train_config's DistributedDataParallel path in one process under torchrun (NCCL on CUDA; --smoke: gloo, in
  this process). `repro finetune --ddp 1` itself starts no process group (one process takes the plain path), so
  this part runs the DDP branch with a one-rank group to exercise the CUDA collectives a single GPU can exercise;
- compile: our loop with torch.compile off and on for one model, steady state after a warm-up epoch (which holds
  the compilation, reported apart; --smoke: dynamo's eager backend).
Steady state: every training run has a first, untimed epoch (worker start-up, cuDNN autotuning, compilation);
images/s is the later epochs' images over their training seconds.

Writes `<out>/gpu_check.json` (everything measured; per part its status, cap and seconds, and the end of its output
when it failed), `<out>/throughput_rows.csv` (our loop's rates, bf16 and fp32 per model, in the columns of
repro.plan.THROUGHPUT_COLUMNS) and appends those rows to `--table` (default benchmarks/throughput.csv on a GPU, none
in --smoke mode, which never writes the committed table): the rows `repro plan --device cuda-h200` reads. A run on
a lent machine brings back only its output folder; `--merge <out>/gpu_check.json` appends its rows here.
benchmarks/gpu_check.sh wraps the GPU run with its log.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
COMMITTED_TABLE = ROOT / "benchmarks" / "throughput.csv"
RESULT, ROWS = "gpu_check.json", "throughput_rows.csv"
CLASSES = 10  # the digits


@dataclass
class Config:
    """Everything a part needs; written to the work folder so a part's own process reads the same values."""
    mode: str  # "gpu" | "smoke"
    device: str
    device_kind: str
    models: list[str]
    size: int
    batch: int
    workers: int
    images: int  # training images in the JPEG folder
    heldout: int  # further images, only the precision part evaluates on them
    epochs: int  # per throughput run: 1 untimed + (epochs - 1) timed
    precision_model: str
    precision_epochs: int
    compile_model: str
    compile_backend: str
    ddp_model: str
    ddp_images: int
    caps: dict[str, float] = field(default_factory=dict)
    budget: float = 470.0
    isolate: bool = True  # a fresh process per part


# profiles/paper.yaml's finetune.batch_size and num_workers (tests/test_gpu_check.py checks that they agree): kept
# as numbers because repro.config needs pydantic, which the GPU machine's image does not have (docs/gpu.md)
PAPER_BATCH, PAPER_WORKERS = 128, 8

GPU_MODELS = ["torchvision/resnet50.IMAGENET1K_V1", "timm/efficientnet_b4.ra2_in1k",
              "timm/deit_small_patch16_224.fb_in1k"]
TINY = "timm/test_efficientnet.r160_in1k"  # the registry's tiny entry (DESIGN.md house style 10)

# Seconds per part on the GPU; they add up to under 8 minutes with the interpreter start-ups (see docs/gpu.md).
GPU_CAPS = {"setup": 25, "data": 20, "throughput": 70, "precision": 60, "ddp": 30, "compile": 120}
GPU_BUDGET = 470.0  # all parts of a GPU run together, seconds: the 8 minutes less the start and the output
SMOKE_CAPS = {"setup": 60, "data": 60, "throughput": 120, "precision": 60, "ddp": 60, "compile": 120}


def gpu_kind(name: str) -> str:
    """'NVIDIA H200' -> 'cuda-h200', 'NVIDIA H100 80GB HBM3' -> 'cuda-h100': the GPU model, not its memory type."""
    words = [w.lower() for w in name.replace("-", " ").split()]
    model = next((w for w in words if w[:1] in "abhlvtk" and w[1:2].isdigit()), None)
    return "cuda-" + (model or "-".join(w for w in words if w != "nvidia") or "gpu")


def make_config(args: argparse.Namespace) -> Config:
    import torch

    batch, workers = PAPER_BATCH, PAPER_WORKERS
    caps = dict(SMOKE_CAPS if args.smoke else GPU_CAPS)
    for item in args.cap or []:
        name, _, seconds = item.partition("=")
        caps[name] = float(seconds)
    if args.smoke:
        return Config(mode="smoke", device="cpu", device_kind=args.device_kind or "cpu-smoke",
                      models=args.models or [TINY], size=32, batch=8, workers=1, images=16, heldout=16, epochs=2,
                      precision_model=TINY, precision_epochs=2, compile_model=TINY, compile_backend="eager",
                      ddp_model=TINY, ddp_images=16, caps=caps, budget=args.budget or 600.0,
                      isolate=args.isolate is True)
    if not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device here; use --smoke on a machine without a GPU")
    return Config(mode="gpu", device="cuda", device_kind=args.device_kind or gpu_kind(torch.cuda.get_device_name()),
                  models=args.models or GPU_MODELS, size=256, batch=batch, workers=args.workers or workers,
                  images=2048, heldout=512, epochs=4, precision_model=GPU_MODELS[0], precision_epochs=3,
                  compile_model=GPU_MODELS[0], compile_backend="inductor", ddp_model=GPU_MODELS[0], ddp_images=256,
                  caps=caps, budget=args.budget or GPU_BUDGET, isolate=args.isolate is not False)


def part_names(cfg: Config) -> list[str]:
    return ["setup", "data", *(f"throughput:{short(m)}" for m in cfg.models), "precision", "ddp", "compile"]


def short(model: str) -> str:
    """'timm/efficientnet_b4.ra2_in1k' -> 'efficientnet_b4'."""
    return model.split("/", 1)[-1].split(".", 1)[0]


def cap_of(cfg: Config, part: str) -> float:
    return float(cfg.caps.get(part, cfg.caps[part.split(":", 1)[0]]))


# ---------------------------------------------------------------------------------------------------------------
# Data shared by the parts: one JPEG folder, one cache.

def jpeg_names(cfg: Config) -> list[str]:
    return [f"img_{i:05d}.jpg" for i in range(cfg.images + cfg.heldout)]


def labels_of(cfg: Config):
    import torch

    from repro.datasets.embedded import load_digits_arrays

    _, digits = load_digits_arrays()
    count = cfg.images + cfg.heldout
    return torch.as_tensor(digits[[i % len(digits) for i in range(count)]])


def write_jpegs(folder: Path, names: list[str]) -> None:
    """The embedded digits upscaled to 512 x 512 and tinted, quality 90: real JPEG files to decode."""
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np
    from PIL import Image

    from repro.datasets.embedded import load_digits_arrays

    images, _ = load_digits_arrays()
    tint = np.array([1.0, 0.8, 0.6], dtype=np.float32)

    def one(i: int) -> None:
        grey = Image.fromarray(images[i % len(images)]).resize((512, 512), Image.BILINEAR)
        pixels = (np.asarray(grey, dtype=np.float32)[..., None] * tint).astype(np.uint8)
        Image.fromarray(pixels).save(folder / names[i], quality=90)

    with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
        list(pool.map(one, range(len(names))))


def open_cache(cfg: Config, work: Path):
    from repro.datasets.cache import open_or_build

    names = jpeg_names(cfg)
    return open_or_build(work / "cache", work / "jpegs", names, [(n,) for n in names], cfg.size, "rgb",
                         progress=None)


def our_train_set(cfg: Config, work: Path, model: str, count: int | None = None):
    """Our loop's training data: the cache, uint8 tensor transforms (Cassava's: RandomResizedCrop 0.65-1 + flips)."""
    from repro.datasets import DATASETS
    from repro.datasets.cache import CachedDataset
    from repro.datasets.transforms import train_transform
    from repro.models import normalization

    count = count or cfg.images
    mean, std = normalization(model)
    return CachedDataset(open_cache(cfg, work), range(count), labels_of(cfg)[:count],
                         train_transform(DATASETS["cassava"], cfg.size, mean, std))


class AuthorsStyleFolder:
    """The authors' dataset class: decode the file on every access (cv2.imread + BGR->RGB + PIL, their
    datasets/cassava.py:25-27), then torchvision's PIL transforms."""

    def __init__(self, root: Path, names: list[str], labels, transform) -> None:
        self.root, self.names, self.labels, self.transform = root, names, labels, transform

    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index: int):
        from PIL import Image

        path = str(self.root / self.names[index])
        try:
            import cv2
        except ImportError:  # no OpenCV here: PIL decodes the same file
            with Image.open(path) as image:
                return self.transform(image.convert("RGB")), self.labels[index]
        image = Image.fromarray(cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB))
        return self.transform(image), self.labels[index]


def decoder() -> str:
    try:
        import cv2
    except ImportError:
        return "PIL (OpenCV not installed)"
    return f"OpenCV {cv2.__version__}"


def authors_train_set(cfg: Config, work: Path, model: str):
    from torchvision import transforms as T

    from repro.models import normalization

    mean, std = normalization(model)
    # the authors' transform_train (sample_train.py:66-71)
    transform = T.Compose([T.RandomResizedCrop(cfg.size, scale=(0.65, 1.0)), T.RandomHorizontalFlip(),
                           T.RandomVerticalFlip(), T.ToTensor(), T.Normalize(mean, std)])
    return AuthorsStyleFolder(work / "jpegs", jpeg_names(cfg)[:cfg.images], labels_of(cfg)[:cfg.images], transform)


# ---------------------------------------------------------------------------------------------------------------
# Measuring helpers.

class UtilSampler:
    """nvidia-smi's GPU utilisation (percent), sampled every 200 ms in the background, with time stamps."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []
        self.process = None
        self.thread = None
        self.note = ""

    def __enter__(self) -> UtilSampler:
        command = shutil.which("nvidia-smi")
        if command is None:
            self.note = "nvidia-smi not found"
            return self
        index = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0] or "0"
        self.process = subprocess.Popen([command, "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                         "-i", index, "-lms", "200"], stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL, text=True)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        return self

    def _read(self) -> None:
        for line in self.process.stdout:
            with contextlib.suppress(ValueError):
                self.samples.append((time.perf_counter(), float(line.strip())))

    def __exit__(self, *exc) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.thread.join(timeout=5)

    def mean_between(self, start: float, end: float) -> dict:
        values = [v for t, v in self.samples if start <= t <= end]
        if not values:
            return {"mean_pct": None, "samples": 0, "note": self.note or "no samples in the timed epochs"}
        return {"mean_pct": round(sum(values) / len(values), 1), "min_pct": min(values), "samples": len(values)}


def reset_peak(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()


def peak_gib(device) -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**30, 3) if device.type == "cuda" else None


def steady(epochs: list[dict]) -> dict:
    """Images/s over the epochs after the first (the first holds warm-up); each entry: images, seconds, end."""
    timed = epochs[1:]
    images, seconds = sum(e["images"] for e in timed), sum(e["seconds"] for e in timed)
    return {"img_s": round(images / seconds, 2) if seconds else None, "timed_images": images,
            "timed_seconds": round(seconds, 3), "warmup_seconds": round(epochs[0]["seconds"], 3) if epochs else None}


# The throughput table's `amp` column (off | bf16) as repro's finetune.precision: bf16 autocasts on CUDA only.
PRECISION = {"off": "fp32", "bf16": "bf16"}


def our_run(cfg: Config, work: Path, model: str, amp: str, *, compile_: bool = False, train=None,
            heldout=None, epochs: int | None = None, deterministic: bool = False, seed: int = 0) -> dict:
    """Train with repro.train.train_config; per-epoch images and seconds from its own accounting."""
    import numpy as np
    import torch

    from repro.metrics import accuracy
    from repro.models import build_model
    from repro.train import Protocol, resolve_device, set_deterministic, train_config

    device = resolve_device(cfg.device)
    train = train if train is not None else our_train_set(cfg, work, model)
    if heldout is None:  # evaluation is not timed: two blank images keep it negligible
        heldout = torch.utils.data.TensorDataset(torch.zeros(2, 3, cfg.size, cfg.size), torch.zeros(2).long())
    targets = np.asarray(heldout.targets if hasattr(heldout, "targets") else heldout.tensors[1])
    protocol = Protocol(epochs=epochs or cfg.epochs, batch_size=cfg.batch, optimizer="adamw", adamw_wd_over_lr=True,
                        schedule="cosine", seed=seed, device=cfg.device, num_workers=cfg.workers,
                        precision=PRECISION[amp], channels_last=True, compile=compile_, deterministic=deterministic)
    set_deterministic(deterministic)  # as run_grid does: cudnn.benchmark on unless deterministic
    per_epoch: list[dict] = []
    last = {"images": 0, "seconds": 0.0}

    def checkpoint(result, snapshot, improved) -> None:
        per_epoch.append({"images": result.train_images - last["images"],
                          "seconds": result.train_seconds - last["seconds"], "end": time.perf_counter(),
                          **result.curve[-1]})
        last.update(images=result.train_images, seconds=result.train_seconds)

    reset_peak(device)
    with UtilSampler() as sampler:
        started = time.perf_counter()
        result = train_config(lambda: build_model(model, CLASSES, image_size=cfg.size), {"train": train,
                              "val": heldout}, {"val": targets}, protocol, 1e-3, 1e-4, accuracy, select="val",
                              report="val", checkpoint=checkpoint)
    if deterministic:  # later runs in this process measure with the default kernels again
        torch.use_deterministic_algorithms(False)
    out = {**steady(per_epoch), "peak_gib": peak_gib(device), "diverged": result.diverged,
           "curve": [{k: v for k, v in e.items() if k != "end"} for e in per_epoch],
           "wall_seconds": round(time.perf_counter() - started, 2)}
    if len(per_epoch) > 1:
        out["gpu_util"] = sampler.mean_between(per_epoch[0]["end"], per_epoch[-1]["end"])
    return out


def authors_run(cfg: Config, work: Path, model: str) -> dict:
    """The authors' loop (sample_train.py:140-157): fp32, contiguous, decode every epoch, per-step .item() syncs."""
    import torch
    from torch import nn

    from repro.models import build_model
    from repro.train import resolve_device

    device = resolve_device(cfg.device)
    torch.backends.cudnn.benchmark = False  # torch's default; the authors' script does not set it
    torch.manual_seed(0)
    net = build_model(model, CLASSES, image_size=cfg.size).to(device)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4 / 1e-3)
    criterion = nn.CrossEntropyLoss()
    loader = torch.utils.data.DataLoader(authors_train_set(cfg, work, model), batch_size=cfg.batch, shuffle=True,
                                         num_workers=cfg.workers)
    per_epoch = []
    reset_peak(device)
    with UtilSampler() as sampler:
        for _ in range(cfg.epochs):
            net.train()
            started, count, correct, running = time.perf_counter(), 0, 0, 0.0
            for inputs, labels in loader:
                inputs, labels = inputs.to(device), labels.to(device)
                optimizer.zero_grad()
                outputs = net(inputs).view(-1, CLASSES)
                correct += (outputs.data.max(1)[1] == labels).sum().item()
                loss = criterion(outputs, labels)
                loss.backward()
                optimizer.step()
                running += loss.item()
                count += len(labels)
            per_epoch.append({"images": count, "seconds": time.perf_counter() - started, "end": time.perf_counter()})
    out = {**steady(per_epoch), "peak_gib": peak_gib(device), "decoder": decoder()}
    if len(per_epoch) > 1:
        out["gpu_util"] = sampler.mean_between(per_epoch[0]["end"], per_epoch[-1]["end"])
    return out


def eval_rate(cfg: Config, model: str, amp: str) -> float:
    """Images/s of repro.train.predict (the per-epoch evaluation) on preprocessed images, channels_last."""
    import torch

    from repro.models import build_model
    from repro.train import predict, resolve_device, resolve_precision

    device = resolve_device(cfg.device)
    net = build_model(model, CLASSES, image_size=cfg.size).to(device, memory_format=torch.channels_last)
    count = 4 * cfg.batch
    data = torch.utils.data.TensorDataset(torch.randn(count, 3, cfg.size, cfg.size), torch.zeros(count).long())
    dtype = resolve_precision(PRECISION[amp], device)
    predict(net, torch.utils.data.Subset(data, range(cfg.batch)), device, False, dtype=dtype)  # warm-up
    started = time.perf_counter()
    predict(net, data, device, False, dtype=dtype)
    return round(count / (time.perf_counter() - started), 2)


# ---------------------------------------------------------------------------------------------------------------
# The parts. Each fills `record` (a dict) as it goes and calls `save()` after every measurement.

def part_setup(cfg: Config, work: Path, record: dict, save) -> None:
    folder = work / "jpegs"
    folder.mkdir(parents=True, exist_ok=True)
    names = jpeg_names(cfg)
    started = time.perf_counter()
    write_jpegs(folder, names)
    record["jpegs"] = {"count": len(names), "pixels": "512x512", "seconds": round(time.perf_counter() - started, 2)}
    save()
    started = time.perf_counter()
    cache = open_cache(cfg, work)
    record["cache"] = {"size": cfg.size, "mb": round(cache.meta["bytes"] / 1e6, 1),
                       "build_seconds": round(time.perf_counter() - started, 2)}


def part_data(cfg: Config, work: Path, record: dict, save) -> None:
    """Both input pipelines alone, no model: the most images/s each can feed, with the same workers."""
    import torch

    model = cfg.models[0]
    for name, dataset, pin in (("ours_cache", our_train_set(cfg, work, model), True),
                               ("authors_decode", authors_train_set(cfg, work, model), False)):
        loader = torch.utils.data.DataLoader(dataset, batch_size=cfg.batch, shuffle=True, num_workers=cfg.workers,
                                             pin_memory=pin and cfg.device == "cuda",
                                             persistent_workers=cfg.workers > 0)
        epochs = []
        for _ in range(2):  # the first epoch starts the workers
            started, count = time.perf_counter(), 0
            for images, _labels in loader:
                count += len(images)
            epochs.append({"images": count, "seconds": time.perf_counter() - started})
        record[name] = steady(epochs)
        save()
    record["workers"] = cfg.workers
    record["ratio"] = round(record["ours_cache"]["img_s"] / record["authors_decode"]["img_s"], 2)


def part_throughput(model: str):
    def run(cfg: Config, work: Path, record: dict, save) -> None:
        record["model"] = model
        record["ours_bf16"] = our_run(cfg, work, model, "bf16")
        save()
        record["authors_fp32"] = authors_run(cfg, work, model)
        base = record["authors_fp32"]["img_s"]
        record["ratio_ours_bf16_vs_authors"] = round(record["ours_bf16"]["img_s"] / base, 2)
        save()
        record["ours_fp32"] = our_run(cfg, work, model, "off")
        record["ratio_ours_fp32_vs_authors"] = round(record["ours_fp32"]["img_s"] / base, 2)
        save()
        record["eval_img_s"] = {"bf16": eval_rate(cfg, model, "bf16"), "off": eval_rate(cfg, model, "off")}
    return run


def part_precision(cfg: Config, work: Path, record: dict, save) -> None:
    """fp32 and bf16 autocast from the same seed, deterministic kernels: only the precision differs (on a GPU; in
    --smoke on a CPU finetune.precision bf16 is fp32, so the two runs are the same)."""
    from repro.datasets.cache import CachedDataset
    from repro.datasets.transforms import eval_transform
    from repro.models import normalization

    model = cfg.precision_model
    mean, std = normalization(model)
    heldout = CachedDataset(open_cache(cfg, work), range(cfg.images, cfg.images + cfg.heldout),
                            labels_of(cfg)[cfg.images:], eval_transform(cfg.size, mean, std))
    record.update(model=model, train_images=cfg.images, heldout_images=cfg.heldout, epochs=cfg.precision_epochs,
                  init="random", metric="accuracy")
    # fp32 and bf16 from seed 0, then fp32 from seed 1: how far a seed alone moves the metric, the scale against
    # which the precision difference is read
    for key, amp, seed in (("fp32", "off", 0), ("bf16", "bf16", 0), ("fp32_seed1", "off", 1)):
        run = our_run(cfg, work, model, amp, heldout=heldout, epochs=cfg.precision_epochs, deterministic=True,
                      seed=seed)
        record[key] = {"accuracy_per_epoch": [e["report"] for e in run["curve"]], "seed": seed,
                       "train_loss_per_epoch": [e["train_loss"] for e in run["curve"]], "img_s": run["img_s"],
                       "diverged": run["diverged"]}
        if key == "bf16":
            fp32, bf16 = record["fp32"]["accuracy_per_epoch"], record["bf16"]["accuracy_per_epoch"]
            record["final_accuracy_bf16_minus_fp32"] = round(bf16[-1] - fp32[-1], 4)
            record["max_abs_epoch_difference"] = round(max(abs(a - b) for a, b in zip(fp32, bf16, strict=True)), 4)
        save()
    seed1 = record["fp32_seed1"]["accuracy_per_epoch"]
    record["final_accuracy_seed1_minus_seed0_fp32"] = round(seed1[-1] - record["fp32"]["accuracy_per_epoch"][-1], 4)


def part_compile(cfg: Config, work: Path, record: dict, save) -> None:
    import torch

    model = cfg.compile_model
    record.update(model=model, backend=cfg.compile_backend, amp="bf16")
    if cfg.compile_backend != "inductor":
        # --smoke: dynamo traces the graph but generates no code (no C++ compiler, seconds instead of minutes)
        plain = torch.compile

        def compile_with_backend(module, **kwargs):
            return plain(module, backend=cfg.compile_backend, **kwargs)

        torch.compile = compile_with_backend
    epochs = max(2, cfg.epochs - 1)  # one warm-up epoch (it holds the compilation) and the timed ones
    record["off"] = our_run(cfg, work, model, "bf16", compile_=False, epochs=epochs)
    save()
    record["on"] = our_run(cfg, work, model, "bf16", compile_=True, epochs=epochs)
    save()
    record["speedup_on_vs_off"] = round(record["on"]["img_s"] / record["off"]["img_s"], 2)


@contextlib.contextmanager
def one_rank_group(device: str):
    """A one-rank process group over NCCL (CUDA) or gloo, and train_config's DDP branch switched on for it.

    Dist.active is world > 1, so `repro finetune --ddp 1` trains without a group; here the one rank is marked
    active, so the DDP wrapper, the loss all_reduce, the RankBatches sampler and the gathered evaluation all run."""
    import torch
    import torch.distributed as td

    from repro import ddp

    cuda = device == "cuda"
    if cuda:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    if "MASTER_ADDR" in os.environ:  # under torchrun
        td.init_process_group("nccl" if cuda else "gloo")
    else:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        td.init_process_group("nccl" if cuda else "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0,
                              world_size=1)

    class OneRank(ddp.Dist):
        @property
        def active(self) -> bool:
            return True

    original = ddp.current
    ddp.current = lambda: OneRank(td.get_rank(), td.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    try:
        yield td
    finally:
        ddp.current = original
        td.destroy_process_group()


def ddp_measure(cfg: Config, work: Path, record: dict, save) -> None:
    """One rank of the ddp part: collectives on the device, then our loop through its DDP branch."""
    import torch

    model = cfg.ddp_model
    train = our_train_set(cfg, work, model, cfg.ddp_images)
    with one_rank_group(cfg.device) as td:
        device = torch.device("cuda", torch.cuda.current_device()) if cfg.device == "cuda" else torch.device("cpu")
        ones = torch.ones(4, device=device)
        td.all_reduce(ones)
        record.update(backend=td.get_backend(), world=td.get_world_size(), all_reduce_ok=bool(ones.eq(1).all()),
                      model=model, images=cfg.ddp_images)
        run = our_run(cfg, work, model, "bf16", train=train, epochs=2)
        record.update(train_loss_per_epoch=[e["train_loss"] for e in run["curve"]], img_s=run["img_s"],
                      diverged=run["diverged"], peak_gib=run["peak_gib"])
    if record["diverged"] or not record["all_reduce_ok"]:
        raise RuntimeError("the DDP run diverged or its all_reduce gave a wrong sum")


def part_ddp(cfg: Config, work: Path, record: dict, save) -> None:
    if not cfg.isolate:  # --smoke: the same worker, in this process (a torchrun start costs two interpreters)
        ddp_measure(cfg, work, record, save)
        return
    from repro.ddp import torchrun_command

    command = torchrun_command(1, ["--ddp-worker", "--work", str(work)], program=[str(Path(__file__).resolve())])
    log = work / "part-ddp-torchrun.log"
    with open(log, "w") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT, env=child_env())
        try:
            # torchrun starts its worker in a session of its own, so this part's process-group kill would miss
            # it: stop torchrun (which stops its worker) a few seconds before the part's cap
            code = process.wait(timeout=max(1.0, DEADLINE - time.time() - 5))
        except subprocess.TimeoutExpired:
            process.terminate()
            code = process.wait()
            raise RuntimeError("torchrun stopped at the part's cap") from None
    worker = work / "part-ddp-worker.json"
    if worker.is_file():
        record.update(json.loads(worker.read_text()))
    record["launcher"] = "torch.distributed.run --standalone --nproc-per-node=1"
    if code:
        raise RuntimeError(f"torchrun exited {code}: {last_line(log.read_text(errors='replace'))}")


def parts(cfg: Config) -> dict:
    table = {"setup": part_setup, "data": part_data, "precision": part_precision, "ddp": part_ddp,
             "compile": part_compile}
    table.update({f"throughput:{short(m)}": part_throughput(m) for m in cfg.models})
    return {name: table[name] for name in part_names(cfg)}


# ---------------------------------------------------------------------------------------------------------------
# Running the parts under their caps.

class PartTimeout(Exception):
    pass


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(no output)"


def child_env() -> dict:
    src = str(ROOT / "src")
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")])),
            "PYTHONUNBUFFERED": "1"}


def atomic_json(path: Path, document: dict) -> None:
    from repro.splits import atomic_write

    atomic_write(path, (json.dumps(document, indent=2, default=str) + "\n").encode())


def run_command(command: list[str], cap: float, log: Path, env: dict | None = None) -> tuple[int | None, str]:
    """Run `command` in its own process group; at `cap` seconds kill the group (its DataLoader workers too).
    Returns (exit status or None on timeout, the last line of its error output)."""
    with open(log, "w") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, cwd=ROOT,
                                   env={**child_env(), **(env or {})}, start_new_session=True)
        try:
            code = process.wait(timeout=cap)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            code = None
    return code, last_line(log.read_text(errors="replace"))


def run_part(cfg: Config, work: Path, name: str, cap: float) -> dict:
    """Run one part under `cap`; always returns {"status", "cap_s", "seconds", "results"}."""
    started = time.perf_counter()
    path = work / f"part-{name.replace(':', '-')}.json"
    path.unlink(missing_ok=True)
    record: dict = {}
    if cfg.isolate:
        command = [sys.executable, str(Path(__file__).resolve()), "--part", name, "--work", str(work)]
        log = work / f"part-{name.replace(':', '-')}.log"
        code, tail = run_command(command, cap, log, {"GPU_CHECK_DEADLINE": str(time.time() + cap)})
        if path.is_file():
            record = json.loads(path.read_text())
        status = record.pop("_status", None)
        if code is None:
            status = f"timeout after {cap:g} s"
        elif code != 0 or status is None:
            status = status if status and status != "ok" else f"failed (exit {code}): {tail}"
        if status != "ok":  # the part's own output, for a run that cannot be repeated soon
            record["log_tail"] = log.read_text(errors="replace").splitlines()[-40:]
    else:
        status = in_process(cfg, work, name, cap, record)
    return {"status": status, "cap_s": cap, "seconds": round(time.perf_counter() - started, 1), "results": record}


def in_process(cfg: Config, work: Path, name: str, cap: float, record: dict, save=lambda: None) -> str:
    """Run a part in this process under an alarm at `cap` seconds; the status line."""
    def alarm(signum, frame):
        raise PartTimeout

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, cap)
    try:
        parts(cfg)[name](cfg, work, record, save)
        return "ok"
    except PartTimeout:
        return f"timeout after {cap:g} s"
    except Exception as exc:  # a failing part is reported by name; the others still run
        return f"failed: {exc.__class__.__name__}: {last_line(str(exc)) if str(exc) else ''}"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


DEADLINE = float("inf")  # time.time() at which this part's process is killed (set in a part's own process)


def child_main(work: Path, name: str) -> None:
    """One part in its own process: results saved after every measurement, the status written last."""
    global DEADLINE
    DEADLINE = float(os.environ.get("GPU_CHECK_DEADLINE", "inf"))
    cfg = Config(**json.loads((work / "config.json").read_text()))
    path = work / f"part-{name.replace(':', '-')}.json"
    record: dict = {}

    def save() -> None:
        atomic_json(path, record)

    status = "failed: interrupted"
    try:
        parts(cfg)[name](cfg, work, record, save)
        status = "ok"
    except Exception as exc:
        traceback.print_exc()
        status = f"failed: {exc.__class__.__name__}: {last_line(str(exc)) if str(exc) else ''}"
    finally:
        atomic_json(path, {**record, "_status": status})
    sys.exit(0 if status == "ok" else 1)


def ddp_worker_main(work: Path) -> None:
    cfg = Config(**json.loads((work / "config.json").read_text()))
    record: dict = {}
    try:
        ddp_measure(cfg, work, record, lambda: None)
    finally:
        atomic_json(work / "part-ddp-worker.json", record)


# ---------------------------------------------------------------------------------------------------------------
# Output: the JSON, the throughput rows, the printed table.

def throughput_rows(cfg: Config, result: dict) -> list[dict]:
    """Our loop's measured rates per model and precision, in repro.plan.THROUGHPUT_COLUMNS."""
    rows = []
    for model in cfg.models:
        part = result["parts"].get(f"throughput:{short(model)}", {}).get("results", {})
        for amp, key in (("bf16", "ours_bf16"), ("off", "ours_fp32")):
            train = (part.get(key) or {}).get("img_s")
            evaluation = (part.get("eval_img_s") or {}).get(amp)
            if train and evaluation:
                rows.append({"model": model, "device": cfg.device_kind, "image_size": cfg.size,
                             "batch_size": cfg.batch, "amp": amp, "train_img_s": train, "eval_img_s": evaluation,
                             "source": f"benchmarks/gpu_check.py {result['started'][:10]} ({cfg.mode}; our loop, "
                                       f"cache, channels_last, {cfg.workers} workers, random init)"})
    return rows


def append_rows(table: Path, rows: list[dict], fresh: bool = False) -> None:
    """Append to the CSV atomically (the whole file rewritten through a temp file), header first if new."""
    from repro.plan import THROUGHPUT_COLUMNS
    from repro.splits import atomic_write

    text = table.read_text() if table.is_file() and not fresh else ""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=THROUGHPUT_COLUMNS, lineterminator="\n")
    if not text:
        writer.writeheader()
    elif not text.endswith("\n"):
        buffer.write("\n")
    writer.writerows(rows)
    atomic_write(table, (text + buffer.getvalue()).encode())


def merge(path: Path, table: Path) -> None:
    """Append the throughput rows of a gpu_check.json to `table`; a smoke run's rows never reach the committed
    table, and the table must still parse as `repro plan` reads it."""
    from repro.errors import ReproError
    from repro.plan import read_throughput

    try:
        result = json.loads(path.read_text())
        rows, mode = result["throughput_rows"], result["mode"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SystemExit(f"gpu_check: {path}: not a gpu_check.json ({exc.__class__.__name__})") from None
    if mode == "smoke" and table.resolve() == COMMITTED_TABLE:
        raise SystemExit(f"gpu_check: {path} is a --smoke run; its rows never go into {COMMITTED_TABLE}")
    if not rows:
        raise SystemExit(f"gpu_check: {path} holds no throughput rows (see its parts' status)")
    with tempfile.TemporaryDirectory() as tmp:  # the rows must parse as repro plan reads them before they go in
        append_rows(Path(tmp) / ROWS, rows, fresh=True)
        try:
            read_throughput(Path(tmp) / ROWS)
        except ReproError as exc:
            raise SystemExit(f"gpu_check: {path}: {exc}") from None
    append_rows(table, rows)
    print(f"appended {len(rows)} rows from {path} to {table}")


def environment(cfg: Config) -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "cpu_count": os.cpu_count(),
            "platform": platform.platform(), "decoder": decoder(), "nvidia_smi": shutil.which("nvidia-smi")}
    with contextlib.suppress(OSError):  # DataLoader workers hand batches over in /dev/shm; a small one breaks them
        info["dev_shm_gib"] = round(shutil.disk_usage("/dev/shm").total / 2**30, 1)
    if cfg.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1), cuda=torch.version.cuda,
                    cudnn=torch.backends.cudnn.version(), cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
                    matmul_precision=torch.get_float32_matmul_precision(),
                    nccl=".".join(map(str, nccl)) if isinstance(nccl := torch.cuda.nccl.version(), tuple)
                    else str(nccl))
    return info


def summary_lines(result: dict) -> list[tuple[str, str, str]]:
    """(part, status, headline) per part."""
    lines = []
    for name, part in result["parts"].items():
        r = part["results"]
        if name.startswith("throughput:") and r:
            bits = [f"{k} {r[k]['img_s']} img/s" for k in ("ours_bf16", "authors_fp32", "ours_fp32") if k in r]
            bits += [f"ratio {k.split('_')[2]}/authors {r[k]}x" for k in ("ratio_ours_bf16_vs_authors",
                                                                         "ratio_ours_fp32_vs_authors") if k in r]
            if "ours_bf16" in r:
                bits.append(f"peak {r['ours_bf16']['peak_gib']} GiB, util "
                            f"{(r['ours_bf16'].get('gpu_util') or {}).get('mean_pct')}%")
            headline = "; ".join(bits)
        elif name == "data" and "ratio" in r:
            headline = (f"cache {r['ours_cache']['img_s']} img/s, decode {r['authors_decode']['img_s']} img/s "
                        f"({r['workers']} workers)")
        elif name == "precision" and "final_accuracy_bf16_minus_fp32" in r:
            headline = (f"accuracy fp32 {r['fp32']['accuracy_per_epoch'][-1]:.4f}, bf16 "
                        f"{r['bf16']['accuracy_per_epoch'][-1]:.4f}, "
                        f"bf16-fp32 {r['final_accuracy_bf16_minus_fp32']:+.4f}"
                        + (f"; fp32 seed 1 - seed 0 {r['final_accuracy_seed1_minus_seed0_fp32']:+.4f}"
                           if "final_accuracy_seed1_minus_seed0_fp32" in r else ""))
        elif name == "compile" and "speedup_on_vs_off" in r:
            headline = (f"off {r['off']['img_s']} img/s, on {r['on']['img_s']} img/s ({r['speedup_on_vs_off']}x), "
                        f"compile warm-up epoch {r['on']['warmup_seconds']} s")
        elif name == "ddp" and "backend" in r:
            losses = [round(x, 4) for x in r.get("train_loss_per_epoch", [])]
            headline = f"{r['backend']} world {r['world']}, train loss per epoch {losses}"
        elif name == "setup" and "cache" in r:
            headline = f"{r['jpegs']['count']} JPEGs in {r['jpegs']['seconds']} s, cache {r['cache']['mb']} MB"
        else:
            headline = "-"
        lines.append((name, f"{part['status']} ({part['seconds']} s of {part['cap_s']:.0f})", headline))
    return lines


def print_table(result: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"gpu_check ({result['mode']}) on {result['device_kind']}: "
                        f"{result['wall_seconds']} s; JSON {result['json']}")
    for column in ("part", "status", "measured"):
        table.add_column(column)
    for row in summary_lines(result):
        table.add_row(*row)
    Console(width=200).print(table)
    failed = [n for n, p in result["parts"].items() if p["status"] != "ok"]
    if failed:
        print(f"parts not ok: {', '.join(failed)} (what they measured before stopping is in the JSON)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="CPU, tiny model and images: every part in seconds")
    parser.add_argument("--out", type=Path, default=Path("gpu_check_out"), help="folder for gpu_check.json")
    parser.add_argument("--table", type=Path, default=None,
                        help="throughput CSV to append our rates to [default: benchmarks/throughput.csv on a GPU, "
                             "none with --smoke]")
    parser.add_argument("--device-kind", default=None, help="device name in the table [default: cuda-<gpu model>]")
    parser.add_argument("--models", nargs="+", default=None, help="registry names for the throughput parts")
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers [default: the paper profile's]")
    parser.add_argument("--cap", action="append", help="PART=SECONDS, e.g. compile=150 or throughput=80")
    parser.add_argument("--budget", type=float, default=None,
                        help="seconds for all parts together; a part gets at most what is left "
                             f"[default {GPU_BUDGET:.0f} on a GPU]")
    parser.add_argument("--isolate", action=argparse.BooleanOptionalAction, default=None,
                        help="a fresh process per part [default: yes on a GPU, no with --smoke]")
    parser.add_argument("--work", type=Path, default=None, help="work folder [default: a temporary one]")
    parser.add_argument("--merge", type=Path, default=None,
                        help="append the rows of a gpu_check.json (measured elsewhere) to --table and stop")
    parser.add_argument("--part", default=None, help=argparse.SUPPRESS)  # one part in its own process
    parser.add_argument("--ddp-worker", action="store_true", help=argparse.SUPPRESS)  # the rank under torchrun
    args = parser.parse_args()
    if args.part:
        child_main(args.work, args.part)
        return
    if args.ddp_worker:
        ddp_worker_main(args.work)
        return
    table = args.table if args.table is not None or args.smoke else COMMITTED_TABLE
    if args.merge is not None:
        merge(args.merge, args.table or COMMITTED_TABLE)
        return
    if args.smoke and table is not None and table.resolve() == COMMITTED_TABLE:
        raise SystemExit(f"gpu_check: --smoke rows never go into {COMMITTED_TABLE}; give --table another path")
    cfg = make_config(args)
    if cfg.mode == "smoke":
        import torch

        torch.set_num_threads(1)  # the smoke run shares small CPUs; numbers from it mean nothing anyway
    started_at = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        work = args.work or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gpu_check-")))
        work.mkdir(parents=True, exist_ok=True)
        atomic_json(work / "config.json", asdict(cfg))
        result = {"script": "benchmarks/gpu_check.py", "mode": cfg.mode, "started": started_at,
                  "device_kind": cfg.device_kind, "environment": environment(cfg), "config": asdict(cfg),
                  "weights": "random init (no hub access on the GPU machine); throughput and memory do not depend "
                             "on the weights", "parts": {}}
        for name in part_names(cfg):
            left = cfg.budget - (time.perf_counter() - started)
            cap = min(cap_of(cfg, name), left)
            if name != "setup" and result["parts"]["setup"]["status"] != "ok":
                part = {"status": "skipped (setup failed)", "cap_s": cap, "seconds": 0.0, "results": {}}
            elif left < 5:
                part = {"status": f"skipped (budget of {cfg.budget:.0f} s spent)", "cap_s": cap, "seconds": 0.0,
                        "results": {}}
            else:
                print(f"[{time.perf_counter() - started:6.1f} s] {name} (cap {cap:.0f} s)", flush=True)
                part = run_part(cfg, work, name, cap)
            result["parts"][name] = part
    result["wall_seconds"] = round(time.perf_counter() - started, 1)
    result["throughput_rows"] = throughput_rows(cfg, result)
    result["table"] = str(table) if table is not None else None
    result["json"] = str(args.out / RESULT)
    atomic_json(args.out / RESULT, result)
    if result["throughput_rows"]:
        # beside the JSON as well, so that a run on a lent machine brings its rows back with its output folder
        append_rows(args.out / ROWS, result["throughput_rows"], fresh=True)
        if table is not None:
            append_rows(table, result["throughput_rows"])
    print_table(result)


if __name__ == "__main__":
    main()
