"""`verify_dataset`: every problem of a dataset's raw copy, whatever kind of dataset it is (a published format, the
embedded digits, a user's own folder or CSV). It sits above the format modules and repro.datasets.own, which both
build on repro.datasets.raw, so none of them imports another in a circle. Exercised by `repro data verify NAME`.
"""

from __future__ import annotations

from pathlib import Path

from repro.datasets.raw import format_module
from repro.errors import ReproError


def verify_dataset(name: str, raw_dir: Path, *, decode: bool = True, counts: bool = True) -> list[str]:
    """Every problem of the raw copy of dataset `name` (empty when all is well)."""
    from repro.datasets import DATASETS

    raw_dir = Path(raw_dir)
    if DATASETS[name].root:  # a user's own data: its recorded folder or CSV
        from repro.datasets import own

        kind, source = own.parse_source(DATASETS[name].source)
        found = own.scan(kind, source, decode=decode)
        return found.problems + [problem for _, problem in found.skippable]
    if DATASETS[name].embedded:
        from repro.datasets import embedded

        try:
            embedded.verified_digits(raw_dir)
        except ReproError as error:
            return [str(error)]
        return []
    if not raw_dir.is_dir():
        return [f"{raw_dir}: missing raw directory; {DATASETS[name].fetch_hint}"]
    return format_module(name).verify(raw_dir, decode=decode, counts=counts)
