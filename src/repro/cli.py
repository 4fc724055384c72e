"""The `repro` command: thin verbs that parse arguments, call one library function and print with rich.

Heavy libraries (torch, pandas, matplotlib) are imported inside the verbs, so `repro --help` stays fast.
Every verb reads the study's parameters from params.yaml (`--params` to use another file).
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from repro import jsonfile, layout
from repro.errors import ReproError
from repro.inputs import output_file_option, output_folder_option

app = typer.Typer(
    help="Reproduce 'Does progress on ImageNet transfer to real-world datasets?' (Fang, Kornblith, Schmidt).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
data_app = typer.Typer(help="Prepare datasets: verify raw data, write the pinned split files.", no_args_is_help=True)
models_app = typer.Typer(help="The model registry: pinned checkpoints with their ImageNet top-1.",
                         no_args_is_help=True)
profile_app = typer.Typer(help="Switch the active study (params.yaml) between profiles.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(models_app, name="models")
app.add_typer(profile_app, name="profile")

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


CountsOpt = Annotated[bool, typer.Option(
    "--counts/--no-counts", help="Compare with the published counts (--no-counts for a deliberate subset).")]


@data_app.command("verify")
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


@data_app.command("fetch")
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

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from repro.datasets import fetch as fetcher
    from repro.datasets.verify import verify_dataset
    from repro.download import rich_progress_factory

    names = list(fetcher.SOURCES) if name == "all" else [name]
    if name != "all" and name not in fetcher.SOURCES:
        from repro.errors import UsageError

        raise UsageError(f"unknown dataset {name!r} for fetch; valid: {', '.join(fetcher.SOURCES)}, all")
    api = os.environ.get("REPRO_KAGGLE_API", fetcher.KAGGLE_API)  # a mirror, or the tests' local server
    failures = []
    for item in names:
        with rich_progress_factory(err) as bar, Progress(TextColumn("{task.description}"), BarColumn(),
                                                         MofNCompleteColumn(), console=err, transient=True) as up:
            tasks: dict[str, int] = {}

            def on_unpack(file: str, done: int, total: int) -> None:
                if file not in tasks:
                    tasks[file] = up.add_task(f"unpacking {file}", total=total)
                up.update(tasks[file], completed=done)

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


@data_app.command("prepare")
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


@models_app.command("list")
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


@models_app.command("fetch")
def models_fetch(name: ModelArg, weights_dir: WeightsDirOpt = None, lock: LockOpt = layout.WEIGHTS_LOCK) -> None:
    """Download pretrained weights, verify them against the lock (recording the sha256 on first download)."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    from repro.weights import fetch, unique_weights

    failures = []
    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  TimeRemainingColumn(), console=err, transient=True) as progress:
        for spec in unique_weights(_model_specs(name)):
            task = progress.add_task(spec.weights_key, total=None)

            def advance(n: int, total: int | None, task=task) -> None:
                progress.update(task, advance=n, total=total)

            try:
                result = fetch(spec, lock, weights_dir, advance)
            except ReproError as error:
                if name != "all":
                    raise
                failures.append(str(error))
                continue
            finally:
                progress.remove_task(task)
            out.print(f"[green]{result.status}[/] {spec.weights_key}: {result.path} "
                      f"(sha256 {result.sha256[:16]}, {result.size} bytes)", highlight=False)
    if failures:
        raise ReproError(f"{len(failures)} weight file(s) not fetched\n  " + "\n  ".join(failures))


@models_app.command("verify")
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


