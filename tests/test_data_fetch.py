"""`repro data fetch` against a local HTTP server on 127.0.0.1 serving tiny archives in the published layouts:
Kaggle's API (credentials, redirect, 403), checksums (recorded, pinned, mismatch), a truncated download resumed,
offline, archives whose members would escape the folder; the real data path ends in data/raw/NAME, atomically."""

import hashlib
import io
import json
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

import pytest

import raw_fixtures as fx
from conftest import BIN, run
from repro.datasets import fetch as fetcher
from repro.datasets.fetch import Part, fetch, unpack
from repro.datasets.verify import verify_dataset
from repro.errors import ReproError
from test_rules import APTOS_LABELS

REPRO = str(BIN / "repro")
CREDS = ("alice", "s3cret")


@pytest.fixture
def server():
    """Routes {path: (status, body, headers)}; `cut` sends that many bytes of the next response, then closes."""
    routes, hits = {}, []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_GET(self):
            hits.append((self.path, self.headers.get("Authorization"), self.headers.get("Range")))
            route = routes.get(self.path)
            if route is None:
                self.send_error(404)
                return
            body, start = route.body, 0
            wanted = self.headers.get("Range")
            if route.status == 200 and wanted:
                start = int(wanted.removeprefix("bytes=").removesuffix("-"))
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(route.status)
            for key, value in route.headers.items():
                self.send_header(key, value)
            payload = body[start:]
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if route.cut is not None:
                payload, route.cut = payload[:route.cut], None
            self.wfile.write(payload)

        def log_message(self, *args):
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{httpd.server_port}"

    def serve(path, body=b"", status=200, headers=None, cut=None):
        routes[path] = SimpleNamespace(body=body, status=status, headers=headers or {}, cut=cut)
        return base + path

    try:
        yield SimpleNamespace(serve=serve, hits=hits, base=base)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def zip_of(folder, prefix=""):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                z.write(path, prefix + path.relative_to(folder).as_posix())
    return buffer.getvalue()


def eurosat_zip(tmp_path):
    fx.eurosat(tmp_path / "eurosat-src", 2)
    return zip_of(tmp_path / "eurosat-src")  # EuroSAT.zip holds 2750/<Class>/<Class>_<n>.jpg


def aptos_zip(tmp_path):
    fx.aptos(tmp_path / "aptos-src", APTOS_LABELS)
    return zip_of(tmp_path / "aptos-src")  # a competition zip: train.csv and train_images/ at the top


def paths(tmp_path):
    return dict(raw_root=tmp_path / "raw", downloads=tmp_path / "downloads", lock_path=tmp_path / "fetch.lock.json")


def test_https_source_is_downloaded_recorded_and_unpacked_in_the_published_layout(server, tmp_path):
    body = eurosat_zip(tmp_path)
    sources = {"eurosat": (Part("EuroSAT.zip", server.serve("/EuroSAT.zip", body),
                                md5=hashlib.md5(body).hexdigest()),)}
    seen = []
    result = fetch("eurosat", **paths(tmp_path), sources=sources,
                   bar=lambda d: (lambda n, t: seen.append(n)))
    assert result.status == "fetched" and result.raw_dir == tmp_path / "raw/eurosat"
    assert verify_dataset("eurosat", result.raw_dir, counts=False) == []
    assert sum(seen) == len(body)
    lock = json.loads((tmp_path / "fetch.lock.json").read_text())
    assert lock["eurosat"]["EuroSAT.zip"]["sha256"] == hashlib.sha256(body).hexdigest()
    assert any("first download" in n for n in result.notes) and not any("md5" in n for n in result.notes)
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["eurosat"]  # no temp folder left
    # present: nothing fetched; --force with the source changed: the recorded sha256 refuses it
    assert fetch("eurosat", **paths(tmp_path), sources=sources).status == "present"
    server.serve("/EuroSAT.zip", body[:-10] + b"0123456789")
    (tmp_path / "downloads/eurosat/EuroSAT.zip").unlink()
    with pytest.raises(ReproError, match="does not match the expected"):
        fetch("eurosat", **paths(tmp_path), sources=sources, force=True)
    assert verify_dataset("eurosat", tmp_path / "raw/eurosat", counts=False) == []  # the old copy is intact


def test_kaggle_api_redirect_credentials_stay_with_kaggle_and_403_names_the_rules_page(server, tmp_path):
    body = aptos_zip(tmp_path)
    storage = server.serve("/storage/aptos.zip?sig=x", body)
    server.serve("/api/v1/competitions/data/download-all/aptos2019-blindness-detection", status=302,
                 headers={"Location": storage})
    result = fetch("aptos", **paths(tmp_path), kaggle_api=server.base + "/api/v1", credentials=lambda: CREDS)
    assert verify_dataset("aptos", result.raw_dir, counts=False) == []
    assert any("md5" in n and "fff5440648ab9ee707bc56c97c40dc2f" in n for n in result.notes)  # cross-check
    api_hit, storage_hit = server.hits[0], server.hits[1]
    assert api_hit[1] == "Basic " + __import__("base64").b64encode(b"alice:s3cret").decode()
    assert storage_hit[0].startswith("/storage/") and storage_hit[1] is None
    server.serve("/api/v1/competitions/data/download-all/cassava-leaf-disease-classification", status=403)
    with pytest.raises(ReproError, match=r"HTTP 403\): accept its rules while signed in at "
                                         r"https://www.kaggle.com/competitions/cassava-leaf-disease-classification"
                                         r"/rules"):
        fetch("cassava", **paths(tmp_path), kaggle_api=server.base + "/api/v1", credentials=lambda: CREDS)
    assert not (tmp_path / "raw/cassava").exists()


