"""Find faces worth training on: Haar frontal faces on a small copy, checked, eyes on the full photo.

find_faces is the one code path for every stage that needs face crops (faces, later portraits).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from styleforge.core.config import FacesParams
from styleforge.tasks.faces.align import (
    CropGeometry,
    align_face,
    box_geometry,
    eye_geometry,
)
from styleforge.tasks.faces.haar import Box, Eyes, cascade, confirm_face, find_eyes

FACE_CASCADE = "haarcascade_frontalface_default.xml"
HAAR_WINDOW = 24  # the frontal cascade's window: the smallest face it can see, in pixels
# The face search is most of the stage's cost, so it runs in two steps. A coarse pass over the
# whole copy proposes candidates; each is then searched again finely around it, which decides.
# The coarse pass runs octave by octave (each on a half-size copy of the one before, windows of
# 24 to 47 px): OpenCV slides its window 2 px at a time while it shrinks an image by less than
# 2x but 1 px beyond, so one pyramid over the whole copy spends as much on its big faces as on
# all the rest. Window sizes per octave, measured on the benchmark's photos, LFW faces as the
# sample site serves them and LFW faces pasted at 64-320 px into 1600x1200 photos: 3 (26% apart)
# propose 392 of the 394 faces a full search finds there, 4 393 at 28% more cost, 2 finds fewer.
# With 3, a fine search 2x either way and its region on an 8 px grid (REGION_GRID), bench/faces.py
# finds every face the full search did (116 of 120, as at 43643f2), in 52% of its time.
PROPOSAL_STEPS_PER_OCTAVE = 3
# Every window the cascade accepts counts (one with no neighbour is often a big face seen at a
# single scale). Windows within a window up to CANDIDATE_SIZE_RATIO times their size are one
# candidate, searched again once: several searches of one face would keep the best of their
# confidences, which lifts false alarms over min_confidence too.
PROPOSAL_NEIGHBORS = 0
CANDIDATE_SIZE_RATIO = 2.0
# Faces cut by the photo's edge (tight portrait crops) need the window to reach past it: each
# octave gets a border of one window, as far as a window whose middle is in the photo reaches;
# edge pixels repeated, as a mirror could make a face of a half face.
PROPOSAL_BORDER = HAAR_WINDOW
# The fine search is the full search's, so boxes and confidences (and what min_neighbors and
# min_confidence mean) are a full search's: the same copy, OpenCV's default step (at 1.2 the
# cascade finds far fewer faces near its window size), min_neighbors, its grouping; but only over
# the candidate's windows and CONFIRM_MARGIN of their size around them, for faces up to
# CONFIRM_SIZE_RANGE times smaller or larger.
FACE_SCALE_STEP = 1.1
CONFIRM_MARGIN = 0.6
CONFIRM_SIZE_RANGE = 2.0
REGION_GRID = 8


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
    side is at most detect_side (which bounds the cost: the smallest face found in a photo of long
    side L is about 28 * L / detect_side px). Confidence is the last stage's weight sum."""
    small, scale = search_copy(gray, params.detect_side)
    height, width = small.shape
    detections: list[tuple[Box, float]] = []
    for candidate in propose(small):  # the most windows first: where two find one face, it stands
        for (x, y, w, h), confidence in _search_near(small, candidate, params.min_neighbors):
            box = (round(x / scale), round(y / scale), round(w / scale), round(h / scale))
            # a face may be cut by the photo's edge, but its middle is in the photo
            inside = 0 <= x + w / 2 < width and 0 <= y + h / 2 < height
            if inside and not any(_nested(box, kept) or _nested(kept, box) for kept, _ in detections):
                detections.append((box, confidence))
    return detections


def search_copy(gray: np.ndarray, detect_side: int) -> tuple[np.ndarray, float]:
    """The copy the face search runs on (longest side at most detect_side) and its scale."""
    scale = min(1.0, detect_side / max(gray.shape))
    small = gray if scale == 1.0 else cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return small, scale


