"""repro release: self-describing, reproducible checkpoint files and a manifest that pins them; and the committed
release of the embedded study is intact."""

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from checkpoint_fixtures import SQUEEZE, TINY, digits_layout, make_run
from conftest import ROOT
from repro.download import file_url_path
from repro.errors import ReproError
from repro.evaluate import manifest_sources, read_manifest
from repro.release import RunRef, read_metadata, release, released_path, tolerance_for


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("release")
    prepared, split = digits_layout(root)
    run = root / "results" / "runs" / TINY / "digits"
    record = make_run(run, TINY, prepared, split)
    return root, RunRef(run, split, prepared), record


def test_release_writes_a_self_describing_file_and_a_manifest_that_pins_it(study, tmp_path):
    root, ref, record = study
    manifest = tmp_path / "paper" / "checkpoints.yaml"
    entry, = release([ref], tmp_path / "paper" / "checkpoints", manifest)
    target = released_path(tmp_path / "paper" / "checkpoints", TINY, "digits")
    assert target == tmp_path / "paper/checkpoints/timm/test_efficientnet.r160_in1k/digits.safetensors"
    data = target.read_bytes()
    assert (entry.sha256, entry.size) == (hashlib.sha256(data).hexdigest(), len(data))
    assert entry.urls == ("checkpoints/timm/test_efficientnet.r160_in1k/digits.safetensors",)
    assert manifest_sources(entry, manifest) == [target.as_uri()]
    assert read_manifest(manifest) == [entry]
    assert entry.tolerance_reason.endswith(f"Re-evaluated at release: accuracy {record['value']:.6f}, class "
                                           "probabilities within 0.0e+00 of the recorded ones.")

    meta = read_metadata(target)
    assert (meta["model"], meta["dataset"], meta["metric"], meta["value"]) == (TINY, "digits", "accuracy",
                                                                               record["value"])
    assert meta["classes"] == [str(d) for d in range(10)] and meta["num_classes"] == 10
    assert meta["preprocessing"]["image_size"] == 32 and meta["preprocessing"]["mean"] == record["config"]["mean"]
    assert meta["split"] == "test" and meta["split_sha256"] == hashlib.sha256(ref.split_file.read_bytes()).hexdigest()
    released, original = load_file(target), load_file(ref.run_dir / "model.safetensors")
    assert released.keys() == original.keys() and all(torch.equal(released[k], original[k]) for k in original)

    # rebuilt from the same run, the release is byte for byte the same (one metadata key: no ordering drift)
    again, = release([ref], tmp_path / "paper" / "checkpoints", manifest)
    assert again.sha256 == entry.sha256 and target.read_bytes() == data


def test_the_accuracy_tolerance_counts_near_ties_in_the_recorded_predictions(tmp_path):
    predictions = tmp_path / "digits" / "predictions.csv"
    predictions.parent.mkdir()
    predictions.write_text("id,target,score_0,score_1,score_2\n"
                           "a,0,0.5,0.4995,0.0005\n"     # within 1e-3: could flip
                           "b,1,0.2,0.7,0.1\n"
                           "e,1,0.4,0.3985,0.2015\n"      # 0.0015 apart: cannot
                           "c,2,0.3,0.3,0.4\n"
                           "d,0,0.45,0.45,0.1\n")        # an exact tie
    tolerance, reason = tolerance_for("accuracy", predictions, None)
    assert tolerance == 0.4 and reason.startswith("2 of 5 report-split images")
    with pytest.raises(ReproError, match="state one with `repro release --tolerance VALUE`"):
        tolerance_for("roc_auc", predictions, None)
    assert tolerance_for("roc_auc", predictions, 0.01)[0] == 0.01


def test_release_refuses_what_it_cannot_stand_behind_and_keeps_the_old_manifest(study, tmp_path):
    root, ref, _ = study
    manifest = tmp_path / "checkpoints.yaml"
    manifest.write_text("previous manifest\n")
    with pytest.raises(ReproError, match=r"missing; run `repro finetune` first"):
        release([ref, RunRef(tmp_path / "nowhere", ref.split_file)], tmp_path / "out", manifest)
    assert manifest.read_text() == "previous manifest\n"
    with pytest.raises(ReproError, match="must be served over https://"):
        release([ref], tmp_path / "out", manifest, base_url="http://example.org/files")
    entry, = release([ref], tmp_path / "out", manifest, base_url="https://example.org/files/")
    assert entry.urls[1] == "https://example.org/files/out/timm/test_efficientnet.r160_in1k/digits.safetensors"

    changed = tmp_path / "changed"
    shutil.copytree(ref.run_dir, changed)
    record = json.loads((ref.run_dir / "run.json").read_text())
    (changed / "run.json").write_text(json.dumps({**record, "value": record["value"] + 0.25}))
    with pytest.raises(ReproError, match=r"re-evaluated here, accuracy is .*beyond the .* tolerance\); not released"):
        release([RunRef(changed, ref.split_file, ref.data_dir)], tmp_path / "out2", manifest)
    assert not (tmp_path / "out2").exists()

    diverged = tmp_path / "diverged"
    diverged.mkdir()
    (diverged / "run.json").write_text(json.dumps({**record, "status": "diverged", "value": None}))
    with pytest.raises(ReproError, match="status 'diverged', no checkpoint to release"):
        release([RunRef(diverged, ref.split_file)], tmp_path / "out", manifest)


