"""The `repro` command: thin verbs that parse arguments, call one library function and print with rich.

One module per verb group: check (`repro check`), study (`finetune`, `sweep`, `plan`), results (`collect`,
`analyze`, `figures`, `verify`, `report`), release (`release`, `eval`), and the sub-command groups data
(`repro data ...`), models (`repro models ...`) and profile (`repro profile ...`); what they share is in common.
Progress bars are repro.progress, torchrun spawning repro.ddp.

Heavy libraries (torch, pandas, matplotlib) are imported inside the verbs, so `repro --help` stays fast.
Every verb reads the study's parameters from params.yaml (`--params` to use another file).
"""

from __future__ import annotations

import sys

import typer

from repro.cli import check, data, models, profile, release, results, study
from repro.cli.common import err
from repro.errors import ReproError

app = typer.Typer(
    help="Reproduce 'Does progress on ImageNet transfer to real-world datasets?' (Fang, Kornblith, Schmidt).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
# Verbs in the order `repro --help` lists them, then the groups.
for verbs in (check.app, study.app, results.app, release.app):
    app.add_typer(verbs)
app.add_typer(data.app, name="data")
app.add_typer(models.app, name="models")
app.add_typer(profile.app, name="profile")


def main() -> None:
    try:
        app()
    except ReproError as error:
        err.print(f"[red]error:[/] {error}", highlight=False, soft_wrap=True)
        sys.exit(error.exit_code)
