"""faces: data/raw (the scrape manifest) -> data/faces/<sha256>_<n>.png, aligned square crops.

Each photo is looked up in a per-file cache keyed by its sha256 and the faces params; only the
misses are decoded, searched and aligned, spread over every core. data/faces is then rebuilt
from the cache with hard links. Bad files are counted and reported, never fatal.

The reusable API (the portraits stage uses the same code path):
    load_image(path, max_pixels) -> RGB uint8, or BadImage(reason)
    find_faces(rgb, params) -> (list[FaceCrop], list[Reject])
    align_face(rgb, CropGeometry, resolution) -> square RGB crop
"""

from __future__ import annotations

import multiprocessing
import os
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from functools import partial
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from styleforge.core.config import FacesParams
from styleforge.core.images import BadImage, load_image
from styleforge.core.reports import timed, write_report
from styleforge.tasks.faces.align import CropGeometry, align_face
from styleforge.tasks.faces.cache import FacesCache, publish
from styleforge.tasks.faces.detect import FaceCrop, Reject, find_faces
from styleforge.tasks.faces.sheets import write_sheets
from styleforge.tasks.faces.worker import Job, init_worker, process_file
from styleforge.tasks.paths import FACES_DIR, MANIFEST, RAW_DIR

__all__ = ["run", "load_image", "BadImage", "find_faces", "FaceCrop", "Reject", "align_face", "CropGeometry"]


def run(params: FacesParams, root: Path = Path(".")) -> dict:
    report: dict = {}
    with timed(report):
        jobs = read_jobs(root)
        cache = FacesCache(root, params)
        cached = {job.sha256: cache.load(job.sha256) for job in jobs}
        todo = [job for job in jobs if cached[job.sha256] is None]
        cached.update(process_all(todo, params, cache))
        records = [cached[job.sha256] for job in jobs]
        publish({face["file"]: cache.file(r["sha256"], face["file"]) for r in records for face in r["faces"]},
                root / FACES_DIR)
        write_sheets(records, cache, root)
        report.update(summarise(records, len(jobs) - len(todo), params, cache))
    write_report("faces", report, root)
    return {"stage": "faces", **report}


def read_jobs(root: Path) -> list[Job]:
    """The manifest's downloaded photos, one job per distinct content (sha256)."""
    manifest_path = root / MANIFEST
    if not manifest_path.exists():
        raise FileNotFoundError(f"{manifest_path} not found: run the scrape stage first")
    manifest = pd.read_parquet(manifest_path, columns=["sha256", "path", "status"])
    ok = manifest[manifest["status"] == "ok"].drop_duplicates("sha256").sort_values("sha256")
    return [Job(sha, root / RAW_DIR / path, path) for sha, path in zip(ok["sha256"], ok["path"], strict=True)]


def process_all(jobs: list[Job], params: FacesParams, cache: FacesCache) -> dict[str, dict]:
    """process_file over jobs on `workers` processes (0: every core), with a progress bar."""
    work = partial(process_file, params=params, cache=cache)
    workers = min(params.workers or os.cpu_count() or 1, len(jobs))
    records = {}
    with tqdm(total=len(jobs), desc="faces", unit="img", mininterval=1.0) as progress:
        for record in _results(work, jobs, workers):
            records[record["sha256"]] = record
            progress.update()
    return records


def _results(work: Callable[[Job], dict], jobs: list[Job], workers: int) -> Iterator[dict]:
    if workers <= 1:  # nothing to spread: skip the pool's start-up
        yield from map(work, jobs)
        return
    # forkserver: forking a process that may hold other threads (Prefect's, pyarrow's) can
    # deadlock; the server imports OpenCV and our modules once, then forks each worker from itself.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["styleforge.tasks.faces.worker"])
    with ProcessPoolExecutor(workers, mp_context=context, initializer=init_worker) as pool:
        for future in as_completed([pool.submit(work, job) for job in jobs]):
            yield future.result()


def summarise(records: list[dict], from_cache: int, params: FacesParams, cache: FacesCache) -> dict:
    rejects = Counter(reject["reason"] for r in records for reject in r["rejects"])
    faces = sum(len(r["faces"]) for r in records)
    return {
        "inputs": len(records),
        "from_cache": from_cache,
        "processed": len(records) - from_cache,
        "images_with_faces": sum(1 for r in records if r["faces"]),
        "faces_written": faces,
        "rejects": dict(sorted(rejects.items())),
        "rejected": sum(rejects.values()),
        "bad_images": sum(n for reason, n in rejects.items() if reason.startswith("bad_image:")),
        "params_hash": cache.key,
        "resolution": params.resolution,
    }
