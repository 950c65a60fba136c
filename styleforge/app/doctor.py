"""`styleforge doctor`: what this machine runs the model core with, and how fast.

The report: the device and versions; for the CPU and (where torch sees one) the GPU, the
extension build and, per op, the implementation that runs and why (build failure, dtype, or the
kernel's check against its reference, check.py); then a throughput sample on one device. The
sample is short and on a small model: it says what it timed, for comparing machines and ops
backends, not for quoting s/kimg (bench/train.py measures the full training step).
"""

from __future__ import annotations

import os
import platform
import resource
import time
import warnings
from dataclasses import asdict

import torch

from styleforge.model import losses
from styleforge.model.networks import ModelConfig
from styleforge.model.ops import backend, build, check

# Small enough that a step takes a fraction of the sample on either device; the GPU one has
# config F's channels, so the GPU is busy enough for the figure to mean something.
SAMPLE = {
    "cpu": dict(model=dict(size=32, style_dim=64, n_mlp=2, channel_multiplier=1, channel_max=64), batch=8),
    "cuda": dict(model=dict(size=128), batch=16),
}
R1_GAMMA = 10.0
MEASURED = {
    "g_forward": "G forward in float32: eval mode, no grad, one z per image, constant noise inputs",
    "train_step": ("one D update (logistic loss on random 'real' images and on G's fakes, plus R1 on the reals at every "
                   "step, not lazily) then one G update (non-saturating loss through D); Adam; no path length, EMA "
                   "or augmentation; float32; images/s counts the batch once per step"),
}


def diagnose(device: str, seconds: float = 10.0, recheck: bool = False) -> dict:
    """The doctor's report as a dict (JSON-ready). seconds: length of the throughput sample,
    split between G forward and the training step; 0 skips it. recheck: check the kernels
    again, ignoring stored verdicts."""
    with warnings.catch_warnings(record=True) as caught:  # reported below, not printed twice
        warnings.simplefilter("always")
        ops = {"cpu": _ops("cpu", recheck)}
        if torch.cuda.is_available():
            ops["cuda"] = _ops("cuda", recheck)
        sample = _throughput(torch.device(device), seconds) if seconds > 0 else {"skipped": "--seconds 0"}
    return {
        "environment": _environment(),
        "ops": ops,
        "throughput": sample,
        "warnings": sorted({str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)}),
    }


def _environment() -> dict:
    from torch.utils import cpp_extension

    gpus = []
    for index in range(torch.cuda.device_count()):
        props = torch.cuda.get_device_properties(index)
        gpus.append({"index": index, "name": props.name, "capability": f"{props.major}.{props.minor}",
                     "memory_gb": round(props.total_memory / 2**30, 1)})
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cuda_available": torch.cuda.is_available(),
        "gpus": gpus,
        "cuda_home": cpp_extension.CUDA_HOME,
        "ninja": cpp_extension.is_ninja_available(),
        "threads": torch.get_num_threads(),
        "styleforge_ops": os.environ.get("STYLEFORGE_OPS", "auto"),
        "ops_cache": str(build.cache_root()),
    }


def _ops(device_type: str, recheck: bool) -> dict:
    """The build of one device type's extension and, per op, its backend, reason and verdict."""
    device = torch.device(device_type)
    try:
        verdicts = check.check(device, force=recheck)
    except build.BuildError:  # STYLEFORGE_OPS=cpp: the reasons below name the failure
        verdicts = {}
    except Exception as error:  # a poisoned CUDA context, say: the report is still worth having
        return {"error": f"{type(error).__name__}: {error}"}
    failure = build.failure(device_type)
    kernels = {}
    for op in check.ops():
        chosen, why = check.decide(op, device)
        verdict = verdicts.get(op)
        kernels[op] = {"backend": chosen, "reason": why, "check": asdict(verdict) if verdict else None}
    return {
        "device": check.device_key(device),
        "build": build.build_info.get(device_type) or {"error": str(failure) if failure else "not built"},
        "kernels": kernels,
    }


