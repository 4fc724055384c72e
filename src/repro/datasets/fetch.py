"""`repro data fetch NAME|all`: download the six datasets from their original sources, verify, unpack atomically.

Sources (PAPER.md section 3): LILA's Caltech Camera Traps ECCV'18 subset and EuroSAT.zip over HTTPS; APTOS,
HPA and Cassava (Kaggle competitions) and the two melanoma sets (Kaggle datasets) through Kaggle's public REST API
(`/api/v1/competitions/data/download-all/<slug>`, `/api/v1/datasets/download/<owner>/<slug>`) with the user's
credentials (~/.kaggle/kaggle.json, or KAGGLE_USERNAME / KAGGLE_KEY), and the authors' HPA split CSV by its pinned
URL and sha256. The `kaggle` package is not used: it would add about ten locked dependencies (jupytext, bleach,
protobuf, kagglesdk, ...) for two HTTP requests, and it cannot be tested offline; the REST calls here are tested
against a local server. Kaggle's API answers with a redirect to a signed storage URL, which
repro.download.download then fetches (resumable, size-limited, sha256-checked).

Each archive lands in `data/downloads/NAME/` (a `.part` file resumes after an interruption), its sha256 is
checked against `data/fetch.lock.json` (recorded on the first download: commit the lock; the published md5 values
PAPER.md lists are checked as a cross-check), and everything is unpacked into a temporary folder beside
`data/raw/NAME` and renamed into place only when complete; archive members that would land outside the folder
(absolute paths, `..`, links) are refused. A Kaggle 403 names the rules page to accept; offline, one line says so
and nothing is left in data/raw. Exercised by `repro data fetch NAME`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import stat
import tarfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from repro import jsonfile
from repro.errors import ReproError, UsageError

KAGGLE_API = "https://www.kaggle.com/api/v1"
LILA = "https://storage.googleapis.com/public-datasets-lila/caltechcameratraps"
HPA_SPLIT_URL = ("https://raw.githubusercontent.com/mlfoundations/imagenet-applications-transfer/"
                 "fc721b17467672160763ea18052a542710e43975/splits/hpa/split.stratified.small.0.csv")


@dataclass(frozen=True)
class Part:
    """One file of a dataset: where it comes from and where its contents go under data/raw/NAME."""

    file: str  # name in data/downloads/NAME/
    url: str = ""  # https:// (or a loopback http:// in tests)
    kaggle: str = ""  # "competition/<slug>" or "dataset/<owner>/<slug>": fetched through Kaggle's API
    into: str = ""  # sub-folder of data/raw/NAME the archive unpacks into ("" = the folder itself)
    unpack: bool = True  # False: the file is copied as it is
    sha256: str = ""  # pinned in code (else recorded in the fetch lock on first download)
    md5: str = ""  # a published md5 (PAPER.md), checked as a cross-check


def _competition(slug: str) -> Part:
    return Part(f"{slug}.zip", kaggle=f"competition/{slug}")


SOURCES: dict[str, tuple[Part, ...]] = {
    "cct20": (Part("eccv_18_annotations.tar.gz", f"{LILA}/eccv_18_annotations.tar.gz"),
              Part("eccv_18_all_images_sm.tar.gz", f"{LILA}/eccv_18_all_images_sm.tar.gz")),
    "aptos": (Part("aptos2019-blindness-detection.zip", kaggle="competition/aptos2019-blindness-detection",
                   md5="fff5440648ab9ee707bc56c97c40dc2f"),),
    "hpa": (_competition("human-protein-atlas-image-classification"),
            Part("split.stratified.small.0.csv", HPA_SPLIT_URL, unpack=False,
                 sha256="802764fc37ab6a02dd6132d6fd5ea164e1322ddf833e2d95f0e0527c1f59984e")),
    "melanoma": (Part("jpeg-melanoma-512x512.zip", kaggle="dataset/cdeotte/jpeg-melanoma-512x512",
                      into="jpeg-melanoma-512x512"),
                 Part("jpeg-isic2019-512x512.zip", kaggle="dataset/cdeotte/jpeg-isic2019-512x512",
                      into="jpeg-isic2019-512x512")),
    "cassava": (Part("cassava-leaf-disease-classification.zip",
                     kaggle="competition/cassava-leaf-disease-classification",
                     md5="e1dc225f0fc8a4161e48a4f9015e16c0"),),
    "eurosat": (Part("EuroSAT.zip", "https://madm.dfki.de/files/sentinel/EuroSAT.zip",
                     md5="c8fa014336c82ac7804f0398fcb19387"),),
}


# --- Kaggle --------------------------------------------------------------------------------------------------------

def kaggle_credentials(env: dict[str, str] | None = None) -> tuple[str, str]:
    """(username, key) from KAGGLE_USERNAME/KAGGLE_KEY or $KAGGLE_CONFIG_DIR (default ~/.kaggle)/kaggle.json."""
    env = dict(os.environ) if env is None else env
    if env.get("KAGGLE_USERNAME") and env.get("KAGGLE_KEY"):
        return env["KAGGLE_USERNAME"], env["KAGGLE_KEY"]
    path = Path(env.get("KAGGLE_CONFIG_DIR") or Path.home() / ".kaggle") / "kaggle.json"
    try:
        document = json.loads(path.read_text())
        return str(document["username"]), str(document["key"])
    except FileNotFoundError:
        raise ReproError(f"{path}: missing Kaggle credentials; create an API token at "
                         "https://www.kaggle.com/settings (Account, 'Create New Token') and save it there, or set "
                         "KAGGLE_USERNAME and KAGGLE_KEY") from None
    except (ValueError, KeyError, TypeError):
        raise ReproError(f"{path}: not a Kaggle token (expected JSON with 'username' and 'key')") from None


def kaggle_rules_page(kaggle: str) -> str:
    kind, _, slug = kaggle.partition("/")
    if kind == "competition":
        return f"https://www.kaggle.com/competitions/{slug}/rules"
    return f"https://www.kaggle.com/datasets/{slug}"


def kaggle_url(kaggle: str, api: str) -> str:
    kind, _, slug = kaggle.partition("/")
    if kind == "competition":
        return f"{api}/competitions/data/download-all/{slug}"
    return f"{api}/datasets/download/{slug}"


def resolve_kaggle(kaggle: str, api: str, credentials: tuple[str, str]) -> str:
    """The signed download URL Kaggle's API redirects to (asked without following the redirect, so the
    credentials are sent to Kaggle only, never to the storage host)."""
    import urllib.error
    import urllib.request

    from repro.download import check_url

    url = check_url(kaggle_url(kaggle, api))

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):
            return None

    token = base64.b64encode(f"{credentials[0]}:{credentials[1]}".encode()).decode()
    request = urllib.request.Request(url, headers={"Authorization": f"Basic {token}", "User-Agent": "repro"})
    handlers: list = [NoRedirect()]
    if url.startswith("http://"):  # loopback only (check_url): never through a proxy
        handlers.append(urllib.request.ProxyHandler({}))
    try:
        response = urllib.request.build_opener(*handlers).open(request, timeout=60)
    except urllib.error.HTTPError as exc:
        location = exc.headers.get("Location")
        exc.close()
        if exc.code in (301, 302, 303, 307, 308) and location:
            from urllib.parse import urljoin

            return urljoin(url, location)
        if exc.code == 403:
            raise ReproError(f"Kaggle refused {kaggle} (HTTP 403): accept its rules while signed in at "
                             f"{kaggle_rules_page(kaggle)}, then run the same command again") from None
        if exc.code == 401:
            raise ReproError(f"Kaggle refused the credentials for {kaggle} (HTTP 401): check your token "
                             "(~/.kaggle/kaggle.json or KAGGLE_USERNAME/KAGGLE_KEY)") from None
        from repro.download import Unreachable

        raise Unreachable(f"Kaggle answered HTTP {exc.code} {exc.reason} for {kaggle} ({url})") from None
    except (urllib.error.URLError, OSError) as exc:
        from repro.download import Unreachable

        raise Unreachable(f"cannot reach Kaggle for {kaggle}: {getattr(exc, 'reason', exc)}; check the network "
                          "and run the same command again") from None
    response.close()
    raise ReproError(f"Kaggle sent {kaggle} without a redirect to its storage, which this client does not read; "
                     f"download it by hand from {kaggle_rules_page(kaggle)} into data/downloads/ under the file "
                     "name the error above names, and run the same command again")


# --- the fetch lock ------------------------------------------------------------------------------------------------

def read_lock(path: Path) -> dict:
    if not Path(path).is_file():
        return {}
    try:
        document = json.loads(Path(path).read_text())
        if not isinstance(document, dict):
            raise ValueError("not an object")
        return document
    except ValueError as exc:
        raise ReproError(f"{path}: not a fetch lock ({exc}); restore it from git") from None


def write_lock(path: Path, document: dict) -> None:
    from repro.splits import atomic_write

    atomic_write(path, jsonfile.dumps(document, sort_keys=True))


# --- unpacking -----------------------------------------------------------------------------------------------------

def safe_member(name: str, archive: Path) -> PurePosixPath:
    """The member's path relative to the target folder, refusing anything that would land outside it."""
    path = PurePosixPath(name.replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise ReproError(f"{archive}: member {name!r} would be written outside the target folder; refused, "
                         "nothing unpacked")
    return path


# Bounds on what an archive may unpack to, checked on the members' stated sizes before anything is written (zipfile
# stops each member at its stated size and checks its CRC; a tar member's size is its header's). The datasets'
# archives are mostly JPEG/PNG, which do not compress, and a few JSON/CSV files (about 10:1); a bomb is 1000:1.
MAX_UNPACKED_BYTES = 64 << 30  # 64 GiB: eight times the largest download allowed (repro.download.DEFAULT_MAX_BYTES)
MAX_RATIO = 100  # unpacked bytes per archive byte, above RATIO_FLOOR
RATIO_FLOOR = 64 << 20  # archives unpacking to less than 64 MiB are not held to the ratio


def check_unpacked_size(archive: Path, total: int, *, max_bytes: int = MAX_UNPACKED_BYTES,
                        max_ratio: int = MAX_RATIO) -> None:
    """Refuse an archive whose members add up to more than `max_bytes`, or that expands more than `max_ratio`
    times its own size (once past RATIO_FLOOR): a decompression bomb is stopped before it fills the disk."""
    size = max(Path(archive).stat().st_size, 1)
    if total > max_bytes:
        raise ReproError(f"{archive}: members add up to {total:,} bytes, over the limit of {max_bytes:,} bytes "
                         "unpacked; refused, nothing unpacked")
    if total > RATIO_FLOOR and total > max_ratio * size:
        raise ReproError(f"{archive}: {size:,} bytes would unpack to {total:,} bytes ({total // size}:1), over the "
                         f"limit of {max_ratio}:1 (a decompression bomb?); refused, nothing unpacked")


def unpack(archive: Path, target: Path, progress: Callable[[int, int], None] | None = None) -> int:
    """Unpack a .zip or .tar(.gz) archive into `target` (which must be new); returns the member count.

    Every member is checked before any is written: its path stays inside `target`, it is a plain file or folder,
    and all of them together stay within `check_unpacked_size`'s bounds."""
    archive, target = Path(archive), Path(target)
    if zipfile.is_zipfile(archive):
        with zipfile.ZipFile(archive) as z:
            members = z.infolist()
            for info in members:  # check every member before writing any
                safe_member(info.filename, archive)
                if stat.S_ISLNK(info.external_attr >> 16):
                    raise ReproError(f"{archive}: member {info.filename!r} is a symbolic link; refused, "
                                     "nothing unpacked")
            check_unpacked_size(archive, sum(info.file_size for info in members))
            for done, info in enumerate(members, 1):
                z.extract(info, target)  # zipfile strips what safe_member already refused
                if progress:
                    progress(done, len(members))
        return len(members)
    try:
        with tarfile.open(archive) as t:
            members = t.getmembers()
            for member in members:
                safe_member(member.name, archive)
                if not (member.isfile() or member.isdir()):
                    raise ReproError(f"{archive}: member {member.name!r} is a link or device; refused, nothing "
                                     "unpacked")
            check_unpacked_size(archive, sum(member.size for member in members if member.isfile()))
            for done, member in enumerate(members, 1):
                t.extract(member, target, filter="data")  # the stdlib's own guard, on top of the checks above
                if progress:
                    progress(done, len(members))
        return len(members)
    except tarfile.ReadError:
        raise ReproError(f"{archive}: neither a zip nor a tar archive; delete it and fetch again") from None


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


# --- fetch ---------------------------------------------------------------------------------------------------------

@dataclass
class FetchResult:
    name: str
    status: str  # "fetched" or "present"
    raw_dir: Path
    files: list[dict]  # per part: file, sha256, size, status (downloaded/resumed/cached), source
    notes: list[str]  # warnings: md5 cross-check mismatches, first-time pins recorded


def fetch(name: str, raw_root: Path, downloads: Path, lock_path: Path, *, sources: dict | None = None,
          kaggle_api: str = KAGGLE_API, credentials: Callable[[], tuple[str, str]] = kaggle_credentials,
          force: bool = False, keep_archives: bool = True,
          bar: Callable[[str], Callable[[int, int | None], None]] | None = None,
          on_unpack: Callable[[str, int, int], None] | None = None) -> FetchResult:
    """Download, verify and unpack dataset `name` into `raw_root/name` (see the module docstring)."""
    from repro.download import download, sha256_file

    sources = SOURCES if sources is None else sources
    if name not in sources:
        raise UsageError(f"unknown dataset {name!r} for fetch; valid: {', '.join(sources)}, all")
    raw_dir = Path(raw_root) / name
    if raw_dir.exists() and not force:
        return FetchResult(name, "present", raw_dir, [], [f"{raw_dir} exists; pass --force to fetch it again"])
    lock = read_lock(lock_path)
    pins = lock.get(name, {})
    files, notes = [], []
    folder = Path(downloads) / name
    for part in sources[name]:
        dest = folder / part.file
        pinned = part.sha256 or pins.get(part.file, {}).get("sha256")
        url = part.url
        if part.kaggle and not (pinned and dest.is_file()):
            url = resolve_kaggle(part.kaggle, kaggle_api, credentials())
        where = part.url or f"kaggle {part.kaggle}"
        if dest.is_file() and not pinned:  # put there by hand or by an earlier run: record it as it is
            result_sha, size, status = sha256_file(dest), dest.stat().st_size, "cached"
        else:
            try:
                result = download(url, dest, sha256=pinned,
                                  on_progress=bar(f"{name}: {part.file}") if bar else None)
            except ReproError:
                if folder.is_dir() and not any(folder.iterdir()):
                    folder.rmdir()  # nothing fetched: leave no trace (a .part file stays, to resume)
                raise
            result_sha, size, status = result.sha256, result.size, result.status
        if part.md5:
            found = _md5(dest)
            if found != part.md5:
                notes.append(f"{dest}: md5 {found} differs from the published {part.md5} (PAPER.md cross-check); "
                             "the archive may have been repackaged at the source")
        if not pinned:
            notes.append(f"{part.file}: first download, sha256 {result_sha} recorded in {lock_path} (commit it)")
        pins[part.file] = {"sha256": result_sha, "size": size, "source": where,
                           "fetched": time.strftime("%Y-%m-%d", time.gmtime())}
        files.append({"file": part.file, "sha256": result_sha, "size": size, "status": status, "source": where})
    lock[name] = pins
    tmp = raw_dir.with_name(f".{raw_dir.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        for part in sources[name]:
            target = tmp / part.into
            target.mkdir(parents=True, exist_ok=True)
            if part.unpack:
                unpack(folder / part.file, target,
                       None if on_unpack is None else (lambda d, t, f=part.file: on_unpack(f, d, t)))
            else:
                shutil.copyfile(folder / part.file, target / part.file)
        old = raw_dir.with_name(f".{raw_dir.name}.old-{os.getpid()}")
        if raw_dir.exists():  # --force: swap, so data/raw/NAME is never half old, half new
            raw_dir.rename(old)
        tmp.rename(raw_dir)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    write_lock(lock_path, lock)  # only once the data it pins is in place
    if not keep_archives:
        for part in sources[name]:
            (folder / part.file).unlink(missing_ok=True)
    return FetchResult(name, "fetched", raw_dir, files, notes)