def test_missing_kaggle_credentials_say_where_to_put_them(tmp_path):
    with pytest.raises(ReproError, match=rf"{tmp_path}/kaggle.json: missing Kaggle credentials; create an API "):
        fetcher.kaggle_credentials({"KAGGLE_CONFIG_DIR": str(tmp_path)})
    (tmp_path / "kaggle.json").write_text('{"username": "a", "key": "b"}')
    assert fetcher.kaggle_credentials({"KAGGLE_CONFIG_DIR": str(tmp_path)}) == ("a", "b")
    assert fetcher.kaggle_credentials({"KAGGLE_USERNAME": "u", "KAGGLE_KEY": "k"}) == ("u", "k")


def test_truncated_download_keeps_nothing_in_raw_and_the_next_run_resumes(server, tmp_path):
    body = eurosat_zip(tmp_path)
    url = server.serve("/EuroSAT.zip", body, cut=len(body) // 2)
    sources = {"eurosat": (Part("EuroSAT.zip", url),)}
    with pytest.raises(ReproError, match="truncated.*run the same command again to resume"):
        fetch("eurosat", **paths(tmp_path), sources=sources)
    assert not (tmp_path / "raw").exists() and not (tmp_path / "fetch.lock.json").exists()
    result = fetch("eurosat", **paths(tmp_path), sources=sources)
    assert result.files[0]["status"] == "resumed" and server.hits[-1][2] == f"bytes={len(body) // 2}-"
    assert verify_dataset("eurosat", result.raw_dir, counts=False) == []


def test_pinned_checksum_mismatch_and_offline_leave_nothing(server, tmp_path):
    sources = {"hpa": (Part("split.stratified.small.0.csv", server.serve("/split.csv", b"Id,Target,Split\n"),
                            unpack=False, sha256=fetcher.SOURCES["hpa"][1].sha256),)}
    with pytest.raises(ReproError, match="sha256 .* does not match the expected 802764fc"):
        fetch("hpa", **paths(tmp_path), sources=sources)
    assert not (tmp_path / "raw").exists() and not (tmp_path / "downloads/hpa").exists()
    offline = {"eurosat": (Part("EuroSAT.zip", "http://127.0.0.1:9/EuroSAT.zip"),)}  # nothing listens on port 9
    with pytest.raises(ReproError) as error:
        fetch("eurosat", **paths(tmp_path), sources=offline)
    assert "\n" not in str(error.value) and "check the network" in str(error.value)
    assert not (tmp_path / "raw").exists() and not (tmp_path / "downloads/eurosat").exists()


def test_the_hpa_split_is_fetched_by_its_pinned_url_and_sha256():
    part = fetcher.SOURCES["hpa"][1]
    assert part.url.endswith("fc721b17467672160763ea18052a542710e43975/splits/hpa/split.stratified.small.0.csv")
    from repro.datasets import hpa

    assert part.sha256 == hpa.SPLIT_SHA256 and part.file == hpa.SPLIT_FILE and not part.unpack


@pytest.mark.parametrize("kind", ["zip-dotdot", "zip-absolute", "tar-dotdot", "tar-symlink"])
def test_archive_members_escaping_the_folder_are_refused_before_anything_is_written(tmp_path, kind):
    archive = tmp_path / ("a.zip" if kind.startswith("zip") else "a.tar.gz")
    if kind.startswith("zip"):
        with zipfile.ZipFile(archive, "w") as z:
            z.writestr("ok/first.txt", "fine")
            z.writestr("../evil.txt" if kind == "zip-dotdot" else "/tmp/evil.txt", "bad")
    else:
        with tarfile.open(archive, "w:gz") as t:
            info = tarfile.TarInfo("ok/first.txt")
            info.size = 4
            t.addfile(info, io.BytesIO(b"fine"))
            if kind == "tar-dotdot":
                info = tarfile.TarInfo("../evil.txt")
                info.size = 3
                t.addfile(info, io.BytesIO(b"bad"))
            else:
                info = tarfile.TarInfo("ok/link")
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
                t.addfile(info)
    with pytest.raises(ReproError, match="refused, nothing unpacked"):
        unpack(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path / "evil.txt").exists()


def test_cli_fetch_through_kaggle_records_the_version_in_dvc(server, tmp_path, checkout):
    storage = server.serve("/storage/aptos.zip", aptos_zip(tmp_path))
    server.serve("/api/v1/competitions/data/download-all/aptos2019-blindness-detection", status=302,
                 headers={"Location": storage})
    (tmp_path / "kaggle").mkdir()
    (tmp_path / "kaggle/kaggle.json").write_text(json.dumps({"username": "alice", "key": "s3cret"}))
    env = {"REPRO_KAGGLE_API": server.base + "/api/v1", "KAGGLE_CONFIG_DIR": str(tmp_path / "kaggle")}
    done = run(["env", *(f"{k}={v}" for k, v in env.items()), REPRO, "data", "fetch", "aptos"], checkout)
    assert "fetched aptos -> data/raw/aptos" in done.stdout and "recorded data/raw/aptos in DVC" in done.stdout
    assert "train.csv rows: 27, published 3662" in done.stderr  # the tiny fixture: the count check speaks
    assert (checkout / "data/raw/aptos.dvc").is_file() and (checkout / "data/fetch.lock.json").is_file()
    server.serve("/api/v1/competitions/data/download-all/cassava-leaf-disease-classification", status=403)
    done = run(["env", *(f"{k}={v}" for k, v in env.items()), REPRO, "data", "fetch", "cassava"], checkout,
               check=False)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "https://www.kaggle.com/competitions/cassava-leaf-disease-classification/rules" in done.stderr
    assert not (checkout / "data/raw/cassava").exists()
