"""A fine-tune's saved state: the `StateStore` folder that `repro.train.run_grid` writes after every epoch and resumes
from, the RNG and scheduler states it holds, the run identity a saved state must match, and the clean-up of what a
kill left behind. Split from repro.train so that the training loop and its on-disk state read apart.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import json
import random
import shutil
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from repro.errors import ReproError
from repro.splits import atomic_write

# Saved state. `progress.pt` (torch.save, read back with weights_only=True: tensors, numbers, strings, lists and
# dicts only) holds the finished configs' curves and the running config's model, optimizer, scheduler and RNG
# states; the best weights live in separate safetensors files named by (config, epoch), written only when they
# change, so an epoch does not rewrite them. Every file is written to a temp name and renamed; a file that the last
# progress.pt does not name is left over from a kill and is deleted on open.

PROGRESS = "progress.pt"
LOCK = "lock"


class StateStore:
    """One run's state folder. Holds an exclusive lock while open, so two processes never run the same run.

    `write=False` (the other ranks of a DDP run, whose rank 0 holds the lock and writes): reads the saved state,
    writes and deletes nothing."""

    def __init__(self, folder: Path, *, write: bool = True) -> None:
        self.folder = Path(folder)
        self.write = write
        self._lock = None

    def __enter__(self) -> StateStore:
        self.folder.mkdir(parents=True, exist_ok=True)
        if not self.write:
            return self
        self._lock = open(self.folder / LOCK, "w")
        try:
            fcntl.flock(self._lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock.close()
            raise ReproError(f"{self.folder}: another process is running this fine-tune (it holds {LOCK}); "
                             "wait for it or stop it") from None
        return self

    def __exit__(self, *exc) -> None:
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    def load(self) -> dict | None:
        path = self.folder / PROGRESS
        if not path.is_file():
            self.tidy(set())
            return None
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a corrupt file cannot come from an atomic rename; say so rather than guess
            raise ReproError(f"{path}: unreadable saved state ({exc.__class__.__name__}); delete {self.folder} "
                             "to start this run over") from None
        self.tidy(set(state.get("files", [])))
        return state

    def save(self, state: dict) -> None:
        if not self.write:
            return
        buffer = io.BytesIO()
        torch.save(state, buffer)
        atomic_write(self.folder / PROGRESS, buffer.getvalue())
        self.tidy(set(state.get("files", [])))

    def save_best(self, name: str, weights: Mapping[str, torch.Tensor], scores: np.ndarray) -> None:
        from safetensors.torch import save

        if not self.write:
            return
        tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in weights.items()}
        tensors["report_scores"] = torch.from_numpy(np.ascontiguousarray(scores))
        atomic_write(self.folder / name, save(tensors))

    def load_best(self, name: str) -> tuple[dict[str, torch.Tensor], np.ndarray]:
        from safetensors.torch import load_file

        tensors = load_file(self.folder / name)
        scores = tensors.pop("report_scores").numpy()
        return {k.removeprefix("model."): v for k, v in tensors.items()}, scores

    def tidy(self, keep: set[str]) -> None:
        """Delete what a kill left behind: temp files and best-weight files no saved progress names."""
        if not self.write:
            return
        for path in self.folder.iterdir():
            if path.name in (PROGRESS, LOCK) or path.name in keep:
                continue
            path.unlink(missing_ok=True)

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def rng_state(loader_generator: torch.Generator) -> dict:
    np_state = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "loader": loader_generator.get_state(),
             "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *map(float, np_state[2:])],
             "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, loader_generator: torch.Generator) -> None:
    torch.set_rng_state(state["torch"])
    loader_generator.set_state(state["loader"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), cached))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def scheduler_state(scheduler) -> dict:
    # MultiStepLR keeps its milestones in a Counter, which a weights-only load refuses; they come from the protocol.
    return {k: v for k, v in scheduler.state_dict().items() if k != "milestones"}


def fingerprint(document: Mapping) -> str:
    """A stable text of the resolved run config; a saved state made under another config is not resumed."""
    return json.dumps(document, sort_keys=True, default=str)


def cleanup_temp_files(folder: Path) -> None:
    """Remove temp files an interrupted atomic write left in `folder` (they start with '.' and hold '.tmp-')."""
    with contextlib.suppress(FileNotFoundError):
        for path in Path(folder).iterdir():
            if path.name.startswith(".") and ".tmp-" in path.name and path.is_file():
                path.unlink(missing_ok=True)
