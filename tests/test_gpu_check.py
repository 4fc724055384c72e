"""benchmarks/gpu_check.py, the prepared GPU measurement, kept from rotting on machines without a GPU: its --smoke
mode runs every part on CPU, its caps stop a slow part, a failing part is named while the others report, and the
rows it writes feed `repro plan --device cuda-h200`. Offline, CPU; no assertion on any speed."""

import csv
import hashlib
import importlib.util
import json
import math
import os
import stat
import sys
import time

import pytest

from conftest import BIN, ROOT, run

SCRIPT = ROOT / "benchmarks" / "gpu_check.py"
COMMITTED = ROOT / "benchmarks" / "throughput.csv"
TINY = "timm/test_efficientnet.r160_in1k"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    """One --smoke run: the tiny model plus a model name that is not in the registry (its part must fail alone),
    with a stand-in nvidia-smi on PATH that reports 37% so the utilisation sampler's path runs too."""
    tmp = tmp_path_factory.mktemp("gpu_smoke")
    fake = tmp / "bin" / "nvidia-smi"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\nwhile :; do echo 37; sleep 0.05; done\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    before = _sha(COMMITTED)
    env = {**os.environ, "PATH": f"{fake.parent}{os.pathsep}{os.environ['PATH']}",
           "PYTHONPATH": str(ROOT / "src"), "COLUMNS": "250"}
    import subprocess

    done = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(tmp / "out"), "--table",
                           str(tmp / "rows.csv"), "--models", TINY, "nope/missing"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    assert _sha(COMMITTED) == before  # smoke rows never reach the committed table
    return done, json.loads((tmp / "out" / "gpu_check.json").read_text()), tmp / "rows.csv"


def test_smoke_runs_every_part_and_names_the_one_that_failed(smoke):
    done, result, _ = smoke
    assert done.returncode == 0, done.stdout + done.stderr
    expected = ["setup", "data", "throughput:test_efficientnet", "throughput:missing", "precision", "ddp", "compile"]
    assert list(result["parts"]) == expected
    statuses = {name: part["status"] for name, part in result["parts"].items()}
    assert statuses.pop("throughput:missing").startswith("failed: UsageError: unknown model 'nope/missing'")
    assert set(statuses.values()) == {"ok"}, statuses
    assert "parts not ok: throughput:missing" in done.stdout
    for part in result["parts"].values():
        assert part["cap_s"] > 0 and part["seconds"] >= 0


def test_smoke_measures_what_each_part_promises(smoke):
    _, result, _ = smoke
    parts = {name: part["results"] for name, part in result["parts"].items()}
    assert parts["setup"]["jpegs"]["count"] == 32 and parts["setup"]["cache"]["mb"] > 0
    assert parts["data"]["ours_cache"]["img_s"] > 0 and parts["data"]["authors_decode"]["img_s"] > 0
    tp = parts["throughput:test_efficientnet"]
    for run_ in ("ours_bf16", "authors_fp32", "ours_fp32"):
        assert tp[run_]["img_s"] > 0 and tp[run_]["timed_images"] == 16  # the second epoch, the first untimed
        assert tp[run_]["peak_gib"] is None  # no CUDA memory on a CPU
        # whether a 200 ms sample falls inside a tiny timed epoch depends on the machine's speed: only what was
        # sampled is checked here; the window arithmetic is tested on its own below
        util = tp[run_]["gpu_util"]
        assert util["mean_pct"] == (37.0 if util["samples"] else None)
    assert tp["ratio_ours_bf16_vs_authors"] == round(tp["ours_bf16"]["img_s"] / tp["authors_fp32"]["img_s"], 2)
    assert tp["authors_fp32"]["decoder"].startswith(("OpenCV", "PIL"))
    assert tp["eval_img_s"]["bf16"] > 0 and tp["eval_img_s"]["off"] > 0
    precision = parts["precision"]
    fp32, bf16 = precision["fp32"]["accuracy_per_epoch"], precision["bf16"]["accuracy_per_epoch"]
    assert len(fp32) == len(bf16) == precision["epochs"] == 2
    assert precision["final_accuracy_bf16_minus_fp32"] == round(bf16[-1] - fp32[-1], 4)
    seed1 = precision["fp32_seed1"]["accuracy_per_epoch"]
    assert precision["final_accuracy_seed1_minus_seed0_fp32"] == round(seed1[-1] - fp32[-1], 4)
    assert precision["fp32_seed1"]["train_loss_per_epoch"] != precision["fp32"]["train_loss_per_epoch"]
    # on a CPU (the smoke mode) finetune.precision bf16 is fp32: same seed and data, the same losses; on a GPU the
    # bf16 run autocasts (repro.train.resolve_precision)
    assert precision["fp32"]["train_loss_per_epoch"] == precision["bf16"]["train_loss_per_epoch"]
    ddp = parts["ddp"]
    assert ddp["backend"] == "gloo" and ddp["world"] == 1 and ddp["all_reduce_ok"]
    assert len(ddp["train_loss_per_epoch"]) == 2 and all(map(math.isfinite, ddp["train_loss_per_epoch"]))
    compile_ = parts["compile"]
    assert compile_["backend"] == "eager" and compile_["off"]["img_s"] > 0 and compile_["on"]["img_s"] > 0


