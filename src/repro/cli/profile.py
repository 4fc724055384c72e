"""`repro profile ...`: switch the active study (params.yaml) between profiles, and show it."""

from __future__ import annotations

from typing import Annotated

import typer

from repro import layout
from repro.cli.common import ParamsOpt, _params, out

app = typer.Typer(help="Switch the active study (params.yaml) between profiles.", no_args_is_help=True)


@app.command("use")
def profile_use(name: Annotated[str, typer.Argument(help="smoke or paper.")],
                params: ParamsOpt = layout.PARAMS) -> None:
    """Make profiles/NAME.yaml the active study (copies it to params.yaml after validating it)."""
    from repro.config import PROFILES, load_params
    from repro.errors import UsageError
    from repro.splits import atomic_write

    if name not in PROFILES:
        raise UsageError(f"unknown profile {name!r}; valid: {', '.join(PROFILES)}")
    source = layout.PROFILES / f"{name}.yaml"
    load_params(source)  # never install a broken study
    atomic_write(params, source.read_bytes())
    out.print(f"[green]{params}[/] is now the {name!r} study; run `dvc repro`")


@app.command("show")
def profile_show(params: ParamsOpt = layout.PARAMS) -> None:
    """Print the active profile and its study size."""
    p = _params(params)
    f = p.finetune
    out.print(f"{p.profile}: {len(f.models)} models x {len(f.datasets)} datasets x {len(f.lrs) * len(f.wds)} "
              f"configs x {f.epochs} epochs (pretrained: {f.pretrained})")

