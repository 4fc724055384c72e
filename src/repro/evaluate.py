"""Verify a released fine-tuned checkpoint: hash first, load without running code, re-evaluate, compare.

The release manifest (`paper/checkpoints.yaml`, written by `repro release`, see repro.release; read and checked by
repro.manifest) pins each checkpoint by sha256 and size and records the metric its run reported, the split it was
measured on (with the split file's sha256) and the preprocessing. Verifying one entry is, in this order:
1. refuse a pickle format (`.pt`, `.pth`, `.bin`) unless `allow_pickle`, before the file is read at all;
2. download it when it is a URL (repro.download: https/file only, size limit, sha256 checked before the rename),
   or hash the local file; a mismatch is refused before anything parses the file;
3. load tensors only (safetensors; a pickle only through `torch.load(weights_only=True)`, never a fallback) and
   match every key and shape against `build_model(..., pretrained=False)`, listing what differs;
4. evaluate on the pinned split with the recorded preprocessing (channel order included), read from the folder
   training read (the raw download of a published format) exactly as training measured it (repro.train.predict),
   and compare with the recorded value within the manifest's tolerance.
Exercised by `repro eval --model M --dataset D [--checkpoint PATH|URL]` and `repro eval --all`.

`repro eval --archive PATH|URL` takes the files from a release archive (`repro release --archive`, or any zip or
tar laid out like the manifest's folder) instead: it is unpacked by repro.datasets.fetch.unpack into a temporary
folder (a member that would land outside it, or a link, refuses the whole archive before anything is written), and
each entry of the repository's manifest is verified as above from that folder at its relative URL. The manifest in
the archive is not read: the repository's pins are the trusted ones.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urljoin, urlsplit

from repro.download import Progress, Unreachable, check_url, download, file_url_path, sha256_file
from repro.errors import ReproError, UsageError
from repro.manifest import (  # noqa: F401  (the manifest's names, as callers and tests import them from here)
    MANIFEST_VERSION, METRIC_SPAN, PICKLE, SAFETENSORS, ManifestEntry, Preprocessing, _entry_from, entry_as_yaml,
    find_entry, preprocessing_as_dict, read_manifest, render_manifest)

if TYPE_CHECKING:
    import torch
    from torch import nn

FORMATS = {".safetensors": SAFETENSORS, ".pt": PICKLE, ".pth": PICKLE, ".bin": PICKLE}
MAX_CHECKPOINT_BYTES = 4 << 30  # 4 GiB: the largest model of the study (PNASNet-5-Large) is about 0.35 GB
_SHOWN = 8  # keys listed per kind in a mismatch message


# --- getting the bytes, verified -----------------------------------------------------------------------------------

def format_of(name: str) -> str:
    suffix = Path(urlsplit(name).path if "://" in name else name).suffix.lower()
    if suffix not in FORMATS:
        raise ReproError(f"{name}: unknown checkpoint format {suffix!r}; expected .safetensors (or, with "
                         "--allow-pickle, .pt/.pth/.bin)")
    return FORMATS[suffix]


def resolve(checkpoint: str) -> str:
    """--checkpoint: a URL (https/file only) or a local path, relative to the working directory."""
    return check_url(checkpoint) if "://" in checkpoint else checkpoint


def manifest_sources(entry: ManifestEntry, manifest: Path, base: Path | None = None) -> list[str]:
    """The entry's URLs as absolute URLs: relative ones resolve against the manifest's own location.

    With `base` (the folder a release archive was unpacked into) only the relative ones count, resolved against
    `base`: an absolute URL, or a relative one that would leave `base`, cannot name a file of the archive.
    """
    if base is None:
        root = Path(manifest).resolve().as_uri()
        return [check_url(urljoin(root, url)) for url in entry.urls]
    folder = Path(base).resolve()
    sources = []
    for url in entry.urls:
        if urlsplit(url).scheme or url.startswith(("/", "\\")):
            continue
        source = urljoin(folder.as_uri() + "/", url)
        if Path(os.path.normpath(file_url_path(source))).is_relative_to(folder):
            sources.append(source)
    return sources


def default_cache() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "repro" / "checkpoints"


def obtain(entry: ManifestEntry, source: str, cache_dir: Path, *, allow_pickle: bool = False,
           on_progress: Progress | None = None) -> tuple[Path, bytes]:
    """The checkpoint of `entry` from `source` (URL or path): its local path and its bytes, which match the
    manifest's size and sha256. Pickles are refused here, before a byte is read, unless `allow_pickle`.

    The bytes returned are the bytes hashed, and the only ones parsed later: swapping the file on disk after the
    check changes nothing.
    """
    found_format = format_of(source)
    if found_format == PICKLE and not allow_pickle:
        raise ReproError(f"{source}: a pickle checkpoint (.pt/.pth/.bin) can run code when loaded; refused. "
                         "Ask for the .safetensors release, or pass --allow-pickle to load it with "
                         "torch.load(weights_only=True) after its sha256 is verified")
    if found_format != entry.format:
        raise ReproError(f"{source}: a {found_format} file, but the manifest pins a {entry.format} file for "
                         f"{entry.key}")
    parts = urlsplit(source) if "://" in source else None
    if parts is not None and parts.scheme != "file":
        name = Path(parts.path).name
        target = Path(cache_dir) / entry.model / entry.dataset / f"{entry.sha256[:16]}-{name}"
        # download() hashes while streaming and renames only a file that matches; it is hashed again below
        path = download(source, target, sha256=entry.sha256, size=entry.size, max_bytes=MAX_CHECKPOINT_BYTES,
                        on_progress=on_progress).path
    else:
        path = file_url_path(source) if parts is not None else Path(source)
    if not path.is_file():
        raise Unreachable(f"{path}: checkpoint not found" + (" (run `repro release` to write the released "
                                                             "checkpoints)" if parts is not None else ""))
    size = path.stat().st_size
    if size != entry.size:  # before reading it: a huge file is never pulled into memory
        raise ReproError(f"{path}: {size} bytes, the manifest pins {entry.size} for {entry.key}; refused before "
                         "loading (truncated or not the released file)")
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if len(data) != entry.size or digest != entry.sha256:
        raise ReproError(f"{path}: sha256 {digest} does not match the manifest's {entry.sha256} for {entry.key}; "
                         "refused before loading (modified or not the released file)")
    return path, data


@contextlib.contextmanager
def unpacked_archive(source: str, cache_dir: Path, on_progress: Progress | None = None) -> Iterator[Path]:
    """The release archive `source` (a zip or tar) unpacked into a new temporary folder under `cache_dir`, removed
    on exit. A local path is read in place; an https:// or file:// URL is downloaded into `cache_dir` first
    (repro.download, within its size limit).

    Unpacking is repro.datasets.fetch.unpack: a member with an absolute path or `..`, or a link, refuses the whole
    archive before a byte is written. Nothing in the archive is trusted; the caller checks each file it takes
    against its own manifest.
    """
    import shutil
    import tarfile
    import tempfile
    import zipfile

    from repro.datasets.fetch import unpack

    cache_dir = Path(cache_dir)
    if "://" in source:
        parts = urlsplit(check_url(source))
        if parts.scheme == "file":
            path = file_url_path(source)
        else:
            name = Path(parts.path).name or "archive"
            target = cache_dir / "archives" / f"{hashlib.sha256(source.encode()).hexdigest()[:16]}-{name}"
            path = download(source, target, on_progress=on_progress).path
    else:
        path = Path(source)
    if not path.is_file():
        raise ReproError(f"{source}: release archive not found")
    if not (zipfile.is_zipfile(path) or tarfile.is_tarfile(path)):
        raise ReproError(f"{source}: neither a zip nor a tar archive; pass the file `repro release --archive` "
                         "wrote (or a zip or tar of the manifest's folder)")
    cache_dir.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=".archive-", dir=cache_dir))
    try:
        root = folder / "release"  # unpack() wants a new folder
        unpack(path, root)
        root.mkdir(exist_ok=True)  # an empty archive: every file is then missing from it
        yield root
    finally:
        shutil.rmtree(folder, ignore_errors=True)


# --- loading and matching ------------------------------------------------------------------------------------------

def load_tensors(data: bytes, fmt: str, where: str) -> dict[str, torch.Tensor]:
    """The state dict in verified bytes; tensors only, nothing executed."""
    if fmt == SAFETENSORS:
        from safetensors import SafetensorError
        from safetensors.torch import load

        try:
            return load(data)
        except (SafetensorError, ValueError, OSError) as exc:
            raise ReproError(f"{where}: not a readable safetensors file ({exc})") from None
    import io

    import torch

    try:
        # weights_only=True: the restricted unpickler accepts tensors and plain containers, nothing callable
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # what the restricted unpickler refuses surfaces as various exception types
        from repro.weights import pickle_refusal

        raise pickle_refusal(where, exc) from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise ReproError(f"{where}: expected a flat state dict of tensors, found {type(state).__name__}")
    return state


def state_dict_problems(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> list[str]:
    """Missing, unexpected and shape-mismatched keys of `found` against the architecture's `expected`."""
    def listed(kind: str, items: list[str]) -> str:
        more = f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""
        return f"{len(items)} {kind}: {', '.join(items[:_SHOWN])}{more}"

    missing = sorted(expected.keys() - found.keys())
    unexpected = sorted(found.keys() - expected.keys())
    shapes = [f"{k} {tuple(found[k].shape)} vs {tuple(expected[k].shape)}"
              for k in sorted(expected.keys() & found.keys()) if found[k].shape != expected[k].shape]
    return [listed(kind, items) for kind, items in (("missing", missing), ("unexpected", unexpected),
                                                     ("shape mismatches (checkpoint vs model)", shapes)) if items]


