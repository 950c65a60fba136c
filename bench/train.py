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

Side by side with rosinality's stylegan2-pytorch (the "rosinality" row of the JSON):

    python bench/train.py --peer-rosinality PATH [--peer-size 64] [--peer-batch 8] [--peer-steps 16]
                          [--peer-warmup 1] [--peer-only] [--profile]

--peer-rosinality PATH   a checkout of rosinality/stylegan2-pytorch (model.py, train.py, op/). Its
                         code is imported from there, never copied here; without the flag the row
                         says {"skipped": "no --peer-rosinality PATH given"}.
--peer-size/--peer-batch/--peer-steps  the row's setting: 64x64 config F (style_dim 512, n_mlp 8,
                         channel_multiplier 2 on both sides), batch 8, 16 timed steps by default.
--peer-warmup N          untimed steps before the timed ones (default 1).
--peer-only              skip the ref/cpp rows (a peer run alone).
--profile                one more worker of ours under torch.profiler: where the step's CPU time
                         goes (conv, upfirdn2d, bias-act, Adam, EMA, ...) and, from the per-step
                         timings, the shares of D/G main, lazy R1 and lazy path length ("profile").

Both sides run one training step as their loops do, no ADA (ours: augment_p 0, ada_target None;
theirs: args.augment off), Adam lr 0.002, betas (0, 0.99) with the lazy-regularisation
correction, R1 (gamma 10) every 16 steps, path length (weight 2, batch / 2) every 4, style
mixing 0.9, then G_ema. Ours is Trainer.train_step with the default op choice; theirs mirrors
the body of their train.py's loop with the loss functions imported from their train.py. Their
op/ builds CUDA extensions at import; the worker imports their own op/ files with
torch.utils.cpp_extension.load stubbed out, so their CPU branches (upfirdn2d_native, the CPU
branch of fused_leaky_relu, conv2d_gradfix's F.conv2d fallback) run, as they would on any CPU.
Each step's CPU and wall seconds are kept; a 16-step cycle (1 R1 + path-length step, 3 path-length
steps, 12 plain ones) is computed from the per-kind means, which is exactly the timed total when
--peer-steps is a multiple of 16 starting on an R1 step, and an estimate in the true proportion
otherwise (--peer-steps >= 5 covers every kind). speedup_over_rosinality compares those cycles on
CPU seconds (like speedup_clock), the fastest round of each side kept, sides alternated over
--rounds. Per side: sec_per_kimg, images_per_s, cpu_seconds over the timed steps, the cycle's
cycle_sec_per_kimg and cycle_cpu_sec_per_kimg, and every step's seconds (per_step). Workers use
OMP_NUM_THREADS torch threads when it is set. Cost on one CPU core at the defaults: about 50 CPU s
per plain step of ours at 64x64 batch 8 and 1.5-2x that for theirs, so a 16-step, 2-round run
takes about two hours; `--peer-steps 5 --rounds 1` about half an hour (--profile adds one more
run of ours). --profile works without --peer-rosinality too.
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
# The side-by-side row's schedule: rosinality's train.py defaults, which ours shares
R1_EVERY, PL_EVERY, R1_GAMMA, PL_WEIGHT, PL_SHRINK, MIXING, LR = 16, 4, 10.0, 2.0, 2, 0.9, 0.002
PEER = dict(size=64, batch=8, steps=16, warmup=1)
SIDES = ("ours", "rosinality")


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


def step_kind(step: int) -> str:
    if step % R1_EVERY == 0:
        return "r1+pl" if step % PL_EVERY == 0 else "r1"
    return "pl" if step % PL_EVERY == 0 else "plain"


def timed_steps(step_fn, warmup: int, steps: int) -> list[dict]:
    """Run step_fn(i) for warm-up steps 0..warmup-1, then for the timed steps 0..steps-1 (the timed
    ones start on an R1 + path-length step, like the schedule); each timed step's seconds."""
    for i in range(warmup):
        step_fn(i)
    records = []
    for i in range(steps):
        started, cpu_started = time.perf_counter(), time.process_time()
        step_fn(i)
        records.append({"kind": step_kind(i), "s": time.perf_counter() - started,
                        "cpu_s": time.process_time() - cpu_started})
    return records


