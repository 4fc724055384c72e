"""What every verb module of `repro` shares: the two consoles, the --params option, reading params, writing JSON.

Nothing here imports torch, pandas or matplotlib: `repro --help` loads every verb module.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from repro import jsonfile, layout

# Rich folds tables at 80 columns when output is not a terminal (dvc logs, CI); 120 keeps them readable there.
_WIDTH = None if sys.stdout.isatty() or "COLUMNS" in os.environ else 120
out = Console(width=_WIDTH)
err = Console(stderr=True, width=_WIDTH)

ParamsOpt = Annotated[Path, typer.Option("--params", help="Parameters file of the study.")]


def _register_own() -> None:
    """Make the user's own datasets (data/splits/NAME.spec.json, repro.datasets.own) known to every verb."""
    from repro.datasets.own import register_saved

    register_saved(layout.SPLITS)


def _params(path: Path):
    from repro.config import load_params

    _register_own()
    return load_params(path)


def _write_json(path: Path, document: dict) -> None:
    from repro.splits import atomic_write

    atomic_write(path, jsonfile.dumps(document))