def build_checked(model: str, num_classes: int, image_size: int, state: dict[str, torch.Tensor],
                  where: str) -> nn.Module:
    """`model` with random init, then `state` loaded strictly; a mismatch is one error listing every kind."""
    from repro.models import build_model

    net = build_model(model, num_classes, pretrained=False, image_size=image_size)
    problems = state_dict_problems(net.state_dict(), state)
    if problems:
        raise ReproError(f"{where}: does not fit {model} with {num_classes} classes at {image_size} px: "
                         + "; ".join(problems))
    net.load_state_dict(state, strict=True)
    return net


# --- evaluating ----------------------------------------------------------------------------------------------------

def report_split(dataset: str, split: str, pre: Preprocessing, data_dir: Path, split_file: Path):
    """Split `split` of `dataset` read as training read it (repro.datasets.loaders.eval_split) from `data_dir`:
    the raw folder of a published format, the prepared folder of the embedded digits, a user's own folder."""
    from repro.datasets import DATASETS
    from repro.datasets.loaders import eval_split

    return eval_split(DATASETS[dataset], split_file, data_dir, split, pre.image_size, pre.mean, pre.std,
                      channel_order=pre.channel_order, exif="always" if pre.exif else "never")


def predict_scores(net: nn.Module, dataset, multilabel: bool, device: str = "cpu"):
    """Class scores over an eval dataset, computed as training measured them (repro.train.predict)."""
    import torch

    from repro.train import predict

    from repro.train import resolve_device

    dev = resolve_device(device, "--device")
    net = net.to(dev, memory_format=torch.channels_last)
    return predict(net, dataset, dev, multilabel)


