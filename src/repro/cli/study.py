"""`repro finetune`, `repro sweep`, `repro plan`: one fine-tune, many, and the study's size before or after."""

from __future__ import annotations

import json
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from repro import layout
from repro.cli.common import ParamsOpt, _params, err, out
from repro.errors import ReproError
from repro.inputs import output_folder_option

app = typer.Typer()


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

    args = ["finetune", "--model", model, "--dataset", dataset, "--params", str(params)]
    args += (["--out", str(out_dir)] if out_dir else []) + (["--force"] if force else [])
    if ddp.spawn(ddp_processes, args, f"{model} on {dataset}"):  # this command, N times under torchrun
        return
    spec = MODELS[model]
    fp = p.finetune
    grid = len(fp.lrs) * len(fp.wds)
    run_dir = out_dir or layout.run_dir(spec.path, dataset)
    from repro.progress import finetune_bars
    from repro.study import finetune_to_dir

    with ddp.process_group(fp.device) as dist, \
            finetune_bars(err, f"{spec.name} on {dataset}", grid, fp.epochs, disable=not dist.main) as bars:
        status, record = finetune_to_dir(model, dataset, fp, layout.data_dir(dataset), layout.split_file(dataset),
                                         layout.WEIGHTS_LOCK, run_dir, bars.on_epoch, force=force,
                                         cache_root=layout.CACHE, on_cache=bars.on_cache)
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

    from repro import launch
    from repro.datasets import DATASETS
    from repro.models import MODELS
    from repro.progress import runs_bar

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
    with runs_bar(err, f"sweep ({launcher.value})", len(jobs)) as on_done:
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
