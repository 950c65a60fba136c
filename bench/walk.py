"""Benchmark `styleforge walk` against `styleforge generate` of the same frames, in one run.

    python bench/walk.py [--frames 12] [--repeats 3] [--threads 1] [--out bench/results/walk.json]

A randomly initialised 256x256 generator with config F's layout (style_dim 512, 8 mapping
layers) at an eighth of its widths (channel_base 4096: 512 channels at 4-8 halving to 16 at 256),
so that a run takes well under a minute on two CPU cores; the cost depends on shapes, not values.
Cases, interleaved repeat by repeat so that a change in the machine's load hits them alike:

  generate   model.generate.generate(g, dir, z=Z) with constant noise: what `styleforge generate
             --z` runs, PNGs and grid.png included; Z holds the z of the Z-walk's frames, so it
             renders exactly the frames walk_z makes
  render     the floor under both: Z mapped and rendered in batches of 8 to uint8, nothing saved
  walk_z     the walk through 3 seeds in Z to an MP4 (slerp, map, render, encode): the same frames
  walk_w     the default walk in W to an MP4 (lerp, render, encode): no mapping per frame
  encode     the encoder alone: walk_z's frames, already rendered, to an MP4

Reported per case: median wall seconds, frames/s, median CPU seconds of this process and of its
children (ffmpeg encodes in a child process, on the same cores), and walk / generate ratios of
wall and of CPU seconds (target <= 1.2: the walk should cost the renders plus a small encoding
overhead). CPU seconds are the steadier figure where other processes share the cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from styleforge.core.io import atomic_write_json
from styleforge.core.video import write_frames
from styleforge.model.generate import generate, render, to_uint8, z_latents
from styleforge.model.networks import ModelConfig
from styleforge.model.walk import path, seed_keyframes, slerp, walk_frames

CONFIG = ModelConfig(size=256, channel_base=4096)
SEEDS = [0, 5, 9]
TRUNCATION = 0.7


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(run) -> dict:
    start, cpu, children = time.perf_counter(), time.process_time(), _children_cpu()
    run()
    return {"s": time.perf_counter() - start, "cpu_s": time.process_time() - cpu, "children_cpu_s": _children_cpu() - children}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    # One torch thread: ffmpeg encodes on another core, and on a shared two-core box a second
    # torch thread spins against it and everything else (2-thread timings swung 4x here).
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/walk.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    g = CONFIG.generator().eval()
    w_cells = [seed_keyframes(g, SEEDS, TRUNCATION, space="w")]
    z_cells = [seed_keyframes(g, SEEDS, TRUNCATION, space="z")]
    keys = z_cells[0].z
    frame_z = np.stack([keys[k] if f == 0.0 else slerp(keys[k], keys[n], f) for k, n, f in path(args.frames, len(SEEDS))])

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rendered = list(walk_frames(g, z_cells, args.frames, truncation=TRUNCATION))  # warm-up, and the encode case's input
        cases = {
            "generate": lambda: generate(g, tmp / "generate", z=frame_z, truncation=TRUNCATION, noise_mode="const"),
            "render": lambda: to_uint8(render(g, z_latents(g, frame_z, TRUNCATION), "const")),
            "walk_z": lambda: write_frames(str(tmp / "z.mp4"), walk_frames(g, z_cells, args.frames, truncation=TRUNCATION),
                                           fps=30, total=args.frames),
            "walk_w": lambda: write_frames(str(tmp / "w.mp4"), walk_frames(g, w_cells, args.frames, truncation=TRUNCATION),
                                           fps=30, total=args.frames),
            "encode": lambda: write_frames(str(tmp / "e.mp4"), iter(rendered), fps=30, total=args.frames),
        }
        load_before = round(os.getloadavg()[0], 2)
        runs = {name: [] for name in cases}
        for _ in range(args.repeats):
            for name, run in cases.items():
                runs[name].append(timed(run))
                print(f"{name:8s} {runs[name][-1]['s']:.2f} s", flush=True)

    results = {}
    for name, rows in runs.items():
        median = statistics.median(row["s"] for row in rows)
        cpu = statistics.median(row["cpu_s"] for row in rows)
        children = statistics.median(row["children_cpu_s"] for row in rows)
        results[name] = {
            "median_s": round(median, 3),
            "best_s": round(min(row["s"] for row in rows), 3),
            "frames_per_s": round(args.frames / median, 2),
            "median_cpu_s": round(cpu, 3),
            "median_children_cpu_s": round(children, 3),
            "cpu_with_children_s": round(cpu + children, 3),
        }
    compared = ("walk_z", "walk_w", "render", "encode")

    def over(reference: str, key: str, names=compared) -> dict:
        return {name: round(results[name][key] / results[reference][key], 3) for name in names}

    report = {
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": args.threads,
        "load_avg_1min_before_after": [load_before, round(os.getloadavg()[0], 2)],
        "torch": torch.__version__,
        "config": CONFIG.to_dict(),
        "channels": CONFIG.channels(),
        "frames": args.frames,
        "repeats": args.repeats,
        "seeds": SEEDS,
        "results": results,
        "seconds_over_generate": over("generate", "median_s"),
        # CPU seconds (ffmpeg's included) are steadier than wall time where others share the cores
        "cpu_seconds_over_generate": over("generate", "cpu_with_children_s"),
        "cpu_seconds_over_render": over("render", "cpu_with_children_s", ("walk_z", "walk_w")),
        "target": "walk_z / generate <= 1.2",
    }
    atomic_write_json(args.out, report)
    print(json.dumps({key: report[key] for key in ("seconds_over_generate", "cpu_seconds_over_generate", "cpu_seconds_over_render")}))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
