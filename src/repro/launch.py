"""Many fine-tunes at once: a local process pool (one device per worker, the default) or SLURM job arrays.

Each job is one (model, dataset) run of `repro.study.finetune_to_dir`: it writes the same run folder that the
`finetune` stage of dvc.yaml writes, resumes from its saved state and skips a finished run. So a sweep killed
half-way, or a SLURM task preempted or out of time (submitit requeues it through `FinetuneTask.checkpoint`), picks
up where it stopped. After the sweep, `dvc_commit` records the finished runs in dvc.lock, so `dvc repro` sees the
finetune stages as done instead of running them again. Exercised by `repro sweep`.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

from repro.config import FinetuneParams
from repro.errors import ReproError


@dataclass(frozen=True)
class Job:
    """One (model, dataset) run, every path absolute so the job runs the same from any folder or node."""

    model: str
    dataset: str
    run_dir: str
    data_dir: str
    split_path: str
    weights_lock: str
    root: str  # the study's folder: the job runs there (git provenance, relative paths in params)
    cache_root: str | None = None  # the decoded-image cache (repro.datasets.cache)

    @property
    def stage(self) -> str:
        """The dvc.yaml matrix stage that writes the same folder."""
        return f"finetune@{self.model}-{self.dataset}"


_WORKER_DEVICE: str | None = None


def _claim_device(queue, threads: int) -> None:
    """Pool initializer: take one device for this worker's lifetime, before torch initialises CUDA."""
    global _WORKER_DEVICE
    device = queue.get()
    if device.startswith("cuda:"):
        os.environ["CUDA_VISIBLE_DEVICES"] = device.split(":", 1)[1]
        device = "cuda:0"
    _WORKER_DEVICE = device
    os.environ["OMP_NUM_THREADS"] = str(threads)


def run_job(job: Job, fp: FinetuneParams, threads: int, device: str | None = None) -> dict:
    """Run one job in this process; a user-facing error becomes a 'failed' result so the sweep goes on."""
    import torch

    from repro.study import finetune_to_dir

    os.chdir(job.root)
    torch.set_num_threads(threads)
    from repro.datasets.own import register_saved

    register_saved(Path(job.split_path).parent)  # the study's own datasets, known in this fresh process too
    device = device or _WORKER_DEVICE
    if device is not None:
        fp = dataclasses.replace(fp, device=device)
    try:
        status, record = finetune_to_dir(job.model, job.dataset, fp, Path(job.data_dir), Path(job.split_path),
                                         Path(job.weights_lock), Path(job.run_dir),
                                         cache_root=Path(job.cache_root) if job.cache_root else None)
    except ReproError as error:
        return {"model": job.model, "dataset": job.dataset, "status": "failed", "error": str(error)}
    return {"model": job.model, "dataset": job.dataset, "status": status, "run": record["status"],
            "value": record.get("value"), "metric": record.get("metric"), "device": record.get("device")}


def local_devices(devices: str, workers: int | None) -> list[str]:
    """'auto': every visible GPU, else `workers` CPU workers; or a comma list such as 'cuda:0,cuda:2' or 'cpu'."""
    if devices == "auto":
        import torch

        count = torch.cuda.device_count()
        if count:
            return [f"cuda:{i}" for i in range(count)][: workers or count]
        return ["cpu"] * (workers or 1)
    from repro.train import check_device

    names = [d.strip() for d in devices.split(",") if d.strip()]
    if not names:
        raise ReproError(f"--devices {devices!r}: expected 'auto' or a comma list like 'cuda:0,cuda:1' or 'cpu'")
    for name in names:
        check_device(name, "--devices")
    if names == ["cpu"] and workers:
        names = names * workers
    return names


