"""The StyleGAN2 training loop shared by the base (from scratch) and finetune stages.

One step, as NVlabs stylegan2-ada-pytorch's phases: D main (logistic loss on augmented reals
and fakes), D reg every r1_every steps (R1 through the augmentation), G main (non-saturating),
G reg every pl_every steps (path length), then G_ema and ADA's p. Adam's lr and betas are
corrected for lazy regularisation (lr * k/(k+1), beta ** (k/(k+1))), as in the paper.

Data parallel under torchrun (model/distributed.py): every rank runs this loop on batch / world
images and the gradients are averaged per optimiser step. Rank 0 writes checkpoints, snapshots
and sample grids, and calls the hooks.

Resume is bit-for-bit on CPU: a checkpoint holds G, D, G_ema, both Adam states, the step, ADA's
p and its statistics and the path-length mean. Every random draw of a step (z, style-mixing
cut, noise inputs, augmentations) comes from generators reseeded from (seed, step, rank) at the
start of the step, and the data order is a pure function of (seed, step) too (model/data.py),
so neither RNG streams nor loader positions need saving, and each rank draws differently.

model/ knows no pipeline: the settings come in as a TrainingSettings, and what the stage does
with metrics, grids and snapshots (DVCLive, Inception, picking a snapshot) goes through Hooks.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from styleforge.core.errors import UserError
from styleforge.core.grid import save_sheet, tile_for
from styleforge.core.io import atomic_write_json
from styleforge.model import losses
from styleforge.model.ada import AdaptiveAugment
from styleforge.model.checkpoint import load_checkpoint, save_checkpoint
from styleforge.model.data import ImageFolder, endless_batches
from styleforge.model.distributed import setup_ranks
from styleforge.model.freeze import freeze
from styleforge.model.generate import render, to_uint8
from styleforge.model.networks import Discriminator, Generator, ModelConfig, mixing_noise

PL_DECAY = 0.01  # path-length running-mean decay (StyleGAN2)
LATEST = "latest.pt"
SNAPSHOTS = "snapshots"
SNAPSHOT_INDEX = "snapshots.json"
log = logging.getLogger(__name__)


class NonFiniteLossError(UserError, RuntimeError):
    """A loss went NaN/inf; the last good checkpoint is left as it was."""


@dataclass(frozen=True)
class TrainingSettings:
    """Every setting of a run, said where it acts. The base and finetune stages fill it from their
    params section (`TrainingSettings.of(section)`); StyleGAN2 config F's values in brackets."""

    kimg: float  # length of the run in thousands of real images shown to D
    batch: int  # images per optimiser step over all ranks, a multiple of ranks [16 at 256x256 on one GPU]
    lr: float  # Adam learning rate, betas (0, 0.99), lazy-regularisation corrected [0.002]
    r1_gamma: float  # R1 weight [10 at 256x256; NVIDIA's auto rule 0.0002 * res^2 / batch]
    r1_every: int  # lazy R1: steps between R1 steps [16]
    pl_weight: float  # path-length regularisation weight; 0 turns it off [2]
    pl_every: int  # lazy path length: steps between its steps [4]
    pl_batch_shrink: int  # path-length batch = batch / this [2]
    style_mixing: float  # probability of mixing two z in one image [0.9]
    ema_kimg: float  # half-life of G_ema in thousands of images [10]
    augment_p: float  # initial ADA probability; the fixed one when ada_target is None [0]
    ada_target: float | None  # ADA's r_t target; None keeps augment_p fixed [0.6]
    ada_kimg: float  # ADA speed: kimg for p to move by 1 [500]
    ada_interval: int  # steps between ADA adjustments [4]
    checkpoint_every: int  # steps between resumable checkpoints (checkpoint_dir/latest.pt)
    sample_every: int  # steps between sample grids (samples_png)
    log_every: int  # steps averaged into one logged row and one tick line
    samples: int  # images in a sample grid, on fixed z
    snapshot_kimg: float  # kimg between kept snapshots: a numbered checkpoint and its grid [NVIDIA: 16]
    keep_snapshots: int  # snapshots kept: the newest ones, and the best by the hook's metric
    seed: int  # seeds the sample z, every step's draws and the data order
    device: str  # auto | cpu | cuda
    bf16: bool  # bf16 autocast for the G and D forward passes (GPU only)
    workers: int  # data-loader processes per rank

    @classmethod
    def of(cls, section) -> TrainingSettings:
        """The settings from any object carrying these names (a params section)."""
        return cls(**{f.name: getattr(section, f.name) for f in fields(cls)})


