"""augment: data/faces/*.png -> data/train/ (PNGs + dataset.json), seeded Albumentations.

Augmentations baked into a training set are learned by the generator (StyleGAN2-ADA paper), so
the default `safe` preset only mirrors; `full` adds the OneOf groups for users who opt in.
Each output depends only on (seed, input file, copy index), so adding faces changes no others.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

from styleforge.core.config import AugmentParams
from styleforge.core.env import quiet
from styleforge.core.grid import save_sheet
from styleforge.core.images import MAX_PIXELS, BadImage, load_image, open_image
from styleforge.core.io import atomic_write_bytes, atomic_write_json
from styleforge.core.reports import timed, write_report
from styleforge.tasks.paths import AUGMENT_SHEET, FACES_DIR, TRAIN_DIR

quiet()  # Albumentations checks for updates at import unless told not to
import albumentations as A  # noqa: E402
from tqdm import tqdm  # noqa: E402

GROUPS = ("geometric", "colour", "blur", "cutout")


def one_of_groups(p: float) -> list[A.BasicTransform]:
    """The opt-in OneOf groups; each fires with probability p and then picks one member."""
    reflect = cv2.BORDER_REFLECT_101
    return [
        A.OneOf(  # geometric
            [
                A.Affine(scale=(0.9, 1.1), translate_percent=(-0.05, 0.05), rotate=(-10, 10), border_mode=reflect, p=1),
                A.Perspective(scale=(0.02, 0.05), border_mode=reflect, p=1),
            ],
            p=p,
        ),
        A.OneOf(  # colour
            [
                A.RGBShift(r_shift_limit=15, g_shift_limit=15, b_shift_limit=15, p=1),
                A.RandomBrightnessContrast(brightness_limit=0.15, contrast_limit=0.15, p=1),
                A.CLAHE(clip_limit=2.0, p=1),
            ],
            p=p,
        ),
        A.OneOf(  # blur
            [A.GaussianBlur(blur_limit=(3, 5), p=1), A.MotionBlur(blur_limit=(3, 5), p=1), A.MedianBlur(blur_limit=3, p=1)],
            p=p,
        ),
        A.CoarseDropout(  # cutout
            num_holes_range=(1, 3), hole_height_range=(0.05, 0.15), hole_width_range=(0.05, 0.15), fill=0, p=p
        ),
    ]


def build_pipeline(params: AugmentParams, resolution: int) -> A.Compose:
    """Fit to a square of `resolution` without stretching, then mirror and (full) the OneOf groups."""
    fit = [
        A.LongestMaxSize(max_size=resolution, interpolation=cv2.INTER_AREA, p=1),
        A.PadIfNeeded(min_height=resolution, min_width=resolution, border_mode=cv2.BORDER_REFLECT_101, p=1),
    ]
    if params.preset == "safe":
        variation = [A.HorizontalFlip(p=1.0)]  # the copy is the mirror image, like StyleGAN's --mirror
    else:
        variation = [A.HorizontalFlip(p=0.5), *one_of_groups(params.group_p)]
    return A.Compose(fit + variation, strict=True, seed=params.seed, save_applied_params=True)


def copy_seed(seed: int, name: str, copy: int) -> int:
    digest = hashlib.sha256(f"{seed}:{name}:{copy}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def _jsonable(value):
    if isinstance(value, np.ndarray):
        return value.round(6).tolist()
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


def write_png(path: Path, rgb: np.ndarray) -> None:
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError(f"could not encode {path.name}")
    atomic_write_bytes(path, encoded.tobytes())


def dataset_resolution(paths: list[Path]) -> int:
    """The faces stage writes one square size; take the most common longest side to be safe."""
    sides = Counter()
    for path in paths[:50]:
        try:
            with open_image(path, MAX_PIXELS) as image:  # the header alone
                sides[max(image.size)] += 1
        except BadImage:
            continue
    return sides.most_common(1)[0][0] if sides else 0


def run(params: AugmentParams, root: Path = Path(".")) -> dict:
    faces_dir, train_dir = root / FACES_DIR, root / TRAIN_DIR
    report: dict = {"inputs": 0, "outputs": 0, "rejects": {}, "transforms": {}, "preset": params.preset}
    with timed(report):
        inputs = sorted(faces_dir.glob("*.png"))
        report["inputs"] = len(inputs)
        train_dir.mkdir(parents=True, exist_ok=True)
        for stale in train_dir.glob("*.png"):  # a by-hand rerun with fewer copies must not keep old ones
            stale.unlink()
        resolution = dataset_resolution(inputs)
        records = augment_all(inputs, params, resolution, train_dir, report) if resolution else []
        if not records:
            report["warning"] = f"no readable faces in {FACES_DIR}: the training set is empty"
        atomic_write_json(train_dir / "dataset.json", {"resolution": resolution, "preset": params.preset,
                                                      "seed": params.seed, "images": records})
        report["outputs"] = len(records)
        report["resolution"] = resolution
        preview = [load_image(train_dir / r["file"]) for r in records[:32]]
        save_sheet(root / AUGMENT_SHEET, preview, [r["file"][:12] for r in records[:32]], tile=96)
    write_report("augment", report, root)
    return report


def augment_all(inputs: list[Path], params: AugmentParams, resolution: int, out_dir: Path, report: dict) -> list[dict]:
    pipeline = build_pipeline(params, resolution)
    fit_only = A.Compose(list(pipeline.transforms)[:2], strict=True)
    records = []
    for path in tqdm(inputs, desc="augment", unit="img"):
        try:
            image = load_image(path)
        except ValueError as exc:
            report["rejects"]["unreadable"] = report["rejects"].get("unreadable", 0) + 1
            report.setdefault("errors", []).append(str(exc))
            continue
        if params.keep_original:
            name = f"{path.stem}_orig.png"
            write_png(out_dir / name, fit_only(image=image)["image"])
            records.append({"file": name, "source": path.name, "copy": -1, "transforms": []})
        for copy in range(params.copies):
            pipeline.set_random_seed(copy_seed(params.seed, path.name, copy))
            result = pipeline(image=image)
            applied = [[name, _jsonable(args)] for name, args in result["applied_transforms"]]
            for name, _ in applied:
                report["transforms"][name] = report["transforms"].get(name, 0) + 1
            out_name = f"{path.stem}_aug{copy}.png"
            write_png(out_dir / out_name, result["image"])
            records.append({"file": out_name, "source": path.name, "copy": copy, "transforms": applied})
    return records
