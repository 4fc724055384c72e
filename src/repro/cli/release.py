"""`repro release` and `repro eval`: export the study's best checkpoints with their manifest, and verify them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from repro import layout
from repro.cli.common import ParamsOpt, _params, _write_json, err, out
from repro.errors import ReproError
from repro.inputs import output_file_option, output_folder_option

app = typer.Typer()
RELEASE_MANIFEST = Path("paper/checkpoints.yaml")
RELEASED = Path("paper/checkpoints")
EVAL_REPORT = layout.RESULTS / "eval.json"
ManifestOpt = Annotated[Path, typer.Option("--manifest", help="Release manifest (sha256 pins, recorded metrics).")]


@app.command("release")
def release_checkpoints(
    params: ParamsOpt = layout.PARAMS,
    manifest: ManifestOpt = RELEASE_MANIFEST,
    out_dir: Annotated[Path, typer.Option("--out", help="Folder of the released files.", callback=output_folder_option)] = RELEASED,
    base_url: Annotated[str | None, typer.Option(
        help="https:// address the released folder will be uploaded to; added as a second URL per file.")] = None,
    tolerance: Annotated[float | None, typer.Option(
        help="Tolerance for metrics other than accuracy (accuracy's is measured from the predictions).")] = None,
    archive: Annotated[Path | None, typer.Option(
        help="Also write the release as one .zip (the manifest and the files at their relative URLs), for an "
             "archive site such as Zenodo; byte-identical when rebuilt.")] = None,
    model: Annotated[list[str] | None, typer.Option(
        help="Release only this model's runs (repeatable) [default: every model of finetune.models].")] = None,
) -> None:
    """Export the study's best checkpoints (safetensors + metadata) and write the manifest that pins them."""
    from rich.table import Table

    from repro.models import MODELS
    from repro.release import RunRef, check_archive_target, release, write_archive

    if archive is not None:
        check_archive_target(archive, out_dir, manifest)
    p = _params(params)
    unknown = [m for m in model or [] if m not in p.finetune.models]
    if unknown:
        from repro.errors import UsageError

        raise UsageError(f"--model {unknown[0]}: not one of the study's models (finetune.models in {params})")
    refs = [RunRef(layout.run_dir(MODELS[m].path, d), layout.split_file(d), layout.data_dir(d))
            for d in p.finetune.datasets for m in p.finetune.models if not model or m in model]
    entries = release(refs, out_dir, manifest, base_url=base_url, tolerance=tolerance)
    table = Table(title=f"released {len(entries)} checkpoint(s) -> {manifest}")
    for column in ("model", "dataset", "metric", "value", "tolerance", "MB", "sha256"):
        table.add_column(column, justify="right" if column in ("value", "tolerance", "MB") else "left")
    for e in entries:
        table.add_row(e.model, e.dataset, e.metric, f"{e.value:.4f}", f"{e.tolerance:.4f}", f"{e.size / 1e6:.1f}",
                      e.sha256[:16])
    out.print(table)
    if archive is not None:
        members = write_archive(entries, manifest, archive)
        out.print(f"archive: {archive} ({len(members)} members, {archive.stat().st_size / 1e6:.1f} MB)",
                  highlight=False)