@dataclass
class Networks:
    config: ModelConfig
    g: Generator
    d: Discriminator
    g_ema: Generator


@dataclass
class Outputs:
    checkpoint_dir: Path  # latest.pt (what a resume starts from) and snapshots/ (kept, numbered)
    samples_png: Path  # G_ema on fixed z
    comparison_png: Path | None = None  # reference G vs G_ema on the same z (fine-tuning)


@dataclass
class Snapshot:
    step: int
    kimg: float
    checkpoint: Path  # the networks as the stage delivers them: no optimiser state
    grid: Path  # G_ema on the run's fixed z
    metrics: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"step": self.step, "kimg": self.kimg, "checkpoint": self.checkpoint.name, "grid": self.grid.name,
                "metrics": self.metrics}


@dataclass
class Hooks:
    """What the stage does with a run's figures; every hook is called on rank 0 only."""

    log: Callable[[int, float, dict[str, float]], None] | None = None  # (step, kimg, window means)
    sample_grid: Callable[[Path], None] | None = None  # a sample grid was (re)written
    snapshot_metrics: Callable[[Generator], dict[str, float]] | None = None  # figures of G_ema at a snapshot
    best_metric: str | None = None  # the snapshot_metrics key a lower value of which is better (kept)
    saved: Callable[[Path], None] | None = None  # a resumable checkpoint was written


@dataclass
class Phase:
    """One network's optimiser and the parameters it trains."""

    params: list[torch.nn.Parameter]
    optim: torch.optim.Adam

    def set_trainable(self, flag: bool) -> None:
        for p in self.params:
            p.requires_grad_(flag)


def make_phase(params: list[torch.nn.Parameter], lr: float, reg_every: int) -> Phase:
    ratio = reg_every / (reg_every + 1)
    return Phase(params, torch.optim.Adam(params, lr=lr * ratio, betas=(0.0, 0.99**ratio)))