def test_smoke_rows_parse_as_throughput_rows(smoke):
    from repro.plan import THROUGHPUT_COLUMNS, read_throughput

    _, result, rows_file = smoke
    rows = read_throughput(rows_file)
    assert [(r["model"], r["amp"]) for r in rows] == [(TINY, "bf16"), (TINY, "off")]
    assert all(r["device"] == "cpu-smoke" and r["image_size"] == 32 for r in rows)
    tp = result["parts"]["throughput:test_efficientnet"]["results"]
    assert rows[0]["train_img_s"] == tp["ours_bf16"]["img_s"] and rows[1]["eval_img_s"] == tp["eval_img_s"]["off"]
    with open(rows_file, newline="") as handle:
        assert tuple(csv.DictReader(handle).fieldnames) == THROUGHPUT_COLUMNS


def test_smoke_writes_its_rows_beside_the_json_and_merge_keeps_them_out_of_the_committed_table(smoke, tmp_path):
    from repro.plan import read_throughput

    done, result, rows_file = smoke
    json_path = rows_file.parent / "out" / "gpu_check.json"
    beside = read_throughput(json_path.parent / "throughput_rows.csv")
    assert beside == read_throughput(rows_file)
    before = _sha(COMMITTED)
    refused = run([sys.executable, str(SCRIPT), "--merge", str(json_path)], ROOT, check=False)
    assert refused.returncode != 0 and "is a --smoke run" in refused.stderr and _sha(COMMITTED) == before
    # a GPU run's JSON (here the smoke rows relabelled) is appended to an existing table, header kept once
    gpu = {**result, "mode": "gpu"}
    (tmp_path / "gpu.json").write_text(json.dumps(gpu))
    table = tmp_path / "throughput.csv"
    table.write_text(COMMITTED.read_text())
    merged = run([sys.executable, str(SCRIPT), "--merge", str(tmp_path / "gpu.json"), "--table", str(table)], ROOT)
    assert "appended 2 rows" in merged.stdout
    assert read_throughput(table) == read_throughput(COMMITTED) + beside


def test_the_paper_profile_batch_and_workers_are_the_scripts():
    from repro.config import load_params

    fp = load_params(ROOT / "profiles" / "paper.yaml").finetune
    gpu_check = _module()
    assert (gpu_check.PAPER_BATCH, gpu_check.PAPER_WORKERS) == (fp.batch_size, fp.num_workers)