@app.command("eval")
def eval_checkpoints(
    model: Annotated[str | None, typer.Option(help="Model name of the checkpoint.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Dataset it was fine-tuned on.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Verify every checkpoint in the manifest.")] = False,
    checkpoint: Annotated[str | None, typer.Option(
        help="A local path or https:// / file:// URL instead of the manifest's URLs (still checked against its "
             "sha256).")] = None,
    archive: Annotated[str | None, typer.Option(
        help="A release archive (zip or tar; local path or https:// / file:// URL) to take the files from, at "
             "their relative URLs; each is still checked against --manifest's sha256 and size.")] = None,
    manifest: ManifestOpt = RELEASE_MANIFEST,
    allow_pickle: Annotated[bool, typer.Option(
        "--allow-pickle", help="Accept .pt/.pth/.bin after the sha256 check, loaded only with "
                               "torch.load(weights_only=True).")] = False,
    cache_dir: Annotated[Path | None, typer.Option(
        help="Where downloaded checkpoints go \\[default: $XDG_CACHE_HOME/repro/checkpoints].")] = None,
    device: Annotated[str, typer.Option(help="Device to evaluate on; the tolerances assume cpu.")] = "cpu",
    json_out: Annotated[Path, typer.Option("--json", help="JSON report to write.", callback=output_file_option)] = EVAL_REPORT,
    in_study: Annotated[bool, typer.Option(
        "--in-study", help="With --all: only the checkpoints of datasets in the active study (params.yaml's "
                           "finetune.datasets); the others are listed as skipped. The dvc `eval` stage uses it.")
    ] = False,
    params: ParamsOpt = layout.PARAMS,
) -> None:
    """Verify released checkpoints: sha256 first, safe load, re-evaluate on the pinned split, compare."""
    from rich.table import Table

    from repro.datasets import DATASETS
    from repro.download import rich_progress_factory
    from repro.errors import UsageError
    from repro.evaluate import default_cache, find_entry, read_manifest, report, verify_release
    from repro.models import MODELS

    if not ((model is None and dataset is None) if all_ else (model is not None and dataset is not None)):
        raise UsageError("give either --all, or both --model and --dataset")
    if all_ and checkpoint is not None:
        raise UsageError("--checkpoint names one file: use it with --model and --dataset, not --all")
    if archive is not None and checkpoint is not None:
        raise UsageError("--checkpoint and --archive both say where the file is: give one of them")
    if in_study and not all_:
        raise UsageError("--in-study filters --all; give --all with it")
    entries, skipped = read_manifest(manifest), []
    if in_study:
        datasets = set(_params(params).finetune.datasets)
        skipped = [e for e in entries if e.dataset not in datasets]
        entries = [e for e in entries if e.dataset in datasets]
        if skipped:
            out.print(f"skipped {len(skipped)} checkpoint(s) of datasets outside the active study: "
                      + ", ".join(sorted({e.dataset for e in skipped})), highlight=False)
    if not all_:
        MODELS[model]  # unknown names fail here with the list of valid ones
        DATASETS[dataset]
        entries = [find_entry(entries, model, dataset, manifest)]
    cache = cache_dir or default_cache()
    with rich_progress_factory(err) as progress:
        verdicts = verify_release(entries, manifest, archive=archive, cache_dir=cache, progress=progress,
                                  data_dir=layout.data_dir, splits_dir=layout.SPLITS, checkpoint=checkpoint,
                                  allow_pickle=allow_pickle, device=device)
    document = report(verdicts, manifest, skipped=[f"{e.model} on {e.dataset}" for e in skipped])
    _write_json(json_out, document)
    table = Table(title=f"released checkpoints vs their recorded metric ({manifest})")
    for column in ("model", "dataset", "split", "metric", "recorded", "ours", "diff", "tol.", "verdict"):
        table.add_column(column, justify="right" if column in ("recorded", "ours", "diff", "tol.") else "left")
    style = {"pass": "green", "fail": "red", "error": "red"}

    def number(x: float | None, sign: str = "") -> str:
        return "-" if x is None else f"{x:{sign}.4f}"

    for v in verdicts:
        table.add_row(v.model, v.dataset, v.split or "-", v.metric, number(v.recorded), number(v.value),
                      number(v.difference, "+"), number(v.tolerance), f"[{style[v.verdict]}]{v.verdict}[/]")
    out.print(table)
    counts = document["counts"]
    out.print(f"{len(verdicts)} checkpoint(s): {counts['pass']} pass, {counts['fail']} fail, {counts['error']} "
              f"refused or not evaluated -> {json_out}", highlight=False)
    bad = [v for v in verdicts if v.verdict != "pass"]
    if bad:
        lines = [f"{v.model} on {v.dataset}: " + (v.detail or f"{v.metric} {v.value:.4f} vs recorded "
                                                             f"{v.recorded:.4f}, beyond the {v.tolerance:.4f} "
                                                             "tolerance") for v in bad]
        raise ReproError(f"{len(bad)} checkpoint(s) did not verify\n  " + "\n  ".join(lines))
