"""repro eval: hostile and damaged checkpoints are refused before they are loaded, wrong architectures are named,
correct checkpoints verify, from local files and from a local HTTP server; and through the real `repro` process.

The checkpoints are real releases (repro.release) of the tiny registry model on 40 embedded digits.
"""

import json
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

import repro.evaluate as evaluate
from checkpoint_fixtures import SQUEEZE, TINY, digits_layout, hostile_pickle, make_run
from conftest import BIN, ROOT, run, serve_folder
from repro.download import sha256_file
from repro.errors import ReproError, UsageError
from repro.evaluate import PICKLE, find_entry, read_manifest, render_manifest, verify_all
from repro.release import RunRef, release

REPRO = str(BIN / "repro")


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """A folder laid out like the repository: data/prepared/digits, data/splits/digits.csv and a release of the
    tiny model (paper/checkpoints.yaml + paper/checkpoints/)."""
    root = tmp_path_factory.mktemp("eval")
    prepared, split = digits_layout(root)
    run_dir = root / "results" / "runs" / TINY / "digits"
    make_run(run_dir, TINY, prepared, split)
    entry, = release([RunRef(run_dir, split, prepared)], root / "paper" / "checkpoints",
                     root / "paper" / "checkpoints.yaml")
    return root, entry


@pytest.fixture
def repo(released, tmp_path):
    """A private copy of the released layout, for a test that changes files."""
    root = tmp_path / "repo"
    shutil.copytree(released[0], root)
    return root


def _verify(root, entries=None, **kwargs):
    manifest = root / "paper" / "checkpoints.yaml"
    return verify_all(entries or read_manifest(manifest), manifest,
                      data_dir=lambda name: root / "data" / "prepared" / name,
                      splits_dir=root / "data" / "splits", cache_dir=root / "cache", **kwargs)


def _released_file(root):
    return root / "paper" / "checkpoints" / TINY / "digits.safetensors"


def _write_manifest(root, entries):
    (root / "paper" / "checkpoints.yaml").write_bytes(render_manifest(entries))


@pytest.fixture
def no_loading(monkeypatch):
    """Fails the test if anything tries to parse a checkpoint file."""
    calls = []
    monkeypatch.setattr(evaluate, "load_tensors", lambda *args: calls.append(args) or pytest.fail("loaded"))
    return calls


def test_a_correct_checkpoint_verifies(released):
    root, entry = released
    verdict, = _verify(root)
    assert verdict.verdict == "pass", verdict.detail
    assert verdict.value == entry.value and verdict.difference == 0.0 and verdict.images == 40


@pytest.mark.parametrize("offset", [100, -1], ids=["header", "tensor data"])
def test_a_tampered_file_is_refused_before_it_is_loaded(repo, no_loading, offset):
    path = _released_file(repo)
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01  # one bit of one byte
    path.write_bytes(bytes(data))
    verdict, = _verify(repo)
    assert verdict.verdict == "error" and "does not match the manifest's" in verdict.detail
    assert "refused before loading" in verdict.detail and no_loading == []


def test_a_truncated_file_is_refused_before_it_is_loaded(repo, no_loading):
    path = _released_file(repo)
    path.write_bytes(path.read_bytes()[:-10])
    verdict, = _verify(repo)
    assert verdict.verdict == "error" and "bytes, the manifest pins" in verdict.detail and no_loading == []


def test_a_pickle_is_refused_without_the_flag_before_it_is_read(repo, tmp_path, monkeypatch):
    marker = tmp_path / "pwned"
    hostile = hostile_pickle(tmp_path / "model.pth", marker)
    entry, = read_manifest(repo / "paper" / "checkpoints.yaml")
    pinned = replace(entry, format=PICKLE, sha256=sha256_file(hostile), size=hostile.stat().st_size)
    read, real_open = [], open
    monkeypatch.setattr(Path, "read_bytes", lambda self: read.append(self) or pytest.fail(f"read {self}"))
    monkeypatch.setattr("builtins.open", lambda file, *a, **k: read.append(file) or real_open(file, *a, **k))
    verdict, = _verify(repo, [pinned], checkpoint=str(hostile))
    assert verdict.verdict == "error" and "a pickle checkpoint (.pt/.pth/.bin) can run code" in verdict.detail
    assert "--allow-pickle" in verdict.detail and not marker.exists()
    assert all(Path(f) != hostile for f in read)


