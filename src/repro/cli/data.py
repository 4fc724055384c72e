"""`repro data ...`: fetch a dataset from its source, verify a local copy, prepare its pinned split."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from repro import layout
from repro.cli.common import ParamsOpt, _params, _register_own, err, out
from repro.errors import ReproError
from repro.inputs import output_folder_option

app = typer.Typer(help="Prepare datasets: verify raw data, write the pinned split files.", no_args_is_help=True)

CountsOpt = Annotated[bool, typer.Option(
    "--counts/--no-counts", help="Compare with the published counts (--no-counts for a deliberate subset).")]


@app.command("verify")
def data_verify(
    name: Annotated[str, typer.Argument(help="Dataset name, e.g. aptos.")],
    raw: Annotated[Path | None, typer.Option(help="Raw data folder \\[default: data/raw/NAME].")] = None,
    decode: Annotated[bool, typer.Option("--decode/--no-decode", help="Decode every image.")] = True,
    counts: CountsOpt = True,
) -> None:
    """Check a local copy of a dataset in its published layout; list every problem (exit 1 if any)."""
    from repro.datasets.raw import raise_problems
    from repro.datasets.verify import verify_dataset

    _register_own()
    raw_dir = raw or layout.RAW / name
    raise_problems(f"{name} in {raw_dir}", verify_dataset(name, raw_dir, decode=decode, counts=counts))
    out.print(f"[green]ok[/]: {name} in {raw_dir} matches its published layout", highlight=False)


@app.command("fetch")
def data_fetch(
    name: Annotated[str, typer.Argument(help="Dataset name (cct20, aptos, hpa, melanoma, cassava, eurosat) or all.")],
    force: Annotated[bool, typer.Option(help="Fetch again even if data/raw/NAME exists (replaced atomically).")]
    = False,
    keep_archives: Annotated[bool, typer.Option(
        "--keep-archives/--delete-archives", help="Keep the downloaded archives in data/downloads/NAME.")] = True,
    dvc: Annotated[bool, typer.Option(
        "--dvc/--no-dvc", help="Record the fetched folder in DVC (`dvc add data/raw/NAME` -> data/raw/NAME.dvc).")]
    = True,
) -> None:
    """Download a dataset from its original source, verify its checksums, unpack it atomically into data/raw/NAME."""
    import subprocess

    from repro.datasets import fetch as fetcher
    from repro.datasets.verify import verify_dataset
    from repro.progress import fetch_bars

    names = list(fetcher.SOURCES) if name == "all" else [name]
    if name != "all" and name not in fetcher.SOURCES:
        from repro.errors import UsageError

        raise UsageError(f"unknown dataset {name!r} for fetch; valid: {', '.join(fetcher.SOURCES)}, all")
    api = os.environ.get("REPRO_KAGGLE_API", fetcher.KAGGLE_API)  # a mirror, or the tests' local server
    failures = []
    for item in names:
        with fetch_bars(err) as (bar, on_unpack):
            try:
                result = fetcher.fetch(item, layout.RAW, layout.DOWNLOADS, layout.FETCH_LOCK, kaggle_api=api,
                                       force=force, keep_archives=keep_archives, bar=bar, on_unpack=on_unpack)
            except ReproError as error:
                if name != "all":
                    raise
                failures.append(f"{item}: {error}")
                continue
        for note in result.notes:
            err.print(f"[yellow]note[/] {note}", highlight=False, soft_wrap=True)
        if result.status == "present":
            continue
        for f in result.files:
            out.print(f"[green]{f['status']}[/] {item}: {f['file']} ({f['size']} bytes, sha256 {f['sha256'][:16]})",
                      highlight=False)
        problems = verify_dataset(item, result.raw_dir, decode=False)
        if problems:
            err.print(f"[yellow]{item}: {len(problems)} problem(s) in the unpacked layout[/] (first: {problems[0]}); "
                      f"run `repro data verify {item}`", highlight=False, soft_wrap=True)
        if dvc and Path(".dvc").is_dir():
            done = subprocess.run(["dvc", "add", str(result.raw_dir)], capture_output=True, text=True)
            if done.returncode != 0:
                err.print(f"[yellow]dvc add {result.raw_dir} failed[/]: {done.stderr.strip().splitlines()[-1:]}",
                          highlight=False, soft_wrap=True)
            else:
                out.print(f"recorded {result.raw_dir} in DVC: commit {result.raw_dir}.dvc and {layout.FETCH_LOCK}",
                          highlight=False)
        out.print(f"[green]fetched[/] {item} -> {result.raw_dir}", highlight=False)
    if failures:
        raise ReproError(f"{len(failures)} dataset(s) not fetched\n  " + "\n  ".join(failures))


@app.command("prepare")
def data_prepare(
    name: Annotated[str, typer.Argument(help="Dataset name (e.g. digits, aptos), or your own images: folder:PATH "
                                             "(one sub-folder per class) or csv:PATH (columns path,label).")],
    raw: Annotated[Path | None, typer.Option(help="Raw data folder [default: data/raw/NAME].")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Prepared folder [default: data/prepared/NAME].", callback=output_folder_option)]
    = None,
    split: Annotated[Path | None, typer.Option(help="Split file [default: data/splits/NAME.csv].")] = None,
    repin: Annotated[bool, typer.Option(help="Accept a split that differs from its pinned sha256.")] = False,
    counts: CountsOpt = True,
    skip_corrupt: Annotated[bool, typer.Option(
        "--skip-corrupt", help="Leave out rows whose image is missing or does not decode (own data: also "
                               "duplicate paths and empty labels), and write a report of them.")] = False,
    own_name: Annotated[str | None, typer.Option(
        "--name", help="Name of your own dataset [default: the folder's or CSV's name].")] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of your own data's 60/20/20 split [default: "
                                                  "prepare.seed in params].")] = None,
    size: Annotated[int, typer.Option(help="Model input size for your own data.")] = 224,
    params: ParamsOpt = layout.PARAMS,
) -> None:
    """Verify a dataset's raw data and write its pinned split file (id,label,split) and prepared folder."""
    from repro.datasets import DATASETS, own
    from repro.study import prepare

    p = _params(params)
    source = own.parse_source(name)
    if source is not None:
        kind, path = source
        info = own.prepare_own(kind, path, own_name, layout.SPLITS, layout.PINS,
                               p.prepare.seed if seed is None else seed, size, skip_corrupt=skip_corrupt,
                               repin=repin)
        name = info["dataset"]
    else:
        DATASETS[name]  # unknown names fail here with the list of valid ones
        info = prepare(name, raw or layout.RAW / name, out_dir or layout.PREPARED / name,
                       split or layout.split_file(name), layout.PINS, p.prepare.seed, repin=repin, counts=counts,
                       skip_corrupt=skip_corrupt)
    if info["skipped"]:
        from repro.splits import atomic_write

        report = (split or layout.split_file(name)).with_suffix(".skipped.txt")
        atomic_write(report, ("\n".join(info["skipped"]) + "\n").encode())
        err.print(f"[yellow]skipped[/] {len(info['skipped'])} row(s) (--skip-corrupt), listed in {report}:",
                  highlight=False)
        for line in info["skipped"][:20]:
            err.print(f"  {line}", highlight=False, soft_wrap=True)
        if len(info["skipped"]) > 20:
            err.print(f"  ... and {len(info['skipped']) - 20} more in {report}", highlight=False)
    sizes = ", ".join(f"{k} {v}" for k, v in sorted(info["splits"].items()))
    out.print(f"[green]prepared[/] {name}: {info['images']} images ({sizes}); split sha256 {info['sha256'][:16]}",
              highlight=False)
    if source is not None:
        out.print(f"{info['classes']} classes, seed {info['seed']}; spec {info['spec']}. Fine-tune with "
                  f"`repro finetune --model M --dataset {name}`", highlight=False)
