"""Download one file from an https:// or file:// URL: resumable, size-limited, sha256-checked, renamed into place.

Bytes stream into `.<name>.part` beside the target, so the final rename is atomic (same file system) and the target
name only ever holds a complete, verified file. A transfer cut short keeps its `.part` file; the next call resumes it
with an HTTP Range request, and restarts from zero when the server ignores Range (answers 200) or cannot serve it.
A file that fails a check (size, sha256, size limit) is deleted, never kept or resumed. Plain http:// is accepted
only to this machine (the tests' local server). Used by `repro eval --checkpoint URL` and `repro data fetch`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import ipaddress
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from repro import failpoints
from repro.errors import ReproError

CHUNK = 1 << 20
MAX_REDIRECTS = 10
TIMEOUT_S = 60
DEFAULT_MAX_BYTES = 8 << 30  # 8 GiB: above every checkpoint and dataset archive of the study
PART_SUFFIX = ".part"
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")

Progress = Callable[[int, "int | None"], None]  # (bytes just written, total bytes if known)


class Unreachable(ReproError):
    """The source could not be read to the end (network down, HTTP error, missing file): another copy may work.
    A file that was read but failed a check is a plain ReproError: no other copy should be tried silently."""


@dataclass(frozen=True)
class DownloadResult:
    path: Path
    sha256: str
    size: int
    status: str  # "downloaded", "resumed" (continued a .part file), "cached" (target already matched sha256)


def _is_loopback(host: str | None) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host or "").is_loopback
    except ValueError:
        return False


def check_url(url: str) -> str:
    """Accept https:// and file:// only; plain http:// only to this machine (127.0.0.1, ::1, localhost)."""
    parts = urlsplit(url)
    if parts.scheme in ("https", "file") or (parts.scheme == "http" and _is_loopback(parts.hostname)):
        return url
    raise ReproError(f"refused URL {url!r}: only https:// and file:// URLs are accepted (plain http:// only to "
                     "this machine); use the https:// address or download the file and pass its path")


def follow_redirect(current: str, location: str) -> str:
    """Where a redirect from `current` to `location` leads, if the one redirect rule allows it: to https://, or to
    plain http:// on this machine from a URL on this machine (the tests' servers). Never to file:// or any other
    scheme, so a server cannot make us read a local file, and never from a remote host to this machine."""
    target = urljoin(current, location)
    parts = urlsplit(target)
    if parts.scheme == "https" or (parts.scheme == "http" and _is_loopback(parts.hostname)
                                   and _is_loopback(urlsplit(current).hostname)):
        return target
    raise ReproError(f"refused redirect from {current} to {target}: a redirect may lead only to an https:// URL "
                     "(plain http:// only between addresses on this machine); download the file yourself and "
                     "pass its path")


def file_url_path(url: str) -> Path:
    import urllib.request

    return Path(urllib.request.url2pathname(urlsplit(url).path))


def part_path(dest: Path) -> Path:
    """Where a download of `dest` accumulates until it is verified."""
    return Path(dest).with_name(f".{Path(dest).name}{PART_SUFFIX}")


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


# --- opening a URL -------------------------------------------------------------------------------------------------

@dataclass
class _Response:
    body: object  # has .read(n) and .close()
    status: int  # 200 (whole file) or 206 (from `start`)
    start: int  # first byte the body holds
    total: int | None  # size of the whole file when known
    url: str  # after redirects


def _offline_hint(url: str) -> str:
    return (f"check the network (or proxy settings) and run the same command again; offline, download {url} "
            "elsewhere and pass the local file's path instead")