def test_a_hostile_pickle_is_refused_even_with_the_flag_and_nothing_runs(repo, tmp_path):
    marker = tmp_path / "pwned"
    hostile = hostile_pickle(tmp_path / "model.pth", marker)
    entry, = read_manifest(repo / "paper" / "checkpoints.yaml")
    # even pinned by the manifest (the hash says which bytes, not that they are harmless)
    pinned = replace(entry, format=PICKLE, sha256=sha256_file(hostile), size=hostile.stat().st_size)
    verdict, = _verify(repo, [pinned], checkpoint=str(hostile), allow_pickle=True)
    assert verdict.verdict == "error" and "refused to load" in verdict.detail and "weights_only=True" in verdict.detail
    assert not marker.exists()


def test_a_plain_tensor_pickle_loads_with_the_flag(repo, tmp_path):
    import torch
    from safetensors.torch import load_file

    path = tmp_path / "model.pth"
    torch.save(load_file(_released_file(repo)), path)
    entry, = read_manifest(repo / "paper" / "checkpoints.yaml")
    pinned = replace(entry, format=PICKLE, sha256=sha256_file(path), size=path.stat().st_size)
    verdict, = _verify(repo, [pinned], checkpoint=str(path), allow_pickle=True)
    assert verdict.verdict == "pass", verdict.detail
    with pytest.raises(ReproError, match="the manifest pins a pytorch-pickle file"):
        evaluate.obtain(pinned, str(_released_file(repo)), tmp_path)


def test_a_checkpoint_of_another_architecture_gets_a_clear_error(repo, tmp_path):
    from safetensors.torch import save_file

    from repro.models import build_model

    other = tmp_path / "squeezenet.safetensors"
    save_file(build_model(SQUEEZE, 10).state_dict(), str(other))
    entry, = read_manifest(repo / "paper" / "checkpoints.yaml")
    pinned = replace(entry, sha256=sha256_file(other), size=other.stat().st_size)
    verdict, = _verify(repo, [pinned], checkpoint=str(other))
    assert verdict.verdict == "error"
    assert f"does not fit {TINY} with 10 classes at 32 px" in verdict.detail
    assert "88 missing: blocks.0.0.bn1.bias, " in verdict.detail and " and 80 more" in verdict.detail
    assert "52 unexpected: classifier.1.bias, classifier.1.weight, " in verdict.detail

    # the right architecture with another head: shape mismatches, named with both shapes
    small_head = tmp_path / "five.safetensors"
    save_file(build_model(TINY, 5, image_size=32).state_dict(), str(small_head))
    pinned = replace(entry, sha256=sha256_file(small_head), size=small_head.stat().st_size)
    verdict, = _verify(repo, [pinned], checkpoint=str(small_head))
    assert "2 shape mismatches (checkpoint vs model): classifier.bias (5,) vs (10,), classifier.weight" \
        in verdict.detail


def test_a_value_beyond_the_tolerance_fails(repo):
    entry, = read_manifest(repo / "paper" / "checkpoints.yaml")
    verdict, = _verify(repo, [replace(entry, value=entry.value + 0.05, tolerance=0.02)])
    assert verdict.verdict == "fail" and verdict.difference == pytest.approx(-0.05)


def test_another_split_or_missing_prepared_data_is_named(repo):
    split = repo / "data" / "splits" / "digits.csv"
    split.write_text(split.read_text().replace("test", "val", 1))
    verdict, = _verify(repo)
    assert "differs from the split the checkpoint was measured on" in verdict.detail
    shutil.rmtree(repo / "data" / "splits")
    shutil.rmtree(repo / "data" / "prepared")
    verdict, = _verify(repo)
    assert "missing split file; run `repro data prepare digits`" in verdict.detail


def test_missing_images_say_what_to_run(repo):
    shutil.rmtree(repo / "data" / "prepared")
    verdict, = _verify(repo)
    assert "missing data folder for digits; run `repro data prepare digits`" in verdict.detail


