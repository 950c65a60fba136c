"""Decode whatever a scraper brings home into upright RGB uint8, or say plainly why not.

Scraped sets hold RGBA, palette, CMYK, 16-bit and EXIF-rotated images, truncated downloads and
files that are not images at all; each either becomes a normal RGB array or raises BadImage.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# Transparent pixels become white: web cut-outs are designed to sit on a white page.
TRANSPARENT_FILL = (255, 255, 255)
# 16-bit grayscale; Pillow opens some (TIFF, PNG in older versions) as 32-bit "I" holding 0-65535.
SIXTEEN_BIT_MODES = {"I;16", "I;16L", "I;16B", "I;16N", "I"}
# Decoded size cap: an image past this is a decompression bomb (scrape.max_pixels and
# faces.max_pixels default to it; the stages reading their own outputs use it as is).
MAX_PIXELS = 40_000_000


class BadImage(ValueError):
    """The file cannot become a training image; `reason` is short and stable, for counting."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


def load_image(path: str | Path, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode path as upright (EXIF orientation applied), writable RGB uint8 (H, W, 3)."""
    image = open_image(path, max_pixels)
    try:
        image.load()
        upright = ImageOps.exif_transpose(image)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise BadImage("truncated" if "truncated" in str(exc).lower() else "decode_error", str(exc)) from None
    finally:
        image.close()
    return to_rgb(upright)


def open_image(path: str | Path, max_pixels: int) -> Image.Image:
    """Open lazily (header only) and refuse what is empty, not an image, or too big to decode."""
    path = Path(path)
    if not path.is_file():
        raise BadImage("missing", str(path))
    if path.stat().st_size == 0:
        raise BadImage("empty", str(path))
    try:
        with warnings.catch_warnings():
            # We apply our own pixel cap below; Pillow's warning for its larger one is noise here.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise BadImage("decompression_bomb", str(exc)) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise BadImage("not_an_image", str(exc)) from None
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise BadImage("decompression_bomb", f"{width}x{height} is over max_pixels={max_pixels}")
    if width == 0 or height == 0:
        image.close()
        raise BadImage("decode_error", f"{width}x{height}")
    return image


def to_rgb(image: Image.Image) -> np.ndarray:
    """Any decoded Pillow image as RGB uint8: 16-bit scaled down, transparency flattened."""
    if image.mode in SIXTEEN_BIT_MODES:
        # Pillow's convert("L") clips 16-bit values at 255 (a white image); scale instead.
        wide = np.asarray(image, dtype=np.float32) / 257.0
        gray = np.clip(np.rint(wide), 0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=2)
    if image.mode == "F":
        raise BadImage("unsupported_mode", "32-bit float images carry no known range")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, TRANSPARENT_FILL + (255,))
        image = Image.alpha_composite(background, rgba)
    try:
        rgb = image.convert("RGB")
    except ValueError as exc:  # e.g. LAB or HSV, which Pillow cannot convert to RGB
        raise BadImage("unsupported_mode", f"{image.mode}: {exc}") from None
    return np.array(rgb, dtype=np.uint8)  # a writable array (np.asarray would be read-only)
