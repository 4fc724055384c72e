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
     f"bad.yaml:{PARAMS.splitlines().index('  epochs: 3') + 2}: not valid YAML: key 'epochs' is given twice"),
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
    ("nan wd", _swap("    - 1.0e-4\n", "    - .nan\n"), ["profile", "show", "--params", "{}"],
     "finetune.wds.0: Input should be a finite number"),
    ("a million epochs", _swap("  epochs: 3\n", "  epochs: 1000000\n"), ["profile", "show", "--params", "{}"],
     "finetune.epochs: Input should be less than or equal to 1000"),
    ("huge batch", _swap("  batch_size: 32\n", "  batch_size: 10000000\n"), ["profile", "show", "--params", "{}"],
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


# --- images and folders, through `repro data prepare folder:PATH` and `csv:PATH` ------------------------------------

def _own_folder(root: Path, per_class: int = 5) -> Path:
    from PIL import Image

    for name, value in (("cat", 60), ("dog", 200)):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (12, 10), (value, i * 10, 0)).save(root / name / f"{name}{i}.png")
    return root


def _prepare(repo: Path, source: str, *extra: str):
    return run([REPRO, "data", "prepare", source, "--name", "mine", *extra], repo, check=False)


def _bomb_png(path: Path) -> None:
    """A valid PNG header claiming 100,000 x 100,000 px, followed by a few bytes of deflated zeros."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(bytes(1000)))
                     + chunk(b"IEND", b""))


@pytest.mark.parametrize(("make", "message"), [
    (lambda p: _bomb_png(p / "cat" / "huge.png"), "huge.png: 100000 x 100000 px is over the limit of 100,000,000"),
    (lambda p: __import__("PIL.Image").Image.new("P", (8, 8)).save(p / "cat" / "anim.png", format="GIF"),
     "anim.png: a GIF image, not one of the accepted formats"),
], ids=["decompression bomb", "GIF named .png"])
def test_a_bad_image_in_own_data_is_named_and_nothing_is_written(repo, tmp_path, make, message):
    folder = _own_folder(tmp_path / "pets")
    make(folder)
    before = _files(repo)
    done = _prepare(repo, f"folder:{folder}")
    assert done.returncode == 1 and message in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    assert _files(repo) == before


def test_a_16_bit_png_is_scaled_to_8_bits_not_clipped(tmp_path):
    import numpy as np
    from PIL import Image

    from repro.datasets.loaders import read_image

    ramp = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1040)  # 0 .. 65520
    Image.fromarray(ramp).save(tmp_path / "scan.png")
    assert Image.open(tmp_path / "scan.png").mode == "I;16"
    pixels = read_image(tmp_path, ("scan.png",))
    assert pixels.shape == (8, 8, 3) and pixels.dtype == np.uint8
    np.testing.assert_array_equal(pixels[..., 0], np.rint(ramp / 257).astype(np.uint8))
    assert pixels.min() == 0 and pixels.max() == 255 and len(np.unique(pixels)) == 64  # clipped: two values


def test_the_folder_walk_does_not_follow_links_out_of_the_folder_or_in_loops(repo, tmp_path):
    folder = _own_folder(tmp_path / "pets")
    outside = _own_folder(tmp_path / "elsewhere")
    (folder / "cat" / "loop").symlink_to(folder / "cat")  # a loop: cat/loop/loop/... is cat again
    (folder / "dog" / "more").symlink_to(outside / "dog")  # out of the dataset
    (folder / "dog" / "inside").symlink_to(folder / "cat")  # inside, but cat's folder: no second copy
    from repro.datasets.own import scan_folder

    ids = [row.id for row in scan_folder(folder).rows]
    assert sorted(ids) == [f"{c}/{c}{i}.png" for c in ("cat", "dog") for i in range(5)]
    done = _prepare(repo, f"folder:{folder}")
    assert done.returncode == 0, done.stderr
    rows = (repo / "data" / "splits" / "mine.csv").read_text().splitlines()
    assert len(rows) == 1 + 10


def test_labels_that_are_one_number_spelled_two_ways_are_refused(repo, tmp_path):
    folder = _own_folder(tmp_path / "pets")
    lines = ["path,label"] + [f"cat/cat{i}.png,{'01' if i == 3 else '1'}" for i in range(5)] + \
        [f"dog/dog{i}.png,2" for i in range(5)]
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    before = _files(repo)
    done = _prepare(repo, f"csv:{folder / 'labels.csv'}")
    assert done.returncode == 1 and "labels '1' and '01' (labels.csv:2, labels.csv:5) are the same number" in \
        done.stderr, done.stderr
    assert _files(repo) == before


# --- output paths: checked before any work starts -------------------------------------------------------------------

@pytest.mark.parametrize(("target", "message"), [
    ("params.yaml/claims.json", "params.yaml/claims.json: cannot be written, params.yaml is a file, not a folder"),
    ("paper", "paper: is a folder, expected a file path to write"),
], ids=["under an existing file", "an existing folder"])
def test_an_output_path_that_cannot_be_written_is_refused_before_work(repo, target, message):
    before = _files(repo)
    for args in (["verify", "--json", target], ["check", "--out", target], ["report", "--out", target]):
        done = run([REPRO, *args], repo, check=False)
        assert done.returncode != 0 and "Traceback" not in done.stderr, done.stderr
        assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert _files(repo) == before


def test_an_output_folder_that_is_a_file_is_refused(repo):
    before = _files(repo)
    done = run([REPRO, "finetune", "--model", "timm/efficientnet_b0.ra_in1k", "--dataset", "digits", "--out",
                "params.yaml"], repo, check=False)
    assert done.returncode != 0 and "params.yaml: is a file, expected a folder path to write" in done.stderr
    assert _files(repo) == before


def test_a_read_only_folder_is_refused(tmp_path, monkeypatch):
    """Root ignores permission bits, so the read-only answer of the file system is simulated at os.access."""
    import os

    from repro.errors import ReproError
    from repro.inputs import output_path

    monkeypatch.setattr(os, "access", lambda path, mode: False)
    with pytest.raises(ReproError, match="out.json: cannot be written, .* is read-only or not writable"):
        output_path(tmp_path / "sub" / "out.json")


@pytest.mark.parametrize(("data", "message"), [
    ("path,label\ncaf\xe9.png,1\n".encode("latin-1"), "labels.csv:2: not UTF-8 text"),
    (b"path,label,label\na.png,1,1\n", "labels.csv:1: column 'label' appears more than once in the header"),
], ids=["Latin-1", "repeated column"])
def test_a_bad_own_csv_is_one_line_naming_it(repo, tmp_path, data, message):
    (tmp_path / "labels.csv").write_bytes(data)
    before = _files(repo)
    done = _prepare(repo, f"csv:{tmp_path / 'labels.csv'}")
    assert done.returncode == 1 and message in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert _files(repo) == before