def propose(small: np.ndarray) -> list[list[Box]]:
    """Candidates, each the windows (boxes in small's pixels) on one spot, the most windows first.
    This pass over the whole copy is the search's least cost: bench/faces.py measures it alone."""
    classifier, window, border = cascade(FACE_CASCADE), HAAR_WINDOW, PROPOSAL_BORDER
    step = 2 ** (1 / PROPOSAL_STEPS_PER_OCTAVE)
    windows: list[Box] = []
    octave, factor = small, 1
    while min(octave.shape) >= window:
        padded = cv2.copyMakeBorder(octave, border, border, border, border, cv2.BORDER_REPLICATE)
        found = classifier.detectMultiScale(padded, step, PROPOSAL_NEIGHBORS, minSize=(window, window),
                                            maxSize=(2 * window - 1, 2 * window - 1))
        windows += [((x - border) * factor, (y - border) * factor, w * factor, h * factor) for x, y, w, h in found]
        octave = cv2.resize(octave, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
        factor *= 2
    candidates: list[list[Box]] = []
    for box in sorted(windows, key=lambda box: -box[2]):  # each candidate led by its largest window
        candidate = next((c for c in candidates if _nested(box, c[0]) and c[0][2] <= CANDIDATE_SIZE_RATIO * box[2]),
                         None)
        if candidate is None:
            candidates.append([box])
        else:
            candidate.append(box)
    return sorted(candidates, key=len, reverse=True)


def _search_near(small: np.ndarray, candidate: list[Box], min_neighbors: int) -> list[tuple[Box, float]]:
    """The faces the full search's settings find on a candidate's windows, as (box in small's
    pixels, confidence)."""
    sizes = [w for _, _, w, _ in candidate]
    margin = round(CONFIRM_MARGIN * max(sizes))
    left, top = min(x for x, _, _, _ in candidate), min(y for _, y, _, _ in candidate)
    right, bottom = max(x + w for x, _, w, _ in candidate), max(y + h for _, y, _, h in candidate)
    # the region's corners on a coarse grid, so that where a candidate's windows happen to lie
    # moves the search's own window grid (and with it the confidence) as little as it can
    x0, y0 = _snap_down(left - margin), _snap_down(top - margin)
    x1, y1 = -_snap_down(-(right + margin)), -_snap_down(-(bottom + margin))
    region = _padded_window(small, x0, y0, x1 - x0, y1 - y0)
    smallest = max(HAAR_WINDOW, round(min(sizes) / CONFIRM_SIZE_RANGE))
    largest = round(max(sizes) * CONFIRM_SIZE_RANGE)
    boxes, _, weights = cascade(FACE_CASCADE).detectMultiScale3(
        region, FACE_SCALE_STEP, min_neighbors, minSize=(smallest, smallest), maxSize=(largest, largest),
        outputRejectLevels=True
    )
    found = [((x0 + int(x), y0 + int(y), int(w), int(h)), float(weight))
             for (x, y, w, h), weight in zip(boxes, weights, strict=True)]
    # only faces on the windows: the margin is there for the search, not for what it finds there
    return [(box, weight) for box, weight in found
            if left <= box[0] + box[2] / 2 <= right and top <= box[1] + box[3] / 2 <= bottom]


def _snap_down(value: int) -> int:
    return value // REGION_GRID * REGION_GRID


def _padded_window(gray: np.ndarray, left: int, top: int, width: int, height: int) -> np.ndarray:
    """gray[top:top + height, left:left + width], edge pixels repeated where it reaches outside."""
    rows, cols = gray.shape
    inside = gray[max(top, 0): max(min(top + height, rows), 0), max(left, 0): max(min(left + width, cols), 0)]
    return cv2.copyMakeBorder(inside, max(-top, 0), max(top + height - rows, 0), max(-left, 0),
                              max(left + width - cols, 0), cv2.BORDER_REPLICATE)


def _nested(inner: Box, outer: Box) -> bool:
    """inner lies within outer, give or take a fifth of outer's size: as in OpenCV's grouping,
    a face found again inside a face (its eyes and nose alone, say) is no second face."""
    reach_x, reach_y = 0.2 * outer[2], 0.2 * outer[3]
    return (inner[0] >= outer[0] - reach_x and inner[1] >= outer[1] - reach_y
            and inner[0] + inner[2] <= outer[0] + outer[2] + reach_x
            and inner[1] + inner[3] <= outer[1] + outer[3] + reach_y)


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