@app.command()
def finetune(
    model: Annotated[str | None, typer.Option(help="Model name, see `repro models list`.")] = None,
    dataset: Annotated[str | None, typer.Option(help="Dataset name.")] = None,
    params: ParamsOpt = layout.PARAMS,
    out_dir: Annotated[Path | None, typer.Option("--out", help="Run folder [default: results/runs/MODEL/DATASET].", callback=output_folder_option)]
    = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the fully resolved plan (every protocol element, "
                                          "per model and dataset) and train nothing.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Retrain even if a finished run with the same config "
                                        "exists.")] = False,
    ddp_processes: Annotated[int, typer.Option(
        "--ddp", min=1, help="Train across N processes of this node with torchrun (DistributedDataParallel: one GPU "
                             "each on CUDA, gloo on CPU); see repro.ddp for what stays equal to one process.")] = 1,
) -> None:
    """Fine-tune one model on one dataset over the lr x wd grid; write run.json, predictions and weights.

    State is saved after every epoch beside the run folder (MODEL/DATASET.state/): after a kill, the same command
    continues where it stopped. A finished run with the same resolved config is skipped.
    """
    from repro.datasets import DATASETS
    from repro.errors import UsageError
    from repro.models import MODELS

    p = _params(params)  # first: it registers the study's own datasets (repro.datasets.own)
    for name, registry in ((model, MODELS), (dataset, DATASETS)):
        if name is not None:
            registry[name]  # unknown names fail here with the list of valid ones
    if dry_run:
        from repro.plan import resolve_plan

        _print_plan(resolve_plan(p, [model] if model else None, [dataset] if dataset else None))
        return
    if model is None or dataset is None:
        raise UsageError("finetune needs --model and --dataset (or --dry-run to see the plan of the whole study)")
    from repro import ddp

    if ddp_processes > 1 and not ddp.from_env().active:  # start this command N times under torchrun
        import subprocess

        args = ["finetune", "--model", model, "--dataset", dataset, "--params", str(params)]
        args += (["--out", str(out_dir)] if out_dir else []) + (["--force"] if force else [])
        code = subprocess.run(ddp.torchrun_command(ddp_processes, args)).returncode
        if code:
            raise ReproError(f"the {ddp_processes} DDP processes of {model} on {dataset} ended with exit status "
                             f"{code} (see their output above); run the same command again to resume")
        return
    spec = MODELS[model]
    fp = p.finetune
    grid = len(fp.lrs) * len(fp.wds)
    run_dir = out_dir or layout.run_dir(spec.path, dataset)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from repro.study import finetune_to_dir

    with ddp.process_group(fp.device) as dist, \
            Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                     TextColumn("{task.fields[last]}"), console=err, disable=not dist.main) as progress:
        task = progress.add_task(f"{spec.name} on {dataset}", total=grid * fp.epochs, last="")

        def on_epoch(config: int, epoch: int, record: dict) -> None:
            progress.update(task, completed=config * fp.epochs + epoch,
                            last=f"config {config + 1}/{grid} epoch {epoch}: select {record['select']:.3f}")

        cache_task = progress.add_task("decoding images once into the cache", total=None, last="",
                                       visible=False)

        def on_cache(done: int, total: int) -> None:
            progress.update(cache_task, completed=done, total=total, visible=done < total)

        status, record = finetune_to_dir(model, dataset, fp, layout.data_dir(dataset), layout.split_file(dataset),
                                         layout.WEIGHTS_LOCK, run_dir, on_epoch, force=force,
                                         cache_root=layout.CACHE, on_cache=on_cache)
        progress.update(task, completed=grid * fp.epochs)
    if not dist.main:
        return
    if status == "skipped":
        out.print(f"[green]skipped[/] {spec.name} on {dataset}: finished with the same config in {run_dir} "
                  "(--force to retrain)")
    elif record["status"] == "ok":
        c = record["chosen"]
        resumed = record.get("resumed_from")
        note = f" (resumed at config {resumed['config'] + 1}, epoch {resumed['epoch']})" if resumed else ""
        out.print(f"[green]done[/] {spec.name} on {dataset}: {record['metric']} {record['value']:.4f} "
                  f"(lr {c['lr']:g}, wd {c['wd']:g}, epoch {c['epoch']}){note} -> {run_dir}")
    else:
        out.print(f"[yellow]diverged[/] {spec.name} on {dataset}: every config had a non-finite loss -> {run_dir}")


