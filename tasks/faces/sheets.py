"""reports/faces.png (the crops) and reports/faces_rejects.png (what was left out, and why)."""

from __future__ import annotations

from collections import defaultdict
from itertools import chain, zip_longest
from pathlib import Path

import numpy as np

from styleforge.core.grid import save_sheet
from styleforge.core.images import BadImage, load_image
from styleforge.tasks.faces.cache import FacesCache
from styleforge.tasks.paths import FACES_SHEET, REJECTS_SHEET

MAX_TILES = 64
TILE = 144
NO_PICTURE = np.full((TILE, TILE, 3), 64, np.uint8)  # a bad image has nothing to show


def write_sheets(records: list[dict], cache: FacesCache, root: Path) -> tuple[Path, Path]:
    crops = [(r["sha256"], face["file"]) for r in records for face in r["faces"]]
    crops = _spread(sorted(crops), MAX_TILES)
    faces_sheet = save_sheet(root / FACES_SHEET, [_read(cache.file(sha, name)) for sha, name in crops],
                             tile=TILE)
    rejects = _one_of_each_reason_first([(r["sha256"], reject) for r in records for reject in r["rejects"]])
    rejects_sheet = save_sheet(
        root / REJECTS_SHEET,
        [_read(cache.file(sha, reject["thumb"])) if reject["thumb"] else NO_PICTURE for sha, reject in rejects],
        [_caption(reject) for _, reject in rejects],
        tile=TILE,
    )
    return faces_sheet, rejects_sheet


def _spread(items: list, limit: int) -> list:
    """At most `limit` items, evenly spaced through the list (so a sheet samples the whole set)."""
    if len(items) <= limit:
        return items
    return [items[round(i * (len(items) - 1) / (limit - 1))] for i in range(limit)]


def _one_of_each_reason_first(rejects: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """Up to MAX_TILES rejects, taking the reasons in turn so a rare reason is never crowded out."""
    by_reason = defaultdict(list)
    for sha, reject in sorted(rejects, key=lambda item: item[0]):
        by_reason[reject["reason"]].append((sha, reject))
    spread = [_spread(group, MAX_TILES) for _, group in sorted(by_reason.items())]
    interleaved = [item for item in chain.from_iterable(zip_longest(*spread)) if item is not None]
    return interleaved[:MAX_TILES]


def _caption(reject: dict) -> str:
    reason = reject["reason"].replace("bad_image:", "bad:")
    return reason if reject["confidence"] is None else f"{reason} {reject['confidence']:.1f}"


def _read(path: Path) -> np.ndarray:
    try:
        return load_image(path)
    except BadImage:
        return NO_PICTURE
