"""Find faces worth training on: Haar frontal faces on a small copy, checked, eyes on the full photo.

find_faces is the one code path for every stage that needs face crops (faces, later portraits).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from styleforge.tasks.faces.align import (
    CropGeometry,
    align_face,
    box_geometry,
    eye_geometry,
)
from styleforge.tasks.faces.haar import Box, Eyes, cascade, confirm_face, find_eyes

from styleforge.core.config import FacesParams

FACE_CASCADE = "haarcascade_frontalface_default.xml"
# Faces cut by the photo's edge (tight portrait crops) need a Haar window reaching past it: the
# detection copy gets this much border (edge pixels repeated: a mirror could make a face of a
# half face). It took the upscaled LFW faces found from 80 to 95 of 100.
DETECT_BORDER = 0.1
HAAR_WINDOW = 24  # the frontal cascade's window: the smallest face it can see, in pixels
# OpenCV's default pyramid step. Measured on ~50 faces shrunk to a given size: at 1.1 the
# cascade finds 97% of faces 28 px wide and all from 48 px; at 1.2 (40% cheaper per pixel) only
# 78% at 32 px, which needs a larger copy to find the same faces and so costs more.
FACE_SCALE_STEP = 1.1


@dataclass
class FaceCrop:
    image: np.ndarray  # RGB uint8, resolution x resolution
    box: Box
    confidence: float
    geometry: CropGeometry
    eyes: Eyes | None


@dataclass(frozen=True)
class Reject:
    reason: str  # no_face | too_small | low_confidence | unconfirmed | no_eyes | not_largest
    box: Box | None = None
    confidence: float | None = None


@dataclass
class _Candidate:
    box: Box
    confidence: float
    geometry: CropGeometry
    eyes: Eyes | None


def find_faces(rgb: np.ndarray, params: FacesParams) -> tuple[list[FaceCrop], list[Reject]]:
    """Every face in the photo that passes the checks, aligned; and every other detection with why."""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    detections = detect_faces(gray, params)
    if not detections:
        return [], [Reject("no_face")]
    kept, rejects = [], []
    for box, confidence in detections:
        reason, eyes = _check(gray, box, confidence, params)
        if reason:
            rejects.append(Reject(reason, box, round(confidence, 3)))
        else:
            geometry = eye_geometry(*eyes, params.margin) if eyes else box_geometry(box, params.margin)
            kept.append(_Candidate(box, confidence, geometry, eyes))
    if params.multi_face == "largest" and len(kept) > 1:
        kept.sort(key=lambda c: c.box[2] * c.box[3], reverse=True)
        rejects += [Reject("not_largest", c.box, round(c.confidence, 3)) for c in kept[1:]]
        kept = kept[:1]
    faces = [FaceCrop(align_face(rgb, c.geometry, params.resolution), c.box, round(c.confidence, 3), c.geometry, c.eyes)
             for c in kept]
    return faces, rejects


def detect_faces(gray: np.ndarray, params: FacesParams) -> list[tuple[Box, float]]:
    """Haar frontal faces as (box in source pixels, confidence), found on a copy whose longest
    side is at most detect_side (which bounds the cost: the smallest face found in a photo of
    long side L is about 28 * L / detect_side px). Confidence is the last stage's weight sum."""
    scale = min(1.0, params.detect_side / max(gray.shape))
    if min(gray.shape) * scale < HAAR_WINDOW:  # a banner or a sliver: no face fits
        return []
    small = gray if scale == 1.0 else cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    border = round(DETECT_BORDER * max(small.shape))
    small = cv2.copyMakeBorder(small, border, border, border, border, cv2.BORDER_REPLICATE)
    boxes, _, weights = cascade(FACE_CASCADE).detectMultiScale3(
        small, FACE_SCALE_STEP, params.min_neighbors, outputRejectLevels=True
    )
    height, width = small.shape
    return [
        ((round((x - border) / scale), round((y - border) / scale), round(w / scale), round(h / scale)), float(weight))
        for (x, y, w, h), weight in zip(boxes, weights, strict=True)
        # a face may be cut by the photo's edge, but its middle is in the photo, not the border
        if border <= x + w / 2 < width - border and border <= y + h / 2 < height - border
    ]


def _check(gray: np.ndarray, box: Box, confidence: float, params: FacesParams) -> tuple[str | None, Eyes | None]:
    """Why this detection is no training face (None when it is one), and its eyes where found.
    Cheapest checks first."""
    if min(box[2], box[3]) < params.min_face:
        return "too_small", None
    if confidence < params.min_confidence:
        return "low_confidence", None
    if params.second_opinion and not confirm_face(gray, box):
        return "unconfirmed", None
    eyes = find_eyes(gray, box)
    if eyes is None and params.require_eyes:
        return "no_eyes", None
    return None, eyes
