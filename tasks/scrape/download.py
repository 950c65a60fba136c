"""Fetch one image URL and decide what it is: a usable image, or a rejection with a reason.

Runs in worker threads; duplicates are decided afterwards, in order, by the caller.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import imagehash
import requests
from PIL import Image, ImageOps, UnidentifiedImageError

from styleforge.core.config import ScrapeParams
from styleforge.core.images import to_rgb
from styleforge.tasks.scrape.addresses import BlockedAddress
from styleforge.tasks.scrape.http import DeadlineExceeded, Fetcher, TooLarge, describe

# File extensions by the format Pillow found in the bytes (never by URL or Content-Type).
EXTENSIONS = {"JPEG": ".jpg", "MPO": ".jpg", "TIFF": ".tif"}
# Pillow refuses to open images past twice Image.MAX_IMAGE_PIXELS before we see their size.
PILLOW_BOMB = "decompression bomb past Pillow's own limit"


@dataclass
class Download:
    status: str
    error: str = ""
    content_type: str = ""
    size: int = 0  # bytes received, or announced when refused on Content-Length
    width: int = 0  # as displayed, after EXIF orientation
    height: int = 0
    data: bytes = b""  # kept only for images that pass every check
    sha256: str = ""
    phash: str = ""  # 64-bit perceptual hash, hex
    extension: str = ""


def fetch_image(url: str, fetcher: Fetcher, params: ScrapeParams) -> Download:
    """GET url and check it; never raises for anything the network or the file can do."""
    content_type = ""
    try:
        with fetcher.open(url) as response:
            if response.status_code >= 400:
                return Download("http_error", f"HTTP {response.status_code} {response.reason}")
            content_type = media_type(response.headers.get("Content-Type", ""))
            if content_type not in params.content_types:
                refused = content_type or "no Content-Type"
                return Download("bad_content_type", f"{refused} is not in content_types", content_type)
            data = fetcher.read_body(response)
    except TooLarge as exc:
        return Download("too_large", str(exc), content_type, size=exc.seen)
    except BlockedAddress as exc:
        return Download("blocked_address", str(exc), content_type)
    except (requests.RequestException, OSError, DeadlineExceeded) as exc:
        return Download("error", describe(exc), content_type)
    return inspect_image(data, content_type, params)


def inspect_image(data: bytes, content_type: str, params: ScrapeParams) -> Download:
    """Check that data decodes as an image within the pixel and side limits: the header first
    (cheap, and it catches decompression bombs before any pixel is decoded), then verify() for
    structural damage, then a real decode, which is what catches truncated JPEGs."""
    if not data:
        return Download("not_image", "empty body", content_type)
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if rejection := _size_rejection(width, height, params):
                status, message = rejection
                return Download(status, message, content_type, len(data), width, height)
            image.verify()
        with Image.open(io.BytesIO(data)) as image:
            image.load()
            upright = ImageOps.exif_transpose(image)
            image_format = image.format
            rgb = to_rgb(upright)  # the one decode rule (16-bit, CMYK, palette) of every stage
    except Image.DecompressionBombError as exc:
        return Download("too_large", f"{PILLOW_BOMB}: {exc}", content_type, len(data))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return Download("not_image", describe(exc), content_type, len(data))
    return Download(
        "ok",
        content_type=content_type,
        size=len(data),
        width=rgb.shape[1],
        height=rgb.shape[0],
        data=data,
        sha256=hashlib.sha256(data).hexdigest(),
        phash=str(imagehash.phash(Image.fromarray(rgb))),
        extension=EXTENSIONS.get(image_format, f".{image_format.lower()}"),
    )


def _size_rejection(width: int, height: int, params: ScrapeParams) -> tuple[str, str] | None:
    if width * height > params.max_pixels:
        return "too_large", f"decompression bomb: {width}x{height} is over max_pixels {params.max_pixels}"
    if min(width, height) < params.min_side:
        return "too_small", f"{width}x{height} has a side under min_side {params.min_side}"
    return None


def media_type(header: str) -> str:
    """'image/JPEG; charset=binary' -> 'image/jpeg'."""
    return header.split(";", 1)[0].strip().lower()
