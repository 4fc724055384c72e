"""A corpus of bad inputs, each through the real `repro` command: a non-zero exit, one line on stderr naming the
culprit, no traceback, and no file left behind (issue 15). Each kind of input is validated in one place
(repro.inputs for text/YAML/CSV files, repro.config for parameter ranges, repro.train.check_device for devices), so
a case here covers every verb that reads that kind of input.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from conftest import BIN, ROOT, run

REPRO = str(BIN / "repro")
PARAMS = (ROOT / "profiles" / "smoke.yaml").read_text()


@pytest.fixture
def repo(tmp_path) -> Path:
    """The few committed files the verbs below read, in a folder of their own."""
    root = tmp_path / "repo"
    for name in ("params.yaml", "weights.lock.json", "dvc.yaml", "paper/claims.yaml", "paper/checkpoints.yaml",
                 "benchmarks/throughput.csv"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / name, root / name)
    return root


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _bytes(data: bytes, name: str = "bad.yaml"):
    def make(root: Path) -> str:
        (root / name).write_bytes(data)
        return name
    return make


def _params(text: str):
    return _bytes(text.encode())


def _folder(root: Path) -> str:
    (root / "bad.yaml").mkdir()
    return "bad.yaml"


def _split(text: str):
    def make(root: Path) -> str:
        (root / "data" / "splits").mkdir(parents=True)
        (root / "data" / "splits" / "digits.csv").write_text(text)
        return "data/splits/digits.csv"
    return make


def _swap(old: str, new: str):
    assert old in PARAMS, old
    return _params(PARAMS.replace(old, new, 1))


# (id, how the bad file is made (returns its relative path), the command ({} is that path), text the one line must
# hold)
CASES = [
    ("params duplicate key", _swap("  epochs: 3\n", "  epochs: 3\n  epochs: 4\n"), ["profile", "show", "--params", "{}"],
     "bad.yaml:28: not valid YAML: key 'epochs' is given twice"),
    ("params Latin-1", _bytes(PARAMS.replace("# The active", "# Caf\xe9: the active").encode("latin-1")),
     ["profile", "show", "--params", "{}"], "bad.yaml:1: not UTF-8 text"),
    ("params binary", _bytes(b"\x89PNG\r\n\x1a\n\0\0\0"), ["profile", "show", "--params", "{}"],
     "bad.yaml: a binary file"),
    ("params is a folder", _folder, ["profile", "show", "--params", "{}"], "bad.yaml: is a folder"),
    ("params not YAML", _params("profile: [smoke\n"), ["profile", "show", "--params", "{}"], "not valid YAML"),
    ("negative seed", _swap("  seed: 0\n", "  seed: -1\n"), ["profile", "show", "--params", "{}"],
     "prepare.seed: Input should be greater than or equal to 0"),
    ("infinite lr", _swap("    - 1.0e-2\n", "    - .inf\n"), ["profile", "show", "--params", "{}"],
     "finetune.lrs.0: Input should be a finite number"),
    ("nan wd", _swap("    - 0.0\n", "    - .nan\n"), ["profile", "show", "--params", "{}"],
     "finetune.wds.1: Input should be a finite number"),
    ("a million epochs", _swap("  epochs: 3\n", "  epochs: 1000000\n"), ["profile", "show", "--params", "{}"],
     "finetune.epochs: Input should be less than or equal to 1000"),
    ("huge batch", _swap("  batch_size: 64\n", "  batch_size: 10000000\n"), ["profile", "show", "--params", "{}"],
     "finetune.batch_size: Input should be less than or equal to 65536"),
    ("image size 0", _swap("  image_size: null\n", "  image_size: 0\n"), ["profile", "show", "--params", "{}"],
     "finetune.image_size: Input should be greater than or equal to 8"),
    ("threshold out of range", _swap("  threshold: 70.0\n", "  threshold: 170.0\n"),
     ["profile", "show", "--params", "{}"], "analyze.threshold: Input should be less than or equal to 100"),
    ("a billion resamples", _swap("  bootstrap_resamples: 2000\n", "  bootstrap_resamples: 1000000000\n"),
     ["profile", "show", "--params", "{}"], "analyze.bootstrap_resamples: Input should be less than or equal to"),
    ("device tpu", _swap("  device: auto\n", "  device: tpu:7\n"), ["profile", "show", "--params", "{}"],
     "finetune.device: 'tpu:7' is not a device this tool runs on; valid: auto, cpu, cuda, cuda:N"),
    ("device cuda without a driver", _swap("  device: auto\n", "  device: cuda:99\n"),
     ["finetune", "--model", "timm/efficientnet_b0.ra_in1k", "--dataset", "digits", "--dry-run", "--params", "{}"],
     "finetune.device: 'cuda:99' but this machine has no usable CUDA device"),
    ("claims duplicate key", _bytes(b"claims: []\nclaims: []\n", "claims.yaml"),
     ["verify", "--claims", "{}"], "claims.yaml:2: not valid YAML: key 'claims' is given twice"),
    ("manifest Latin-1", _bytes("version: 1\n# \xe9\n".encode("latin-1"), "m.yaml"),
     ["eval", "--all", "--manifest", "{}"], "m.yaml:2: not UTF-8 text"),
    ("split CSV repeated column", _split("id,label,split,label\na,1,train,1\n"), ["plan"],
     "digits.csv:1: column 'label' appears more than once in the header"),
    ("split CSV empty", _split(""), ["plan"], "digits.csv: empty, expected a CSV header (id,label,split)"),
    ("split CSV ragged row", _split("id,label,split\na,1\n"), ["plan"], "digits.csv:2: expected 3 fields"),
]


@pytest.mark.parametrize(("make", "args", "message"), [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_a_bad_input_is_one_line_naming_it_with_nothing_written(repo, make, args, message):
    culprit = make(repo)
    before = _files(repo)
    done = run([REPRO, *[a.format(culprit) for a in args]], repo, check=False)
    assert done.returncode != 0
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr, done.stderr
    assert message in lines[0], lines[0]
    assert _files(repo) == before


def test_a_sweep_on_an_unusable_device_leaves_no_state_or_lock_behind(repo):
    text = (repo / "params.yaml").read_text().replace("  device: auto\n", "  device: cuda:3\n")
    (repo / "params.yaml").write_text(text)
    before = _files(repo)
    done = run([REPRO, "sweep", "--model", "timm/efficientnet_b0.ra_in1k", "--dataset", "digits"], repo,
               check=False)
    assert done.returncode == 1 and "finetune.device: 'cuda:3'" in done.stderr, done.stderr
    assert _files(repo) == before and not (repo / "results").exists()
    (repo / "params.yaml").write_text(text.replace("  device: cuda:3\n", "  device: cpu\n"))
    before = _files(repo)
    done = run([REPRO, "sweep", "--devices", "cpu,tpu:1"], repo, check=False)
    assert done.returncode == 1 and "--devices: 'tpu:1' is not a device" in done.stderr, done.stderr
    assert _files(repo) == before and not (repo / "results").exists()


def test_every_json_we_write_is_strict():
    import json

    from repro import jsonfile

    text = jsonfile.dumps({"slope": float("nan"), "ci": [float("-inf"), 1.5], "nested": {"x": float("inf")}})
    assert json.loads(text, parse_constant=lambda token: pytest.fail(f"non-standard token {token}")) == \
        {"slope": None, "ci": [None, 1.5], "nested": {"x": None}}
