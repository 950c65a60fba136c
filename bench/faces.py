"""Benchmark the faces stage against decoding alone, and its incremental rerun against a full run.

    python bench/faces.py [--images 300] [--detect-side N] [--against REV] [--out bench/results/faces.json]
                          [--workdir DIR]

Synthesises ~2-megapixel JPEGs (1600x1200) from photos that ship in installed packages: the
astronaut or Grace Hopper portrait, scaled 0.8-2.2x, on a background cut from another
scikit-image photo or texture (sometimes blurred like a shallow depth of field). Each photo holds
exactly one face, at a known place. Then, on the same worker count:
  baseline     decode each JPEG in full and resize it to the output resolution (what any dataset
               preparation pays), in a process pool; measured again right before each faces run
  faces        tasks.faces.run on a cold cache
  recall       the share of photos whose face was written (a crop whose box is centred on it);
               false_faces counts the crops that are not on it
  scan         decode, the search copy and the one Haar pass over all of it that proposes
               candidates (tasks.faces.detect.propose), nothing else: the least this method pays
               per photo, so scan_vs_baseline is a floor under faces_vs_baseline
  incremental  5% more photos added, tasks.faces.run again (cache warm)
--against REV also runs the stage as it is at git revision REV (its own code, unpacked from the
repository) on the same photos: both methods' ratio and recall, measured in the same conditions.
Targets: faces within 2.5x the baseline's time; the incremental run under 15% of the full one;
with --against, recall no lower than REV's.
--detect-side trades the smallest face found for speed (the Haar search dominates the cost).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import multiprocessing
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import skimage.data
from matplotlib import cbook
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from styleforge.core.config import FacesParams  # noqa: E402
from styleforge.core.images import load_image  # noqa: E402
from styleforge.tasks.faces.detect import propose, search_copy  # noqa: E402
from styleforge.tasks.faces.worker import init_worker  # noqa: E402

TARGETS = {"faces_vs_baseline": 2.5, "incremental_fraction": 0.15}
SIZE = (1600, 1200)
BACKGROUNDS = ("coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry", "brick", "grass",
               "gravel", "moon", "horse", "page")
NEW_FRACTION = 0.05
# The face in each portrait (x, y, width, height), checked by eye: astronaut, Grace Hopper.
PORTRAIT_FACES = ((177, 65, 96, 96), (156, 105, 222, 222))
# One stage run in a fresh interpreter: argv is root, params (JSON); prints seconds and report.
STAGE_RUN = """
import json, sys, time
from pathlib import Path
from styleforge.core.config import FacesParams
from styleforge.tasks import faces
start = time.perf_counter()
report = faces.run(FacesParams(**json.loads(sys.argv[2])), Path(sys.argv[1]))
print(json.dumps({"seconds": time.perf_counter() - start, "report": report}))
"""


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


def synthesise(index: int, portrait_pool: list[np.ndarray],
               background_pool: list[np.ndarray]) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """One 1600x1200 photo, determined by index: a portrait somewhere on a background; and where
    its face is (x, y, width, height)."""
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
    x, y, w, h = PORTRAIT_FACES[index % len(portrait_pool)]
    return canvas, (float(left + x * scale), float(top + y * scale), w * scale, h * scale)


def write_photos(raw: Path, indices: range) -> list[dict]:
    """The photos (written once, kept in --workdir) and their manifest rows; each row also says
    where its face is, under "face"."""
    portrait_pool, background_pool = portraits(), backgrounds()
    rows = []
    for index in indices:
        path = raw / f"photo-{index:05d}.jpg"
        photo, face = synthesise(index, portrait_pool, background_pool)
        if not path.exists():
            Image.fromarray(photo).save(path, quality=90)
        data = path.read_bytes()
        rows.append({"url": f"https://bench.invalid/{path.name}", "page": "https://bench.invalid/",
                     "sha256": hashlib.sha256(data).hexdigest(), "phash": "", "bytes": len(data),
                     "width": SIZE[0], "height": SIZE[1], "status": "ok", "error": None, "path": path.name,
                     "content_type": "image/jpeg", "source": "bench", "face": face})
    return rows


def write_manifest(raw: Path, rows: list[dict]) -> None:
    pd.DataFrame([{key: value for key, value in row.items() if key != "face"} for row in rows]).to_parquet(
        raw / "manifest.parquet")


def decode_and_resize(path: Path, params: FacesParams) -> tuple[int, int]:
    rgb = load_image(path, params.max_pixels)
    scale = params.resolution / max(rgb.shape[:2])
    return cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA).shape[:2]


def decode_and_scan(path: Path, params: FacesParams) -> int:
    rgb = load_image(path, params.max_pixels)
    small, _ = search_copy(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY), params.detect_side)
    return len(propose(small))


def pooled(work, paths: list[Path], params: FacesParams, workers: int) -> float:
    """Seconds to run work(path, params) over paths on the stage's kind of process pool."""
    start = time.perf_counter()
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=init_worker) as pool:
        list(pool.map(partial(work, params=params), paths, chunksize=4))
    return time.perf_counter() - start


