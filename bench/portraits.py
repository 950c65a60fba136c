"""Benchmark the portraits path: seconds per projected photo, and blended images per second.

    python bench/portraits.py [--steps 100] [--threads N] [--out bench/results/portraits.json]

Cases: `tiny` (64x64, 64-wide, on the CPU) always; `256` (rosinality config F at 256x256,
channel_multiplier 2, the shape of a real run) on the GPU where there is one. Weights are random:
the cost depends on shapes, not values, and nothing is downloaded. The photo is the astronaut,
found and aligned by tasks.faces as the stage does it. Per case:
  project_*    the stage's projection (W, rosinality's settings) for --steps steps, with LPIPS at
               VGG16's full widths and with the pixel fallback; s/step and the s/photo that
               rosinality's 1000 steps would take
  blend_swap_s the layer swap itself (state-dict work)
  render_*     images/s of the blended model, batch 8, fixed noise, no gradients
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch
from skimage import data

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from styleforge.core.config import FacesParams, ProjectionParams  # noqa: E402
from styleforge.core.io import atomic_write_json  # noqa: E402
from styleforge.model.blend import blend_generators  # noqa: E402
from styleforge.model.generate import (  # noqa: E402
    render,
    seed_latents,  # noqa: E402
    to_uint8,
)
from styleforge.model.lpips import LPIPS, MultiScalePixelDistance  # noqa: E402
from styleforge.model.networks import ModelConfig  # noqa: E402
from styleforge.model.project import project, to_tensor  # noqa: E402
from styleforge.tasks.faces import find_faces  # noqa: E402

CASES = {
    "tiny": (ModelConfig(size=64, style_dim=64, n_mlp=2, channel_max=64, channel_base=1024), "cpu"),
    "256": (ModelConfig(size=256), "cuda"),
}
DEFAULT_STEPS = ProjectionParams().steps
RENDER_BATCH = 8


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def random_lpips() -> LPIPS:
    """LPIPS at VGG16's full widths, random weights; heads made non-negative as trained ones are
    (LPIPS clamps them), so the distance still behaves like one."""
    lpips = LPIPS()
    for lin in lpips.lins:
        lin.weight.data.abs_()
    return lpips


def time_projection(generator, target, distance, steps: int, device: torch.device) -> dict:
    settings = ProjectionParams(steps=steps)
    project(generator, target, distance, **ProjectionParams(steps=2).model_dump(), progress=False)  # warm-up
    _sync(device)
    start = time.perf_counter()
    result = project(generator, target, distance, **settings.model_dump(), progress=False)
    _sync(device)
    seconds = time.perf_counter() - start
    return {
        "seconds": round(seconds, 3),
        "seconds_per_step": round(seconds / steps, 4),
        f"seconds_per_photo_at_{DEFAULT_STEPS}_steps": round(seconds / steps * DEFAULT_STEPS, 1),
        "distance_first_last": [round(result.history[0], 4), round(result.history[-1], 4)],
    }


def time_render(generator, device: torch.device, repeats: int) -> float:
    latents = seed_latents(generator, list(range(RENDER_BATCH)), truncation=0.7)
    to_uint8(render(generator, latents))  # warm-up
    _sync(device)
    start = time.perf_counter()
    for _ in range(repeats):
        to_uint8(render(generator, latents, batch_size=RENDER_BATCH))
    _sync(device)
    return round(repeats * RENDER_BATCH / (time.perf_counter() - start), 2)


def bench_case(name: str, config: ModelConfig, device: torch.device, steps: int, face) -> dict:
    torch.manual_seed(0)
    base = config.generator().eval().to(device)
    finetuned = config.generator().eval().to(device)
    start = time.perf_counter()
    blended, _ = blend_generators(base, finetuned, swap_res=min(32, config.size // 2))
    swap_s = time.perf_counter() - start
    target = to_tensor(face, config.size).to(device)
    return {
        "case": name,
        "device": str(device) if device.type == "cpu" else torch.cuda.get_device_name(device),
        "model": config.to_dict(),
        "steps": steps,
        "project_lpips_vgg": time_projection(base, target, random_lpips().to(device), steps, device),
        "project_pixel_fallback": time_projection(base, target, MultiScalePixelDistance(), steps, device),
        "blend_swap_s": round(swap_s, 3),
        "render_images_per_s": time_render(blended, device, repeats=3 if device.type == "cpu" else 20),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=100, help="projection steps timed per case")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's own choice); on a busy "
                        "2-core box one thread ran the tiny projection 25x faster than two")
    parser.add_argument("--out", type=Path, default=Path("bench/results/portraits.json"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    load = os.getloadavg()
    face = find_faces(data.astronaut(), FacesParams(multi_face="largest"))[0][0].image
    results = []
    for name, (config, wanted) in CASES.items():
        if wanted == "cuda" and not torch.cuda.is_available():
            print(f"{name}: skipped, no GPU", flush=True)
            continue
        results.append(bench_case(name, config, torch.device(wanted), args.steps, face))
        print(json.dumps(results[-1], indent=2), flush=True)
    atomic_write_json(args.out, {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": [round(v, 2) for v in load],  # other work on the box skews the CPU figures
        "platform": platform.platform(),
        "cases": results,
    })
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
