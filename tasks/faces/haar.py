"""The Haar helpers that look closely at one face box: loading cascades, a second opinion, eyes."""

from __future__ import annotations

import functools
import math
import os

import cv2
import numpy as np

from styleforge.tasks.faces.align import BOX_EYE_DISTANCE

Box = tuple[int, int, int, int]  # x, y, width, height in source pixels
Eyes = tuple[tuple[float, float], tuple[float, float]]  # (left, right) centres, image-left first

# A face box zoomed to a fixed small size is cheap to search, so these searches use fine steps.
LOCAL_SCALE_STEP = 1.05
# The second opinion (confirm_face). On the benchmark's and the sample site's faces it keeps 242
# of 250; it passes 2 of the 37 detections on non-face photos and textures, and neither of the 2
# that had also passed the eye check (gravel, a coin's head). About 3 ms a detection.
CONFIRM_CASCADE = "haarcascade_frontalface_alt.xml"
CONFIRM_WIDTH = 72
CONFIRM_CONTEXT = 0.25  # of the box width, on each side
CONFIRM_SIZE = (0.6, 1.5)  # the face it finds, as a fraction of CONFIRM_WIDTH
CONFIRM_NEIGHBORS = 2
# Eye search, tuned on the sample site's LFW faces and the benchmark's photos: the face box is
# resampled to a fixed width so eyes come out 20-50 px whatever the photo's size (the eye
# cascade's window is 20 px); a second, larger width is tried only where the first finds no
# pair (it rescues about 1 face in 20 at no cost to the rest). Two neighbours suffice because a
# pair must still pass _pair_cost. Histogram equalisation lost a fifth of the pairs: none here.
EYE_SEARCH_WIDTHS = (100, 140)
# The plain eye cascade first; the eyeglasses one finds eyes behind frames the plain one misses.
EYE_CASCADES = ("haarcascade_eye.xml", "haarcascade_eye_tree_eyeglasses.xml")
EYE_NEIGHBORS = 2
EYE_SIZE = (0.15, 0.4)  # eye box side, as a fraction of the face box width
EYE_SEARCH_ROWS = (0.1, 0.6)  # eye centres sit in the upper half; their boxes reach a bit lower
MAX_EYE_TILT = 30  # degrees; the frontal cascade itself finds few faces tilted further


@functools.cache
def cascade(name: str) -> cv2.CascadeClassifier:
    classifier = cv2.CascadeClassifier(os.path.join(cv2.data.haarcascades, name))
    if classifier.empty():
        raise RuntimeError(f"OpenCV cascade {name} did not load from {cv2.data.haarcascades}")
    return classifier


def confirm_face(gray: np.ndarray, box: Box) -> bool:
    """A second opinion from a differently trained frontal cascade, on the box and its
    surroundings zoomed so the face is CONFIRM_WIDTH px: Haar false alarms on textures are
    persistent for one cascade (any scale, any step) but rarely shared by two."""
    x, y, width, height = box
    reach = round(CONFIRM_CONTEXT * width)
    left, top = max(x - reach, 0), max(y - reach, 0)
    region = gray[top: y + height + reach, left: x + width + reach]
    zoom = CONFIRM_WIDTH / width
    region = cv2.resize(region, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_AREA if zoom < 1 else cv2.INTER_LINEAR)
    sizes = [(round(f * CONFIRM_WIDTH),) * 2 for f in CONFIRM_SIZE]
    found = cascade(CONFIRM_CASCADE).detectMultiScale(
        region, LOCAL_SCALE_STEP, CONFIRM_NEIGHBORS, minSize=sizes[0], maxSize=sizes[1]
    )
    return len(found) > 0


def find_eyes(gray: np.ndarray, box: Box) -> Eyes | None:
    """The two eye centres (image-left first) in the upper part of the face box, or None when no
    plausible pair is found. The box may reach past the photo's edge."""
    x, y, width, height = box
    left, top = max(x, 0), max(y + round(EYE_SEARCH_ROWS[0] * height), 0)
    region = gray[top: max(y + round(EYE_SEARCH_ROWS[1] * height), top + 1), left: max(x + width, left + 1)]
    for search_width in EYE_SEARCH_WIDTHS:
        zoom = search_width / width
        zoomed = cv2.resize(region, None, fx=zoom, fy=zoom,
                            interpolation=cv2.INTER_AREA if zoom < 1 else cv2.INTER_LINEAR)
        min_size, max_size = ((max(20, round(f * search_width)),) * 2 for f in EYE_SIZE)
        for name in EYE_CASCADES:
            found = cascade(name).detectMultiScale(zoomed, LOCAL_SCALE_STEP, EYE_NEIGHBORS,
                                                   minSize=min_size, maxSize=max_size)
            # (centre x, centre y, size) as fractions of the face box width
            eyes = [
                ((left - x + (ex + ew / 2) / zoom) / width, (top - y + (ey + eh / 2) / zoom) / width, ew / zoom / width)
                for ex, ey, ew, eh in found
            ]
            pair = _best_eye_pair(eyes)
            if pair:
                return tuple((x + u * width, y + v * width) for u, v in pair)
    return None


def _best_eye_pair(eyes: list[tuple[float, float, float]]) -> Eyes | None:
    """The most face-like pair of eye detections, each (centre x, centre y, size) in face box
    widths from its top-left corner; None when no pair is plausible."""
    best, best_cost = None, math.inf
    for left in eyes:
        for right in eyes:
            cost = _pair_cost(left, right)
            if cost < best_cost:
                best, best_cost = ((left[0], left[1]), (right[0], right[1])), cost
    return best


def _pair_cost(left: tuple[float, float, float], right: tuple[float, float, float]) -> float:
    """inf unless the pair looks like eyes: one each side of the middle, in the upper half, a
    plausible distance apart, similar sizes, tilted no more than a frontal detector accepts.
    Otherwise how far it is from a typical pair (centred, BOX_EYE_DISTANCE apart)."""
    (lx, ly, lsize), (rx, ry, rsize) = left, right
    distance = math.hypot(rx - lx, ry - ly)
    plausible = (
        lx < 0.5 < rx
        and all(0.15 <= v <= 0.55 for v in (ly, ry))
        and 0.25 <= distance <= 0.65
        and abs(math.degrees(math.atan2(ry - ly, rx - lx))) <= MAX_EYE_TILT
        and max(lsize, rsize) <= 2 * min(lsize, rsize)
    )
    if not plausible:
        return math.inf
    return abs((lx + rx) / 2 - 0.5) + abs(distance - BOX_EYE_DISTANCE)
