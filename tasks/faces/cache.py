"""The per-file faces cache: one entry per (input sha256, faces params and code), never per run.

data/cache/faces/<params key>/<sha[:2]>/<sha>.json records what one photo gave (its crops and
its rejects); the crops and reject thumbnails sit beside it. The record is written last, so an
entry without one (a killed run) is simply done again. DVC keeps this folder across reruns
(persist: true, cache: false), which is what makes a rerun with 5% new photos cost about 5%.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import cv2

from styleforge.core import images
from styleforge.core.config import FacesParams
from styleforge.core.io import atomic_write
from styleforge.tasks.paths import FACES_CACHE

# Settings that change how the work is done but never its result.
NOT_IN_KEY = {"workers"}
# The code that shapes what a photo yields -- this package and the image reader -- is hashed
# into the key: editing it retires every old entry, so a fix can never hide behind results
# cached before it. (The whole package: a module added later is covered without a list.)
SHAPING_CODE = (Path(__file__).parent, Path(images.__file__))


def params_key(params: FacesParams) -> str:
    """Hash of everything that shapes the output: the params, our code and OpenCV's version
    (its cascades and resampling)."""
    code = hashlib.sha256()
    for place in SHAPING_CODE:
        for source in sorted(place.rglob("*.py")) if place.is_dir() else [place]:
            code.update(source.name.encode() + b"\0" + source.read_bytes())
    shaping = {"params": params.model_dump(exclude=NOT_IN_KEY), "code": code.hexdigest(), "opencv": cv2.__version__}
    return hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:16]


class FacesCache:
    def __init__(self, root: Path, params: FacesParams):
        self.key = params_key(params)
        self.dir = root / FACES_CACHE / self.key

    def entry_dir(self, sha256: str) -> Path:
        return self.dir / sha256[:2]

    def record_path(self, sha256: str) -> Path:
        return self.entry_dir(sha256) / f"{sha256}.json"

    def load(self, sha256: str) -> dict | None:
        """The record for this photo, or None when it has not been processed with these params."""
        try:
            return json.loads(self.record_path(sha256).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def file(self, sha256: str, name: str) -> Path:
        return self.entry_dir(sha256) / name


def publish(sources: dict[str, Path], out_dir: Path) -> None:
    """Make out_dir hold exactly `sources` (output name -> cached file), hard-linked where the
    file system allows (no copy, no extra space) and copied where it does not."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for existing in out_dir.iterdir():
        wanted = sources.get(existing.name)
        if wanted is None or not _same_file(existing, wanted):
            existing.unlink()
    for name, source in sources.items():
        target = out_dir / name
        if not target.exists():
            _link_or_copy(source, target)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)  # one directory entry appears, whole, or not at all
    except OSError:
        atomic_write(target, lambda tmp: shutil.copyfile(source, tmp))