def test_a_checkpoint_is_downloaded_verified_and_the_next_url_tried_only_when_unreachable(repo, tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(_released_file(repo), served / "good.safetensors")
    bad = bytearray(_released_file(repo).read_bytes())
    bad[-5] ^= 1
    (served / "bad.safetensors").write_bytes(bytes(bad))
    with serve_folder(served) as base:
        entry, = read_manifest(repo / "paper" / "checkpoints.yaml")
        dead = "http://127.0.0.1:9/gone.safetensors"
        verdict, = _verify(repo, [replace(entry, urls=(dead, f"{base}/good.safetensors"))])
        assert verdict.verdict == "pass", verdict.detail
        assert verdict.source.startswith(str(repo / "cache")) and sha256_file(verdict.source) == entry.sha256

        # a copy that arrives and is wrong is the verdict: no silent fallback to the next mirror
        shutil.rmtree(repo / "cache")
        verdict, = _verify(repo, [replace(entry, urls=(f"{base}/bad.safetensors", f"{base}/good.safetensors"))])
        assert verdict.verdict == "error" and "does not match the expected" in verdict.detail
        assert not any(p.is_file() for p in (repo / "cache").rglob("*"))


def test_manifest_problems_are_one_line_naming_the_entry(tmp_path, released):
    manifest = tmp_path / "m.yaml"
    with pytest.raises(ReproError, match="release manifest not found"):
        read_manifest(manifest)
    document = yaml.safe_load((released[0] / "paper" / "checkpoints.yaml").read_text())
    document["checkpoints"][0]["sha256"] = "abc"
    manifest.write_text(yaml.safe_dump(document))
    with pytest.raises(ReproError, match=r"m.yaml: checkpoint 1: sha256 'abc' is not 64 lowercase hex digits"):
        read_manifest(manifest)
    document["checkpoints"][0]["urls"] = ["http://example.org/x.safetensors"]
    del document["checkpoints"][0]["tolerance_reason"]
    manifest.write_text(yaml.safe_dump(document))
    with pytest.raises(ReproError, match="checkpoint 1: missing field 'tolerance_reason'"):
        read_manifest(manifest)
    document["checkpoints"][0]["urls"] = ["https://example.org/x.safetensors"]
    document["checkpoints"][0]["sha256"] = "0" * 64
    document["checkpoints"][0]["tolerance_reason"] = "why"
    document["checkpoints"][0]["tolerance"] = 1.5
    manifest.write_text(yaml.safe_dump(document))
    with pytest.raises(ReproError, match=r"tolerance 1.5 is wider than the range of accuracy \(1\)"):
        read_manifest(manifest)
    entry = read_manifest(released[0] / "paper" / "checkpoints.yaml")[0]
    with pytest.raises(ReproError, match="refused URL 'http://example.org/x.safetensors'"):
        evaluate.manifest_sources(replace(entry, urls=("http://example.org/x.safetensors",)), manifest)
    with pytest.raises(UsageError, match=f"no checkpoint for {SQUEEZE} on digits"):
        find_entry([entry], SQUEEZE, "digits", manifest)
    with pytest.raises(ReproError, match="unknown checkpoint format '.ckpt'"):
        evaluate.obtain(entry, str(tmp_path / "model.ckpt"), tmp_path)


# --- through the `repro` command ------------------------------------------------------------------------------------

def test_the_cli_verifies_writes_a_report_and_exits_non_zero_on_a_failure(repo):
    done = run([REPRO, "eval", "--model", TINY, "--dataset", "digits"], repo)
    assert "1 checkpoint(s): 1 pass, 0 fail" in done.stdout and "pass" in done.stdout
    report = json.loads((repo / "results" / "eval.json").read_text())
    assert report["counts"] == {"pass": 1, "fail": 0, "error": 0, "skipped": 0}
    assert report["checkpoints"][0]["value"] == report["checkpoints"][0]["recorded"]

    _released_file(repo).write_bytes(_released_file(repo).read_bytes()[:-1] + b"\x00")
    done = run([REPRO, "eval", "--all"], repo, check=False)
    assert done.returncode == 1 and "1 checkpoint(s) did not verify" in done.stderr
    assert "refused before loading" in done.stderr
    assert json.loads((repo / "results" / "eval.json").read_text())["counts"]["error"] == 1


def test_a_hostile_pickle_handed_to_the_cli_leaves_no_trace(repo, tmp_path):
    marker = tmp_path / "pwned"
    hostile = hostile_pickle(tmp_path / "model.pth", marker)
    entry, = read_manifest(repo / "paper" / "checkpoints.yaml")
    _write_manifest(repo, [replace(entry, format=PICKLE, sha256=sha256_file(hostile), size=hostile.stat().st_size)])
    for flags in ([], ["--allow-pickle"]):
        done = run([REPRO, "eval", "--model", TINY, "--dataset", "digits", "--checkpoint", str(hostile), *flags],
                   repo, check=False)
        assert done.returncode == 1 and "did not verify" in done.stderr, done.stderr
        assert ("refused to load" if flags else "can run code when loaded") in done.stderr
        assert not marker.exists() and "Traceback" not in done.stderr


def test_in_study_skips_the_checkpoints_of_other_datasets(repo):
    """The dvc `eval` stage's filter: a checkpoint of a dataset outside params.yaml's study is listed, not run."""
    entry, = read_manifest(repo / "paper" / "checkpoints.yaml")
    _write_manifest(repo, [entry, replace(entry, dataset="eurosat")])
    shutil.copy(ROOT / "profiles" / "smoke.yaml", repo / "params.yaml")  # its study: digits
    done = run([REPRO, "eval", "--all", "--in-study"], repo)
    assert "skipped 1 checkpoint(s) of datasets outside the active study: eurosat" in done.stdout
    report = json.loads((repo / "results" / "eval.json").read_text())
    assert report["counts"] == {"pass": 1, "fail": 0, "error": 0, "skipped": 1}
    assert report["skipped"] == [f"{TINY} on eurosat"]
    done = run([REPRO, "eval", "--all"], repo, check=False)  # without the filter it is tried, and has no data
    assert done.returncode == 1 and "1 checkpoint(s) did not verify" in done.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["eval"], "give either --all, or both --model and --dataset"),
    (["eval", "--in-study", "--model", TINY, "--dataset", "digits"], "--in-study filters --all"),
    (["eval", "--all", "--model", TINY], "give either --all, or both --model and --dataset"),
    (["eval", "--all", "--checkpoint", "x.safetensors"], "--checkpoint names one file"),
    (["eval", "--model", "resnet", "--dataset", "digits"], "unknown model 'resnet'"),
    (["eval", "--model", SQUEEZE, "--dataset", "digits"], f"has no checkpoint for {SQUEEZE} on digits"),
    (["eval", "--all", "--manifest", "nowhere.yaml"], "nowhere.yaml: release manifest not found"),
])
def test_bad_eval_arguments_give_one_line(repo, args, message):
    done = run([REPRO, *args], repo, check=False)
    assert done.returncode in (1, 2) and message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (repo / "results" / "eval.json").exists()


