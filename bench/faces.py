"""Benchmark the faces stage against decoding alone, and its incremental rerun against a full run.

    python bench/faces.py [--images 300] [--detect-side N] [--out bench/results/faces.json] [--workdir DIR]

Synthesises ~2-megapixel JPEGs (1600x1200) from photos that ship in installed packages: the
astronaut or Grace Hopper portrait, scaled 0.8-2.2x, on a background cut from another
scikit-image photo or texture (sometimes blurred like a shallow depth of field). Then, on the same
worker count:
  baseline     decode each JPEG in full and resize it to the output resolution (what any dataset
               preparation pays), in a process pool
  faces        tasks.faces.run on a cold cache
  incremental  5% more photos added, tasks.faces.run again (cache warm)
Targets: faces within 2.5x the baseline's time; the incremental run under 15% of the full one.
--detect-side trades the smallest face found for speed (the Haar search dominates the cost).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import platform
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import skimage.data
from matplotlib import cbook
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from styleforge.tasks import faces  # noqa: E402
from styleforge.tasks.faces.worker import init_worker  # noqa: E402

from styleforge.core.config import FacesParams  # noqa: E402
from styleforge.core.images import load_image  # noqa: E402

TARGETS = {"faces_vs_baseline": 2.5, "incremental_fraction": 0.15}
SIZE = (1600, 1200)
BACKGROUNDS = ("coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "brick", "grass",
               "gravel", "moon", "horse", "page")
NEW_FRACTION = 0.05


def portraits() -> list[np.ndarray]:
    with cbook.get_sample_data("grace_hopper.jpg") as file:
        hopper = np.asarray(Image.open(file).convert("RGB"))
    return [skimage.data.astronaut(), hopper]


def backgrounds() -> list[np.ndarray]:
    found = []
    for name in BACKGROUNDS:
        image = getattr(skimage.data, name)()
        image = skimage.util.img_as_ubyte(image)
        found.append(np.dstack([image] * 3) if image.ndim == 2 else image[..., :3])
    return found


def synthesise(index: int, portrait_pool: list[np.ndarray], background_pool: list[np.ndarray]) -> np.ndarray:
    """One 1600x1200 photo, determined by index: a portrait somewhere on a background."""
    rng = np.random.default_rng(index)
    background = background_pool[index % len(background_pool)]
    canvas = cv2.resize(background, SIZE, interpolation=cv2.INTER_CUBIC)
    if rng.random() < 0.5:
        canvas = cv2.GaussianBlur(canvas, (0, 0), sigmaX=float(rng.uniform(2, 8)))
    portrait = portrait_pool[index % len(portrait_pool)]
    scale = rng.uniform(0.8, 2.2)
    portrait = cv2.resize(portrait, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    height, width = min(portrait.shape[0], SIZE[1]), min(portrait.shape[1], SIZE[0])  # hopper x2.2 is too tall
    top, left = rng.integers(0, SIZE[1] - height + 1), rng.integers(0, SIZE[0] - width + 1)
    canvas[top: top + height, left: left + width] = portrait[:height, :width]
    return canvas


def write_photos(raw: Path, indices: range) -> list[dict]:
    portrait_pool, background_pool = portraits(), backgrounds()
    rows = []
    for index in indices:
        path = raw / f"photo-{index:05d}.jpg"
        if not path.exists():
            Image.fromarray(synthesise(index, portrait_pool, background_pool)).save(path, quality=90)
        data = path.read_bytes()
        rows.append({"url": f"https://bench.invalid/{path.name}", "page": "https://bench.invalid/",
                     "sha256": hashlib.sha256(data).hexdigest(), "phash": "", "bytes": len(data),
                     "width": SIZE[0], "height": SIZE[1], "status": "ok", "error": None, "path": path.name,
                     "content_type": "image/jpeg", "source": "bench"})
    return rows


def write_manifest(raw: Path, rows: list[dict]) -> None:
    pd.DataFrame(rows).to_parquet(raw / "manifest.parquet")


def decode_and_resize(path: Path, params: FacesParams) -> tuple[int, int]:
    rgb = load_image(path, params.max_pixels)
    scale = params.resolution / max(rgb.shape[:2])
    return cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA).shape[:2]


def baseline(paths: list[Path], params: FacesParams, workers: int) -> float:
    start = time.perf_counter()
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=init_worker) as pool:
        list(pool.map(partial(decode_and_resize, params=params), paths, chunksize=4))
    return time.perf_counter() - start


def timed_run(params: FacesParams, root: Path) -> tuple[float, dict]:
    start = time.perf_counter()
    report = faces.run(params, root)
    return time.perf_counter() - start, report


def bench(images: int, workdir: Path, params: FacesParams) -> dict:
    raw = workdir / "data" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    extra = max(1, round(images * NEW_FRACTION))
    rows = write_photos(raw, range(images + extra))
    shutil.rmtree(workdir / "data" / "cache", ignore_errors=True)  # the full run starts cold
    workers = params.workers or os.cpu_count() or 1

    write_manifest(raw, rows[:images])
    baseline_s = baseline([raw / r["path"] for r in rows[:images]], params, workers)
    full_s, full = timed_run(params, workdir)
    noop_s, _ = timed_run(params, workdir)
    write_manifest(raw, rows)
    incremental_s, incremental = timed_run(params, workdir)
    return {
        "images": images,
        "image_size": list(SIZE),
        "workers": workers,
        "detect_side": params.detect_side,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "baseline_decode_resize_s": round(baseline_s, 3),
        "baseline_images_per_s": round(images / baseline_s, 1),
        "faces_s": round(full_s, 3),
        "faces_images_per_s": round(images / full_s, 1),
        "faces_vs_baseline": round(full_s / baseline_s, 2),
        "faces_written": full["faces_written"],
        "images_with_faces": full["images_with_faces"],
        "rejects": full["rejects"],
        "rerun_unchanged_s": round(noop_s, 3),
        "incremental_new_images": extra,
        "incremental_processed": incremental["processed"],
        "incremental_s": round(incremental_s, 3),
        "incremental_fraction": round(incremental_s / full_s, 3),
        "targets": TARGETS,
        "meets_targets": {
            "faces_vs_baseline": full_s / baseline_s <= TARGETS["faces_vs_baseline"],
            "incremental_fraction": incremental_s / full_s <= TARGETS["incremental_fraction"],
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "faces.json")
    parser.add_argument("--detect-side", type=int, default=FacesParams().detect_side)
    parser.add_argument("--workdir", type=Path, help="keep the synthesised photos here (default: a temp dir)")
    args = parser.parse_args()
    params = FacesParams(detect_side=args.detect_side)
    if args.workdir:
        result = bench(args.images, args.workdir, params)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-faces-") as tmp:
            result = bench(args.images, Path(tmp), params)
    text = json.dumps(result, indent=2)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