def unpack(revision: str, into: Path) -> Path:
    """The repository's files at revision, laid out the way the installed package maps them
    (styleforge/tasks is tasks/, ...), so that PYTHONPATH=<returned folder> imports that code
    in every process, the stage's workers included, ahead of this checkout's editable install."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", revision], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    folders = tomllib.loads((into / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    for package, folder in folders.items():
        place = into / package.replace(".", "/")
        if not place.exists():
            place.symlink_to(into / folder, target_is_directory=True)
    return into


def run_stage(root: Path, params: FacesParams, code: Path | None) -> tuple[float, dict]:
    """tasks.faces.run in a fresh interpreter, from this checkout or from unpacked code. It runs
    in root: `python -c` puts its working directory first on sys.path, and this checkout's
    styleforge/ there would shadow the unpacked one."""
    env = dict(os.environ)
    if code is not None:
        env["PYTHONPATH"] = str(code)
    done = subprocess.run([sys.executable, "-c", STAGE_RUN, str(root), params.model_dump_json(exclude_unset=True)],
                          cwd=root, env=env, check=True, capture_output=True, text=True)
    result = json.loads(done.stdout.splitlines()[-1])
    return result["seconds"], result["report"]


def recall(root: Path, report: dict, rows: list[dict]) -> dict:
    """How many photos' planted face the run wrote, and how many crops were something else,
    from the run's cache records (the crop boxes)."""
    entries = root / "data" / "cache" / "faces" / report["params_hash"]
    found = false = 0
    for row in rows:
        record = json.loads((entries / row["sha256"][:2] / f"{row['sha256']}.json").read_text())
        on_face = [face for face in record["faces"] if _centred_on(face["box"], row["face"])]
        found += bool(on_face)
        false += len(record["faces"]) - len(on_face)
    return {"recall": round(found / len(rows), 4), "faces_found": found, "false_faces": false}


def _centred_on(box: list[int], face: tuple[float, float, float, float]) -> bool:
    x, y, width, height = face
    middle_x, middle_y = box[0] + box[2] / 2, box[1] + box[3] / 2
    return x <= middle_x <= x + width and y <= middle_y <= y + height and 0.5 <= box[2] / width <= 2


def measure(root: Path, rows: list[dict], params: FacesParams, workers: int, code: Path | None) -> dict:
    """One cold faces run beside a baseline measured just before it, so both meet the same load."""
    shutil.rmtree(root / "data" / "cache", ignore_errors=True)
    baseline_s = pooled(decode_and_resize, [root / "data" / "raw" / row["path"] for row in rows], params, workers)
    faces_s, report = run_stage(root, params, code)
    return {
        "baseline_decode_resize_s": round(baseline_s, 3),
        "baseline_images_per_s": round(len(rows) / baseline_s, 1),
        "faces_s": round(faces_s, 3),
        "faces_images_per_s": round(len(rows) / faces_s, 1),
        "faces_vs_baseline": round(faces_s / baseline_s, 2),
        **recall(root, report, rows),
        "faces_written": report["faces_written"],
        "rejects": report["rejects"],
    }


def bench(images: int, workdir: Path, params: FacesParams, against: str | None) -> dict:
    raw = workdir / "data" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    extra = max(1, round(images * NEW_FRACTION))
    rows = write_photos(raw, range(images + extra))
    workers = params.workers or os.cpu_count() or 1
    write_manifest(raw, rows[:images])
    result = {
        "images": images,
        "image_size": list(SIZE),
        "workers": workers,
        "detect_side": params.detect_side,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
    }
    if against:
        commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", against], check=True, capture_output=True,
                                text=True).stdout.strip()
        with tempfile.TemporaryDirectory(prefix="bench-faces-code-") as code:
            result["against"] = {"revision": against, "commit": commit,
                                 **measure(workdir, rows[:images], params, workers, unpack(commit, Path(code)))}
    full = measure(workdir, rows[:images], params, workers, None)  # last: its cache serves the reruns
    scan_s = pooled(decode_and_scan, [raw / row["path"] for row in rows[:images]], params, workers)
    noop_s, _ = run_stage(workdir, params, None)
    write_manifest(raw, rows)
    incremental_s, incremental = run_stage(workdir, params, None)
    meets = {
        "faces_vs_baseline": full["faces_vs_baseline"] <= TARGETS["faces_vs_baseline"],
        "incremental_fraction": incremental_s / full["faces_s"] <= TARGETS["incremental_fraction"],
    }
    if against:
        meets["recall_kept"] = full["recall"] >= result["against"]["recall"]
    return {
        **result,
        **full,
        "scan_s": round(scan_s, 3),
        "scan_vs_baseline": round(scan_s / full["baseline_decode_resize_s"], 2),
        "rerun_unchanged_s": round(noop_s, 3),
        "incremental_new_images": extra,
        "incremental_processed": incremental["processed"],
        "incremental_s": round(incremental_s, 3),
        "incremental_fraction": round(incremental_s / full["faces_s"], 3),
        "targets": TARGETS,
        "meets_targets": meets,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "faces.json")
    parser.add_argument("--detect-side", type=int, default=FacesParams().detect_side)
    parser.add_argument("--against", metavar="REV", help="also measure the stage as it is at this git revision")
    parser.add_argument("--workdir", type=Path, help="keep the synthesised photos here (default: a temp dir)")
    args = parser.parse_args()
    params = FacesParams(detect_side=args.detect_side)
    if args.workdir:
        result = bench(args.images, args.workdir, params, args.against)
    else:
        with tempfile.TemporaryDirectory(prefix="bench-faces-") as tmp:
            result = bench(args.images, Path(tmp), params, args.against)
    text = json.dumps(result, indent=2)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
