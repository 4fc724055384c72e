"""repro.download against a real HTTP server on 127.0.0.1: resume, servers without Range, every refusal.

The server speaks HTTP/1.0 (the connection closes after each response), so a body cut short of its Content-Length
is what a dropped connection looks like to the client.
"""

import hashlib
import random
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest

from repro.download import check_url, download, part_path
from repro.errors import ReproError

BODY = random.Random(0).randbytes(300_000)
SHA = hashlib.sha256(BODY).hexdigest()


@pytest.fixture
def server():
    """Routes {path: SimpleNamespace(body, ranges, cut, declared, content_range)}; `cut` sends that many bytes of
    the next response only, then closes; `declared` overrides Content-Length (None: the body's; -1: none)."""
    routes, hits = {}, []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_GET(self):
            hits.append((self.path, self.headers.get("Range")))
            route = routes.get(self.path)
            if route is None:
                self.send_error(404)
                return
            if route.location:
                self.send_response(302)
                self.send_header("Location", route.location)
                self.end_headers()
                return
            body, start = route.body, 0
            wanted = self.headers.get("Range")
            if wanted and route.ranges:
                start = int(wanted.removeprefix("bytes=").removesuffix("-"))
                if start >= len(body):
                    self.send_error(416)
                    return
                self.send_response(206)
                shown = route.content_range if route.content_range is not None else start
                self.send_header("Content-Range", f"bytes {shown}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            payload = body[start:]
            declared = len(payload) if route.declared is None else route.declared
            if declared >= 0:
                self.send_header("Content-Length", str(declared))
            self.end_headers()
            if route.cut is not None:
                payload, route.cut = payload[:route.cut], None
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    deadline = threading.Timer(120, httpd.shutdown)  # never outlive a stuck test
    deadline.daemon = True
    deadline.start()

    def serve(path, body=BODY, ranges=True, cut=None, declared=None, content_range=None, location=None):
        routes[path] = SimpleNamespace(body=body, ranges=ranges, cut=cut, declared=declared,
                                       content_range=content_range, location=location)
        return f"http://127.0.0.1:{httpd.server_port}{path}"

    try:
        yield SimpleNamespace(serve=serve, hits=hits)
    finally:
        deadline.cancel()
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def _names(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_a_download_is_verified_renamed_into_place_and_reports_progress(server, tmp_path):
    seen = []
    dest = tmp_path / "out" / "model.safetensors"
    result = download(server.serve("/m"), dest, sha256=SHA, size=len(BODY),
                      on_progress=lambda n, total: seen.append((n, total)))
    assert (result.status, result.sha256, result.size) == ("downloaded", SHA, len(BODY))
    assert dest.read_bytes() == BODY and _names(dest.parent) == ["model.safetensors"]
    assert sum(n for n, _ in seen) == len(BODY) and {t for _, t in seen} == {len(BODY)}

    hits = len(server.hits)
    assert download(server.serve("/m"), dest, sha256=SHA).status == "cached" and len(server.hits) == hits


def test_a_truncated_transfer_keeps_its_part_file_and_the_next_call_resumes_it(server, tmp_path):
    url = server.serve("/m", cut=100_000)
    dest = tmp_path / "model.safetensors"
    with pytest.raises(ReproError, match=r"truncated: 100000 of 300000 bytes.*run the same command again"):
        download(url, dest, sha256=SHA, size=len(BODY))
    assert not dest.exists() and part_path(dest).stat().st_size == 100_000

    result = download(url, dest, sha256=SHA, size=len(BODY))
    assert result.status == "resumed" and dest.read_bytes() == BODY
    assert server.hits[-1] == ("/m", "bytes=100000-")
    assert _names(tmp_path) == ["model.safetensors"]


def test_a_server_that_ignores_range_makes_the_download_start_again(server, tmp_path):
    url = server.serve("/m", ranges=False, cut=100_000)
    dest = tmp_path / "model.safetensors"
    with pytest.raises(ReproError, match="truncated"):
        download(url, dest, sha256=SHA)
    result = download(url, dest, sha256=SHA)
    assert server.hits[-1] == ("/m", "bytes=100000-")  # asked to resume, got the whole file (200)
    assert result.status == "downloaded" and dest.read_bytes() == BODY  # not the prefix twice


def test_a_range_answer_from_the_wrong_offset_is_not_spliced_on(server, tmp_path):
    url = server.serve("/m", cut=100_000, content_range=0)  # 206, but claims to start at byte 0
    dest = tmp_path / "model.safetensors"
    with pytest.raises(ReproError, match="truncated"):
        download(url, dest, sha256=SHA)
    assert download(url, dest, sha256=SHA).status == "downloaded" and dest.read_bytes() == BODY
    assert server.hits[-2:] == [("/m", "bytes=100000-"), ("/m", None)]  # asked to resume, then started again


def test_a_wrong_size_is_refused_and_nothing_is_kept(server, tmp_path):
    dest = tmp_path / "model.safetensors"
    with pytest.raises(ReproError, match=f"announces {len(BODY)} bytes, expected {len(BODY) + 1}"):
        download(server.serve("/m"), dest, size=len(BODY) + 1)
    assert _names(tmp_path) == []
    # no Content-Length: the surplus is caught while streaming
    with pytest.raises(ReproError, match=f"more than the expected {len(BODY) - 1} bytes"):
        download(server.serve("/n", declared=-1), dest, size=len(BODY) - 1)
    assert _names(tmp_path) == []
    with pytest.raises(ReproError, match=f"{len(BODY)} bytes, expected {len(BODY) + 5}"):
        download(server.serve("/o", declared=-1), dest, size=len(BODY) + 5)
    assert _names(tmp_path) == []


def test_a_wrong_sha256_is_refused_and_an_old_good_file_is_left_alone(server, tmp_path):
    dest = tmp_path / "model.safetensors"
    tampered = bytearray(BODY)
    tampered[1234] ^= 1
    with pytest.raises(ReproError, match=f"does not match the expected {SHA}"):
        download(server.serve("/m", body=bytes(tampered)), dest, sha256=SHA)
    assert _names(tmp_path) == []
    dest.write_bytes(b"previous file")
    with pytest.raises(ReproError, match="does not match"):
        download(server.serve("/m", body=bytes(tampered)), dest, sha256=SHA)
    assert _names(tmp_path) == ["model.safetensors"] and dest.read_bytes() == b"previous file"


def test_the_size_limit_is_enforced_before_and_during_the_transfer(server, tmp_path):
    dest = tmp_path / "big.bin"
    with pytest.raises(ReproError, match="announces 300000 bytes, above the 1000-byte limit"):
        download(server.serve("/m"), dest, max_bytes=1000)
    assert server.hits[-1] == ("/m", None) and _names(tmp_path) == []
    with pytest.raises(ReproError, match="more than the 1000-byte limit"):
        download(server.serve("/n", declared=-1), dest, max_bytes=1000)
    assert _names(tmp_path) == []
    with pytest.raises(ReproError, match="above the 1000-byte limit"):
        download(server.serve("/m"), dest, size=5000, max_bytes=1000)


def test_only_https_file_and_loopback_http_urls_are_accepted(server, tmp_path):
    for url in ("https://zenodo.org/records/1/files/x.safetensors", "file:///tmp/x", "http://127.0.0.1:8/x",
                "http://localhost/x", "http://[::1]/x"):
        assert check_url(url) == url
    for url in ("http://zenodo.org/x", "ftp://host/x", "http://10.0.0.1/x", "s3://bucket/x", "x.safetensors"):
        with pytest.raises(ReproError, match="refused URL"):
            download(url, tmp_path / "x")
    hop = server.serve("/hop", location="http://example.com/x.safetensors")
    with pytest.raises(ReproError, match="refused redirect from .* to http://example.com/x.safetensors"):
        download(hop, tmp_path / "x")
    assert _names(tmp_path) == []


def test_offline_is_one_error_naming_the_url_and_what_to_do(tmp_path):
    url = "http://127.0.0.1:9/model.safetensors"  # discard port: nothing listens
    with pytest.raises(ReproError) as caught:
        download(url, tmp_path / "m.safetensors", sha256=SHA)
    message = str(caught.value)
    assert message.startswith(f"download of {url} failed") and "run the same command again" in message
    assert "\n" not in message and not (tmp_path / "m.safetensors").exists()


def test_file_urls_download_and_resume_from_a_local_mirror(tmp_path):
    mirror = tmp_path / "mirror.bin"
    mirror.write_bytes(BODY)
    dest = tmp_path / "out" / "m.bin"
    dest.parent.mkdir()
    part_path(dest).write_bytes(BODY[:5000])
    result = download(mirror.as_uri(), dest, sha256=SHA, size=len(BODY))
    assert result.status == "resumed" and dest.read_bytes() == BODY and _names(dest.parent) == ["m.bin"]
    with pytest.raises(ReproError, match="cannot read file://"):
        download((tmp_path / "absent").as_uri(), tmp_path / "out" / "n.bin")


def test_a_stale_part_longer_than_the_file_is_discarded(server, tmp_path):
    dest = tmp_path / "m.bin"
    part_path(dest).write_bytes(b"x" * (len(BODY) + 10))
    assert download(server.serve("/m"), dest, sha256=SHA, size=len(BODY)).status == "downloaded"
    assert server.hits[-1] == ("/m", None) and dest.read_bytes() == BODY


def test_a_second_download_of_the_same_file_waits_its_turn(server, tmp_path):
    import fcntl
    import os

    dest = tmp_path / "m.bin"
    fd = os.open(part_path(dest), os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # what a running download holds
        with pytest.raises(ReproError, match="another download of this file is running"):
            download(server.serve("/m"), dest, sha256=SHA)
        assert server.hits == [] and not dest.exists() and part_path(dest).exists()  # its part is left alone
    finally:
        os.close(fd)
    assert download(server.serve("/m"), dest, sha256=SHA).status == "downloaded"
