"""FFHQ-like framing: where the crop goes (CropGeometry) and cutting it out (align_face).

FFHQ's recipe (NVlabs ffhq-dataset): side = 2 * max(2 * eye distance, 1.8 * eye-to-mouth), centre
0.1 * eye-to-mouth below the eye midpoint, rotated so the eyes are level, outside of the photo
reflected. Haar finds no mouth corners, and in frontal faces eye-to-mouth is about the eye
distance, so here the face size is 2 * eye distance and the crop side is
face size * (1 + 2 * margin): margin 0.5 is FFHQ's framing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

FACE_PER_EYE_DISTANCE = 2.0
CENTRE_BELOW_EYES = 0.1  # in eye distances, along the face's downward axis
# Where a Haar frontal box has the eyes (medians over ~240 faces whose eyes were found: the
# sample site's LFW faces and the benchmark's portraits): the eye line at this fraction of the
# box height, the eyes this far apart as a fraction of its width. Faces framed from their box
# alone then sit in the crop where faces framed by their eyes do.
BOX_EYE_LINE = 0.38
BOX_EYE_DISTANCE = 0.40
LANCZOS_RADIUS = 4  # source pixels the interpolation kernel reads beyond the crop
# FFHQ's padding finish, as fractions of the crop side: the blur's sigma, and the distance
# outside the photo over which the padding fades to the crop's median colour.
PAD_BLUR = 0.02
PAD_FADE = 0.3


@dataclass(frozen=True)
class CropGeometry:
    """A square in the source photo: centre (x, y) and side in source pixels, and the angle in
    degrees by which the photo turns counter-clockwise to level the face."""

    centre: tuple[float, float]
    side: float
    angle: float = 0.0


def eye_geometry(left_eye: tuple[float, float], right_eye: tuple[float, float], margin: float) -> CropGeometry:
    """Framing from the eye centres (left_eye: the one on the image's left)."""
    dx, dy = right_eye[0] - left_eye[0], right_eye[1] - left_eye[1]
    distance = math.hypot(dx, dy)
    down = (-dy / distance, dx / distance)  # image y points down: this is the face's "down"
    below = CENTRE_BELOW_EYES * distance
    centre = ((left_eye[0] + right_eye[0]) / 2 + below * down[0], (left_eye[1] + right_eye[1]) / 2 + below * down[1])
    side = FACE_PER_EYE_DISTANCE * distance * (1 + 2 * margin)
    return CropGeometry(centre, side, math.degrees(math.atan2(dy, dx)))


def box_geometry(box: tuple[float, float, float, float], margin: float) -> CropGeometry:
    """Framing from a face box alone, placed where eye_geometry would put it for a typical face."""
    x, y, width, height = box
    distance = BOX_EYE_DISTANCE * width
    centre = (x + width / 2, y + BOX_EYE_LINE * height + CENTRE_BELOW_EYES * distance)
    return CropGeometry(centre, FACE_PER_EYE_DISTANCE * distance * (1 + 2 * margin), 0.0)


def align_face(rgb: np.ndarray, geometry: CropGeometry, resolution: int) -> np.ndarray:
    """Cut the geometry's square out of rgb as a resolution x resolution RGB image.

    One uniform scale (never stretched). Parts outside the photo are mirrored from inside it,
    then, as FFHQ does, blurred and faded towards the crop's median colour the further out they
    are: a mirrored face or edge is otherwise learned as content.
    """
    return _soften_padding(_resample(rgb, geometry, resolution), geometry, rgb.shape[:2])


def _resample(rgb: np.ndarray, geometry: CropGeometry, resolution: int) -> np.ndarray:
    """The square, mirrored where outside the photo. Enlarging turns and scales in one Lanczos
    warp. Shrinking turns at the photo's own scale (the interpolation's softening then falls on
    detail that is averaged away next) and area-averages down; a face over twice the output's
    size is first block-averaged by a whole factor, which bounds that work."""
    patch, origin = _reflected_window(rgb, geometry)
    centre = (geometry.centre[0] - origin[0], geometry.centre[1] - origin[1])
    side = geometry.side
    factor = int(side // (2 * resolution))
    if factor >= 2:
        patch = cv2.resize(patch, None, fx=1 / factor, fy=1 / factor, interpolation=cv2.INTER_AREA)
        # OpenCV puts pixel centres on integers: x lands at (x + 0.5) * s - 0.5.
        centre = tuple((c + 0.5) / factor - 0.5 for c in centre)
        side /= factor
    if side <= resolution:
        return _turn(patch, centre, geometry.angle, resolution / side, resolution, cv2.INTER_LANCZOS4)
    size = round(side)
    turned = _turn(patch, centre, geometry.angle, size / side, size, cv2.INTER_CUBIC)
    return cv2.resize(turned, (resolution, resolution), interpolation=cv2.INTER_AREA)


def _turn(patch: np.ndarray, centre: tuple[float, float], angle: float, scale: float, size: int,
          interpolation: int) -> np.ndarray:
    """Turn patch by angle about centre, scale it, and cut out the size x size square around it."""
    matrix = cv2.getRotationMatrix2D(centre, angle, scale)
    middle = (size - 1) / 2  # the output's centre, in the same pixel-centre convention
    matrix[:, 2] += (middle - centre[0], middle - centre[1])
    return cv2.warpAffine(patch, matrix, (size, size), flags=interpolation, borderMode=cv2.BORDER_REFLECT_101)


def _soften_padding(crop: np.ndarray, geometry: CropGeometry, photo_shape: tuple[int, int]) -> np.ndarray:
    """FFHQ's finish for the mirrored parts: full blur outside the photo (easing in over the last
    PAD_FADE / 3 of the side inside it), then a fade to the median colour over PAD_FADE."""
    outside = _distance_outside(geometry, crop.shape[0], photo_shape) / (PAD_FADE * geometry.side)
    if outside.max() <= 0:
        return crop
    image = crop.astype(np.float32)
    blurred = cv2.GaussianBlur(image, (0, 0), PAD_BLUR * crop.shape[0])
    image += (blurred - image) * np.clip(3 * outside + 1, 0, 1)[..., None]
    median = np.median(image.reshape(-1, 3), axis=0)
    image += (median - image) * np.clip(outside, 0, 1)[..., None]
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _distance_outside(geometry: CropGeometry, size: int, photo_shape: tuple[int, int]) -> np.ndarray:
    """For each output pixel, how far outside the photo its source point lies, in source pixels
    (negative inside: minus the distance to the nearest edge)."""
    offsets = (np.arange(size, dtype=np.float32) - (size - 1) / 2) * (geometry.side / size)
    across, down = np.meshgrid(offsets, offsets)
    turn = math.radians(geometry.angle)  # the photo was turned counter-clockwise by this
    x = geometry.centre[0] + math.cos(turn) * across - math.sin(turn) * down
    y = geometry.centre[1] + math.sin(turn) * across + math.cos(turn) * down
    height, width = photo_shape
    return np.maximum.reduce([-x, x - (width - 1), -y, y - (height - 1)])


def _reflected_window(rgb: np.ndarray, geometry: CropGeometry) -> tuple[np.ndarray, tuple[int, int]]:
    """The axis-aligned window that holds the rotated square (plus the kernel's reach), with
    out-of-photo pixels mirrored at the photo's own edges; returns it and its top-left corner."""
    turn = math.radians(geometry.angle)
    half = geometry.side * (abs(math.cos(turn)) + abs(math.sin(turn))) / 2 + LANCZOS_RADIUS
    (cx, cy), (height, width) = geometry.centre, rgb.shape[:2]
    x0, y0 = math.floor(cx - half), math.floor(cy - half)
    x1, y1 = math.ceil(cx + half) + 1, math.ceil(cy + half) + 1
    if x0 >= 0 and y0 >= 0 and x1 <= width and y1 <= height:  # the usual case: a view, nothing copied
        return rgb[y0:y1, x0:x1], (x0, y0)
    xs = _reflect_101(np.arange(x0, x1), width)
    ys = _reflect_101(np.arange(y0, y1), height)
    return rgb[np.ix_(ys, xs)], (x0, y0)


def _reflect_101(index: np.ndarray, length: int) -> np.ndarray:
    """Map any indices into [0, length) by mirroring without repeating the edge (OpenCV's
    BORDER_REFLECT_101, numpy's 'reflect'), however far outside they are."""
    period = max(2 * (length - 1), 1)
    folded = np.mod(index, period)
    return np.where(folded >= length, period - folded, folded)
