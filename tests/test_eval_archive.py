"""repro release --archive and repro eval --archive: one deterministic zip holds the manifest and the files at their
relative URLs; eval takes each file from the unpacked archive and checks it against the repository's manifest. An
archive with a member that would land outside its folder, or that is no archive, is refused whole, and nothing is
written outside the temporary folder.

The release is a real one (repro.release) of the tiny registry model on 40 embedded digits, as in test_eval.py.
"""

import io
import json
import os
import shutil
import tarfile
import zipfile
from pathlib import Path

import pytest

import repro.evaluate as evaluate
from checkpoint_fixtures import TINY, digits_layout, make_run
from conftest import BIN, run, serve_folder
from repro.errors import ReproError, UsageError
from repro.evaluate import read_manifest, unpacked_archive, verify_all
from repro.release import RunRef, release, write_archive

REPRO = str(BIN / "repro")
MEMBER = f"checkpoints/{TINY}/digits.safetensors"


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """A folder laid out like the repository (data/prepared/digits, data/splits/digits.csv, a release of the tiny
    model under paper/) and the release archive of it, release.zip."""
    root = tmp_path_factory.mktemp("archive")
    prepared, split = digits_layout(root)
    run_dir = root / "results" / "runs" / TINY / "digits"
    make_run(run_dir, TINY, prepared, split)
    ref = RunRef(run_dir, split, prepared)
    entries = release([ref], root / "paper" / "checkpoints", root / "paper" / "checkpoints.yaml")
    write_archive(entries, root / "paper" / "checkpoints.yaml", root / "release.zip")
    return root, ref


@pytest.fixture
def repo(released, tmp_path):
    """A private copy of the layout whose released files are gone: what eval verifies must come from the
    archive."""
    root = tmp_path / "repo"
    shutil.copytree(released[0], root)
    shutil.rmtree(root / "paper" / "checkpoints")
    return root


@pytest.fixture
def no_loading(monkeypatch):
    calls = []
    monkeypatch.setattr(evaluate, "load_tensors", lambda *args: calls.append(args) or pytest.fail("loaded"))
    return calls


def _verify(root, archive, **kwargs):
    manifest = root / "paper" / "checkpoints.yaml"
    with unpacked_archive(str(archive), root / "cache") as base:
        return verify_all(read_manifest(manifest), manifest, data_dir=lambda name: root / "data" / "prepared" / name,
                          splits_dir=root / "data" / "splits", cache_dir=root / "cache", base=base,
                          base_label=str(archive), **kwargs)


def _files(folder: Path) -> set[Path]:
    return set(folder.rglob("*"))


def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return path