def _open(url: str, offset: int) -> _Response:
    """Open `url`, asking for bytes from `offset` on when it is > 0. Redirects are followed here, so that the
    scheme of every hop is checked (a https page must not hand us on to plain http elsewhere)."""
    import urllib.error
    import urllib.request

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args, **kwargs):  # followed by the loop below
            return None

    source = url
    for _ in range(MAX_REDIRECTS):
        check_url(url)
        parts = urlsplit(url)
        if parts.scheme == "file":
            path = file_url_path(url)
            try:
                f = open(path, "rb")
            except OSError as exc:
                raise Unreachable(f"cannot read {url}: {exc.strerror}; check the path") from None
            total = os.fstat(f.fileno()).st_size
            if 0 < offset <= total:
                f.seek(offset)
                return _Response(f, 206, offset, total, url)
            return _Response(f, 200, 0, total, url)
        handlers: list = [NoRedirect()]
        if _is_loopback(parts.hostname):
            handlers.append(urllib.request.ProxyHandler({}))  # never send local traffic through a proxy
        opener = urllib.request.build_opener(*handlers)
        # identity: the bytes hashed are the file's bytes, and Content-Length / Content-Range count them
        headers = {"Accept-Encoding": "identity", "User-Agent": "repro"}
        if offset > 0:
            headers["Range"] = f"bytes={offset}-"
        try:
            response = opener.open(urllib.request.Request(url, headers=headers), timeout=TIMEOUT_S)
        except urllib.error.HTTPError as exc:
            if exc.code in (301, 302, 303, 307, 308) and exc.headers.get("Location"):
                exc.close()
                url = follow_redirect(url, exc.headers["Location"])
                continue
            exc.close()
            if exc.code == 416 and offset > 0:  # the part file is not a prefix the server can continue
                return _open(url, 0)
            raise Unreachable(f"download of {source} failed: HTTP {exc.code} {exc.reason}"
                             + (f" (at {url})" if url != source else "")) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            raise Unreachable(f"download of {source} failed: {reason}; {_offline_hint(source)}") from None
        length = response.headers.get("Content-Length")
        length_value = int(length) if length and length.isdigit() else None
        if response.status == 206:
            match = _CONTENT_RANGE.match(response.headers.get("Content-Range", "").strip())
            if match is None or int(match.group(1)) != offset:
                # a range we did not ask for: do not splice it onto the part file; start again
                response.close()
                if offset > 0:
                    return _open(url, 0)
                raise ReproError(f"download of {source} failed: the server sent a partial response to a "
                                 "whole-file request")
            total = None if match.group(3) == "*" else int(match.group(3))
            return _Response(response, 206, offset, total, url)
        return _Response(response, 200, 0, length_value, url)
    raise Unreachable(f"download of {source} failed: more than {MAX_REDIRECTS} redirects")


