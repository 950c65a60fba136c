"""Benchmark the generator: G forward and a full G+D training step, custom ops vs reference.

    python bench/generator.py [--device auto|cpu|cuda] [--out bench/results/generator.json]

Each (ops mode, task) pair runs in its own subprocess with STYLEFORGE_OPS set, because the op
chooser reads it once per process and because peak memory is only separable per process on
CPU (peak RSS). CPU measures a tiny 64x64 config; CUDA measures 256x256 config-F.

    forward      g_ema-style inference: eval mode, no grad, constant noise
    train_step   D step (non-saturating loss on real + fake, backward, Adam) then G step
                 (non-saturating loss through D, backward, Adam); images/s counts the batch once

Reported: median wall seconds per call over the repeats (and the fastest), images/s from the
median, the median CPU seconds the process used (steadier than wall time when other processes
share the cores; the load average is recorded too), peak memory (CPU: process max RSS; CUDA:
max allocated), and the ops backend that ran.
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIGS = {
    # small enough to step in well under a second on two cores, same architecture
    "cpu": dict(config=dict(size=64, style_dim=128, n_mlp=4, channel_base=2048, channel_max=64), batch=8, repeats=5),
    "cuda": dict(config=dict(size=256), batch=16, repeats=20),
}
MODES = ("ref", "cpp")
TASKS = ("forward", "train_step")


def synchronise(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def forward_step(config, batch, device):
    g = config.generator().to(device).eval()
    z = torch.randn(batch, config.style_dim, device=device)

    def step():
        with torch.no_grad():
            g([z], randomize_noise=False)

    return step


def train_step(config, batch, device):
    import torch.nn.functional as F

    g, d = config.generator().to(device).train(), config.discriminator().to(device).train()
    g_optim = torch.optim.Adam(g.parameters(), lr=0.002, betas=(0.0, 0.99))
    d_optim = torch.optim.Adam(d.parameters(), lr=0.002, betas=(0.0, 0.99))
    real = torch.randn(batch, 3, config.size, config.size, device=device)

    def step():
        fake, _ = g([torch.randn(batch, config.style_dim, device=device)])
        d_loss = F.softplus(d(fake.detach())).mean() + F.softplus(-d(real)).mean()
        d_optim.zero_grad(set_to_none=True)
        d_loss.backward()
        d_optim.step()

        fake, _ = g([torch.randn(batch, config.style_dim, device=device)])
        g_loss = F.softplus(-d(fake)).mean()
        g_optim.zero_grad(set_to_none=True)
        g_loss.backward()
        g_optim.step()

    return step


def worker(task: str, device: str) -> dict:
    """Time one task in this process (STYLEFORGE_OPS already set by the parent)."""
    from styleforge.model.networks import ModelConfig
    from styleforge.model.ops import backend

    spec = CONFIGS[device]
    config = ModelConfig(**spec["config"])
    torch.manual_seed(0)
    step = {"forward": forward_step, "train_step": train_step}[task](config, spec["batch"], device)
    step()  # warm-up: extension load, allocator, first-touch page faults
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times, cpu_times = [], []
    for _ in range(spec["repeats"]):
        synchronise(device)
        start, cpu_start = time.perf_counter(), time.process_time()
        step()
        synchronise(device)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    if device == "cuda":
        peak_mb = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    median = statistics.median(times)
    return dict(
        backend=backend(device),
        batch=spec["batch"],
        repeats=spec["repeats"],
        median_s=round(median, 4),
        best_s=round(min(times), 4),
        median_cpu_s=round(statistics.median(cpu_times), 4),
        images_per_s=round(spec["batch"] / median, 2),
        peak_mem_mb=round(peak_mb, 1),
    )


def run_worker(mode: str, task: str, device: str) -> dict:
    env = {**os.environ, "STYLEFORGE_OPS": mode}
    cmd = [sys.executable, __file__, "--worker", task, "--device", device]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": tail}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/generator.json")
    parser.add_argument("--worker", choices=TASKS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if args.worker:
        print(json.dumps(worker(args.worker, device)))
        return
    if device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")

    load_before = round(os.getloadavg()[0], 2)
    results = {mode: {} for mode in MODES}
    for task in TASKS:
        for mode in MODES:
            results[mode][task] = row = run_worker(mode, task, device)
            print(f"{task:10s} STYLEFORGE_OPS={mode}: {row}", flush=True)
    speedup = {
        task: round(results["cpp"][task]["images_per_s"] / results["ref"][task]["images_per_s"], 2)
        for task in TASKS
        if "images_per_s" in results["cpp"][task] and "images_per_s" in results["ref"][task]
    }
    report = dict(
        device=device,
        gpu=torch.cuda.get_device_name() if device == "cuda" else None,
        cpu=platform.processor() or platform.machine(),
        cpu_count=os.cpu_count(),
        load_avg_1min_before_after=[load_before, round(os.getloadavg()[0], 2)],
        torch=torch.__version__,
        config=CONFIGS[device]["config"],
        measure="median seconds per call; train_step = one D and one G update on the batch",
        results=results,
        speedup_cpp_over_ref=speedup,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(speedup))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