def test_a_run_whose_weights_do_not_fit_its_model_is_not_released(study, tmp_path):
    root, ref, _ = study
    wrong = tmp_path / "run"
    wrong.mkdir()
    for name in ("run.json", "predictions.csv", "model.safetensors"):
        (wrong / name).write_bytes((ref.run_dir / name).read_bytes())
    record = json.loads((wrong / "run.json").read_text())
    (wrong / "run.json").write_text(json.dumps({**record, "model": SQUEEZE}))
    with pytest.raises(ReproError, match=f"does not fit {SQUEEZE} with 10 classes at 32 px: .*missing"):
        release([RunRef(wrong, ref.split_file)], tmp_path / "out", tmp_path / "m.yaml")
    assert not (tmp_path / "m.yaml").exists()


def test_the_committed_release_matches_its_manifest():
    """paper/checkpoints.yaml pins the files committed beside it, and they carry the metadata it states."""
    manifest = ROOT / "paper" / "checkpoints.yaml"
    entries = read_manifest(manifest)
    # three of the embedded study's five runs (git stays small): both MobileNetV2 inits and EfficientNet-Lite0
    assert [e.model for e in entries] == ["torchvision/mobilenet_v2.IMAGENET1K_V1", "timm/tf_efficientnet_lite0.mli_in1k",
                                          "torchvision/mobilenet_v2.scratch"] and {e.dataset for e in entries} == {"digits"}
    assert sum(e.size for e in entries) < 40e6
    split_sha = hashlib.sha256((ROOT / "data" / "splits" / "digits.csv").read_bytes()).hexdigest()
    for entry in entries:
        path = file_url_path(manifest_sources(entry, manifest)[0])
        assert path.is_relative_to(ROOT / "paper" / "checkpoints"), entry.key
        data = path.read_bytes()
        assert (hashlib.sha256(data).hexdigest(), len(data)) == (entry.sha256, entry.size), entry.key
        meta = read_metadata(path)
        assert (meta["model"], meta["dataset"], meta["value"], meta["split_sha256"]) == \
            (entry.model, entry.dataset, entry.value, entry.split_sha256), entry.key
        assert entry.split_sha256 == split_sha, f"{entry.key}: released against another split than the committed one"


_RELEASE_SCRIPT = """
import sys
from pathlib import Path
from repro.release import RunRef, release, write_archive
root, runs = Path(sys.argv[1]), sys.argv[2:]
refs = [RunRef(Path(r), root / "data/splits/digits.csv", root / "data/prepared/digits") for r in runs]
entries = release(refs, root / "paper/checkpoints", root / "paper/checkpoints.yaml")
write_archive(entries, root / "paper/checkpoints.yaml", root / "release.zip")
"""


def _release_in(root: Path, folder: Path, env: dict):
    """Run the release script (a process of its own, so that a failpoint can SIGKILL it) for the tiny run of
    `root` into `folder`."""
    import subprocess
    import sys

    runs = [str(root / "results/runs" / TINY / "digits")]
    shutil.copytree(root / "data", folder / "data", dirs_exist_ok=True)
    return subprocess.run([sys.executable, "-c", _RELEASE_SCRIPT, str(folder), *runs], env=env,
                          capture_output=True, text=True)


def _released_files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and not str(p.relative_to(folder)).startswith("data/")}


@pytest.fixture(scope="module")
def uninterrupted_release(study, tmp_path_factory) -> dict[str, bytes]:
    """The files an uninterrupted release of the study's run writes: one reference for every failpoint case."""
    from conftest import tool_env

    reference = tmp_path_factory.mktemp("reference")
    done = _release_in(study[0], reference, tool_env())
    assert done.returncode == 0, done.stderr
    return _released_files(reference)


@pytest.mark.parametrize("spec", ["release.after_export:1", "atomic_write/digits.safetensors:1",
                                  "atomic_write/checkpoints.yaml:1", "release.archive_before_rename:1"])
def test_a_release_killed_at_a_failpoint_reruns_to_the_same_bytes(study, uninterrupted_release, tmp_path, spec):
    """SIGKILL `repro release`'s library path at a named point (repro.failpoints); the rerun writes exactly the
    files an uninterrupted release writes, and no temp file is left."""
    from conftest import tool_env
    from repro import failpoints

    root = study[0]
    crashed = tmp_path / "crashed"
    done = _release_in(root, crashed, {**tool_env(), failpoints.VARIABLE: spec})
    assert done.returncode == -9, f"{spec}: not killed ({done.returncode})\n{done.stderr[-1500:]}"
    assert _release_in(root, crashed, tool_env()).returncode == 0
    assert _released_files(crashed) == uninterrupted_release
    assert not [p for p in crashed.rglob("*") if ".tmp-" in p.name]
