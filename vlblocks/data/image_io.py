"""The one image loader every reader uses: any file PIL reads, as a fully decoded 8-bit RGB image.

Real datasets hold more than 8-bit RGB JPEGs: 16-bit gray PNGs (depth maps, medical and scientific images), 32-bit
integer and float images, palette images, images with an alpha channel, CMYK JPEGs. ``load_image`` converts each
correctly: 16-bit and 32-bit integer gray images are scaled to 8 bit (``v * 255 / 65535``, not clipped at 255,
which would saturate almost every pixel), float images are scaled from [0, 1], images with transparency are
composited over white (as Hugging Face image processors do), everything else goes through PIL's conversion to
RGB (CMYK, YCbCr, LAB, 1-bit, gray). A file whose header claims more than ``max_pixels`` pixels (a decompression
bomb, e.g. 30000 x 30000) is refused before any pixel is decoded. ``try_load_image`` returns ``None`` instead of
raising, for the readers' "skip and count unreadable images" rule; ``safe_image_path`` refuses file names from
annotation files that would leave the image folder.

Shape legend: H, W image height and width; decoded images are (H, W, 3) uint8.
"""

from __future__ import annotations

import warnings
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
from PIL import Image, UnidentifiedImageError

__all__ = ["MAX_PIXELS", "UnreadableImageError", "load_image", "safe_image_path", "try_load_image"]

MAX_PIXELS = (
    1 << 27
)  # 134M pixels (about 11585 x 11585): anything larger is refused as a likely decompression bomb
_INTEGER_MODES = ("I", "I;16", "I;16L", "I;16B", "I;16N")


class UnreadableImageError(ValueError):
    """An image file that cannot be decoded, is truncated, or is too large to decode safely."""


def _gray_to_rgb(array: np.ndarray) -> Image.Image:
    """An (H, W) array of 8-bit levels as an RGB image."""
    gray = Image.fromarray(np.clip(np.rint(array), 0, 255).astype(np.uint8), mode="L")
    return gray.convert("RGB")


def _to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL mode as 8-bit RGB (see the module docstring for the rules)."""
    if image.mode == "RGB":
        return image
    if image.mode in _INTEGER_MODES:
        levels = np.asarray(image).astype(np.float64)  # (H, W) 0..65535 for 16-bit files
        return _gray_to_rgb(levels * (255.0 / 65535.0))
    if image.mode == "F":
        levels = np.nan_to_num(np.asarray(image).astype(np.float64), nan=0.0, posinf=1.0, neginf=0.0)
        return _gray_to_rgb(levels * 255.0)
    if image.mode == "P" and "transparency" in image.info or image.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_image(path: str | Path, *, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open ``path`` and return it fully decoded as an 8-bit RGB PIL image.

    Raises:
        UnreadableImageError (a ValueError): naming the file when it is not an image PIL can read, is truncated
            or corrupt, or its header claims more than ``max_pixels`` pixels (checked before decoding; PIL itself refuses
            more than ``2 * PIL.Image.MAX_IMAGE_PIXELS`` whatever ``max_pixels`` says).
        FileNotFoundError: when the file does not exist.
    """
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter(
                "ignore", Image.DecompressionBombWarning
            )  # checked below, with the file's name
            with Image.open(path) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise UnreadableImageError(
                        f"{path}: image is {width} x {height} pixels, more than max_pixels={max_pixels} "
                        "(a likely decompression bomb); refused without decoding"
                    )
                image.load()
                return _to_rgb(image)
    except FileNotFoundError:
        raise
    except UnreadableImageError:
        raise
    except (
        OSError,
        UnidentifiedImageError,
        ValueError,
        SyntaxError,
        Image.DecompressionBombError,  # PIL's own limit, 2 x Image.MAX_IMAGE_PIXELS, checked while opening
    ) as err:
        raise UnreadableImageError(f"{path}: cannot decode the image ({type(err).__name__}: {err})") from None


def try_load_image(path: str | Path, *, max_pixels: int = MAX_PIXELS) -> Image.Image | None:
    """``load_image``, or None when the file is missing, unreadable, corrupt or too large."""
    try:
        return load_image(path, max_pixels=max_pixels)
    except (UnreadableImageError, OSError):
        return None


def safe_image_path(image_dir: Path, name: object, where: str) -> Path:
    """``image_dir / name`` for a relative file name that stays inside ``image_dir``.

    Raises:
        ValueError: naming ``where`` (the annotation entry) when ``name`` is not a non-empty str, is absolute
            (``/etc/hostname``, ``C:\\x``) or has a ``..`` part (``../x``), which would open a file outside the
            image folder.
    """
    if not isinstance(name, str) or not name or "\x00" in name:
        raise ValueError(f"{where}: file name must be a non-empty str, got {name!r}")
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or name.startswith(("/", "\\")):
        raise ValueError(f"{where}: file name {name!r} is absolute; it must be relative to the image folder")
    if ".." in posix.parts or ".." in windows.parts:
        raise ValueError(f"{where}: file name {name!r} leaves the image folder ('..'); refused")
    return image_dir / name