def _members(archive: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(archive) as z:
        return {name: z.read(name) for name in z.namelist()}


def test_the_archive_holds_the_manifest_and_the_files_and_is_byte_identical_when_rebuilt(released, tmp_path):
    root, ref = released
    archive = root / "release.zip"
    with zipfile.ZipFile(archive) as z:
        infos = z.infolist()
    assert [i.filename for i in infos] == ["checkpoints.yaml", MEMBER]  # sorted by name
    assert all(i.date_time == (1980, 1, 1, 0, 0, 0) and i.compress_type == zipfile.ZIP_STORED and i.extra == b""
               for i in infos)
    members = _members(archive)
    assert members["checkpoints.yaml"] == (root / "paper" / "checkpoints.yaml").read_bytes()
    assert members[MEMBER] == (root / "paper" / MEMBER).read_bytes()

    # the same release made again elsewhere, its files touched: the same bytes
    again = tmp_path / "paper"
    entries = release([ref], again / "checkpoints", again / "checkpoints.yaml")
    os.utime(again / MEMBER, (1.7e9, 1.7e9))
    assert write_archive(entries, again / "checkpoints.yaml", tmp_path / "out" / "again.zip") == \
        ["checkpoints.yaml", MEMBER]
    assert (tmp_path / "out" / "again.zip").read_bytes() == archive.read_bytes()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["again.zip"]  # no temporary file left

    with pytest.raises(UsageError, match="give a path ending in .zip"):
        write_archive(entries, again / "checkpoints.yaml", tmp_path / "release.tar")
    (again / MEMBER).write_bytes(b"not the released file")
    with pytest.raises(ReproError, match="not the file .* pins for"):
        write_archive(entries, again / "checkpoints.yaml", tmp_path / "out" / "again.zip")
    assert (tmp_path / "out" / "again.zip").read_bytes() == archive.read_bytes()  # the old archive is kept


def test_eval_from_the_archive_passes_from_a_path_a_tar_and_over_http(released, repo, tmp_path):
    archive = released[0] / "release.zip"
    verdict, = _verify(repo, archive)
    assert verdict.verdict == "pass", verdict.detail
    assert verdict.source == f"{archive}/{MEMBER}" and verdict.difference == 0.0 and verdict.images == 40
    assert [p.name for p in (repo / "cache").iterdir()] == []  # the unpacked folder is removed

    tar = repo / "release.tar.gz"  # the same layout as a tar, as an archive site may repackage it
    with tarfile.open(tar, "w:gz") as t:
        for name, data in _members(archive).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    verdict, = _verify(repo, tar)
    assert verdict.verdict == "pass", verdict.detail

    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(archive, served / "release.zip")
    with serve_folder(served) as base:
        url = f"{base}/release.zip"
        verdict, = _verify(repo, url)
        assert verdict.verdict == "pass", verdict.detail
        assert verdict.source == f"{url}/{MEMBER}"
        assert [p.name for p in (repo / "cache").iterdir()] == ["archives"]  # the download, in the cache folder
        verdict, = _verify(repo, archive.as_uri())
        assert verdict.verdict == "pass", verdict.detail


def test_a_tampered_member_is_refused_before_loading(released, repo, no_loading):
    members = _members(released[0] / "release.zip")
    data = bytearray(members[MEMBER])
    data[-1] ^= 0x01
    members[MEMBER] = bytes(data)
    # the archive's own manifest is not trusted: pinning the tampered file there changes nothing
    members["checkpoints.yaml"] = b"version: 1\ncheckpoints: []\n"
    archive = _zip(repo / "tampered.zip", members)
    verdict, = _verify(repo, archive)
    assert verdict.verdict == "error" and "does not match the manifest's" in verdict.detail
    assert "refused before loading" in verdict.detail and no_loading == []
    assert verdict.detail.startswith(f"{archive}/{MEMBER}: sha256 ")  # named in the archive, not the temp folder


def test_a_missing_member_is_an_error_naming_it(released, repo):
    members = _members(released[0] / "release.zip")
    del members[MEMBER]
    archive = _zip(repo / "partial.zip", members)
    verdict, = _verify(repo, archive)
    assert verdict.verdict == "error"
    assert verdict.detail == f"{archive} has no member {MEMBER!r} (the file of {TINY} on digits)"


def _deep(repo: Path) -> Path:
    folder = repo / "in" / "deep"
    folder.mkdir(parents=True)
    return folder


def _escaping_zip(folder: Path) -> Path:
    return _zip(folder / "evil.zip", {"ok.txt": b"fine", "../escape.txt": b"x", "../../../escape.txt": b"x"})


def _absolute_tar(folder: Path) -> Path:
    path = folder / "evil.tar.gz"
    with tarfile.open(path, "w:gz") as t:
        for name in ("ok.txt", str(folder / "absolute.txt")):
            info = tarfile.TarInfo(name)
            info.size = 4
            t.addfile(info, io.BytesIO(b"fine"))
    return path


def _symlink_zip(folder: Path) -> Path:
    path = folder / "link.zip"
    with zipfile.ZipFile(path, "w") as z:
        info = zipfile.ZipInfo("checkpoints.yaml")
        info.external_attr = 0o120777 << 16  # a symbolic link to /etc/passwd
        z.writestr(info, "/etc/passwd")
    return path


@pytest.mark.parametrize(("make", "member", "why"), [
    (_escaping_zip, "../escape.txt", "would be written outside the target folder"),
    (_absolute_tar, "absolute.txt", "would be written outside the target folder"),
    (_symlink_zip, "checkpoints.yaml", "is a symbolic link"),
], ids=["zip ..", "tar absolute", "zip symlink"])
def test_an_archive_with_a_member_that_escapes_is_refused_whole_and_nothing_is_written_outside(repo, make, member,
                                                                                              why):
    archive = make(_deep(repo))
    before = _files(repo.parent)
    with pytest.raises(ReproError, match=f"member '[^']*{member}' {why}; refused, nothing unpacked"):
        _verify(repo, archive)
    assert _files(repo.parent) == before | {repo / "cache"}  # the cache folder, left empty
    assert list((repo / "cache").iterdir()) == []


def test_a_file_that_is_no_archive_or_is_missing_is_one_clear_error(repo):
    not_archive = repo / "release.zip"
    not_archive.write_bytes(b"PK but not really a zip\n" * 10)
    with pytest.raises(ReproError, match="release.zip: neither a zip nor a tar archive"):
        _verify(repo, not_archive)
    with pytest.raises(ReproError, match="nowhere.zip: release archive not found"):
        _verify(repo, repo / "nowhere.zip")
    with pytest.raises(ReproError, match="refused URL 'http://example.org/release.zip'"):
        _verify(repo, "http://example.org/release.zip")
    assert not (repo / "cache").exists()  # refused before a folder was made


# --- through the `repro` command ------------------------------------------------------------------------------------

def test_the_cli_verifies_from_an_archive(released, repo, tmp_path):
    shutil.copy(released[0] / "release.zip", tmp_path / "release.zip")
    report_file = tmp_path / "report.json"
    done = run([REPRO, "eval", "--all", "--archive", str(tmp_path / "release.zip"), "--manifest",
                "paper/checkpoints.yaml", "--json", str(report_file), "--cache-dir", str(tmp_path / "cache")], repo)
    assert "1 checkpoint(s): 1 pass, 0 fail" in done.stdout
    report = json.loads(report_file.read_text())
    assert report["counts"] == {"pass": 1, "fail": 0, "error": 0, "skipped": 0}
    assert report["checkpoints"][0]["verdict"] == "pass"
    assert report["checkpoints"][0]["source"] == f"{tmp_path / 'release.zip'}/{MEMBER}"
    assert list((tmp_path / "cache").iterdir()) == []

    _escaping_zip(tmp_path)
    done = run([REPRO, "eval", "--all", "--archive", str(tmp_path / "evil.zip"), "--json", str(report_file),
                "--cache-dir", str(tmp_path / "cache")], repo, check=False)
    assert done.returncode == 1 and "would be written outside the target folder" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["eval", "--model", TINY, "--dataset", "digits", "--checkpoint", "x.safetensors", "--archive", "r.zip"],
     "--checkpoint and --archive both say where the file is"),
    (["release", "--archive", "release.tar.gz"], "give a path ending in .zip"),
    (["release", "--archive", "release.zip", "--out", "elsewhere"], "needs the released files under the manifest's"),
])
def test_bad_archive_arguments_give_one_line(repo, args, message):
    done = run([REPRO, *args], repo, check=False)
    assert done.returncode == 2 and message in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert not (repo / "results" / "eval.json").exists() and not (repo / "paper" / "checkpoints").exists()


