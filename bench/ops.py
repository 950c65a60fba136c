"""Benchmark the custom ops against their pure-PyTorch references, forward + backward.

    python bench/ops.py [--device cpu|cuda] [--out bench/results/ops.json] [--repeats 5]
                        [--threads N] [--op fused_bias_act|upfirdn2d] [--shrink N]

Shapes are those of a 256x256 StyleGAN2 (rosinality layout, channel multiplier 1: 512
channels down to 64 at 256x256); the batch is 16 on CUDA and smaller on CPU so that the run
stays within a few minutes. Both implementations run in the same process, interleaved
repetition by repetition so that load from other processes hits both alike; the median is
reported. Targets (CPU): fused_bias_act >= 1.5x the reference, upfirdn2d not slower.
An op whose kernel does not run here (failed build or failed check) is left out, with the reason
in the JSON. --shrink N divides channels and sizes by N: a smoke run (bench/gpu.sh --dry-run),
not a figure.
"""
import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from styleforge.model.ops import (  # noqa: E402
    backend,
    fused_leaky_relu,
    fused_leaky_relu_ref,
    reason,
    upfirdn2d,
    upfirdn2d_ref,
)

TARGETS = {"fused_bias_act": 1.5, "upfirdn2d": 1.0}


def blur_kernel(taps, gain=1.0):
    k = torch.tensor(taps, dtype=torch.float32)
    k = k[:, None] * k[None, :]
    return k / k.sum() * gain


def cases(batch, shrink=1):
    """(op, label, input shape, kwargs) at the resolutions a 256x256 generator/discriminator runs
    (channels and sizes divided by shrink)."""
    k4 = blur_kernel([1, 3, 3, 1])
    k6 = blur_kernel([1, 5, 10, 10, 5, 1])
    def n(value):
        return max(1, value // shrink)

    act = [(512, 8), (512, 32), (256, 64), (128, 128), (64, 256)]
    for channels, size in act:
        yield "fused_bias_act", "bias+lrelu", (batch, n(channels), n(size), n(size)), {}
    yield "fused_bias_act", "bias+lrelu (linear layer)", (batch * 64, n(512)), {}
    # Blur after each 2x transposed conv in the generator (s -> 2s + 1): pad (1, 1), kernel * 4.
    for channels, size in [(512, 8), (512, 16), (256, 32), (128, 64), (64, 128)]:
        side = 2 * n(size) + 1
        yield "upfirdn2d", "blur after conv up", (batch, n(channels), side, side), dict(kernel=k4 * 4, pad=(1, 1))
    # Discriminator blur before a stride-2 conv: pad (2, 2).
    for channels, size in [(64, 256), (128, 128), (512, 32)]:
        yield "upfirdn2d", "blur before conv down", (batch, n(channels), n(size), n(size)), dict(kernel=k4, pad=(2, 2))
    yield "upfirdn2d", "upsample (skip to RGB)", (batch, 3, n(128), n(128)), dict(kernel=k4 * 4, up=2, pad=(2, 1))
    yield "upfirdn2d", "downsample 2x", (batch, n(64), n(256), n(256)), dict(kernel=k4, down=2, pad=(1, 1))
    yield "upfirdn2d", "6-tap upsample", (batch, n(128), n(64), n(64)), dict(kernel=k6 * 4, up=2, pad=(3, 2))


def make_step(fn, op, shape, kwargs, device):
    x = torch.randn(shape, device=device, requires_grad=True)
    if op == "fused_bias_act":
        bias = torch.randn(shape[1], device=device, requires_grad=True)
        inputs = (x, bias)

        def run():
            return fn(x, bias)

    else:
        kernel = kwargs["kernel"].to(device)
        rest = {key: value for key, value in kwargs.items() if key != "kernel"}
        inputs = (x,)

        def run():
            return fn(x, kernel, **rest)

    grad = torch.randn_like(run())

    def step():
        for tensor in inputs:
            tensor.grad = None
        run().backward(grad)

    return step


def synchronise(device):
    if device == "cuda":
        torch.cuda.synchronize()


def time_pair(steps, device, repeats):
    """Median seconds per call of each step, interleaving them repetition by repetition."""
    for step in steps:  # warm-up: allocator, first-touch page faults
        step()
    samples = [[] for _ in steps]
    for _ in range(repeats):
        for step, bucket in zip(steps, samples):
            synchronise(device)
            start = time.perf_counter()
            step()
            synchronise(device)
            bucket.append(time.perf_counter() - start)
    return [statistics.median(bucket) for bucket in samples]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--out", type=Path, default=Path("bench/results/ops.json"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, help="default: 16 on cuda, 2 on cpu")
    parser.add_argument("--threads", type=int, help="CPU threads (default: torch's choice)")
    parser.add_argument("--op", choices=sorted(TARGETS), help="only this op")
    parser.add_argument("--shrink", type=int, default=1, help="divide channels and sizes by this (a smoke run)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: torch sees no CUDA device")
    batch = args.batch or (16 if args.device == "cuda" else 2)
    # Per op: a kernel that failed its check runs the reference, and timing that against itself
    # would be a meaningless 1x.
    kernels = {op: dict(backend=backend(args.device, op=op), reason=reason(args.device, op=op)) for op in TARGETS}
    timed = [op for op in TARGETS if kernels[op]["backend"] != "ref" and args.op in (None, op)]
    for op, kernel in kernels.items():
        print(f"{op}: {kernel['backend']} ({kernel['reason']})", flush=True)
    if not timed:
        parser.error(f"no kernel runs on {args.device}: nothing to compare ({kernels})")

    implementations = {"fused_bias_act": (fused_leaky_relu, fused_leaky_relu_ref), "upfirdn2d": (upfirdn2d, upfirdn2d_ref)}
    results = []
    for op, label, shape, kwargs in cases(batch, args.shrink):
        if op not in timed:
            continue
        ext, ref = implementations[op]
        steps = [make_step(fn, op, shape, kwargs, args.device) for fn in (ext, ref)]
        ext_s, ref_s = time_pair(steps, args.device, args.repeats)
        params = {key: value for key, value in kwargs.items() if key != "kernel"}
        if "kernel" in kwargs:
            params["taps"] = kwargs["kernel"].shape[0]
        row = dict(op=op, case=label, shape=list(shape), params=params, ext_ms=round(ext_s * 1e3, 3),
                   ref_ms=round(ref_s * 1e3, 3), speedup=round(ref_s / ext_s, 2))
        results.append(row)
        print(f"{op:15s} {label:26s} {str(list(shape)):22s} ext {row['ext_ms']:9.2f} ms  "
              f"ref {row['ref_ms']:9.2f} ms  x{row['speedup']:.2f}", flush=True)

    summary = {}
    for op, target in TARGETS.items():
        if op not in timed:
            continue
        speedups = [row["speedup"] for row in results if row["op"] == op]
        total_ref = sum(row["ref_ms"] for row in results if row["op"] == op)
        total_ext = sum(row["ext_ms"] for row in results if row["op"] == op)
        summary[op] = dict(min_speedup=min(speedups), geomean_speedup=round(statistics.geometric_mean(speedups), 2),
                           total_speedup=round(total_ref / total_ext, 2), target=target,
                           met=statistics.geometric_mean(speedups) >= target)
    report = dict(device=args.device, kernels=kernels, batch=batch, shrink=args.shrink, repeats=args.repeats, torch=torch.__version__,
                  threads=torch.get_num_threads(), load_average=os.getloadavg(), machine=platform.processor() or platform.machine(),
                  measure="median seconds of forward + backward", summary=summary, results=results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
