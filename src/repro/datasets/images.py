"""The one gate every image file passes before its pixels are used: format, size, bit depth.

- Formats: what PIL decodes among JPEG, PNG, BMP, PPM/PGM, TIFF and WebP (the extensions the folder scans accept).
  Anything else (a GIF renamed .png, say) is refused naming the file and the format it really is.
- Size: the header is read before any pixel, and an image over MAX_PIXELS is refused with the limit stated, so a
  decompression bomb (a small file claiming 100,000 x 100,000 px) never allocates its pixels.
- Orientation: a JPEG's EXIF orientation tag is applied only when the caller asks (`finetune.exif`), because the
  authors' cv2.imread applied it for five datasets and their PIL reader did not for EuroSAT.
- Bit depth: 16-bit greyscale (PNG mode I;16, or I) is scaled to 8 bits (value / 257, rounded), not clipped, so a
  16-bit scan keeps its contrast instead of turning white.
Used by the training loaders, `repro data verify|prepare` and own data; exercised by `repro finetune`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from repro.errors import ReproError

if TYPE_CHECKING:
    import torch

# 100 megapixels: the largest images of the study (APTOS fundus photos) are about 7 MP; PIL's own warning level is
# 89 MP and it refuses only above twice that.
MAX_PIXELS = 100_000_000
FORMATS = {"JPEG", "PNG", "BMP", "PPM", "TIFF", "WEBP", "MPO"}  # MPO: a JPEG with extra frames, as phones write


class ImageError(ReproError):
    """An image file that cannot be used; `short` says why in a word or two, for lists of many files."""

    def __init__(self, message: str, short: str) -> None:
        super().__init__(message)
        self.short = short


def _eight_bit(image):
    """A 16/32-bit integer greyscale image as 8-bit greyscale, scaled over 0..65535."""
    from PIL import Image

    values = np.asarray(image, dtype=np.float64)
    return Image.fromarray(np.clip(np.rint(values / 257.0), 0, 255).astype(np.uint8), mode="L")


def decode(path: Path, mode: str = "RGB", exif: bool = False) -> np.ndarray:
    """The pixels of `path` in PIL mode `mode` ("RGB" or "L") as a uint8 array; ReproError naming the file when it
    is missing, not an accepted format, too large, or does not decode. With `exif`, the file's EXIF orientation tag
    is applied (rotated/mirrored upright, as cv2.imread does); without, the pixels are as stored (as PIL reads)."""
    from PIL import Image, ImageOps

    path = Path(path)
    Image.MAX_IMAGE_PIXELS = None  # PIL's own bomb check would fire first, with its limit; ours, below, applies
    try:
        with Image.open(path) as image:
            if image.format not in FORMATS:
                raise ImageError(f"{path}: a {image.format or 'unknown'} image, not one of the accepted formats "
                                 f"({', '.join(sorted(FORMATS - {'MPO'}))}); convert it first",
                                 f"{image.format or 'unknown'} format")
            width, height = image.size
            if width * height > MAX_PIXELS:
                raise ImageError(f"{path}: {width} x {height} px is over the limit of {MAX_PIXELS:,} pixels "
                                 "(a decompression bomb?); refused before decoding", "over the pixel limit")
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                image = _eight_bit(image)
            if exif:
                image = ImageOps.exif_transpose(image)
            return np.asarray(image.convert(mode))
    except FileNotFoundError:
        raise ImageError(f"{path}: missing image", "missing") from None
    except (OSError, SyntaxError, ValueError) as exc:  # truncated / not an image: PIL's OSError family
        raise ImageError(f"{path}: does not decode ({exc.__class__.__name__}: {exc})",
                         exc.__class__.__name__) from None


EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def walk_images(top: Path) -> list[Path]:
    """Image files under `top` (one class's folder) in torchvision ImageFolder's order (folders by path, then
    file names; EuroSAT's split depends on it), hidden folders skipped. Symbolic links are followed only while
    they stay inside `top`, and no real folder is entered twice: a link out of the class folder (into another
    class, or out of the dataset) or a link loop (which once turned 12 files into 492 mislabelled images, some
    in two splits) adds nothing."""
    import os

    inside = Path(top).resolve()
    seen: set[Path] = set()
    listed: list[tuple[str, list[str]]] = []
    for folder, dirs, files in os.walk(top, followlinks=True):
        real = Path(folder).resolve()
        if real in seen or not real.is_relative_to(inside):
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")
                         and Path(folder, d).resolve().is_relative_to(inside)
                         and Path(folder, d).resolve() not in seen)
        listed.append((folder, [f for f in files if f.lower().endswith(EXTENSIONS)
                                and Path(folder, f).resolve().is_relative_to(inside)]))
    return [Path(folder, file) for folder, files in sorted(listed) for file in sorted(files)]


def read_image(root: Path, paths: Sequence[str], channel_order: str = "rgb", image_id: str = "",
               exif: bool = False) -> np.ndarray:
    """uint8 (H, W, 3) pixels of one id (see the module docstring); a ReproError names the file that fails.
    `exif`: apply each file's EXIF orientation (repro.datasets.loaders.effective_exif decides per dataset)."""
    where = f" (id {image_id})" if image_id else ""
    planes = []
    for relative in paths if len(paths) == 1 else paths[:3]:  # HPA: red, green, blue files, in that order
        path = Path(root) / relative
        if not path.is_file():
            raise ReproError(f"{path}{where}: missing image; run `repro data verify` on {root}")
        try:
            planes.append(decode(path, "RGB" if len(paths) == 1 else "L", exif))
        except ReproError as exc:  # name the id as well as the file
            raise ReproError(str(exc).replace(f"{path}:", f"{path}{where}:", 1)) from None
    if len(planes) == 1:
        pixels = planes[0]
    else:
        if len({p.shape for p in planes}) != 1:
            raise ReproError(f"{Path(root) / paths[0]}{where}: channel images differ in size "
                             f"({', '.join(str(p.shape) for p in planes)})")
        pixels = np.stack(planes, axis=2)
    if channel_order == "bgr":
        pixels = pixels[:, :, ::-1]
    pixels = np.ascontiguousarray(pixels)
    return pixels if pixels.flags.writeable else pixels.copy()  # PIL's arrays are read-only views


def to_tensor(pixels: np.ndarray) -> torch.Tensor:
    import torch

    return torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).contiguous()