@dataclass
class Verdict:
    model: str
    dataset: str
    source: str
    verdict: str  # "pass", "fail" (re-evaluated, outside tolerance) or "error" (refused or could not evaluate)
    metric: str
    recorded: float | None
    value: float | None = None
    difference: float | None = None
    tolerance: float | None = None
    tolerance_reason: str = ""
    sha256: str | None = None
    split: str | None = None
    images: int | None = None
    detail: str = ""


def verify_entry(entry: ManifestEntry, source: str, *, data_dir: Path, split_file: Path, cache_dir: Path,
                 allow_pickle: bool = False, device: str = "cpu",
                 on_progress: Progress | None = None) -> Verdict:
    """Verify one checkpoint end to end (see the module docstring); a refusal raises ReproError."""
    from repro.datasets import DATASETS
    from repro.metrics import METRICS

    spec = DATASETS[entry.dataset]
    path, data = obtain(entry, source, cache_dir, allow_pickle=allow_pickle, on_progress=on_progress)
    # the split must be the very one the recorded value was measured on
    if not Path(split_file).is_file():
        raise ReproError(f"{split_file}: missing split file; run `repro data prepare {entry.dataset}`")
    split_digest = sha256_file(split_file)
    if split_digest != entry.split_sha256:
        raise ReproError(f"{split_file}: sha256 {split_digest[:16]}... differs from the split the checkpoint was "
                         f"measured on ({entry.split_sha256[:16]}...); restore it with `git checkout -- "
                         f"{split_file}`")
    state = load_tensors(data, entry.format, str(path))
    net = build_checked(entry.model, entry.num_classes, entry.preprocessing.image_size, state, str(path))
    split = report_split(entry.dataset, entry.split, entry.preprocessing, data_dir, split_file)
    scores = predict_scores(net, split.dataset, spec.multilabel, device)
    value = float(METRICS[entry.metric](split.targets, scores))
    difference = value - entry.value
    # 1e-12: the recorded value went through YAML; a tolerance of 0 must still accept the identical number
    verdict = "pass" if abs(difference) <= entry.tolerance + 1e-12 else "fail"
    return Verdict(entry.model, entry.dataset, str(path), verdict, entry.metric, entry.value, value, difference,
                   entry.tolerance, entry.tolerance_reason, entry.sha256, entry.split, len(split.ids))