def _print_plan(plan: dict) -> None:
    from rich.table import Table

    def cell(value) -> str:
        return value if isinstance(value, str) else json.dumps(value)

    table = Table(title=f"fine-tuning protocol ({plan['profile']} profile)", show_header=False)
    table.add_column("element")
    table.add_column("value", overflow="fold")
    for key, value in plan["protocol"].items():
        table.add_row(key, cell(value))
    out.print(table)
    # One column per dataset: the per-dataset elements read down, however many datasets there are.
    table = Table(title="per dataset")
    table.add_column("element")
    for row in plan["datasets"]:
        table.add_column(row["dataset"], overflow="fold")
    for key in list(plan["datasets"][0])[1:]:
        table.add_row(key, *(cell(row[key]) for row in plan["datasets"]))
    out.print(table)
    table = Table(title="per model")
    for column in plan["models"][0]:
        table.add_column(column, overflow="fold")
    for row in plan["models"]:
        table.add_row(*(cell(v) for v in row.values()))
    out.print(table)
    from repro.plan import fidelity_table

    out.print(fidelity_table(plan))
    out.print(f"{plan['runs']} runs x {plan['grid']} configs x {plan['protocol']['epochs']} epochs = "
              f"{plan['fine_tunes']} fine-tunes")


class Launcher(str, Enum):
    local = "local"
    slurm = "slurm"


@app.command()
def sweep(
    model: Annotated[list[str] | None, typer.Option(help="Only this model (repeatable) [default: params].")] = None,
    dataset: Annotated[list[str] | None, typer.Option(help="Only this dataset (repeatable) [default: params].")]
    = None,
    params: ParamsOpt = layout.PARAMS,
    launcher: Annotated[Launcher, typer.Option(help="local: a process pool here; slurm: submitit job arrays.")]
    = Launcher.local,
    devices: Annotated[str, typer.Option(help="local: 'auto' (every GPU, else CPU), or e.g. 'cuda:0,cuda:1'.")]
    = "auto",
    workers: Annotated[int | None, typer.Option(min=1, help="local: worker count (CPU, or fewer GPUs).")] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="local: torch threads per worker [default: "
                                                "CPU cores / workers].")] = None,
    partition: Annotated[str | None, typer.Option(help="slurm: partition [default: the cluster's].")] = None,
    time_min: Annotated[int, typer.Option(min=1, help="slurm: time limit per task, minutes; a task that runs out "
                                          "is requeued and resumes.")] = 24 * 60,
    gpus_per_task: Annotated[int, typer.Option(min=0, help="slurm: GPUs per task (0: CPU).")] = 1,
    cpus_per_task: Annotated[int, typer.Option(min=1, help="slurm: CPUs per task (torch threads).")] = 8,
    mem_gb: Annotated[int | None, typer.Option(min=1, help="slurm: memory per task, GB.")] = None,
    array_parallelism: Annotated[int, typer.Option(min=1, help="slurm: tasks running at once.")] = 32,
    slurm_folder: Annotated[Path | None, typer.Option(help="slurm: submitit folder [default: "
                                                      "results/slurm/<time>].")] = None,
    dvc_commit: Annotated[bool | None, typer.Option("--dvc-commit/--no-dvc-commit", help="Record finished runs in "
                          "dvc.lock so `dvc repro` treats them as done [default: when dvc.yaml is here].")] = None,
) -> None:
    """Run many (model, dataset) fine-tunes into results/runs/, locally or on SLURM; resumable, skips finished."""
    import time

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from repro import launch
    from repro.datasets import DATASETS
    from repro.models import MODELS

    p = _params(params)
    models = model or list(p.finetune.models)
    datasets = dataset or list(p.finetune.datasets)
    for name in models:
        MODELS[name]
    for name in datasets:
        DATASETS[name]
    local = None
    if launcher is Launcher.local:  # an unusable device is refused before any run folder or lock exists
        from repro.train import check_device

        check_device(p.finetune.device)
        local = launch.local_devices(devices, workers)
    root = Path.cwd().resolve()
    jobs = [launch.Job(m, d, str(root / layout.run_dir(MODELS[m].path, d)), str(root / layout.data_dir(d)),
                       str(root / layout.split_file(d)), str(root / layout.WEIGHTS_LOCK), str(root),
                       str(root / layout.CACHE))
            for m in models for d in datasets]
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[last]}"), console=err) as progress:
        task = progress.add_task(f"sweep ({launcher.value})", total=len(jobs), last="")

        def on_done(result: dict) -> None:
            progress.update(task, advance=1, last=f"{result['status']}: {result['model']} on {result['dataset']}")

        if launcher is Launcher.local:
            results = launch.run_local(jobs, p.finetune, local, threads, on_done)
        else:
            folder = slurm_folder or layout.RESULTS / "slurm" / time.strftime("%Y%m%d-%H%M%S")
            options = launch.SlurmOptions(folder=folder.resolve(), partition=partition, time_min=time_min,
                                          gpus_per_task=gpus_per_task, cpus_per_task=cpus_per_task, mem_gb=mem_gb,
                                          array_parallelism=array_parallelism)
            results = launch.run_slurm(jobs, p.finetune, options, on_done)
    from rich.table import Table

    table = Table(title=f"sweep: {len(jobs)} runs ({launcher.value})")
    for column in ("model", "dataset", "status", "metric", "value"):
        table.add_column(column)
    style = {"done": "green", "skipped": "cyan", "failed": "red"}
    for r in results:
        value = "-" if r.get("value") is None else f"{r['value']:.4f}"
        status = r["status"] + (f" ({r['run']})" if r.get("run") == "diverged" else "")
        table.add_row(r["model"], r["dataset"], f"[{style.get(r['status'], 'yellow')}]{status}[/]",
                      r.get("metric") or "-", value)
    out.print(table)
    finished = [job for job, r in zip(jobs, results) if r["status"] in ("done", "skipped")]
    if dvc_commit is None:
        dvc_commit = (root / "dvc.yaml").is_file() and params == layout.PARAMS
    if dvc_commit and finished:
        stages = launch.dvc_commit(root, finished)
        out.print(f"[green]dvc commit[/]: {len(stages)} finetune stage(s) recorded in dvc.lock")
    failed = [r for r in results if r["status"] == "failed"]
    if failed:
        raise ReproError(f"{len(failed)} of {len(jobs)} runs failed; rerun the same command to retry them "
                         "(finished runs are skipped)\n  "
                         + "\n  ".join(f"{r['model']} on {r['dataset']}: {r['error']}" for r in failed))


