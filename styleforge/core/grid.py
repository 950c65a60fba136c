"""Contact sheets: a grid of images with optional captions, for people who would rather look."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from styleforge.core.io import atomic_write


def tile_for(image_size: int) -> int:
    """The tile side for a grid of model outputs: tiny models enlarged, big ones shrunk to 256."""
    return max(128, min(image_size, 256))


def fit(image: Image.Image, tile: int) -> Image.Image:
    """Scale to fit a tile, up as well as down: a 32x32 sample should be seen, not squinted at."""
    scale = tile / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.NEAREST)


CAPTION_H = 14  # the strip under each tile that holds its caption


def contact_sheet(
    images: Sequence[np.ndarray], captions: Sequence[str] | None = None, tile: int = 128, cols: int = 8
) -> Image.Image:
    """Tile RGB uint8 arrays (any sizes, letterboxed into square tiles) with a caption strip each."""
    caption_h = CAPTION_H if captions else 0
    cols = max(1, min(cols, len(images)))
    rows = max(1, -(-len(images) // cols))
    sheet = Image.new("RGB", (cols * tile, rows * (tile + caption_h)), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    for index, array in enumerate(images):
        thumb = fit(Image.fromarray(np.asarray(array)).convert("RGB"), tile)
        x, y = (index % cols) * tile, (index // cols) * (tile + caption_h)
        sheet.paste(thumb, (x + (tile - thumb.width) // 2, y + (tile - thumb.height) // 2))
        if captions:
            draw.text((x + 2, y + tile + 1), captions[index][: tile // 6], fill=(230, 230, 230))
    return sheet


def save_sheet(path: str | Path, images: Sequence[np.ndarray], captions: Sequence[str] | None = None, **kwargs) -> Path:
    sheet = contact_sheet(images, captions, **kwargs) if len(images) else Image.new("RGB", (128, 32), (24, 24, 24))
    return atomic_write(path, lambda tmp: sheet.save(tmp, format="PNG"))


def sheet_tiles(path: str | Path, count: int, side: int, tile: int, cols: int, captioned: bool) -> list[np.ndarray]:
    """The images a contact sheet of square side x side images shows, read back from its file:
    each tile cut out and sampled at the centres of its enlarged pixels. Exact for sheets that
    enlarge (NEAREST, by a whole factor), which is every sheet of model outputs up to 128 px, so a
    test can hold a grid against the renders it claims to show."""
    if tile % side:
        raise ValueError(f"a {side} px image in a {tile} px tile is not enlarged by a whole factor")
    sheet = np.asarray(Image.open(path).convert("RGB"))
    factor, row_h = tile // side, tile + (CAPTION_H if captioned else 0)
    return [sheet[(k // cols) * row_h: (k // cols) * row_h + tile, (k % cols) * tile: (k % cols + 1) * tile]
            [factor // 2:: factor, factor // 2:: factor] for k in range(count)]