def test_the_gpu_run_fits_in_eight_minutes():
    """The caps of a default GPU run (three throughput parts) add up to no more than its budget, and the budget
    leaves room under the issue's 8 minutes for the interpreter start before it and the output after it."""
    gpu_check = _module()
    caps = gpu_check.GPU_CAPS
    total = sum(caps[name.split(":", 1)[0]] for name in ["setup", "data", *["throughput:m"] * 3, "precision", "ddp",
                                                          "compile"])
    assert total <= gpu_check.GPU_BUDGET <= 8 * 60 - 10
    assert len(gpu_check.GPU_MODELS) == 3


def test_the_wrapper_runs_the_script_and_keeps_its_log(tmp_path):
    out = tmp_path / "out"
    import subprocess

    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh"), "--help"], cwd=tmp_path,
                          env={**os.environ, "OUT": str(out), "PYTHON": sys.executable}, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "--smoke" in (out / "gpu_check.log").read_text()


def test_smoke_refuses_the_committed_table():
    done = run([sys.executable, str(SCRIPT), "--smoke", "--table", str(COMMITTED)], ROOT, check=False)
    assert done.returncode != 0 and "never go into" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_a_command_past_its_cap_is_killed_with_its_children(tmp_path):
    gpu_check = _module()
    # a part's process and a child of it (as DataLoader workers are), both sleeping far past the cap
    child = "import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', 'import time; " \
            "time.sleep(60)']); print('child', p.pid, flush=True); time.sleep(60)"
    # a 10 s cap: the part must start its child and print before the cap, which takes well under a second on an
    # idle machine; 10 s leaves room for a busy one (the child sleeps 60 s, so the cap still decides)
    code, tail = gpu_check.run_command([sys.executable, "-c", child], 10, tmp_path / "log")
    # no exit code: stopped by the cap (a process that ran out its 60 s sleep would have exited 0); no clock read
    # here, so a slow machine cannot fail this test
    assert code is None and tail.startswith("child ")
    pid = int(tail.split()[1])
    for _ in range(300):  # the orphaned child is reaped by init shortly after the kill (up to 30 s on a busy machine)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the part's child {pid} outlived the cap")


def test_an_in_process_part_past_its_cap_times_out_and_keeps_what_it_measured(monkeypatch, tmp_path):
    gpu_check = _module()

    def slow(cfg, work, record, save):
        record["first"] = 1
        time.sleep(30)
        record["second"] = 2

    monkeypatch.setattr(gpu_check, "parts", lambda cfg: {"slow": slow})
    record = {}
    status = gpu_check.in_process(None, tmp_path, "slow", 0.5, record)
    assert status == "timeout after 0.5 s" and record == {"first": 1}


def test_an_isolated_part_reports_its_failure_and_partial_results(tmp_path):
    """The GPU default: each part in its own process; a failing one leaves its status and what it saved."""
    from dataclasses import asdict

    gpu_check = _module()
    cfg = gpu_check.Config(mode="smoke", device="cpu", device_kind="cpu-smoke", models=["nope/missing"], size=32,
                           batch=8, workers=0, images=4, heldout=4, epochs=2, precision_model=TINY,
                           precision_epochs=1, compile_model=TINY, compile_backend="eager", ddp_model=TINY,
                           ddp_images=4, caps={}, isolate=True)
    gpu_check.atomic_json(tmp_path / "config.json", asdict(cfg))
    part = gpu_check.run_part(cfg, tmp_path, "throughput:missing", 300)
    assert part["status"].startswith("failed: UsageError: unknown model 'nope/missing'")
    log = part["results"].pop("log_tail")  # the part's own output comes back with a failure
    assert part["results"] == {"model": "nope/missing"} and any("UsageError" in line for line in log)


@pytest.mark.parametrize(("name", "kind"), [("NVIDIA H200", "cuda-h200"), ("NVIDIA H100 80GB HBM3", "cuda-h100"),
                                            ("NVIDIA A100-SXM4-40GB", "cuda-a100"),
                                            ("Tesla V100-SXM2-16GB", "cuda-v100")])
def test_the_device_kind_is_the_gpu_model(name, kind):
    assert _module().gpu_kind(name) == kind


# --- repro plan --device cuda-h200 from the rows ---------------------------------------------------------------