@app.command()
def plan(
    params: ParamsOpt = layout.PARAMS,
    device: Annotated[str, typer.Option(help="Device kind of the throughput table to estimate with "
                                        "(cpu, or a GPU kind once measured, e.g. cuda-h200).")] = "cpu",
    throughput: Annotated[Path, typer.Option(help="Measured images/s (benchmarks/finetune_throughput.py on CPU, "
                                             "benchmarks/gpu_check.py on a GPU).")]
    = Path("benchmarks/throughput.csv"),
    measured: Annotated[bool, typer.Option("--measured", help="Report the compute finished runs recorded "
                                           "(run.json) instead of the estimate.")] = False,
) -> None:
    """The study's size before it runs (runs, images, estimated device-hours), or its measured compute after."""
    from rich.table import Table

    from repro import plan as planning
    from repro.models import MODELS

    p = _params(params)
    fp = p.finetune
    if measured:
        from repro.results import RUN_FILE

        records = []
        for m in fp.models:
            for d in fp.datasets:
                path = layout.run_dir(MODELS[m].path, d) / RUN_FILE
                if path.is_file():
                    records.append(json.loads(path.read_text()))
        report = planning.compute_report(records)
        for title, rows in (("per model", report["per_model"]), ("per dataset", report["per_dataset"]),
                            ("total", {"all": report["total"]})):
            table = Table(title=f"measured compute, {title} ({len(records)} finished runs; devices: "
                                f"{', '.join(report['devices']) or '-'})")
            for column in ("name", "runs", "train hours", "wall hours", "train images", "img/s"):
                table.add_column(column, justify="left" if column == "name" else "right")
            for name, row in rows.items():
                rate = row["train_images"] / row["train_seconds"] if row["train_seconds"] else 0
                table.add_row(name, str(row["runs"]), f"{row['train_seconds'] / 3600:.3f}",
                              f"{row['wall_seconds'] / 3600:.3f}", f"{row['train_images']:,}", f"{rate:,.0f}")
            out.print(table)
        return
    rates = planning.read_throughput(throughput)
    planning.measured_devices(rates, device, throughput)
    amp = planning.throughput_precision(fp.precision, device)
    resolved = planning.resolve_plan(p)
    sizes = {d: planning.split_sizes(d, layout.split_file(d)) for d in fp.datasets}
    estimate = planning.estimate(resolved, sizes, rates, device, amp)
    table = Table(title=f"{p.profile} study on {device} ({'bf16 autocast' if amp == 'bf16' else 'fp32'} rates "
                        f"first): {resolved['runs']} runs x {resolved['grid']} configs x {fp.epochs} epochs")
    for column in ("model", "dataset", "images processed", "est. device-hours", "note"):
        table.add_column(column, justify="right" if column in ("images processed", "est. device-hours") else "left")
    for r in estimate["rows"]:
        table.add_row(r["model"], r["dataset"], "-" if r["images"] is None else f"{r['images']:,}",
                      "-" if r["hours"] is None else f"{r['hours']:.2f}", r["note"])
    out.print(table)
    unmeasured = f" ({estimate['unmeasured']} runs without a measured rate or size not counted)" \
        if estimate["unmeasured"] else ""
    out.print(f"total: {resolved['fine_tunes']} fine-tunes, {estimate['images']:,} images processed, "
              f"{estimate['hours']:.1f} device-hours on {device}{unmeasured}")