CYCLE = {"r1+pl": 1, "pl": R1_EVERY // PL_EVERY - 1, "plain": R1_EVERY - R1_EVERY // PL_EVERY}  # steps of each kind


def kind_means(records: list[dict], clock: str) -> dict[str, float] | None:
    """Mean seconds of each kind of step in a cycle; None unless every kind was timed."""
    values = {kind: [r[clock] for r in records if r["kind"] == kind] for kind in CYCLE}
    return None if not all(values.values()) else {kind: sum(v) / len(v) for kind, v in values.items()}


def cycle(records: list[dict], clock: str) -> float | None:
    """Seconds of one 16-step cycle in its true proportion (1 R1 + path-length step, 3 path-length
    steps, 12 plain) from the per-kind means; None unless every kind was timed."""
    means = kind_means(records, clock)
    return None if means is None else sum(CYCLE[k] * means[k] for k in CYCLE)


def phase_shares(records: list[dict]) -> dict | None:
    """Shares of a 16-step cycle's CPU time: D + G main (and EMA) every step, lazy path length
    (a path-length step minus a plain one, 4 per cycle) and lazy R1 (the R1 step minus a
    path-length step, once per cycle)."""
    total = cycle(records, "cpu_s")
    if not total:
        return None
    mean = kind_means(records, "cpu_s")
    pl = (R1_EVERY // PL_EVERY) * (mean["pl"] - mean["plain"])
    r1 = mean["r1+pl"] - mean["pl"]
    return {"d_g_main_ema": round(R1_EVERY * mean["plain"] / total, 3), "path_length": round(pl / total, 3),
            "r1": round(r1 / total, 3), "cycle_cpu_s": round(total, 2),
            "step_cpu_s": {k: round(v, 2) for k, v in mean.items()}}


def make_trainer(tmp: str, model: str, size: int, batch: int, device: str = "cpu", bf16: bool = False,
                 augment_p: float = 0.0):
    from styleforge.core.config import FinetuneParams
    from styleforge.model.checkpoint import build_networks
    from styleforge.model.networks import ModelConfig
    from styleforge.model.train import Networks, Outputs, Trainer, TrainingSettings

    config = ModelConfig(size=size, **MODELS[model])
    torch.manual_seed(0)
    params = FinetuneParams(batch=batch, device=device, bf16=bf16, augment_p=augment_p, ada_target=None,
                            freeze_d=0, workers=0, lr=LR, r1_gamma=R1_GAMMA, r1_every=R1_EVERY, pl_weight=PL_WEIGHT,
                            pl_every=PL_EVERY, pl_batch_shrink=PL_SHRINK, style_mixing=MIXING)
    trainer = Trainer(Networks(config, *build_networks(config)), TrainingSettings.of(params), Path(tmp),
                      Outputs(Path(tmp) / "ckpt", Path(tmp) / "s.png"))
    reals = torch.rand(trainer.per_rank, 3, config.size, config.size, device=trainer.ranks.device) * 2 - 1
    return trainer, reals, config


def measure_ours(size: int, batch: int, steps: int, warmup: int) -> dict:
    """Worker: our Trainer.train_step at config F, no ADA, on the CPU."""
    from styleforge.model.ops import backend

    with tempfile.TemporaryDirectory() as tmp:
        trainer, reals, config = make_trainer(tmp, "f", size, batch)

        def step(i: int) -> None:
            trainer.step = i
            trainer.train_step(reals)

        records = timed_steps(step, warmup, steps)
    return {"side": "ours", "backend": backend("cpu"), "config": config.to_dict(), **summary(records, batch)}


def summary(records: list[dict], batch: int) -> dict:
    import resource

    return {"steps": len(records), "batch": batch, "threads": torch.get_num_threads(),
            "seconds": round(sum(r["s"] for r in records), 3), "cpu_seconds": round(sum(r["cpu_s"] for r in records), 3),
            "cycle_s": round(cycle(records, "s") or 0, 3) or None,
            "cycle_cpu_s": round(cycle(records, "cpu_s") or 0, 3) or None,
            "per_step": [{"kind": r["kind"], "s": round(r["s"], 3), "cpu_s": round(r["cpu_s"], 3)} for r in records],
            "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2)}


def import_rosinality(checkout: Path):
    """Import rosinality's model.py and train.py from a checkout, unmodified, on a CPU-only box.

    Their op/__init__ imports fused_act.py and upfirdn2d.py, which call
    torch.utils.cpp_extension.load(...) at import to build CUDA sources: that call is what fails
    here. Their files are loaded as they are with `load` replaced, for the import only, by a
    stub whose extension raises if touched. On CPU tensors their code never touches it: their
    upfirdn2d() runs upfirdn2d_native, fused_leaky_relu() takes its `device.type == "cpu"` branch
    and conv2d_gradfix falls back to F.conv2d (could_use_op is False off CUDA). So the op/
    package that runs is their own, first on sys.path as `op`, on their native pure-PyTorch
    paths. train.py's module-level imports that are absent here and unused by the loop body
    (torchvision's transforms/utils for sample grids, lmdb for their dataset) get empty stand-ins.
    """
    import importlib
    import types

    import torch.utils.cpp_extension as cpp_extension

    class NoExtension:
        def __init__(self, name):
            self.name = name

        def __getattr__(self, attr):
            raise RuntimeError(f"rosinality's CUDA extension {self.name!r} was called on the CPU")

    for name in ("torchvision", "lmdb"):
        try:
            importlib.import_module(name)
        except ImportError:
            stub = types.ModuleType(name)
            if name == "torchvision":
                stub.transforms = types.ModuleType("torchvision.transforms")
                stub.utils = types.ModuleType("torchvision.utils")
            sys.modules[name] = stub
    for clash in ("model", "train", "op", "dataset", "distributed", "non_leaking"):  # theirs, not ours
        sys.modules.pop(clash, None)
    sys.path.insert(0, str(checkout))
    real_load = cpp_extension.load
    cpp_extension.load = lambda name, *args, **kwargs: NoExtension(name)
    try:
        model = importlib.import_module("model")
        train = importlib.import_module("train")
    finally:
        cpp_extension.load = real_load
    assert Path(model.__file__).parent == checkout and Path(train.__file__).parent == checkout
    return model, train


def measure_rosinality(checkout: Path, size: int, batch: int, steps: int, warmup: int) -> dict:
    """Worker: the body of rosinality's train.py loop (args.augment off), their functions."""
    from torch import optim

    model, train = import_rosinality(checkout)
    torch.manual_seed(0)
    latent, n_mlp, channel_multiplier = 512, 8, 2  # their train.py's settings (config F)
    generator = model.Generator(size, latent, n_mlp, channel_multiplier=channel_multiplier)
    discriminator = model.Discriminator(size, channel_multiplier=channel_multiplier)
    g_ema = model.Generator(size, latent, n_mlp, channel_multiplier=channel_multiplier)
    g_ema.eval()
    train.accumulate(g_ema, generator, 0)
    g_reg_ratio, d_reg_ratio = PL_EVERY / (PL_EVERY + 1), R1_EVERY / (R1_EVERY + 1)
    g_optim = optim.Adam(generator.parameters(), lr=LR * g_reg_ratio, betas=(0 ** g_reg_ratio, 0.99 ** g_reg_ratio))
    d_optim = optim.Adam(discriminator.parameters(), lr=LR * d_reg_ratio, betas=(0 ** d_reg_ratio, 0.99 ** d_reg_ratio))
    accum = 0.5 ** (32 / (10 * 1000))
    reals = torch.rand(batch, 3, size, size) * 2 - 1
    device = "cpu"
    state = {"mean_path_length": 0}

    def step(i: int) -> None:  # their loop body, args.augment False, logging reduced to the .item() calls
        loss_dict = {}
        real_img = reals.clone()
        train.requires_grad(generator, False)
        train.requires_grad(discriminator, True)
        noise = train.mixing_noise(batch, latent, MIXING, device)
        fake_img, _ = generator(noise)
        fake_pred = discriminator(fake_img)
        real_pred = discriminator(real_img)
        d_loss = train.d_logistic_loss(real_pred, fake_pred)
        loss_dict["d"] = d_loss
        loss_dict["real_score"] = real_pred.mean()
        loss_dict["fake_score"] = fake_pred.mean()
        discriminator.zero_grad()
        d_loss.backward()
        d_optim.step()

        if i % R1_EVERY == 0:
            real_img.requires_grad = True
            real_pred = discriminator(real_img)
            r1_loss = train.d_r1_loss(real_pred, real_img)
            discriminator.zero_grad()
            (R1_GAMMA / 2 * r1_loss * R1_EVERY + 0 * real_pred[0]).backward()
            d_optim.step()
            loss_dict["r1"] = r1_loss

        train.requires_grad(generator, True)
        train.requires_grad(discriminator, False)
        noise = train.mixing_noise(batch, latent, MIXING, device)
        fake_img, _ = generator(noise)
        fake_pred = discriminator(fake_img)
        g_loss = train.g_nonsaturating_loss(fake_pred)
        loss_dict["g"] = g_loss
        generator.zero_grad()
        g_loss.backward()
        g_optim.step()

        if i % PL_EVERY == 0:
            path_batch_size = max(1, batch // PL_SHRINK)
            noise = train.mixing_noise(path_batch_size, latent, MIXING, device)
            fake_img, latents = generator(noise, return_latents=True)
            path_loss, state["mean_path_length"], path_lengths = train.g_path_regularize(
                fake_img, latents, state["mean_path_length"])
            generator.zero_grad()
            weighted_path_loss = PL_WEIGHT * PL_EVERY * path_loss
            weighted_path_loss += 0 * fake_img[0, 0, 0, 0]
            weighted_path_loss.backward()
            g_optim.step()
            loss_dict["path"] = path_loss
            loss_dict["path_length"] = path_lengths.mean()

        train.accumulate(g_ema, generator, accum)
        for value in loss_dict.values():
            value.mean().item()

    records = timed_steps(step, warmup, steps)
    config = {"size": size, "style_dim": latent, "n_mlp": n_mlp, "channel_multiplier": channel_multiplier,
              "channels": {str(k): v for k, v in generator.channels.items() if k <= size}}
    return {"side": "rosinality", "checkout": str(checkout), "config": config, **summary(records, batch)}


def profile_ours(size: int, batch: int, steps: int, warmup: int) -> dict:
    """Worker: our step under torch.profiler; self CPU time by what it is, and phase shares."""
    from torch.profiler import ProfilerActivity, profile, record_function

    from styleforge.model import layers

    labels = {layers.ModulatedConv2d: "modulated conv (modulation, demod, conv)", layers.Blur: "upfirdn2d",
              layers.Upsample: "upfirdn2d", layers.FusedLeakyReLU: "bias-act", layers.EqualConv2d: "D conv",
              layers.EqualLinear: "linear (mapping, affine, D head)", layers.NoiseInjection: "noise injection"}
    for cls, label in labels.items():
        def labelled(self, *args, _forward=cls.forward, _label=label, **kwargs):
            with record_function(f"bench::{_label}"):
                return _forward(self, *args, **kwargs)
        cls.forward = labelled
    with tempfile.TemporaryDirectory() as tmp:
        trainer, reals, _ = make_trainer(tmp, "f", size, batch)
        ema = trainer._ema

        def labelled_ema():
            with record_function("bench::G_ema"):
                ema()
        trainer._ema = labelled_ema

        def step(i: int) -> None:
            trainer.step = i
            trainer.train_step(reals)

        for i in range(warmup):
            step(i)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            records = timed_steps(step, 0, steps)
    shares: dict[str, float] = {}
    for event in prof.events():
        label = categorise(event)
        shares[label] = shares.get(label, 0.0) + event.self_cpu_time_total
    total = sum(shares.values()) or 1.0
    return {"ops": {k: round(v / total, 3) for k, v in sorted(shares.items(), key=lambda kv: -kv[1])},
            "ops_note": "self CPU time under torch.profiler by innermost labelled range; backward by autograd "
                        "node (conv backward counts G's modulated and D's convs together)",
            "phases": phase_shares(records),
            "data": "not in the step: the bench feeds a fixed tensor; training decodes in loader workers"}


BACKWARD_NODES = (("UpFirDn", "upfirdn2d"), ("FusedLeakyReLU", "bias-act"), ("LeakyRelu", "bias-act"),
                  ("Convolution", "conv backward (G modulated + D)"))


def categorise(event) -> str:
    node = event
    while node is not None:
        name = node.name
        if name.startswith("bench::"):
            return name[len("bench::"):]
        if name.startswith("Optimizer.step"):
            return "Adam"
        if "evaluate_function" in name:
            return next((label for key, label in BACKWARD_NODES if key in name), "backward, other (elementwise)")
        node = node.cpu_parent
    return "other (losses, style mixing, minibatch stddev, ...)"


def worker_cmd(device: str, steps: int, bf16: bool, model: str, size: int, batch: int) -> list[str]:
    cmd = [sys.executable, __file__, "--worker", "--device", device, "--steps", str(steps), "--config", model,
           "--size", str(size), "--batch", str(batch)]
    return cmd + (["--bf16"] if bf16 else [])


def run_worker(side: str, args) -> dict:
    cmd = [sys.executable, __file__, "--worker-side", side, "--peer-size", str(args.peer_size), "--peer-batch",
           str(args.peer_batch), "--peer-steps", str(args.peer_steps), "--peer-warmup", str(args.peer_warmup)]
    if args.peer_rosinality:
        cmd += ["--peer-rosinality", str(args.peer_rosinality)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{side} worker failed:\n{proc.stderr[-3000:]}")
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    print(side, json.dumps({k: v for k, v in out.items() if k != "per_step"}), file=sys.stderr)
    return out


def side_by_side(args, rounds: int) -> dict:
    """Our full step against rosinality's train.py step, same setting and CPU, sides alternated."""
    if args.peer_rosinality is None:
        return {"skipped": "no --peer-rosinality PATH given"}
    checkout = args.peer_rosinality
    if not (checkout / "model.py").is_file() or not (checkout / "train.py").is_file() or not (checkout / "op").is_dir():
        raise SystemExit(f"--peer-rosinality {checkout}: not a stylegan2-pytorch checkout (model.py, train.py, op/)")
    runs_of: dict[str, list[dict]] = {side: [] for side in SIDES}
    for index in range(rounds):
        for side in SIDES if index % 2 == 0 else SIDES[::-1]:
            runs_of[side].append(run_worker(side, args))
    rows = {}
    for side, runs in runs_of.items():
        best = min(runs, key=lambda r: r["cycle_cpu_s"] or r["cpu_seconds"])
        images = best["steps"] * best["batch"]
        cycle_images = R1_EVERY * best["batch"]
        cpu_s, wall_s = best["cycle_cpu_s"], best["cycle_s"]
        rows[side] = {**best, "rounds_cpu_s": [r["cpu_seconds"] for r in runs],
                      "rounds_cycle_cpu_s": [r["cycle_cpu_s"] for r in runs],
                      "images_per_s": round(images / best["seconds"], 4),
                      "sec_per_kimg": round(best["seconds"] * 1000 / images, 1),
                      "cpu_sec_per_kimg": round(best["cpu_seconds"] * 1000 / images, 1),
                      "cycle_sec_per_kimg": round(wall_s * 1000 / cycle_images, 1) if wall_s else None,
                      "cycle_cpu_sec_per_kimg": round(cpu_s * 1000 / cycle_images, 1) if cpu_s else None,
                      "cycle_images_per_cpu_s": round(cycle_images / cpu_s, 4) if cpu_s else None}
    ours, theirs = rows["ours"], rows["rosinality"]
    ratio = round(theirs["cycle_cpu_s"] / ours["cycle_cpu_s"], 3) if ours["cycle_cpu_s"] and theirs["cycle_cpu_s"] else None
    return {
        "setting": {"size": args.peer_size, "batch": args.peer_batch, "steps": args.peer_steps,
                    "warmup": args.peer_warmup, "rounds": rounds, "config": "F (style_dim 512, n_mlp 8, channel_multiplier 2)",
                    "schedule": f"R1 gamma {R1_GAMMA} every {R1_EVERY}, path length {PL_WEIGHT} every {PL_EVERY} on "
                                f"batch/{PL_SHRINK}, mixing {MIXING}, Adam lr {LR} betas (0, 0.99) lazy-corrected, "
                                "G_ema, no ADA",
                    "threads": int(os.environ.get("OMP_NUM_THREADS") or torch.get_num_threads())},
        "measure": "fastest round by CPU seconds of a 16-step cycle (1 R1 + path-length step, 3 path-length, "
                   "12 plain; per-kind means of the timed steps)",
        "speedup_over_rosinality": ratio, "speedup_clock": "cycle_cpu_s",
        "ours": ours, "rosinality": theirs,
    }


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
    parser.add_argument("--peer-rosinality", type=Path, metavar="PATH",
                        help="a rosinality/stylegan2-pytorch checkout: adds the side-by-side row")
    parser.add_argument("--peer-size", type=int, default=PEER["size"], help="side-by-side image size (default: 64)")
    parser.add_argument("--peer-batch", type=int, default=PEER["batch"], help="side-by-side batch (default: 8)")
    parser.add_argument("--peer-steps", type=int, default=PEER["steps"], help="side-by-side timed steps (default: 16)")
    parser.add_argument("--peer-warmup", type=int, default=PEER["warmup"], help="side-by-side warm-up steps (default: 1)")
    parser.add_argument("--peer-only", action="store_true", help="skip the ref/cpp rows")
    parser.add_argument("--profile", action="store_true", help="profile our side-by-side step (JSON 'profile')")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker-side", choices=[*SIDES, "profile"], help=argparse.SUPPRESS)
    parser.add_argument("--bf16", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    peer_shape = (args.peer_size, args.peer_batch, args.peer_steps, args.peer_warmup)
    if args.worker_side:
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS") or torch.get_num_threads()))
        if args.worker_side == "ours":
            out = measure_ours(*peer_shape)
        elif args.worker_side == "rosinality":
            out = measure_rosinality(args.peer_rosinality.resolve(), *peer_shape)
        else:
            out = profile_ours(*peer_shape)
        print(json.dumps(out))
        return
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
    for bf16 in [] if args.peer_only else spec["variants"]:
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
        "rosinality": side_by_side(args, rounds),
    }
    if args.profile:
        report["profile"] = run_worker("profile", args)
    report["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