def verify_all(entries: Sequence[ManifestEntry], manifest: Path, *, data_dir: Callable[[str], Path],
               splits_dir: Path,
               cache_dir: Path, checkpoint: str | None = None, allow_pickle: bool = False, device: str = "cpu",
               progress: Callable[[str], Progress | None] | None = None, base: Path | None = None,
               base_label: str | None = None) -> list[Verdict]:
    """Verify each entry (from `checkpoint` when given, else from its manifest URLs in order); one entry's
    refusal is its verdict ("error" with the reason) and the others still run. `data_dir(dataset)` is the folder
    its images are read from, as `repro finetune` reads them (repro.layout.data_dir).

    Only an unreachable copy (repro.download.Unreachable) moves on to the entry's next URL; a copy that was read
    and refused is the verdict, so a tampered mirror is never papered over by a good one.

    With `base` (a release archive unpacked by `unpacked_archive`) each file is taken from that folder at the
    entry's relative URL (manifest_sources), checked like any other copy; a file the archive lacks is the entry's
    error, naming the member. `base_label` (the archive as the user named it) stands for the temporary folder in
    verdicts and messages.
    """
    if checkpoint and base is not None:
        raise UsageError("--checkpoint and --archive both say where the file is: give one of them")
    root = Path(base).resolve() if base is not None else None
    label = base_label or (str(root) if root is not None else "")

    def member(source: str) -> str:
        return Path(os.path.normpath(file_url_path(source))).relative_to(root).as_posix()

    def shown(text: str) -> str:
        return text if root is None else text.replace(f"{root}{os.sep}", f"{label}/")

    verdicts = []
    for entry in entries:
        sources = [resolve(checkpoint)] if checkpoint else manifest_sources(entry, manifest, root)
        verdict, problems = None, []
        if not sources:  # only with `base`: every URL of the entry is absolute
            problems.append(f"{entry.key}: no URL relative to the manifest ({', '.join(entry.urls)}), so no file "
                            f"of {label} is its file")
        for source in sources:
            if root is not None and not file_url_path(source).is_file():
                problems.append(f"{label} has no member {member(source)!r} (the file of {entry.key})")
                continue
            try:
                verdict = verify_entry(entry, source, data_dir=Path(data_dir(entry.dataset)),
                                       split_file=Path(splits_dir) / entry.split_file, cache_dir=cache_dir,
                                       allow_pickle=allow_pickle, device=device,
                                       on_progress=progress(entry.key) if progress else None)
                break
            except Unreachable as error:
                problems.append(str(error))
            except ReproError as error:
                problems.append(str(error))
                break
        if verdict is not None:
            verdicts.append(verdict if root is None else replace(verdict, source=f"{label}/{member(source)}"))
            continue
        if root is None:
            where = sources[0]
        else:
            where = f"{label}/{member(sources[0])}" if sources else label
        verdicts.append(Verdict(entry.model, entry.dataset, where, "error", entry.metric, entry.value,
                                tolerance=entry.tolerance, tolerance_reason=entry.tolerance_reason,
                                sha256=entry.sha256, split=entry.split, detail=shown(" | ".join(problems))))
    return verdicts


def verify_release(entries: Sequence[ManifestEntry], manifest: Path, *, archive: str | None, cache_dir: Path,
                   progress: Callable[[str], Progress | None] | None = None, **options) -> list[Verdict]:
    """`verify_all`, the files taken from `archive` (a release archive, local or a URL) when given: it is unpacked
    into a temporary folder under `cache_dir` that is gone on return. `options` are verify_all's."""
    with contextlib.ExitStack() as stack:
        base = None if archive is None else stack.enter_context(
            unpacked_archive(archive, cache_dir, progress(f"archive {archive}") if progress else None))
        return verify_all(entries, manifest, cache_dir=cache_dir, progress=progress, base=base, base_label=archive,
                          **options)


def report(verdicts: Sequence[Verdict], manifest: Path, skipped: Sequence[str] = ()) -> dict:
    """The JSON report of `repro eval`; `skipped` names the manifest entries that were not evaluated."""
    from repro.results import provenance

    counts = {v: sum(1 for x in verdicts if x.verdict == v) for v in ("pass", "fail", "error")}
    counts["skipped"] = len(skipped)
    return {"manifest": str(manifest), "counts": counts, "checkpoints": [asdict(v) for v in verdicts],
            "skipped": list(skipped), "provenance": provenance()}
