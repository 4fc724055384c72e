"""The one timing helper of the benchmark scripts (run as `python benchmarks/NAME.py`, so this folder is on
sys.path): wall-clock seconds of each of `repeats` calls."""

from __future__ import annotations

import time
from collections.abc import Callable


def timed(function: Callable[[], object], repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times
