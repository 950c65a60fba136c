"""data/raw/manifest.parquet: one row per image URL ever tried, the memory a rerun resumes from."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from styleforge.core.config import ScrapeParams
from styleforge.core.io import atomic_write
from styleforge.tasks.paths import MANIFEST, RAW_DIR
from styleforge.tasks.scrape.download import PILLOW_BOMB

COLUMNS = {
    "url": "string",
    "page": "string",
    "sha256": "string",
    "phash": "string",
    "bytes": "int64",
    "width": "int64",
    "height": "int64",
    "status": "string",
    "error": "string",
    "path": "string",  # file name under data/raw, "" when no file is kept
    "content_type": "string",
    "source": "string",
}
STATUSES = (
    "ok",
    "duplicate",
    "near_duplicate",
    "http_error",
    "robots",
    "too_large",
    "bad_content_type",
    "not_image",
    "too_small",
    "blocked_address",  # an inside address that scrape.allow_private does not list
    "error",
)
# Answers that cannot change by asking again. http_error and error (timeouts, 5xx, refused
# connections) are retried by every rerun; limit-based rejections are final only while the
# params that caused them still hold (see is_settled). blocked_address is asked again too:
# allow_private, or where a name or a redirect points, may have changed.
FINAL_STATUSES = {"ok", "duplicate", "near_duplicate", "robots", "not_image"}


def load_manifest(root: Path) -> dict[str, dict]:
    """Rows by URL, in the order they were first recorded; {} when there is no manifest.
    ok rows whose file has gone from data/raw are dropped, so that they are fetched again."""
    path = root / MANIFEST
    if not path.exists():
        return {}
    rows = pd.read_parquet(path).to_dict("records")
    raw = root / RAW_DIR
    return {
        row["url"]: row for row in rows if row["status"] != "ok" or (raw / row["path"]).is_file()
    }


def save_manifest(rows: dict[str, dict], root: Path) -> Path:
    frame = pd.DataFrame(list(rows.values()), columns=list(COLUMNS)).astype(COLUMNS)
    return atomic_write(root / MANIFEST, lambda tmp: frame.to_parquet(tmp, index=False))


def is_settled(row: dict, params: ScrapeParams) -> bool:
    """Whether a recorded URL needs no new fetch under these params."""
    status = row["status"]
    if status in FINAL_STATUSES:
        return True
    if status == "too_large":
        pixels = row["width"] * row["height"]
        if pixels:  # refused for its pixel count
            return pixels > params.max_pixels
        return row["error"].startswith(PILLOW_BOMB) or row["bytes"] > params.max_bytes
    if status == "too_small":
        return min(row["width"], row["height"]) < params.min_side
    if status == "bad_content_type":
        return row["content_type"] not in params.content_types
    return False


class SeenImages:
    """The kept images so far, to tell exact duplicates (same sha256) and near duplicates
    (64-bit perceptual hashes, as hex, within a few bits) from new ones. Hashes are compared as
    ints with XOR and a bit count: a scan of thousands takes about a millisecond."""

    def __init__(self, max_distance: int):
        self.max_distance = max_distance
        self._by_sha: dict[str, str] = {}  # sha256 -> url
        self._hashes: list[tuple[int, str]] = []

    @classmethod
    def from_rows(cls, rows: dict[str, dict], max_distance: int) -> SeenImages:
        seen = cls(max_distance)
        for row in rows.values():
            if row["status"] == "ok":
                seen.add(row["sha256"], row["phash"], row["url"])
        return seen

    def add(self, sha256: str, phash: str, url: str) -> None:
        self._by_sha[sha256] = url
        self._hashes.append((int(phash, 16), url))

    def same_bytes(self, sha256: str) -> str | None:
        return self._by_sha.get(sha256)

    def closest(self, phash: str) -> tuple[int, str] | None:
        """(distance in bits, url) of the nearest kept image within max_distance, else None."""
        bits = int(phash, 16)
        nearest = min((((bits ^ kept).bit_count(), url) for kept, url in self._hashes), default=None)
        return nearest if nearest is not None and nearest[0] <= self.max_distance else None