def _throughput(device: torch.device, seconds: float) -> dict:
    spec = SAMPLE[device.type]
    config = ModelConfig(**spec["model"])
    batch = spec["batch"]
    torch.manual_seed(0)
    g, d = config.generator().to(device), config.discriminator().to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    load_before = os.getloadavg()[0]
    results = {
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "ops_backend": backend(device),
        "model": config.to_dict(),
        "batch": batch,
        "threads": torch.get_num_threads(),
        "g_forward": _rate(_g_forward(g, batch, device), batch, seconds / 2, device),
        "train_step": _rate(_train_step(g, d, batch, device), batch, seconds / 2, device),
    }
    for task, text in MEASURED.items():
        results[task]["measured"] = text
    # Other processes on the same cores slow the sample down: the 1-minute load says how busy they were.
    results["load_average_before_after"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    if device.type == "cuda":
        results["peak_gpu_mem_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    else:
        results["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)  # KiB on Linux
    return results


def _g_forward(g, batch, device):
    g.eval()
    z = torch.randn(batch, g.style_dim, device=device)

    def step():
        with torch.no_grad():
            g([z], randomize_noise=False)

    return step


def _train_step(g, d, batch, device):
    g.train()
    g_optim = torch.optim.Adam(g.parameters(), lr=0.002, betas=(0.0, 0.99))
    d_optim = torch.optim.Adam(d.parameters(), lr=0.002, betas=(0.0, 0.99))
    reals = torch.rand(batch, 3, g.size, g.size, device=device) * 2 - 1

    def step():
        g.requires_grad_(False)
        d.requires_grad_(True)
        with torch.no_grad():
            fakes, _ = g([torch.randn(batch, g.style_dim, device=device)])
        real = reals.detach().requires_grad_(True)
        real_logits = d(real)
        loss = losses.discriminator_loss(real_logits, d(fakes))
        loss = loss + losses.r1_penalty(real_logits, real) * (R1_GAMMA / 2)
        d_optim.zero_grad(set_to_none=True)
        loss.backward()
        d_optim.step()

        g.requires_grad_(True)
        d.requires_grad_(False)
        fakes, _ = g([torch.randn(batch, g.style_dim, device=device)])
        g_optim.zero_grad(set_to_none=True)
        losses.generator_loss(d(fakes)).backward()
        g_optim.step()

    return step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rate(step, batch: int, budget: float, device: torch.device) -> dict:
    """Calls of step until budget seconds have passed (at least one), after an untimed warm-up
    call (first-touch allocation, cuDNN autotuning, the kernels' first-use check)."""
    _sync(device)
    started = time.perf_counter()
    step()
    _sync(device)
    warmup = time.perf_counter() - started
    calls, started = 0, time.perf_counter()
    while calls == 0 or time.perf_counter() - started < budget:
        step()
        _sync(device)
        calls += 1
    elapsed = time.perf_counter() - started
    return {"images_per_s": round(calls * batch / elapsed, 2), "calls": calls, "seconds": round(elapsed, 3),
            "warmup_s": round(warmup, 3)}


def describe(report: dict) -> str:
    """The report as a few lines of text."""
    env = report["environment"]
    gpus = ", ".join(f"{g['name']} (sm {g['capability']}, {g['memory_gb']} GB)" for g in env["gpus"]) or "none"
    lines = [
        f"python {env['python']}, torch {env['torch']} (CUDA {env['torch_cuda'] or 'none'}, cuDNN "
        f"{env['cudnn'] or 'none'}), {env['platform']}",
        f"CPU: {env['cpu_count']} cores, torch uses {env['threads']} threads; GPU: {gpus}",
        f"ops: STYLEFORGE_OPS={env['styleforge_ops']}, build cache {env['ops_cache']}, "
        f"ninja {'found' if env['ninja'] else 'missing'}, CUDA toolkit {env['cuda_home'] or 'none'}",
    ]
    for device_type, entry in report["ops"].items():
        if "error" in entry:
            lines.append(f"  {device_type}: {entry['error']}")
            continue
        built = entry["build"]
        where = (f"{'compiled' if built['compiled'] else 'loaded'} in {built['seconds']} s from {built['dir']}"
                 if "dir" in built else built["error"])
        lines.append(f"  {device_type} ({entry['device']}): {where}")
        for op, kernel in entry["kernels"].items():
            lines.append(f"    {op:15s} {kernel['backend']:5s} {kernel['reason']}")
    sample = report["throughput"]
    if "skipped" in sample:
        lines.append(f"throughput: skipped ({sample['skipped']})")
    else:
        model = sample["model"]
        memory = (f"peak GPU memory {sample['peak_gpu_mem_gb']} GB" if "peak_gpu_mem_gb" in sample
                  else f"peak RSS {sample['peak_rss_gb']} GB")
        load = "/".join(str(x) for x in sample["load_average_before_after"])
        lines.append(f"throughput on {sample['gpu'] or sample['device']} (ops: {sample['ops_backend']}), "
                     f"{model['size']}x{model['size']} model, batch {sample['batch']}, {memory}, "
                     f"load average {load} before/after:")
        for task in MEASURED:
            row = sample[task]
            lines.append(f"  {task:10s} {row['images_per_s']:9.1f} img/s  ({row['calls']} calls in {row['seconds']} s "
                         f"after a {row['warmup_s']} s warm-up)")
            lines.append(f"             {row['measured']}")
    lines += [f"warning: {message}" for message in report["warnings"]]
    return "\n".join(lines)
