"""The progress bars of the long verbs (rich, drawn on the console given, stderr in `repro`).

Each is a context manager yielding the plain callbacks the library functions take (`on_epoch`, `on_cache`,
`on_done`, `on_unpack`, a download's `advance(n, total)`), so the library that does the work never imports rich and
the verbs in repro.cli only wire one to the other. Download bars that appear only once bytes flow are
repro.download.rich_progress_factory.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import NamedTuple

from rich.console import Console
from rich.progress import (BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn, TransferSpeedColumn)

Advance = Callable[[int, "int | None"], None]


@contextlib.contextmanager
def fetch_bars(console: Console) -> Iterator[tuple[Callable[[str], Advance], Callable[[str, int, int], None]]]:
    """A dataset fetch's bars: `bar(description)` per download (repro.download.rich_progress_factory) and
    `on_unpack(file, done, total)`, one bar per archive being unpacked."""
    from repro.download import rich_progress_factory

    with rich_progress_factory(console) as bar, Progress(TextColumn("{task.description}"), BarColumn(),
                                                         MofNCompleteColumn(), console=console, transient=True) as up:
        tasks: dict[str, int] = {}

        def on_unpack(file: str, done: int, total: int) -> None:
            if file not in tasks:
                tasks[file] = up.add_task(f"unpacking {file}", total=total)
            up.update(tasks[file], completed=done)

        yield bar, on_unpack


@contextlib.contextmanager
def download_bars(console: Console) -> Iterator[Callable[[str], contextlib.AbstractContextManager[Advance]]]:
    """Yields `track(description)`: a context manager whose bar shows one download (size unknown until the first
    bytes) and is removed when the download ends, either way."""
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  TimeRemainingColumn(), console=console, transient=True) as progress:

        @contextlib.contextmanager
        def track(description: str) -> Iterator[Advance]:
            task = progress.add_task(description, total=None)

            def advance(n: int, total: int | None) -> None:
                progress.update(task, advance=n, total=total)

            try:
                yield advance
            finally:
                progress.remove_task(task)

        yield track


class FinetuneBars(NamedTuple):
    on_epoch: Callable[[int, int, dict], None]
    on_cache: Callable[[int, int], None]


@contextlib.contextmanager
def finetune_bars(console: Console, description: str, grid: int, epochs: int, *, disable: bool = False
                  ) -> Iterator[FinetuneBars]:
    """One fine-tune's bars: `on_epoch(config, epoch, record)` (grid x epochs steps, the last selection score
    beside it) and `on_cache(done, total)` (the decoded-image cache, shown only while it is being built).
    The bar is filled when the block ends without an error (a skipped or resumed run jumps to the end)."""
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[last]}"), console=console, disable=disable) as progress:
        task = progress.add_task(description, total=grid * epochs, last="")

        def on_epoch(config: int, epoch: int, record: dict) -> None:
            progress.update(task, completed=config * epochs + epoch,
                            last=f"config {config + 1}/{grid} epoch {epoch}: select {record['select']:.3f}")

        cache_task = progress.add_task("decoding images once into the cache", total=None, last="",
                                       visible=False)

        def on_cache(done: int, total: int) -> None:
            progress.update(cache_task, completed=done, total=total, visible=done < total)

        yield FinetuneBars(on_epoch, on_cache)
        progress.update(task, completed=grid * epochs)


@contextlib.contextmanager
def runs_bar(console: Console, description: str, total: int) -> Iterator[Callable[[dict], None]]:
    """A sweep's bar: yields `on_done(result)`, one step per finished run, its status and run shown beside."""
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[last]}"), console=console) as progress:
        task = progress.add_task(description, total=total, last="")

        def on_done(result: dict) -> None:
            progress.update(task, advance=1, last=f"{result['status']}: {result['model']} on {result['dataset']}")

        yield on_done


class Steps:
    """A transient bar over a known number of items: `start(label)` names the item in hand, `done()` counts it."""

    def __init__(self, progress: Progress, task) -> None:
        self._progress, self._task = progress, task

    def start(self, label: str) -> None:
        self._progress.update(self._task, run=label)

    def done(self) -> None:
        self._progress.advance(self._task)


@contextlib.contextmanager
def steps_bar(console: Console, description: str, total: int) -> Iterator[Steps]:
    with Progress(TextColumn(description), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[run]}"), console=console, transient=True) as progress:
        yield Steps(progress, progress.add_task(description, total=total, run=""))
