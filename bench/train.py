"""Benchmark the full StyleGAN2 training step of model/train.py, custom ops vs reference.

    python bench/train.py [--device auto|cpu|cuda] [--size N] [--batch N] [--config f|tiny]
                          [--steps N] [--rounds N] [--out bench/results/train.json]

One step is everything the finetune stage does per batch: D main, lazy R1 (every 16), G main,
lazy path length (every 4), G_ema and ADA (fixed p = 0.2, so augmentation is paid for), with
FreezeD off. Steps are timed after warm-up in multiples of 16, so R1 and path length appear in
their true proportion. Each measurement runs in its own subprocess with STYLEFORGE_OPS set (the
op chooser reads it once per process); the modes alternate over rounds (ref, cpp, cpp, ref, ...)
and the fastest round of each is reported, so load from other processes on a shared machine
biases neither. CPU measures a tiny 32x32 config; a GPU measures 256x256 config-F at batch 16
(fp32 and bf16 autocast), the setting of NVIDIA's published s/kimg. --size, --batch and
--config override either. Reported per mode: s/kimg, images/s and peak memory (CUDA: allocated
and reserved, as stylegan2-ada-pytorch's tick lines; CPU: the worker's peak RSS).
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODELS = {
    "f": {},  # ModelConfig's defaults are StyleGAN2 config F (rosinality's channel table)
    "tiny": dict(style_dim=64, n_mlp=2, channel_multiplier=1, channel_max=64),
}
CONFIGS = {
    "cpu": dict(model="tiny", size=32, batch=8, steps=16, rounds=2, variants=[False]),
    "cuda": dict(model="f", size=256, batch=16, steps=64, rounds=2, variants=[False, True]),
}
MODES = ("ref", "cpp")
WARMUP_STEPS = 3


def measure(device: str, steps: int, bf16: bool, model: str, size: int, batch: int) -> dict:
    """Run in the worker process: time `steps` training steps after warm-up."""
    import resource

    from styleforge.core.config import FinetuneParams
    from styleforge.model.checkpoint import build_networks
    from styleforge.model.networks import ModelConfig
    from styleforge.model.ops import backend
    from styleforge.model.train import Networks, Outputs, Trainer, TrainingSettings

    config = ModelConfig(size=size, **MODELS[model])
    torch.manual_seed(0)
    params = FinetuneParams(batch=batch, device=device, bf16=bf16, augment_p=0.2, ada_target=None,
                            freeze_d=0, workers=0)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(Networks(config, *build_networks(config)), TrainingSettings.of(params), Path(tmp),
                          Outputs(Path(tmp) / "ckpt", Path(tmp) / "s.png"))
        reals = torch.rand(trainer.per_rank, 3, config.size, config.size, device=trainer.ranks.device) * 2 - 1

        def run(count: int) -> tuple[float, float]:
            if device == "cuda":
                torch.cuda.synchronize()
            started, cpu_started = time.perf_counter(), time.process_time()
            for _ in range(count):
                trainer.train_step(reals)
            if device == "cuda":
                torch.cuda.synchronize()
            return time.perf_counter() - started, time.process_time() - cpu_started

        run(WARMUP_STEPS)
        trainer.step = 0  # the timed steps start on an R1 + path-length step, like the schedule
        seconds, cpu_seconds = run(steps)
    if device == "cuda":
        memory = {"peak_gpu_mem_gb": round(torch.cuda.max_memory_allocated() / 2**30, 2),
                  "peak_gpu_reserved_gb": round(torch.cuda.max_memory_reserved() / 2**30, 2),
                  # NVIDIA's loop sets these itself (benchmark on, TF32 off unless --allow-tf32): ours, beside them
                  "cudnn_benchmark": torch.backends.cudnn.benchmark, "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32}
    else:
        memory = {"peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}  # KiB
    return {
        "backend": backend(device), "bf16": bf16, "steps": steps, "batch": batch,
        "config": {"name": model, **config.to_dict()},
        "seconds": round(seconds, 3), "cpu_seconds": round(cpu_seconds, 3), **memory,
    }


def worker_cmd(device: str, steps: int, bf16: bool, model: str, size: int, batch: int) -> list[str]:
    cmd = [sys.executable, __file__, "--worker", "--device", device, "--steps", str(steps), "--config", model,
           "--size", str(size), "--batch", str(batch)]
    return cmd + (["--bf16"] if bf16 else [])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--size", type=int, help="image size (default: 32 on CPU, 256 on a GPU)")
    parser.add_argument("--batch", type=int, help="batch (default: 8 on CPU, 16 on a GPU)")
    parser.add_argument("--config", choices=sorted(MODELS), help="f: StyleGAN2 config F (default on a GPU); "
                        "tiny: 64-channel, 2-layer mapping (default on CPU)")
    parser.add_argument("--steps", type=int, help="timed steps (default: 16 on CPU, 64 on a GPU)")
    parser.add_argument("--rounds", type=int, help="rounds per mode, fastest kept (default: 2)")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/train.json")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--bf16", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    if device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    spec = CONFIGS[device]
    steps, rounds = args.steps or spec["steps"], args.rounds or spec["rounds"]
    shape = (args.config or spec["model"], args.size or spec["size"], args.batch or spec["batch"])

    if args.worker:
        print(json.dumps(measure(device, steps, args.bf16, *shape)))
        return

    load_at_start = os.getloadavg()
    results = []
    for bf16 in spec["variants"]:
        runs_of: dict[str, list[dict]] = {mode: [] for mode in MODES}
        for index in range(rounds):
            for mode in MODES if index % 2 == 0 else MODES[::-1]:
                env = {**os.environ, "STYLEFORGE_OPS": mode}
                proc = subprocess.run(worker_cmd(device, steps, bf16, *shape), env=env, cwd=ROOT,
                                      capture_output=True, text=True)
                if proc.returncode != 0:
                    raise SystemExit(f"{mode} worker failed:\n{proc.stderr[-3000:]}")
                runs_of[mode].append(json.loads(proc.stdout.strip().splitlines()[-1]))
                print(mode, json.dumps(runs_of[mode][-1]), file=sys.stderr)
        for mode, runs in runs_of.items():
            best = min(runs, key=lambda r: r["seconds"])
            images = best["steps"] * best["batch"]
            results.append({"mode": mode, **best, "rounds_s": [r["seconds"] for r in runs],
                            "rounds_cpu_s": [r["cpu_seconds"] for r in runs],
                            "images_per_s": round(images / best["seconds"], 3),
                            "sec_per_kimg": round(best["seconds"] * 1000 / images, 2)})
    # CPU time (all threads of the worker) is what other load on a shared CPU disturbs least
    clock = "cpu_seconds" if device == "cpu" else "seconds"
    timed = {(r["mode"], r["bf16"]): r[clock] for r in results}
    speedups = {f"{'bf16' if bf16 else 'fp32'}": round(timed[("ref", bf16)] / timed[("cpp", bf16)], 3)
                for bf16 in spec["variants"] if ("ref", bf16) in timed and ("cpp", bf16) in timed}
    report = {
        "device": device, "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
        "torch": torch.__version__, "threads": torch.get_num_threads(), "machine": platform.machine(),
        "load_average_at_start": [round(x, 2) for x in load_at_start],
        "measure": "fastest round of timed training steps (D, lazy R1, G, lazy path length, EMA, ADA p=0.2)",
        "speedup_cpp_over_ref": speedups, "speedup_clock": clock, "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
