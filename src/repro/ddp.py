"""One fine-tune across several processes (DistributedDataParallel), as `repro finetune --ddp N` runs it.

`repro finetune --ddp N` starts itself N times under torchrun (`python -m torch.distributed.run --standalone`);
each process reads its rank from the environment torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK), joins one process
group (NCCL on CUDA, one GPU per process; gloo on CPU) and runs the same grid. What stays as in one process:
- the global batch: every epoch all ranks draw the same permutation from the same seeded generator, cut it into
  batches of `batch_size`, and each rank takes its contiguous share of each batch (`RankBatches`); a last batch
  smaller than the number of ranks is dropped (at most N - 1 images an epoch);
- the gradient: each rank's mean loss is weighted by its share of the batch, so DDP's average over ranks is the
  gradient of the whole batch's mean loss;
- evaluation: each rank predicts every N-th image and the scores are gathered in dataset order
  (`gather_rows`), so every rank selects the same epoch and config;
- resume: rank 0 alone writes the saved state, which holds every rank's RNG states; each rank resumes its own.
What differs: BatchNorm normalizes over each rank's share of the batch (the authors' nn.DataParallel did the same
per GPU; PAPER.md section 4), and augmentation draws come from per-rank streams, so a DDP run is reproducible
against itself (same N), not bit-identical to a one-process run. The world size is part of a run's identity.
Exercised by `repro finetune --model M --dataset D --ddp N`.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta

import numpy as np

from repro.errors import ReproError

# collectives wait this long for the slowest rank (a decoded-image cache build on rank 0 can take a while)
TIMEOUT = timedelta(hours=6)


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


SINGLE = Dist()


def from_env() -> Dist:
    """The rank of this process as torchrun set it; one process when WORLD_SIZE is unset or 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return SINGLE
    return Dist(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))


def current() -> Dist:
    """This process's place in the running process group (SINGLE when there is none)."""
    import torch.distributed as td

    if not (td.is_available() and td.is_initialized()):
        return SINGLE
    return Dist(td.get_rank(), td.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


@contextlib.contextmanager
def process_group(device: str) -> Iterator[Dist]:
    """Join the process group torchrun set up (nothing when not under torchrun); left on exit."""
    import torch
    import torch.distributed as td

    dist = from_env()
    if not dist.active:
        yield dist
        return
    cuda = device in ("cuda", "auto") and torch.cuda.is_available() or device.startswith("cuda")
    if cuda:
        torch.cuda.set_device(dist.local_rank)
    td.init_process_group("nccl" if cuda else "gloo", timeout=TIMEOUT)
    try:
        yield dist
    finally:
        td.destroy_process_group()


def barrier() -> None:
    import torch.distributed as td

    td.barrier()


class RankBatches:
    """A batch sampler: each epoch one permutation (the same on every rank), cut into global batches of
    `batch_size`; yields this rank's contiguous share of each (see the module docstring)."""

    def __init__(self, size: int, batch_size: int, generator, dist: Dist) -> None:
        self.size, self.batch_size, self.generator, self.dist = size, batch_size, generator, dist

    def global_batches(self) -> list[list[int]]:
        import torch

        order = torch.randperm(self.size, generator=self.generator).tolist()
        batches = [order[i:i + self.batch_size] for i in range(0, self.size, self.batch_size)]
        return [b for b in batches if len(b) >= self.dist.world]

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.global_batches():
            yield share(batch, self.dist)

    def __len__(self) -> int:
        full, rest = divmod(self.size, self.batch_size)
        return full + (rest >= self.dist.world)


def share(batch: Sequence[int], dist: Dist) -> list[int]:
    """This rank's contiguous part of `batch`; sizes differ by at most one, lower ranks take the larger parts."""
    base, extra = divmod(len(batch), dist.world)
    start = dist.rank * base + min(dist.rank, extra)
    return list(batch[start:start + base + (dist.rank < extra)])


def shard(size: int, dist: Dist) -> range:
    """The dataset positions this rank evaluates: every world-th one, from its rank."""
    return range(dist.rank, size, dist.world)


def gather_rows(part: np.ndarray, size: int, dist: Dist) -> np.ndarray:
    """The rows every rank computed for its `shard`, put back in dataset order (on every rank)."""
    import torch
    import torch.distributed as td

    rows = math.ceil(size / dist.world)
    # NCCL gathers GPU tensors only; gloo CPU ones
    device = torch.device("cuda", torch.cuda.current_device()) if td.get_backend() == "nccl" else torch.device("cpu")
    padded = torch.zeros((rows, *part.shape[1:]), dtype=torch.from_numpy(part[:0]).dtype, device=device)
    padded[:len(part)] = torch.from_numpy(part).to(device)
    pieces = [torch.empty_like(padded) for _ in range(dist.world)]
    td.all_gather(pieces, padded)
    out = np.empty((size, *part.shape[1:]), dtype=part.dtype)
    for rank, piece in enumerate(pieces):
        count = len(shard(size, Dist(rank, dist.world)))
        out[rank::dist.world] = piece[:count].cpu().numpy()
    return out


def all_objects(obj) -> list:
    """`obj` of every rank, in rank order (our own processes' RNG states; nothing read from a file)."""
    import torch.distributed as td

    gathered: list = [None] * td.get_world_size()
    td.all_gather_object(gathered, obj)
    return gathered


def torchrun_command(nproc: int, args: Sequence[str], program: Sequence[str] = ("-m", "repro")) -> list[str]:
    """The command that runs `repro <args>` (or another `program`) in `nproc` processes on this node."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            *program, *args]


def spawn(nproc: int, args: Sequence[str], what: str) -> bool:
    """Start `repro <args>` in `nproc` processes of this node under torchrun and wait for them, when `nproc` > 1
    and this process is not already one of them; True when it did (the caller's work is then done). Their failure
    is one ReproError naming `what`; the same command resumes."""
    if nproc <= 1 or from_env().active:
        return False
    import subprocess

    code = subprocess.run(torchrun_command(nproc, args)).returncode
    if code:
        raise ReproError(f"the {nproc} DDP processes of {what} ended with exit status {code} (see their output "
                         "above); run the same command again to resume")
    return True