# --- the download --------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _locked(part: Path) -> Iterator[int]:
    """An exclusive lock on the part file, so two processes never write the same download."""
    part.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(part, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ReproError(f"{part}: another download of this file is running; wait for it to finish") from None
        yield fd
    finally:
        os.close(fd)


def _verify(dest: Path, size: int, digest: str, expected_size: int | None, sha256: str | None, url: str) -> None:
    if expected_size is not None and size != expected_size:
        raise ReproError(f"download of {url}: {size} bytes, expected {expected_size}; refused, nothing kept")
    if sha256 is not None and digest != sha256:
        raise ReproError(f"download of {url}: sha256 {digest} does not match the expected {sha256}; refused, "
                         "nothing kept (the file changed at the source or was tampered with)")


def download(url: str, dest: Path, *, sha256: str | None = None, size: int | None = None,
             max_bytes: int = DEFAULT_MAX_BYTES, on_progress: Progress | None = None) -> DownloadResult:
    """Download `url` to `dest`; `dest` appears only complete and (when `sha256`/`size` are given) verified.

    An existing `dest` that matches `sha256` is kept without any network access ("cached"); one that does not is
    replaced only once a verified download is ready. A `.part` file left by an interrupted call is resumed.
    Refuses, deleting the part file: more than `max_bytes`, a size other than `size`, a sha256 other than `sha256`.
    A network failure keeps the part file and says how to resume.
    """
    check_url(url)
    dest = Path(dest)
    if sha256 is not None:
        sha256 = sha256.lower()
        if not _SHA256.match(sha256):
            raise ReproError(f"expected sha256 {sha256!r} for {url} is not 64 hex digits")
    limit = max_bytes if size is None else min(max_bytes, size)
    if size is not None and size > max_bytes:
        raise ReproError(f"download of {url}: {size} bytes expected, above the {max_bytes}-byte limit; refused")
    if sha256 is not None and dest.is_file() and (size is None or dest.stat().st_size == size) \
            and sha256_file(dest) == sha256:
        return DownloadResult(dest, sha256, dest.stat().st_size, "cached")
    part = part_path(dest)
    with _locked(part) as fd:
        have = os.fstat(fd).st_size
        if have > limit:  # a left-over part longer than the file can be: not a prefix of it
            os.ftruncate(fd, 0)
            have = 0
        if size is not None and have == size:  # finished before, but not yet verified and renamed
            digest = sha256_file(part)
            if sha256 is None or digest == sha256:
                os.replace(part, dest)
                return DownloadResult(dest, digest, size, "resumed")
            os.ftruncate(fd, 0)
            have = 0
        try:
            response = _open(url, have)
            try:
                return _transfer(response, url, dest, part, fd, have, sha256, size, limit, max_bytes, on_progress)
            finally:
                response.body.close()
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                if part.stat().st_size == 0:  # nothing worth resuming: leave no trace
                    part.unlink()
            raise


def _transfer(response: _Response, url: str, dest: Path, part: Path, fd: int, have: int, sha256: str | None,
              size: int | None, limit: int, max_bytes: int, on_progress: Progress | None) -> DownloadResult:
    resumed = response.status == 206
    if not resumed:  # whole file: the server ignored Range (or there was nothing to resume)
        os.ftruncate(fd, 0)
        have = 0
    total = response.total
    try:
        if total is not None:
            if total > max_bytes:
                raise ReproError(f"download of {url}: the server announces {total} bytes, above the "
                                 f"{max_bytes}-byte limit; refused, nothing kept")
            if size is not None and total != size:
                raise ReproError(f"download of {url}: the server announces {total} bytes, expected {size}; "
                                 "refused, nothing kept (the file changed at the source?)")
    except ReproError:
        part.unlink(missing_ok=True)
        raise
    digest = hashlib.sha256()
    if have:
        with open(part, "rb") as f:  # the resumed prefix must be part of the hash
            while block := f.read(CHUNK):
                digest.update(block)
    expected_total = total if total is not None else size
    if on_progress is not None and have:
        on_progress(have, expected_total)
    written = have
    try:
        os.lseek(fd, have, os.SEEK_SET)
        while block := response.body.read(CHUNK):
            written += len(block)
            if written > limit:
                part.unlink(missing_ok=True)
                what = f"more than the expected {size} bytes" if size is not None and size < max_bytes else \
                    f"more than the {max_bytes}-byte limit"
                raise ReproError(f"download of {url}: {what}; refused, nothing kept")
            _write_all(fd, block)
            failpoints.hit("download.after_block")
            digest.update(block)
            if on_progress is not None:
                on_progress(len(block), expected_total)
    except (OSError, http.client.HTTPException) as exc:  # connection reset mid-body, timeout, disk full, ...
        os.fsync(fd)
        raise Unreachable(f"download of {url} interrupted after {written} bytes ({exc.__class__.__name__}); "
                         f"the partial file {part} is kept: run the same command again to resume") from None
    os.fsync(fd)
    # http.client returns a short body without complaint when the connection closes early
    if total is not None and written < total:
        raise Unreachable(f"download of {url} truncated: {written} of {total} bytes; the partial file {part} is "
                         "kept: run the same command again to resume")
    found = digest.hexdigest()
    try:
        _verify(dest, written, found, size, sha256, url)
    except ReproError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dest)
    return DownloadResult(dest, found, written, "resumed" if resumed else "downloaded")


def _write_all(fd: int, block: bytes) -> None:
    view = memoryview(block)
    while view:
        view = view[os.write(fd, view):]


@contextlib.contextmanager
def rich_progress(description: str, console=None) -> Iterator[Progress]:
    """A rich download bar (bytes, speed, time left) as a `Progress` callback; the bar disappears when done."""
    from rich.progress import BarColumn, DownloadColumn, Progress as Bar, TextColumn, TimeRemainingColumn, \
        TransferSpeedColumn

    with Bar(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
             TimeRemainingColumn(), console=console, transient=True) as bar:
        task = bar.add_task(description, total=None)

        def advance(n: int, total: int | None) -> None:
            bar.update(task, advance=n, total=total)

        yield advance


@contextlib.contextmanager
def rich_progress_factory(console=None) -> Iterator[Callable[[str], Progress]]:
    """Yields `bar(description) -> Progress`: a rich download bar per description, shown only once bytes flow
    (a local file that needs no download shows nothing), all under one live display."""
    from rich.progress import BarColumn, DownloadColumn, Progress as Bar, TextColumn, TimeRemainingColumn, \
        TransferSpeedColumn

    bars = Bar(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
               TimeRemainingColumn(), console=console, transient=True)

    def bar(description: str) -> Progress:
        task = None

        def advance(n: int, total: int | None) -> None:
            nonlocal task
            if task is None:
                bars.start()  # idempotent
                task = bars.add_task(description, total=total)
            bars.update(task, advance=n, total=total)

        return advance

    try:
        yield bar
    finally:
        bars.stop()