# --- hostile archives and redirects (issue 15) ----------------------------------------------------------------------

def _bomb_zip(folder: Path) -> Path:
    """A real decompression bomb, small: 100 MiB of zeros deflated to about 100 KB (1000:1)."""
    path = folder / "bomb.zip"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        with z.open("checkpoints.yaml", "w") as member:
            block = bytes(1 << 20)
            for _ in range(100):
                member.write(block)
    return path


def test_a_decompression_bomb_is_refused_through_the_cli_before_anything_is_unpacked(repo, tmp_path):
    archive = _bomb_zip(tmp_path)
    assert archive.stat().st_size < 1 << 20
    cache = tmp_path / "cache"
    done = run([REPRO, "eval", "--all", "--archive", str(archive), "--json", str(tmp_path / "report.json"),
                "--cache-dir", str(cache)], repo, check=False)
    assert done.returncode == 1, done.stderr
    assert "(a decompression bomb?); refused, nothing unpacked" in done.stderr and "limit of 100:1" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr
    assert not (tmp_path / "report.json").exists()
    assert not cache.exists() or not any(cache.rglob("*.yaml"))


def test_the_unpacked_size_bounds_hold_for_tar_too_and_small_archives_pass(tmp_path):
    from repro.datasets.fetch import check_unpacked_size, unpack

    path = tmp_path / "bomb.tar.gz"
    with tarfile.open(path, "w:gz") as t:
        info = tarfile.TarInfo("zeros.bin")
        info.size = 80 << 20
        t.addfile(info, io.BytesIO(bytes(info.size)))
    with pytest.raises(ReproError, match=r"bomb.tar.gz: .* bytes would unpack to 83,886,080 bytes"):
        unpack(path, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    # the absolute bound, whatever the ratio
    small = _zip(tmp_path / "small.zip", {"a.txt": b"a" * 1000})
    with pytest.raises(ReproError, match="over the limit of 999 bytes unpacked"):
        check_unpacked_size(small, 1000, max_bytes=999)
    assert unpack(small, tmp_path / "ok") == 1 and (tmp_path / "ok" / "a.txt").read_bytes() == b"a" * 1000


def _redirecting_server(location: str):
    import http.server
    import threading

    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(302)
            self.send_header("Location", location)
            self.end_headers()

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


@pytest.mark.parametrize("location", ["file:///etc/passwd", "ftp://127.0.0.1/x.safetensors",
                                      "http://example.org/x.safetensors"])
def test_a_redirect_to_a_local_file_or_another_scheme_is_refused(released, tmp_path, location):
    """A server on this machine that redirects `repro eval --checkpoint URL` to file:///etc/passwd once made the
    tool read a local file as if it were the download."""
    httpd = _redirecting_server(location)
    try:
        url = f"http://127.0.0.1:{httpd.server_port}/x.safetensors"
        done = run([REPRO, "eval", "--model", TINY, "--dataset", "digits", "--checkpoint", url, "--cache-dir",
                    str(tmp_path / "cache")], released[0], check=False)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert done.returncode != 0
    assert f"refused redirect from {url} to {location}" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and "root:" not in done.stdout + done.stderr
    assert not any(p.is_file() for p in (tmp_path / "cache").rglob("*")) if (tmp_path / "cache").exists() else True


def test_the_weights_downloader_follows_the_same_redirect_rule(tmp_path):
    from repro import weights

    httpd = _redirecting_server("file:///etc/passwd")
    try:
        with pytest.raises(ReproError, match="refused redirect from .* to file:///etc/passwd"):
            weights._download(f"http://127.0.0.1:{httpd.server_port}/w.pth", tmp_path, "w.pth", None)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert list(tmp_path.iterdir()) == []


def test_a_refused_pickle_never_passes_on_torchs_advice_to_disable_weights_only(tmp_path):
    import pickle

    from repro.evaluate import load_tensors
    from repro.weights import load_state_dict

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo should-never-run",))

    data = pickle.dumps({"w": Payload()})
    (tmp_path / "evil.pth").write_bytes(data)
    for load in (lambda: load_state_dict(tmp_path / "evil.pth"), lambda: load_tensors(data, "pytorch-pickle", "evil.pth")):
        with pytest.raises(ReproError) as caught:
            load()
        message = str(caught.value)
        assert "refused to load: not a plain checkpoint of tensors" in message
        assert "weights_only=False" not in message and "weights_only` set to `False" not in message
        assert "\n" not in message
