"""`repro check`: every input the study needs is present, before any work."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from repro import layout
from repro.cli.common import ParamsOpt, _params, _write_json, out
from repro.errors import ReproError
from repro.inputs import output_file_option

app = typer.Typer()


@app.command()
def check(params: ParamsOpt = layout.PARAMS, out_file: Annotated[Path, typer.Option("--out", callback=output_file_option)] = layout.CHECK) -> None:
    """Check that every dataset and pretrained weight file the study needs is present, before any work."""
    from repro.check import missing_inputs

    p = _params(params)
    problems = missing_inputs(p, layout.RAW, layout.WEIGHTS_LOCK)
    if problems:
        raise ReproError(f"the {p.profile!r} study cannot start: {len(problems)} input(s) missing\n  "
                         + "\n  ".join(problems))
    _write_json(out_file, {"profile": p.profile, "datasets": list(p.prepare.datasets),
                           "models": list(p.finetune.models), "pretrained": p.finetune.pretrained})
    out.print(f"[green]ok[/]: {len(p.prepare.datasets)} dataset(s) and {len(p.finetune.models)} model(s) ready "
              f"for the {p.profile!r} study")