@app.command()
def collect(
    params: ParamsOpt = layout.PARAMS,
    summary: Annotated[Path, typer.Option(help="Long table to write.")] = layout.SUMMARY,
    metrics: Annotated[Path, typer.Option(help="Per-run metrics for `dvc metrics show`.")] = layout.METRICS,
) -> None:
    """Gather the study's run.json files into one long table (results/summary.csv), with each model's interval
    recomputed from its predictions.csv (exact binomial for accuracy, bootstrap over test examples otherwise)."""
    from repro.analysis import metric_interval
    from repro.models import MODELS
    from repro.results import PREDICTIONS_FILE, RUN_FILE, read_predictions, read_run, summary_rows, write_summary

    p = _params(params)
    a = p.analyze
    folders = [layout.run_dir(MODELS[m].path, d) for d in p.finetune.datasets for m in p.finetune.models]
    records = [read_run(folder / RUN_FILE) for folder in folders]
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    intervals = []
    # Kappa, AUC and F1 intervals resample test examples (example_resamples metric calls per run): minutes for
    # the paper's study, so show where it is.
    with Progress(TextColumn("intervals"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  TextColumn("{task.fields[run]}"), console=err, transient=True) as progress:
        task = progress.add_task("intervals", total=len(records), run="")
        for folder, record in zip(folders, records):
            progress.update(task, run=f"{record['model']} on {record['dataset']}")
            if record["status"] != "ok":
                intervals.append(None)
            else:
                targets, scores = read_predictions(folder / PREDICTIONS_FILE)
                intervals.append(metric_interval(record["metric"], targets, scores, resamples=a.example_resamples,
                                                 seed=a.bootstrap_seed, level=a.ci_level))
            progress.advance(task)
    write_summary(summary_rows(records, intervals), summary, metrics)
    out.print(f"[green]collected[/] {len(records)} runs -> {summary}")


@app.command()
def analyze(
    params: ParamsOpt = layout.PARAMS,
    summary: Annotated[Path, typer.Option(help="Long table from `repro collect`.")] = layout.SUMMARY,
    slopes: Annotated[Path, typer.Option(help="Fits to write.")] = layout.SLOPES,
    tables: Annotated[Path, typer.Option(help="Folder for sensitivity.csv and sensitivity.md.")] = layout.TABLES,
) -> None:
    """Fit metric vs ImageNet top-1 per dataset (all models, and models above the threshold) with bootstrap CIs,
    under analyze.report_rule, and the sensitivity table (every rule x threshold x transform, leave-one-model-out)."""
    from repro.results import read_summary

    p = _params(params)
    a = p.analyze
    from repro.models import MODELS
    from repro.results import RUN_FILE, read_run
    from repro.sensitivity import analyze as with_sensitivity
    from repro.splits import atomic_write

    table = read_summary(summary)
    records = [read_run(layout.run_dir(MODELS[m].path, d) / RUN_FILE)  # the per-epoch curves of every reporting rule
               for d in p.finetune.datasets for m in p.finetune.models]
    doc, files = with_sensitivity(table, records, a)
    doc = {"profile": p.profile, **doc}
    for name, content in files.items():
        atomic_write(tables / name, content)
    _write_json(slopes, doc)
    from rich.table import Table

    table = Table(title=f"slopes ({p.profile} profile, {a.transform} axes, rule {a.report_rule})",
                  caption=f"{doc['bootstrap']['method']}, {a.bootstrap_resamples} resamples, seed {a.bootstrap_seed}")
    for column in ("dataset", "metric", "fit", "models", "slope", f"{a.ci_level:.0%} CI"):
        table.add_column(column)
    for name, entry in doc["datasets"].items():
        for key, label in (("all", "all"), ("above_threshold", f">= {a.threshold:g}%")):
            fit = entry[key]
            ci = fit["ci"]
            table.add_row(name, entry["metric"], label, str(fit["n"]),
                          "-" if fit["slope"] is None else f"{fit['slope']:.3f}",
                          ci["reason"] or f"[{ci['low']:.3f}, {ci['high']:.3f}]")
    out.print(table)


@app.command()
def figures(
    params: ParamsOpt = layout.PARAMS,
    summary: Annotated[Path, typer.Option(help="Long table from `repro collect`.")] = layout.SUMMARY,
    slopes: Annotated[Path, typer.Option(help="Fits from `repro analyze`.")] = layout.SLOPES,
    figure: Annotated[Path, typer.Option("--out", help="Figure 1 replica (PNG; a PDF is written beside it).", callback=output_file_option)]
    = layout.FIGURE1,
    appendix: Annotated[Path, typer.Option(help="Appendix-B variant (PNG; a PDF beside it).")] = layout.FIGURE_B,
    tables: Annotated[Path, typer.Option(help="Folder for slopes.md and slopes.tex.")] = layout.TABLES,
    plot_data: Annotated[Path, typer.Option(help="Folder for the per-dataset CSVs of `dvc plots show`.")]
    = layout.PLOT_DATA,
) -> None:
    """Draw Figure 1 and its Appendix-B variant (PNG and PDF), and write the slope table (Markdown, LaTeX)."""
    import pandas as pd

    from repro.plots import figure1, figure_appendix_b
    from repro.report import latex_table, markdown_table, plot_rows, slope_caption, slope_rows
    from repro.results import read_json, read_summary
    from repro.splits import atomic_write

    p = _params(params)
    from repro.analysis import PROFILE_NOTES

    note = PROFILE_NOTES.get(p.profile, "" if p.profile == "paper" else f"{p.profile} profile: not the paper's result")
    table, fits = read_summary(summary), read_json(slopes, "repro analyze")
    written = [figure1(table, fits, [figure, figure.with_suffix(".pdf")], title_note=note,
                       label_points=p.figures.label_points),
               figure_appendix_b(table, fits, [appendix, appendix.with_suffix(".pdf")], title_note=note)]
    rows, caption = slope_rows(fits), slope_caption(fits)
    if note:
        caption = f"{caption} {note[0].upper()}{note[1:]}."
    atomic_write(tables / "slopes.md", markdown_table(rows, caption=caption).encode())
    atomic_write(tables / "slopes.tex", latex_table(rows, caption=caption).encode())
    for name, records in plot_rows(table, fits).items():
        atomic_write(plot_data / f"{name}.csv", pd.DataFrame(records).to_csv(index=False, lineterminator="\n")
                     .encode())
    out.print(f"[green]wrote[/] {', '.join(str(w) for w in written)} (+ PDF), {tables}/slopes.md|tex, "
              f"{plot_data}/")


@app.command()
def verify(
    params: ParamsOpt = layout.PARAMS,
    claims: Annotated[Path | None, typer.Option(help="Claims file [default: verify.claims in params].")] = None,
    summary: Annotated[Path, typer.Option(help="Long table from `repro collect`.")] = layout.SUMMARY,
    slopes: Annotated[Path, typer.Option(help="Fits from `repro analyze`.")] = layout.SLOPES,
    figure: Annotated[Path, typer.Option(help="Figure 1 replica.")] = layout.FIGURE1,
    json_out: Annotated[Path | None, typer.Option("--json", help="Also write the verdicts as JSON.", callback=output_file_option)] = None,
    strict: Annotated[bool, typer.Option(help="Exit non-zero if any claim fails.")] = False,
    quiet: Annotated[bool, typer.Option(help="Print a one-line summary instead of the table.")] = False,
) -> None:
    """Check the paper's claims (paper/claims.yaml) against the current results and print a verdict table."""
    from repro.analysis import NEEDS, evaluate_claims
    from repro.inputs import load_yaml
    from repro.results import read_json, read_summary

    p = _params(params)
    claims_path = claims or Path(p.verify.claims)
    document = load_yaml(claims_path, "missing claims file")
    if not isinstance(document, dict) or "claims" not in document:
        raise ReproError(f"{claims_path}: expected a YAML mapping with a 'claims' list")
    claim_list = document["claims"]
    slopes_doc = read_json(slopes, "repro analyze")
    if slopes_doc.get("profile") != p.profile:
        raise ReproError(f"{slopes}: made under the {slopes_doc.get('profile')!r} profile, params say "
                         f"{p.profile!r}; run `dvc repro` first")
    from repro.models import pins

    verdicts = evaluate_claims(claim_list, p.profile, read_summary(summary), slopes_doc, figure.is_file(),
                               pins(p.finetune.models, layout.WEIGHTS_LOCK) if layout.WEIGHTS_LOCK.is_file() else None)
    from repro.sensitivity import verdict_rules

    rule = slopes_doc.get("report_rule", "best_val")  # slopes.json written before the rule existed: best_val
    verdicts = verdict_rules(verdicts, claim_list, rule)
    if json_out is not None:
        _write_json(json_out, {"profile": p.profile, "claims": verdicts})
    counts = {v: sum(1 for x in verdicts if x["verdict"] == v) for v in ("pass", "fail")}
    other = len(verdicts) - counts["pass"] - counts["fail"]
    line = (f"{len(verdicts)} claims: {counts['pass']} pass, {counts['fail']} fail, {other} not evaluated; "
            f"slopes under the {rule} rule (analyze.report_rule), values under best_val")
    if quiet:
        out.print(line + (f" -> {json_out}" if json_out else ""))
    else:
        from rich.table import Table

        table = Table(title=f"claims of the paper vs this run ({p.profile} profile)", show_lines=True)
        for column, ratio in (("id", 1), ("claim", 5), ("paper", 2), ("ours", 3), ("tol.", 1), ("rule", 1),
                              ("verdict", 3), ("command", 3)):
            table.add_column(column, overflow="fold", ratio=ratio)
        style = {"pass": "green", "fail": "red"}
        for v in verdicts:
            # The profile note below already says why paper claims are not evaluated here.
            shown_reason = v["reason"] and v["verdict"] not in NEEDS.values()
            verdict = v["verdict"] + (f": {v['reason']}" if shown_reason else "")
            table.add_row(v["id"], v["claim"], v["paper_value"], v["ours"] or "-", v["tolerance"] or "-", v["rule"],
                          f"[{style.get(v['verdict'], 'yellow')}]{verdict}[/]", v["command"])
        out.print(table)
        if p.profile != "paper":
            from repro.analysis import PROFILE_NOTES

            out.print(f"[yellow]The {p.profile!r} profile: {PROFILE_NOTES.get(p.profile, 'not the paper study')};[/] "
                      "the paper's claims need the paper profile (README, 'The paper profile').")
        out.print(line)
    if strict and counts["fail"]:
        raise typer.Exit(1)


@app.command()
def report(
    params: ParamsOpt = layout.PARAMS,
    summary: Annotated[Path, typer.Option(help="Long table from `repro collect`.")] = layout.SUMMARY,
    slopes: Annotated[Path, typer.Option(help="Fits from `repro analyze`.")] = layout.SLOPES,
    claims: Annotated[Path, typer.Option(help="Verdicts from `repro verify --json`.")] = layout.CLAIMS_OUT,
    figure: Annotated[Path, typer.Option(help="Figure 1 replica (PNG).")] = layout.FIGURE1,
    appendix: Annotated[Path, typer.Option(help="Appendix-B variant (PNG).")] = layout.FIGURE_B,
    report_file: Annotated[Path, typer.Option("--out", help="HTML file to write.", callback=output_file_option)] = layout.REPORT,
) -> None:
    """Write one self-contained HTML report (figures embedded, slope and claims tables, provenance) that opens
    offline."""
    import yaml

    from repro.models import MODELS
    from repro.report import compute_used, model_rows, render_report, split_hashes
    from repro.results import RUN_FILE, provenance, read_json, read_run, read_summary
    from repro.splits import atomic_write

    p = _params(params)
    verdicts = read_json(claims, "repro verify --json results/claims.json")
    if verdicts.get("profile") != p.profile:
        raise ReproError(f"{claims}: made under the {verdicts.get('profile')!r} profile, params say {p.profile!r}; "
                         "run `dvc repro` first")
    images = []
    for path, caption in ((figure, "Figure 1 replica: metric vs ImageNet top-1, all-model fit (grey) and the fit "
                                   f"over models at or above {p.analyze.threshold:g}% top-1 (red)"),
                          (appendix, "Appendix-B variant: per-model intervals, bootstrap bands of both fits, "
                                     "smoothing spline")):
        if not path.is_file():
            raise ReproError(f"{path}: missing; run `repro figures` first")
        images.append((f"{caption} ({path})", path.read_bytes()))
    records = [read_run(layout.run_dir(MODELS[m].path, d) / RUN_FILE)
               for d in p.finetune.datasets for m in p.finetune.models]
    info = provenance()
    info["splits"] = split_hashes(layout.PINS.read_text()) if layout.PINS.is_file() else {}
    raw = yaml.safe_load(layout.DATA_DVC.read_text()) if layout.DATA_DVC.is_file() else None
    info["raw_data"] = (raw or {}).get("outs") or []
    html = render_report(profile=p.profile, figures=images, slopes=read_json(slopes, "repro analyze"),
                         claims=verdicts["claims"], provenance=info, summary_rows=model_rows(read_summary(summary)),
                         compute=compute_used(records))
    atomic_write(report_file, html.encode())
    out.print(f"[green]wrote[/] {report_file} ({len(html) / 1e6:.1f} MB, self-contained)")


@profile_app.command("use")
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


@profile_app.command("show")
def profile_show(params: ParamsOpt = layout.PARAMS) -> None:
    """Print the active profile and its study size."""
    p = _params(params)
    f = p.finetune
    out.print(f"{p.profile}: {len(f.models)} models x {len(f.datasets)} datasets x {len(f.lrs) * len(f.wds)} "
              f"configs x {f.epochs} epochs (pretrained: {f.pretrained})")


# --- releasing and verifying fine-tuned checkpoints (repro.release, repro.evaluate) ---------------------------------
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
    from repro.evaluate import default_cache, find_entry, read_manifest, report, unpacked_archive, verify_all
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
    with rich_progress_factory(err) as progress, contextlib.ExitStack() as stack:
        base = None if archive is None else stack.enter_context(
            unpacked_archive(archive, cache, progress(f"archive {archive}")))
        verdicts = verify_all(entries, manifest, data_dir=layout.data_dir, splits_dir=layout.SPLITS,
                              cache_dir=cache, checkpoint=checkpoint, allow_pickle=allow_pickle, device=device,
                              progress=progress, base=base, base_label=archive)
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


def main() -> None:
    try:
        app()
    except ReproError as error:
        err.print(f"[red]error:[/] {error}", highlight=False, soft_wrap=True)
        sys.exit(error.exit_code)
