"""The embedded dataset: scikit-learn's bundled handwritten digits, written out in the generic image/CSV format.

The digits ship inside the scikit-learn wheel, so the default study runs offline. Their identity is pinned by the
sha256 of the pixel and label arrays in `data/raw/digits/source.json`; a scikit-learn release that changed them
would be refused rather than silently give another study. Exercised by `repro data prepare digits`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from repro.datasets.generic import write_image_csv
from repro.errors import ReproError


def load_digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 N x 8 x 8 scaled to 0..255, labels int64 N) from scikit-learn."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    # The bundled values are integers 0..16; scale to the 8-bit range an image file holds, losslessly.
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)
    return images, bunch.target.astype(np.int64)


def arrays_sha256(images: np.ndarray, labels: np.ndarray) -> str:
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(images).tobytes())
    digest.update(np.ascontiguousarray(labels).tobytes())
    return digest.hexdigest()


def read_pin(raw_dir: Path) -> dict:
    pin_file = Path(raw_dir) / "source.json"
    if not Path(raw_dir).is_dir():
        raise ReproError(f"{raw_dir}: missing raw directory for the embedded digits (it holds source.json, in git)")
    try:
        pin = json.loads(pin_file.read_text())
        pin["sha256"]
    except FileNotFoundError:
        raise ReproError(f"{pin_file}: missing; restore it with `git checkout -- {pin_file}`") from None
    except (ValueError, KeyError, TypeError):
        raise ReproError(f"{pin_file}: not a JSON object with a 'sha256' field") from None
    return pin


def verified_digits(raw_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """The bundled digits, checked against the pin in `raw_dir`."""
    pin = read_pin(raw_dir)
    images, labels = load_digits_arrays()
    found = arrays_sha256(images, labels)
    if found != pin["sha256"]:
        raise ReproError(
            f"scikit-learn's digits differ from the pin in {Path(raw_dir) / 'source.json'} "
            f"(sha256 {found[:12]}... != {pin['sha256'][:12]}...); install the locked scikit-learn"
        )
    return images, labels


def image_ids(count: int) -> list[str]:
    return [f"images/{i:04d}.png" for i in range(count)]


def write_digits(out_dir: Path, images: np.ndarray, labels: np.ndarray) -> None:
    """Write the digits under `out_dir` in the generic image/CSV format."""
    rows = list(zip(image_ids(len(labels)), (int(y) for y in labels)))
    write_image_csv(out_dir, rows, images)