@dataclass
class Trainer:
    nets: Networks
    params: TrainingSettings
    dataset_dir: Path
    outputs: Outputs
    frozen_g: set[str] = field(default_factory=set)
    frozen_d: set[str] = field(default_factory=set)
    reference_g: Generator | None = None  # the base generator, for the before/after grid
    hooks: Hooks = field(default_factory=Hooks)

    def __post_init__(self):
        p = self.params
        self.ranks = setup_ranks(p.device)
        if p.batch % self.ranks.world:
            raise ValueError(f"batch {p.batch} does not split over {self.ranks.world} ranks")
        self.per_rank = p.batch // self.ranks.world
        group = min(self.per_rank, self.nets.config.mbstd_group)
        if self.per_rank % group:
            raise ValueError(f"batch per rank {self.per_rank} is not a multiple of D's minibatch-stddev group "
                             f"{group}: choose a batch of {group} x ranks x n")
        dev = self.ranks.device
        self.g, self.d, self.g_ema = (m.to(dev) for m in (self.nets.g, self.nets.d, self.nets.g_ema))
        for module in (self.g, self.d, self.g_ema):
            self.ranks.broadcast_module_(module)
        self.g.train()
        self.g_ema.eval().requires_grad_(False)
        self.g_phase = make_phase(freeze(self.g, self.frozen_g), p.lr, p.pl_every)
        self.d_phase = make_phase(freeze(self.d, self.frozen_d), p.lr, p.r1_every)
        named_ema = dict(self.g_ema.named_parameters())
        self.ema_pairs = [(named_ema[n], q) for n, q in self.g.named_parameters() if n not in self.frozen_g]
        self.ada = AdaptiveAugment(p.ada_target or 0.6, p.ada_kimg, p.ada_interval, p.augment_p,
                                   adaptive=p.ada_target is not None).to(dev)
        self.pl_mean = torch.zeros((), device=dev)
        self.step = 0
        self.saved_step: int | None = None
        self.total_steps = max(1, round(p.kimg * 1000 / p.batch))
        self.snapshot_steps = max(1, round(p.snapshot_kimg * 1000 / p.batch))
        self.autocast = torch.autocast(device_type=dev.type, dtype=torch.bfloat16,
                                       enabled=p.bf16 and dev.type == "cuda")
        if p.bf16 and dev.type != "cuda":
            log.warning("bf16: ignored on the CPU (autocast is for the GPU)")
        gen = torch.Generator().manual_seed(p.seed)
        self.sample_z = torch.randn(p.samples, self.nets.config.style_dim, generator=gen).to(dev)

    def kimg_at(self, step: int) -> float:
        return step * self.params.batch / 1000

    # -- one step -----------------------------------------------------------------------------
    def _fake(self, batch: int, return_latents: bool = False):
        z = mixing_noise(batch, self.nets.config.style_dim, self.params.style_mixing, self.ranks.device)
        with self.autocast:
            latents = self.g.broadcast([self.g.get_latent(s) for s in z])
            if return_latents and not latents.requires_grad:  # frozen mapping: make W+ a leaf
                latents.requires_grad_(True)
            images = self.g.synthesis(latents).float()
        return images, latents

    def _logits(self, images: torch.Tensor) -> torch.Tensor:
        augmented = self.ada(images)  # in fp32: its 3x3/4x4 transform matrices need the precision
        with self.autocast:
            return self.d(augmented).float()

    def _update(self, phase: Phase, loss: torch.Tensor) -> None:
        phase.optim.zero_grad(set_to_none=True)
        loss.backward()
        self.ranks.average_grads(phase.params)
        phase.optim.step()

    def _reseed(self) -> None:
        """Seed torch (CPU and CUDA) and Python's random from (seed, step, rank) for this step."""
        step_seed = ((self.params.seed * 1_000_003 + self.step) * 1_009 + self.ranks.rank) % 2**63
        torch.manual_seed(step_seed)
        random.seed(step_seed)

    def train_step(self, reals: torch.Tensor) -> dict[str, float]:
        p, step = self.params, self.step
        self._reseed()
        stats = {}
        self.g_phase.set_trainable(False)
        self.d_phase.set_trainable(True)
        fakes, _ = self._fake(self.per_rank)
        real_logits = self._logits(reals)
        fake_logits = self._logits(fakes.detach())
        stats["loss_d"] = losses.discriminator_loss(real_logits, fake_logits)
        stats["d_real"], stats["d_fake"] = real_logits.detach().mean(), fake_logits.detach().mean()
        self.ada.observe(real_logits)
        self._update(self.d_phase, stats["loss_d"])

        if p.r1_gamma > 0 and step % p.r1_every == 0:
            reals_r1 = reals.detach().requires_grad_(True)
            stats["r1"] = losses.r1_penalty(self._logits(reals_r1), reals_r1)
            self._update(self.d_phase, stats["r1"] * (p.r1_gamma / 2 * p.r1_every))

        self.g_phase.set_trainable(True)
        self.d_phase.set_trainable(False)
        fakes, _ = self._fake(self.per_rank)
        stats["loss_g"] = losses.generator_loss(self._logits(fakes))
        self._update(self.g_phase, stats["loss_g"])

        if p.pl_weight > 0 and step % p.pl_every == 0:
            fakes, latents = self._fake(max(1, self.per_rank // p.pl_batch_shrink), return_latents=True)
            lengths = losses.path_lengths(fakes, latents)
            batch_mean = self.ranks.all_reduce_(lengths.detach().mean()) / self.ranks.world
            self.pl_mean = self.pl_mean.lerp(batch_mean, PL_DECAY)
            stats["pl"] = losses.path_length_penalty(lengths, self.pl_mean)
            stats["pl_mean"] = self.pl_mean
            self._update(self.g_phase, stats["pl"] * (p.pl_weight * p.pl_every))

        self._ema()
        self.step += 1
        if self.step % p.ada_interval == 0:
            self.ada.adjust(self.ranks.all_reduce_)
        return self._gather(stats)

    @torch.no_grad()
    def _ema(self) -> None:
        """G_ema follows G with a half-life of ema_kimg thousand images; frozen layers stay put."""
        decay = 0.5 ** (self.params.batch / (self.params.ema_kimg * 1000))
        for p_ema, p in self.ema_pairs:
            p_ema.lerp_(p, 1 - decay)
        # Each rank moved w_avg toward its own batches' mean W; the update is affine in those
        # means, so averaging over ranks gives exactly the global batch's update.
        self.g.w_avg.copy_(self.ranks.all_reduce_(self.g.w_avg.clone()) / self.ranks.world)
        self.g_ema.w_avg.copy_(self.g.w_avg)

    def _gather(self, stats: dict[str, torch.Tensor]) -> dict[str, float]:
        """Average the step's numbers over ranks; stop every rank together if one is not finite."""
        names = sorted(stats)
        values = self.ranks.all_reduce_(torch.stack([stats[n].detach().float() for n in names]))
        values = (values / self.ranks.world).tolist()
        out = dict(zip(names, values, strict=True))
        bad = {n: v for n, v in out.items() if not math.isfinite(v)}
        if bad:
            kept = f"{self.checkpoint_path} (step {self.saved_step})" if self.saved_step is not None else "none yet"
            raise NonFiniteLossError(
                f"step {self.step - 1}: non-finite {', '.join(f'{n}={v}' for n, v in bad.items())}; "
                f"stopped without saving. Last good checkpoint: {kept}. Lower lr, raise r1_gamma, "
                "or check the data, then rerun to resume from it.")
        return out

    # -- checkpoints and snapshots ----------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.outputs.checkpoint_dir / LATEST

    @property
    def snapshot_dir(self) -> Path:
        return self.outputs.checkpoint_dir / SNAPSHOTS

    def save(self) -> None:
        if self.ranks.rank != 0:
            return
        # pl_mean rides in the augment dict: checkpoint.py has no slot for other loop state
        save_checkpoint(self.checkpoint_path, self.nets.config, self.g, self.d, self.g_ema,
                        g_optim=self.g_phase.optim, d_optim=self.d_phase.optim, step=self.step,
                        augment={**self.ada.state(), "pl_mean": float(self.pl_mean)})
        self.saved_step = self.step
        if self.hooks.saved:
            self.hooks.saved(self.checkpoint_path)

    def resume(self) -> bool:
        """Continue from checkpoint_dir/latest.pt if there is one; True if it did."""
        if not self.checkpoint_path.exists():
            return False
        ckpt = load_checkpoint(self.checkpoint_path, config=self.nets.config, map_location=self.ranks.device)
        for module, state in ((self.g, ckpt.g), (self.d, ckpt.d), (self.g_ema, ckpt.g_ema)):
            module.load_state_dict(state.state_dict())
        self.g_phase.optim.load_state_dict(ckpt.g_optim)
        self.d_phase.optim.load_state_dict(ckpt.d_optim)
        self.ada.load_state(ckpt.augment)
        self.pl_mean.fill_(ckpt.augment["pl_mean"])
        self.step = self.saved_step = ckpt.step
        log.info("resuming from %s at step %d (%.3f kimg)", self.checkpoint_path, self.step, self.kimg_at(self.step))
        return True

    def snapshots(self) -> list[Snapshot]:
        """The kept snapshots of this run, oldest first (read back from snapshots.json)."""
        index = self.snapshot_dir / SNAPSHOT_INDEX
        if not index.exists():
            return []
        return [Snapshot(e["step"], e["kimg"], self.snapshot_dir / e["checkpoint"], self.snapshot_dir / e["grid"],
                         e["metrics"]) for e in json.loads(index.read_text())]

    @torch.no_grad()
    def take_snapshot(self) -> Snapshot:
        """A numbered checkpoint (networks, no optimisers) and its sample grid, kept; the hook's
        metrics recorded; the oldest beyond keep_snapshots dropped, the best by metric kept."""
        name = f"snapshot-{self.step:07d}"
        snapshot = Snapshot(self.step, round(self.kimg_at(self.step), 3), self.snapshot_dir / f"{name}.pt",
                            self.snapshot_dir / f"{name}.png")
        save_checkpoint(snapshot.checkpoint, self.nets.config, self.g, self.d, self.g_ema, step=self.step,
                        augment=self.ada.state())
        save_sheet(snapshot.grid, render_z(self.g_ema, self.sample_z), tile=tile_for(self.nets.config.size), cols=8)
        if self.hooks.snapshot_metrics:
            snapshot.metrics = self.hooks.snapshot_metrics(self.g_ema)
        kept = [s for s in self.snapshots() if s.step != self.step] + [snapshot]
        for dropped in self._beyond_keep(kept):
            dropped.checkpoint.unlink(missing_ok=True)
            dropped.grid.unlink(missing_ok=True)
            kept.remove(dropped)
        atomic_write_json(self.snapshot_dir / SNAPSHOT_INDEX, [s.to_json() for s in kept])
        log.info("snapshot %s at %.3f kimg%s", snapshot.checkpoint.name, snapshot.kimg,
                 "".join(f", {k} {v:.4g}" for k, v in snapshot.metrics.items()))
        return snapshot

    def _beyond_keep(self, kept: list[Snapshot]) -> list[Snapshot]:
        metric = self.hooks.best_metric
        scored = [s for s in kept if metric and isinstance(s.metrics.get(metric), (int, float))]
        best = min(scored, key=lambda s: s.metrics[metric]) if scored else None
        newest = kept[-self.params.keep_snapshots:]
        return [s for s in kept if s not in newest and s is not best]

    # -- the run ------------------------------------------------------------------------------
    def run(self) -> dict:
        """Train to params.kimg (resuming if a checkpoint of this run exists); return a summary."""
        p = self.params
        resumed_from = self.step if self.resume() else None
        dataset = ImageFolder(self.dataset_dir, self.nets.config.size)
        batches = endless_batches(dataset, p.batch, p.seed, p.workers, self.ranks, self.step)
        writer = self.ranks.rank == 0
        window: dict[str, list[float]] = defaultdict(list)
        first_step, train_seconds, window_seconds = self.step, 0.0, 0.0
        total_kimg = self.kimg_at(self.total_steps)
        if self.step > self.total_steps:  # kimg lowered after the run got further: it ends where it is
            log.info("this run is at %.3f kimg, past kimg %.3f: nothing left to train", self.kimg_at(self.step),
                     total_kimg)
        bar = tqdm(total=round(total_kimg, 3), initial=round(min(self.kimg_at(self.step), total_kimg), 3), unit="kimg",
                   disable=not writer, bar_format="{l_bar}{bar}| {n:.3f}/{total:.3f} kimg [{elapsed}<{remaining}{postfix}]")
        while self.step < self.total_steps:
            started = time.perf_counter()
            reals = next(batches).to(self.ranks.device, non_blocking=True).float() / 127.5 - 1
            for name, value in self.train_step(reals).items():
                window[name].append(value)
            seconds = time.perf_counter() - started
            train_seconds, window_seconds = train_seconds + seconds, window_seconds + seconds
            bar.update(round(self.kimg_at(self.step), 3) - bar.n)
            if writer and (self.step % p.log_every == 0 or self.step == self.total_steps):
                self._tick(window, window_seconds, bar, train_seconds, first_step)
                window, window_seconds = defaultdict(list), 0.0
            if self.step % p.checkpoint_every == 0:
                self.save()
            if writer and self.step % self.snapshot_steps == 0 and self.step < self.total_steps:
                self.take_snapshot()
            if writer and self.step % p.sample_every == 0 and self.step < self.total_steps:
                self.write_samples()
        bar.close()
        if self.saved_step != self.step:
            self.save()
        if writer:  # also when a rerun finds the run already complete
            if not any(s.step == self.step for s in self.snapshots()):
                self.take_snapshot()
            self.write_samples()
        self.ranks.end()
        images = (self.step - first_step) * p.batch
        return {
            "steps": self.step, "kimg": round(self.kimg_at(self.step), 3), "resumed_from_step": resumed_from,
            "images_per_s": round(images / train_seconds, 3) if train_seconds else None,
            "sec_per_kimg": round(train_seconds * 1000 / images, 2) if images else None,
            "ada_p": round(self.ada.p, 4), "pl_mean": round(float(self.pl_mean), 4),
            "dataset_images": len(dataset), "ranks": self.ranks.world, "device": str(self.ranks.device),
            "trainable_params": {"g": sum(q.numel() for q in self.g_phase.params),
                                 "d": sum(q.numel() for q in self.d_phase.params)},
            "frozen_tensors": {"g": len(self.frozen_g), "d": len(self.frozen_d)},
            "snapshots": [s.to_json() for s in self.snapshots()] if writer else [],
        }

    def _tick(self, window: dict[str, list[float]], seconds: float, bar: tqdm, train_seconds: float,
              first_step: int) -> None:
        """One row of figures: to the hook (DVCLive), the bar, and a tick line in the log, as
        NVIDIA's training loop prints them."""
        steps = max(len(v) for v in window.values())
        kimg = self.kimg_at(self.step)
        stats = {name: sum(values) / len(values) for name, values in window.items()}
        sec_per_kimg = seconds * 1000 / (steps * self.params.batch)
        stats |= {"ada_p": self.ada.p, "ada_rt": self.ada.rt, "kimg": kimg,
                  "images_per_s": steps * self.params.batch / seconds, "sec_per_kimg": sec_per_kimg}
        if self.hooks.log:
            self.hooks.log(self.step, kimg, stats)
        left_s = (self.total_steps - self.step) * self.params.batch * sec_per_kimg / 1000
        bar.set_postfix_str(f"G {stats['loss_g']:.3f} D {stats['loss_d']:.3f} p {self.ada.p:.3f} "
                            f"{sec_per_kimg:.1f} s/kimg", refresh=False)
        log.info("step %-6d kimg %8.3f/%.3f  loss G %.4f D %.4f%s%s  ada p %.3f  sec/kimg %.2f  time %s  left %s",
                 self.step, kimg, self.kimg_at(self.total_steps), stats["loss_g"], stats["loss_d"],
                 f"  r1 {stats['r1']:.4f}" if "r1" in stats else "", f"  pl {stats['pl']:.4f}" if "pl" in stats else "",
                 self.ada.p, sec_per_kimg, _clock(train_seconds), _clock(left_s))

    @torch.no_grad()
    def write_samples(self) -> None:
        """G_ema on the fixed z (constant noise), and beside the reference G on the same z."""
        tuned = render_z(self.g_ema, self.sample_z)
        tile = tile_for(self.nets.config.size)
        save_sheet(self.outputs.samples_png, tuned, tile=tile, cols=8)
        if self.hooks.sample_grid:
            self.hooks.sample_grid(self.outputs.samples_png)
        if self.reference_g is not None and self.outputs.comparison_png is not None:
            count = min(8, len(tuned))
            before = render_z(self.reference_g.to(self.ranks.device).eval(), self.sample_z[:count])
            save_sheet(self.outputs.comparison_png, [*before, *tuned[:count]], ["base"] * count + ["tuned"] * count,
                       tile=tile, cols=count)


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


@torch.no_grad()
def render_z(g: Generator, z: torch.Tensor) -> np.ndarray:
    """uint8 HWC images of g on z (no truncation) with g's constant noise: a grid depends on z alone."""
    return to_uint8(render(g, g.broadcast([g.style(z)])))