def run_local(jobs: Sequence[Job], fp: FinetuneParams, devices: Sequence[str], threads: int | None = None,
              on_done: Callable[[dict], None] | None = None) -> list[dict]:
    """Run `jobs` on a process pool with one worker per entry of `devices`; results in job order."""
    import multiprocessing

    if threads is None:  # split the CPU between workers; oversubscribed OpenMP threads run many times slower
        threads = max(1, (os.cpu_count() or 1) // len(devices))
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: CUDA_VISIBLE_DEVICES applies
    queue = context.Queue()
    for device in devices:
        queue.put(device)
    results: dict[int, dict] = {}
    with ProcessPoolExecutor(max_workers=len(devices), mp_context=context, initializer=_claim_device,
                             initargs=(queue, threads)) as pool:
        futures = {pool.submit(run_job, job, fp, threads): i for i, job in enumerate(jobs)}
        for future in as_completed(futures):
            result = future.result()
            results[futures[future]] = result
            if on_done is not None:
                on_done(result)
    return [results[i] for i in range(len(jobs))]


class FinetuneTask:
    """A submitit task. On timeout or preemption submitit calls `checkpoint` and requeues the same call, which
    resumes from the state the run saved after its last epoch (repro.train.run_grid)."""

    def __call__(self, job: Job, fp: FinetuneParams, threads: int) -> dict:
        return run_job(job, fp, threads)

    def checkpoint(self, *args, **kwargs):
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


@dataclass(frozen=True)
class SlurmOptions:
    folder: Path  # submitit's logs and pickles; give every sweep a fresh one
    partition: str | None = None
    time_min: int = 24 * 60
    gpus_per_task: int = 1
    cpus_per_task: int = 8
    mem_gb: int | None = None
    array_parallelism: int = 32
    poll_s: float = 2.0


def run_slurm(jobs: Sequence[Job], fp: FinetuneParams, options: SlurmOptions,
              on_done: Callable[[dict], None] | None = None) -> list[dict]:
    """Submit `jobs` as one SLURM job array through submitit and wait for every task."""
    import shutil
    import time

    if shutil.which("sbatch") is None:
        raise ReproError("--launcher slurm: sbatch not found; run on a SLURM login node (or start the test cluster "
                         "with scripts/slurm-up.sh and export SLURM_CONF)")
    import submitit

    executor = submitit.AutoExecutor(folder=str(options.folder), cluster="slurm")
    parameters = {"timeout_min": options.time_min, "cpus_per_task": options.cpus_per_task,
                  "slurm_array_parallelism": options.array_parallelism, "name": "repro-finetune",
                  "slurm_additional_parameters": {"requeue": True}}
    if options.gpus_per_task:
        parameters["slurm_gpus_per_task"] = options.gpus_per_task
    if options.partition:
        parameters["slurm_partition"] = options.partition
    if options.mem_gb:
        parameters["mem_gb"] = options.mem_gb
    executor.update_parameters(**parameters)
    device = "cuda" if options.gpus_per_task else "cpu"
    task_fp = dataclasses.replace(fp, device=device if fp.device == "auto" else fp.device)
    with executor.batch():
        submitted = [executor.submit(FinetuneTask(), job, task_fp, options.cpus_per_task) for job in jobs]
    pending = dict(enumerate(submitted))
    results: dict[int, dict] = {}
    while pending:
        for i, handle in list(pending.items()):
            if handle.done():
                try:
                    result = handle.result()
                except Exception as error:  # the task died (scancel, node failure): record it, keep going
                    result = {"model": jobs[i].model, "dataset": jobs[i].dataset, "status": "failed",
                              "error": f"SLURM job {handle.job_id}: {str(error).splitlines()[0]}"}
                result["slurm_job"] = handle.job_id
                results[i] = result
                del pending[i]
                if on_done is not None:
                    on_done(result)
        if pending:
            time.sleep(options.poll_s)
    return [results[i] for i in range(len(jobs))]


def dvc_commit(root: Path, jobs: Sequence[Job], dvc: str = "dvc") -> list[str]:
    """Record finished runs in dvc.lock (`dvc commit --force` of their finetune stages), so that a later
    `dvc repro` sees those stages' outputs as matching their deps and params and does not run them again."""
    stages = [job.stage for job in jobs]
    if not stages:
        return []
    done = subprocess.run([dvc, "commit", "--force", "--quiet", *stages], cwd=root, capture_output=True, text=True,
                          env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    if done.returncode != 0:
        message = (done.stderr.strip() or done.stdout.strip()).splitlines()
        raise ReproError(f"dvc commit of {len(stages)} finetune stage(s) failed: {message[-1] if message else '?'}; "
                         "the results are in place, run `dvc commit` by hand or `dvc repro` to recompute")
    return stages
