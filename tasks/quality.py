"""What the pictures show, measured: are the samples faces, and how close is a set of images to
the target look. The base, finetune and portraits stages report these; bench/quality.py prints
them beside their targets.

- Faces: the faces stage's own detector (find_faces with the faces section's settings) on each
  image enlarged to faces.resolution, so a 32 px sample is searched as a 256 px photo would be.
- The look: a signature of a set of images, the mean of each image's colour palette histogram
  (RGB, LOOK_LEVELS levels a channel) and edge histogram (gradient magnitude of the grey image,
  EDGE_BINS bins): what a flat-shaded, outlined style changes first. Two sets are compared by
  the L1 distance of their signatures (0: the same; 4: nothing in common), at one resolution.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from PIL import Image

from styleforge.core.config import FacesParams
from styleforge.core.errors import UserError
from styleforge.tasks.faces import find_faces

LOOK_LEVELS = 4  # per channel: 64 colour bins
EDGE_BINS = 8
EDGE_MAX = 255.0  # gradient magnitudes at or above this fall in the last bin


def enlarged(image: np.ndarray, side: int) -> np.ndarray:
    return np.asarray(Image.fromarray(image).resize((side, side), Image.Resampling.LANCZOS))


def has_face(image: np.ndarray, faces: FacesParams) -> bool:
    """Whether the faces stage would take a face from this image (enlarged to faces.resolution)."""
    return bool(find_faces(enlarged(image, faces.resolution), faces)[0])


def face_rate(images: Sequence[np.ndarray], faces: FacesParams) -> float:
    """The fraction of images in which the faces stage finds a face."""
    return float(np.mean([has_face(image, faces) for image in images])) if len(images) else 0.0


def look_signature(images: Sequence[np.ndarray], side: int) -> np.ndarray:
    """The mean colour and edge histograms of RGB uint8 images, each first resized to side x side."""
    rows = []
    for image in images:
        small = image if image.shape[:2] == (side, side) else enlarged(image, side)
        codes = (small.astype(np.int32) * LOOK_LEVELS // 256).reshape(-1, 3)
        colour = np.bincount(codes[:, 0] * LOOK_LEVELS**2 + codes[:, 1] * LOOK_LEVELS + codes[:, 2],
                             minlength=LOOK_LEVELS**3) / len(codes)
        grey = cv2.cvtColor(small, cv2.COLOR_RGB2GRAY).astype(np.float32)
        magnitude = np.hypot(cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1))
        edges = np.histogram(np.minimum(magnitude, EDGE_MAX - 1e-3), bins=EDGE_BINS, range=(0, EDGE_MAX))[0]
        rows.append(np.concatenate([colour, edges / edges.sum()]))
    return np.mean(rows, axis=0)


def look_distance(a: np.ndarray, b: np.ndarray) -> float:
    """L1 distance of two look signatures."""
    return float(np.abs(a - b).sum())


# --- what the stages report ----------------------------------------------------------------------
SAMPLE_SEEDS = range(64)  # seeds 0..63 (model.generate.seed_z), constant noise
SAMPLE_TRUNCATION = 0.7


def sample_faces(generator, faces: FacesParams) -> dict:
    """How many of the generator's samples the faces stage takes as faces (base stage)."""
    from styleforge.model.generate import render_seeds

    images = render_seeds(generator.eval(), SAMPLE_SEEDS, SAMPLE_TRUNCATION)
    return {"face_rate": round(face_rate(images, faces), 4), "samples": len(images), "truncation": SAMPLE_TRUNCATION}


def target_signature(folder, side: int) -> np.ndarray:
    """The look signature of the target set: the training images (dataset.json's, else all)."""
    from styleforge.core.images import load_image
    from styleforge.model.data import list_images

    try:
        paths, _ = list_images(folder)
    except FileNotFoundError as exc:
        raise UserError(f"the target look: {exc}") from None
    if not paths:
        raise UserError(f"the target look: no images in {folder}")
    return look_signature([load_image(path) for path in paths], side)


def moved_toward_look(base, finetuned, target: np.ndarray, faces: FacesParams) -> dict:
    """How much closer the fine-tuned samples are to the target look than the base's (finetune
    stage): `closer` 0.5 means half the distance is gone."""
    from styleforge.model.generate import render_seeds

    size = base.config.size
    before = look_distance(look_signature(render_seeds(base.eval(), SAMPLE_SEEDS, SAMPLE_TRUNCATION), size), target)
    tuned = render_seeds(finetuned.eval(), SAMPLE_SEEDS, SAMPLE_TRUNCATION)
    after = look_distance(look_signature(tuned, size), target)
    return {"base_to_target": round(before, 4), "finetuned_to_target": round(after, 4),
            "closer": round(1 - after / before, 4) if before else None,
            "finetuned_face_rate": round(face_rate(tuned, faces), 4), "samples": len(tuned),
            "truncation": SAMPLE_TRUNCATION}


# --- the figures beside their targets (the demo and bench/quality.py print this) --------------
def figures(root) -> list[dict]:
    """The three demo figures from the stages' reports, each with its target and whether it is met;
    a figure whose stage has not run says so."""
    from styleforge.core.reports import read_report, report_path

    def read(stage: str) -> dict:
        return read_report(stage, root) if report_path(stage, root).exists() else {}

    base = read("base").get("quality", {})
    look = read("finetune").get("look", {})
    portraits = read("portraits").get("quality", {})
    rows = [
        ("base samples are faces", base.get("face_rate"), ">= 0.5", lambda v: v >= 0.5,
         f"of {base.get('samples')} samples at psi {base.get('truncation')}, the faces stage's detector"),
        ("fine-tune moved toward the look", look.get("closer"), ">= 0.5", lambda v: v >= 0.5,
         f"look distance to the target: base {look.get('base_to_target')} -> fine-tuned "
         f"{look.get('finetuned_to_target')}"),
        ("portraits are faces", portraits.get("faces"), f"== {portraits.get('of')}",
         lambda v: v == portraits.get("of"), "the detector finds a face in each portrait"),
        ("portraits closer to the look than reconstructions", portraits.get("closer_to_look"),
         f"== {portraits.get('of')}", lambda v: v == portraits.get("of"), "per photo, look distance to the target"),
    ]
    return [{"figure": name, "value": value, "target": target, "met": None if value is None else bool(check(value)),
             "how": how} for name, value, target, check, how in rows]