def test_help_of_the_new_verbs_never_imports_torch():
    code = ("import sys\nfrom repro.cli import app\nfor verb in (['eval'], ['release']):\n"
            "    try:\n        app(verb + ['--help'])\n    except SystemExit:\n        pass\n"
            "print(sorted(m for m in ('torch', 'pandas', 'timm', 'safetensors') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_the_committed_release_verifies_on_one_checkpoint(tmp_path):
    """The reviewer's path on a fresh copy of the repository, for the smallest released checkpoint: prepare the
    digits, verify offline; `tests/test_eval.py::test_the_committed_release_verifies_end_to_end` does them all."""
    from conftest import copy_checkout

    root = copy_checkout(tmp_path / "clone")
    run([REPRO, "data", "prepare", "digits"], root)
    # the smallest file the committed manifest lists (which models the embedded study releases may change)
    smallest = min(read_manifest(root / "paper" / "checkpoints.yaml"), key=lambda entry: entry.size)
    done = run([REPRO, "eval", "--model", smallest.model, "--dataset", smallest.dataset], root)
    assert "1 pass, 0 fail" in done.stdout


@pytest.mark.slow
def test_the_committed_release_verifies_end_to_end(tmp_path):
    """Done means: on a fresh clone, `repro data prepare digits && repro eval --all` verifies every released
    checkpoint offline and prints pass."""
    from conftest import copy_checkout

    root = copy_checkout(tmp_path / "clone")
    run([REPRO, "data", "prepare", "digits"], root)
    done = run([REPRO, "eval", "--all"], root)
    released = len(read_manifest(root / "paper" / "checkpoints.yaml"))
    assert released == 3 and f"{released} checkpoint(s): {released} pass, 0 fail, 0 refused" in done.stdout
    report = json.loads((root / "results" / "eval.json").read_text())
    assert all(c["difference"] == 0.0 for c in report["checkpoints"])  # measured: CPU reproduces them exactly
