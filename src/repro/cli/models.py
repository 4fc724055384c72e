"""`repro models ...`: the model registry, and the pretrained weights' download and check against the lock."""

from __future__ import annotations

import json
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from repro import layout
from repro.cli.common import err, out
from repro.errors import ReproError

app = typer.Typer(help="The model registry: pinned checkpoints with their ImageNet top-1.", no_args_is_help=True)


class Format(str, Enum):
    table = "table"
    json = "json"
    csv = "csv"


LockOpt = Annotated[Path, typer.Option("--lock", help="Weights lock file (sha256 pins).")]
WeightsDirOpt = Annotated[Path | None, typer.Option(
    "--weights-dir",
    help="Folder of weight files (default: torch hub's cache under TORCH_HOME, or HF_HOME/repro-weights).")]
ModelArg = Annotated[str, typer.Argument(help="Model name (see `repro models list`) or 'all'.")]


def _model_specs(name: str) -> list:
    from repro.models import MODELS

    return MODELS.values() if name == "all" else [MODELS[name]]


@app.command("list")
def models_list(fmt: Annotated[Format, typer.Option("--format", help="Output format.")] = Format.table,
                lock: LockOpt = layout.WEIGHTS_LOCK) -> None:
    """List the registered models with their pinned identity, ImageNet top-1 and the lock's sha256."""
    import dataclasses

    from repro.models import MODELS
    from repro.weights import read_lock

    pins = read_lock(lock) if lock.is_file() else {}
    rows = []
    for s in MODELS.values():
        pin = pins.get(s.weights_key)
        rows.append({"name": s.name, **dataclasses.asdict(s), "weights_key": s.weights_key,
                     "sha256": pin.sha256 if pin else None, "revision": pin.revision if pin else None})
    if fmt is Format.json:
        print(json.dumps(rows, indent=2))
    elif fmt is Format.csv:
        import csv

        writer = csv.DictWriter(sys.stdout, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    else:
        from rich.table import Table

        table = Table(title=f"{len(rows)} models")
        for column in ("name", "paper name", "top-1 %", "top-1 source", "input", "params (M)", "sha256"):
            table.add_column(column, justify="right" if column in ("top-1 %", "input", "params (M)") else "left")
        for s, row in zip(MODELS.values(), rows):
            table.add_row(s.name, s.display, "-" if s.top1 is None else f"{s.top1:.2f}", s.top1_source, str(s.input_size),
                          f"{s.num_params / 1e6:.2f}", (row["sha256"] or "not pinned yet")[:16])
        out.print(table)


@app.command("fetch")
def models_fetch(name: ModelArg, weights_dir: WeightsDirOpt = None, lock: LockOpt = layout.WEIGHTS_LOCK) -> None:
    """Download pretrained weights, verify them against the lock (recording the sha256 on first download)."""
    from repro.progress import download_bars
    from repro.weights import fetch, unique_weights

    failures = []
    with download_bars(err) as track:
        for spec in unique_weights(_model_specs(name)):
            try:
                with track(spec.weights_key) as advance:
                    result = fetch(spec, lock, weights_dir, advance)
            except ReproError as error:
                if name != "all":
                    raise
                failures.append(str(error))
                continue
            out.print(f"[green]{result.status}[/] {spec.weights_key}: {result.path} "
                      f"(sha256 {result.sha256[:16]}, {result.size} bytes)", highlight=False)
    if failures:
        raise ReproError(f"{len(failures)} weight file(s) not fetched\n  " + "\n  ".join(failures))


@app.command("verify")
def models_verify(name: Annotated[str, typer.Argument(help="Model name or 'all'.")] = "all",
                  weights_dir: WeightsDirOpt = None, lock: LockOpt = layout.WEIGHTS_LOCK) -> None:
    """Re-hash cached weight files against the lock and list every problem (exit 1 if any)."""
    from repro.weights import verify as verify_weights

    rows, problems = verify_weights(_model_specs(name), lock, weights_dir, missing_is_problem=name != "all")
    style = {"ok": "green", "mismatch": "red", "not pinned": "yellow"}
    for spec, status, detail in rows:
        out.print(f"[{style.get(status, 'dim')}]{status}[/] {spec.weights_key}: {detail}", highlight=False)
    if problems:
        raise ReproError(f"{len(problems)} weight file problem(s)\n  " + "\n  ".join(problems))
    cached = sum(1 for _, status, _ in rows if status == "ok")
    out.print(f"[green]ok[/]: {cached} cached weight file(s) match {lock}")