RESNET = "torchvision/resnet50.IMAGENET1K_V1"


def _write_rows(path, rows):
    from repro.plan import THROUGHPUT_COLUMNS

    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=THROUGHPUT_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows({"batch_size": 128, "source": "test", **r} for r in rows)


def test_plan_on_cuda_h200_estimates_from_the_rows_of_the_profiles_precision(tmp_path, monkeypatch):
    from repro import layout
    from repro import plan as planning
    from repro.config import load_params

    table = tmp_path / "throughput.csv"
    _write_rows(table, [
        {"model": RESNET, "device": "cpu", "image_size": 224, "amp": "off", "train_img_s": 1.0, "eval_img_s": 3.0},
        {"model": RESNET, "device": "cuda-h200", "image_size": 256, "amp": "off", "train_img_s": 1000.0,
         "eval_img_s": 3000.0},
        {"model": RESNET, "device": "cuda-h200", "image_size": 256, "amp": "bf16", "train_img_s": 2500.0,
         "eval_img_s": 8000.0},
    ])
    done = run([str(BIN / "repro"), "plan", "--params", "profiles/paper.yaml", "--device", "cuda-h200",
                "--throughput", str(table)], ROOT)
    total = done.stdout.strip().splitlines()[-1]
    assert total.startswith("total: 2280 fine-tunes") and "device-hours on cuda-h200" in total
    hours = float(total.split(" device-hours")[0].rsplit(" ", 1)[1])
    # the same estimate from the library, with the fp32 row (the paper profile's precision: fp32, the authors')
    monkeypatch.chdir(ROOT)
    p = load_params(ROOT / "profiles" / "paper.yaml")
    resolved = planning.resolve_plan(p)
    sizes = {d: planning.split_sizes(d, layout.split_file(d)) for d in p.finetune.datasets}
    rates = planning.read_throughput(table)
    bf16 = planning.estimate(resolved, sizes, rates, "cuda-h200", "bf16")
    fp32 = planning.estimate(resolved, sizes, rates, "cuda-h200", "off")
    assert hours == pytest.approx(fp32["hours"], abs=0.05) and bf16["hours"] > 0
    assert fp32["hours"] > 2 * bf16["hours"]  # the fp32 row is 2.5x slower: the amp column decides
    assert planning.throughput_precision("bf16", "cuda-h200") == "bf16"  # a bf16 profile reads the bf16 rows
    assert planning.throughput_precision("bf16", "cpu") == planning.throughput_precision("fp32", "cuda-h200") == "off"
    assert bf16["unmeasured"] == 18 * 6 + 1  # 18 models without a GPU row; resnet50 on melanoma has no size
    assert "no throughput measured on cuda-h200" in done.stdout


def test_plan_on_a_device_kind_without_rows_says_so_in_one_line(tmp_path):
    table = tmp_path / "throughput.csv"
    _write_rows(table, [{"model": RESNET, "device": "cpu", "image_size": 224, "amp": "off", "train_img_s": 1.0,
                         "eval_img_s": 3.0}])
    done = run([str(BIN / "repro"), "plan", "--params", "profiles/paper.yaml", "--device", "cuda-h200",
                "--throughput", str(table)], ROOT, check=False)
    assert done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1
    assert "no throughput measured on device kind 'cuda-h200' (measured: cpu)" in done.stderr
    assert "benchmarks/gpu_check.py" in done.stderr


def test_the_utilisation_sampler_averages_the_samples_inside_the_window(monkeypatch):
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check_module", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # its dataclasses look their module up while it runs
    spec.loader.exec_module(module)
    sampler = module.UtilSampler()
    sampler.samples = [(1.0, 10.0), (2.0, 30.0), (3.0, 50.0), (9.0, 90.0)]
    assert sampler.mean_between(1.5, 3.0) == {"mean_pct": 40.0, "min_pct": 30.0, "samples": 2}
    assert sampler.mean_between(4.0, 5.0)["mean_pct"] is None
