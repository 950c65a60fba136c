"""One photo in, one cache entry out: what runs in each worker process."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from styleforge.core.config import FacesParams
from styleforge.core.images import BadImage, load_image
from styleforge.core.io import atomic_write, atomic_write_json
from styleforge.tasks.faces.cache import FacesCache
from styleforge.tasks.faces.detect import FaceCrop, Reject, find_faces

THUMB_SIDE = 144  # reject thumbnails: the size of a contact-sheet tile
THUMB_CONTEXT = 1.6  # a rejected box is shown with this much of its surroundings
BOX_COLOUR = (255, 64, 64)


@dataclass(frozen=True)
class Job:
    sha256: str
    path: Path  # where to read it
    source: str  # its path in the manifest, for people reading records


def init_worker() -> None:
    # One OpenCV thread per process: the pool already keeps every core busy.
    cv2.setNumThreads(1)


def process_file(job: Job, params: FacesParams, cache: FacesCache) -> dict:
    """Find and align the faces in one photo, store crops, reject thumbnails and the record.

    A photo this code fails on is reported as `error:<exception>` and not cached, so a fixed
    version retries it; one bad file never stops the run.
    """
    rgb, detail = None, None
    try:
        rgb = load_image(job.path, params.max_pixels)
        faces, rejects = find_faces(rgb, params)
    except BadImage as exc:
        faces, rejects, detail = [], [Reject(f"bad_image:{exc.reason}")], str(exc)
    except Exception as exc:  # noqa: BLE001 - any one file's failure is reported, not fatal
        return {"sha256": job.sha256, "source": job.source, "detail": repr(exc), "faces": [],
                "rejects": [{"reason": f"error:{type(exc).__name__}", "box": None, "confidence": None, "thumb": None}]}
    record = {
        "sha256": job.sha256,
        "source": job.source,
        "detail": detail,
        "faces": [_store_face(face, index, job.sha256, cache) for index, face in enumerate(faces)],
        "rejects": [_store_reject(reject, index, rgb, job.sha256, cache) for index, reject in enumerate(rejects)],
    }
    atomic_write_json(cache.record_path(job.sha256), record)  # last: it marks the entry complete
    return record


def _store_face(face: FaceCrop, index: int, sha256: str, cache: FacesCache) -> dict:
    name = f"{sha256}_{index}.png"
    _write_image(cache.file(sha256, name), face.image)
    return {
        "file": name,
        "box": list(face.box),
        "confidence": face.confidence,
        "angle": round(face.geometry.angle, 2),
        "eyes": face.eyes is not None,
    }


def _store_reject(reject: Reject, index: int, rgb: np.ndarray | None, sha256: str, cache: FacesCache) -> dict:
    thumb = None
    if rgb is not None:
        thumb = f"{sha256}_reject{index}.jpg"
        _write_image(cache.file(sha256, thumb), reject_thumbnail(rgb, reject.box))
    return {"reason": reject.reason, "box": list(reject.box) if reject.box else None,
            "confidence": reject.confidence, "thumb": thumb}


def reject_thumbnail(rgb: np.ndarray, box: tuple[int, int, int, int] | None) -> np.ndarray:
    """The rejected box with some surroundings and the box drawn in, or the whole photo when
    there is no box; THUMB_SIDE on its longest side (small ones blown up blocky, so they show
    both what they are and that they are small)."""
    if box is not None:
        x, y, width, height = box
        reach = round(max(width, height) * (THUMB_CONTEXT - 1) / 2)
        top, left = max(y - reach, 0), max(x - reach, 0)
        rgb = rgb[top: y + height + reach, left: x + width + reach].copy()
        thickness = max(1, round(max(rgb.shape[:2]) / THUMB_SIDE))
        cv2.rectangle(rgb, (x - left, y - top), (x - left + width, y - top + height), BOX_COLOUR, thickness)
    height, width = rgb.shape[:2]
    scale = THUMB_SIDE / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_NEAREST)


def _write_image(path: Path, rgb: np.ndarray) -> None:
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)

    def write(tmp: Path) -> None:
        if not cv2.imwrite(str(tmp), bgr):
            raise OSError(f"OpenCV could not write {path}")

    atomic_write(path, write)
