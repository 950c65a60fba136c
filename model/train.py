"""The StyleGAN2 training loop shared by the base (from scratch) and finetune stages.

One step, as NVlabs stylegan2-ada-pytorch's phases: D main (logistic loss on augmented reals
and fakes), D reg every r1_every steps (R1 through the augmentation), G main (non-saturating),
G reg every pl_every steps (path length), then G_ema and ADA's p. Adam's lr and betas are
corrected for lazy regularisation (lr * k/(k+1), beta ** (k/(k+1))), as in the paper.

Data parallel: launched by torchrun, every rank runs this loop on batch / world images and the
gradients are averaged by one flat all_reduce per optimiser step (NVIDIA's stylegan3 scheme).
The networks are not wrapped in DistributedDataParallel: its docs rule out torch.autograd.grad
(R1 and path length are built on it), and its reducer expects each forward to be followed by a
backward reaching every parameter, which the alternating G/D phases and frozen blocks break.
Rank 0 writes checkpoints, logs and samples.

Resume is bit-for-bit on CPU: a checkpoint holds G, D, G_ema, both Adam states, the step, ADA's
p and its statistics and the path-length mean. Every random draw of a step (z, style-mixing
cut, noise inputs, augmentations) comes from generators reseeded from (seed, step, rank) at the
start of the step, and the data order is a pure function of (seed, step) too, so neither RNG
streams nor loader positions need saving, and each rank draws differently.
"""

from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.distributed as dist
from PIL import Image, ImageOps
from styleforge.model import losses
from styleforge.model.ada import AdaptiveAugment
from styleforge.model.checkpoint import load_checkpoint, save_checkpoint
from styleforge.model.freeze import freeze
from styleforge.model.generate import render, to_uint8
from styleforge.model.networks import (
    Discriminator,
    Generator,
    ModelConfig,
    mixing_noise,
)
from torch.utils.data import DataLoader, Dataset, Sampler
from tqdm import tqdm

from styleforge.core.errors import UserError
from styleforge.core.grid import save_sheet, tile_for

if TYPE_CHECKING:
    from styleforge.core.config import TrainParams

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}
PL_DECAY = 0.01  # path-length running-mean decay (StyleGAN2)
LATEST = "latest.pt"


class NonFiniteLossError(UserError, RuntimeError):
    """A loss went NaN/inf; the last good checkpoint is left as it was."""


@dataclass
class Networks:
    config: ModelConfig
    g: Generator
    d: Discriminator
    g_ema: Generator


@dataclass
class Outputs:
    checkpoint_dir: Path  # resumable state: checkpoint_dir/latest.pt
    live_dir: Path  # DVCLive metrics and plots
    samples_png: Path  # G_ema on fixed z
    comparison_png: Path | None = None  # reference G vs G_ema on the same z (fine-tuning)


def say(message: str) -> None:
    if rank() == 0:
        tqdm.write(message, file=sys.stderr)


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


# --- ranks ----------------------------------------------------------------------------------
@dataclass
class Ranks:
    rank: int
    world: int
    device: torch.device
    owns_group: bool = False  # this process group was started by setup_ranks (so ends with the run)

    def all_reduce_(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            dist.all_reduce(tensor)
        return tensor

    def average_grads(self, params: list[torch.nn.Parameter]) -> None:
        """Average gradients over ranks in one flat all_reduce; a missing grad counts as zero."""
        if self.world == 1:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.flatten() for g in grads])
        dist.all_reduce(flat)
        flat /= self.world
        for p, chunk in zip(params, flat.split([p.numel() for p in params]), strict=True):
            p.grad = chunk.view_as(p)

    def broadcast_module_(self, module: torch.nn.Module) -> None:
        if self.world > 1:
            for tensor in [*module.parameters(), *module.buffers()]:
                dist.broadcast(tensor.data, src=0)


def setup_ranks(device: str = "auto") -> Ranks:
    """One rank per process; under torchrun (WORLD_SIZE > 1) join the process group."""
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise RuntimeError("device: cuda was asked for but torch sees no GPU")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    torch_device = torch.device("cuda", local) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(torch_device)
    owns_group = world > 1 and not dist.is_initialized()
    if owns_group:
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return Ranks(rank(), world, torch_device, owns_group)


# --- data -----------------------------------------------------------------------------------
def list_images(folder: Path) -> tuple[list[Path], int | None]:
    """The images of a folder: those dataset.json lists (and its resolution), else every image."""
    if not folder.is_dir():
        raise FileNotFoundError(f"training images: {folder} is not a folder (run the stage that makes it)")
    manifest = folder / "dataset.json"
    if manifest.exists():
        meta = json.loads(manifest.read_text())
        return [folder / item["file"] for item in meta["images"]], meta.get("resolution")
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES), None


class ImageFolder(Dataset):
    """RGB uint8 [3, R, R] images at the model's resolution, centre-cropped square if needed."""

    def __init__(self, folder: Path, resolution: int):
        self.paths, declared = list_images(folder)
        if not self.paths:
            raise ValueError(f"training images: no images in {folder}")
        missing = [p.name for p in self.paths if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"training images: {len(missing)} listed in {folder}/dataset.json are missing, "
                                    f"e.g. {', '.join(missing[:3])}")
        self.resolution = resolution
        source = declared or max(Image.open(self.paths[0]).size)
        if source != resolution:
            say(f"dataset {folder} is {source}x{source}, the model {resolution}x{resolution}: "
                f"images are resized to {resolution}x{resolution} as they load")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor:
        with Image.open(self.paths[index]) as image:
            image = ImageOps.exif_transpose(image).convert("RGB")
            side = min(image.size)
            if image.width != image.height:
                left, top = (image.width - side) // 2, (image.height - side) // 2
                image = image.crop((left, top, left + side, top + side))
            if side != self.resolution:
                image = image.resize((self.resolution, self.resolution), Image.Resampling.LANCZOS)
            return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1)


class StepBatchSampler(Sampler):
    """This rank's share of batch `step` of an endless shuffled stream, from `start_step` on.

    Global position k is image perm_e[k mod n] with e = k // n and perm_e a permutation seeded
    by (seed, e); step s covers positions [s*batch, (s+1)*batch), rank r its r-th slice. A
    resumed run therefore needs only the step to see exactly the images it would have seen.
    """

    def __init__(self, size: int, batch: int, seed: int, ranks: Ranks, start_step: int):
        self.size, self.batch, self.seed, self.start_step = size, batch, seed, start_step
        self.per_rank = batch // ranks.world
        self.offset = ranks.rank * self.per_rank
        self._epoch, self._perm = -1, None

    def _image(self, position: int) -> int:
        epoch = position // self.size
        if epoch != self._epoch:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.size, generator=gen).tolist()
        return self._perm[position % self.size]

    def __iter__(self):
        step = self.start_step
        while True:
            first = step * self.batch + self.offset
            yield [self._image(k) for k in range(first, first + self.per_rank)]
            step += 1


def endless_batches(dataset: ImageFolder, params: TrainParams, ranks: Ranks, start_step: int):
    sampler = StepBatchSampler(len(dataset), params.batch, params.seed, ranks, start_step)
    loader = DataLoader(dataset, batch_sampler=sampler, num_workers=params.workers,
                        pin_memory=ranks.device.type == "cuda", persistent_workers=params.workers > 0)
    return iter(loader)


# --- the loop -------------------------------------------------------------------------------
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
    params: TrainParams  # the base or finetune section
    dataset_dir: Path
    outputs: Outputs
    frozen_g: set[str] = field(default_factory=set)
    frozen_d: set[str] = field(default_factory=set)
    reference_g: Generator | None = None  # the base generator, for the before/after grid

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
        self.autocast = torch.autocast(device_type=dev.type, dtype=torch.bfloat16,
                                       enabled=p.bf16 and dev.type == "cuda")
        if p.bf16 and dev.type != "cuda":
            say("bf16: ignored on the CPU (autocast is for the GPU)")
        gen = torch.Generator().manual_seed(p.seed)
        self.sample_z = torch.randn(p.samples, self.nets.config.style_dim, generator=gen).to(dev)

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

    # -- checkpoints --------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.outputs.checkpoint_dir / LATEST

    def save(self) -> None:
        if self.ranks.rank != 0:
            return
        # pl_mean rides in the augment dict: checkpoint.py has no slot for other loop state
        save_checkpoint(self.checkpoint_path, self.nets.config, self.g, self.d, self.g_ema,
                        g_optim=self.g_phase.optim, d_optim=self.d_phase.optim, step=self.step,
                        augment={**self.ada.state(), "pl_mean": float(self.pl_mean)})
        self.saved_step = self.step

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
        say(f"resuming from {self.checkpoint_path} at step {self.step} "
            f"({self.step * self.params.batch / 1000:.2f} kimg)")
        return True

    # -- the run ------------------------------------------------------------------------------
    def run(self) -> dict:
        """Train to params.kimg (resuming if a checkpoint of this run exists); return a summary."""
        p = self.params
        resumed_from = self.step if self.resume() else None
        dataset = ImageFolder(self.dataset_dir, self.nets.config.size)
        batches = endless_batches(dataset, p, self.ranks, self.step)
        live = self._open_live(resumed_from is not None) if self.ranks.rank == 0 else None
        window: dict[str, list[float]] = defaultdict(list)
        first_step, train_seconds, window_seconds = self.step, 0.0, 0.0
        bar = tqdm(total=self.total_steps, initial=self.step, unit="step", disable=self.ranks.rank != 0)
        while self.step < self.total_steps:
            started = time.perf_counter()
            reals = next(batches).to(self.ranks.device, non_blocking=True).float() / 127.5 - 1
            for name, value in self.train_step(reals).items():
                window[name].append(value)
            seconds = time.perf_counter() - started
            train_seconds, window_seconds = train_seconds + seconds, window_seconds + seconds
            bar.update(1)
            if live and (self.step % p.log_every == 0 or self.step == self.total_steps):
                self._log(live, window, window_seconds)
                window, window_seconds = defaultdict(list), 0.0
            if self.step % p.checkpoint_every == 0:
                self.save()
            if self.ranks.rank == 0 and self.step % p.sample_every == 0 and self.step < self.total_steps:
                self.write_samples(live)
        bar.close()
        if self.saved_step != self.step:
            self.save()
        if self.ranks.rank == 0:  # also when a rerun finds the run already complete
            self.write_samples(live)
        if live:
            live.end()
        if self.ranks.owns_group:  # the stage needs no more collectives: let torchrun's ranks go
            dist.barrier()
            dist.destroy_process_group()
        images = (self.step - first_step) * p.batch
        return {
            "steps": self.step, "kimg": round(self.step * p.batch / 1000, 3), "resumed_from_step": resumed_from,
            "images_per_s": round(images / train_seconds, 3) if train_seconds else None,
            "sec_per_kimg": round(train_seconds * 1000 / images, 2) if images else None,
            "ada_p": round(self.ada.p, 4), "pl_mean": round(float(self.pl_mean), 4),
            "dataset_images": len(dataset), "ranks": self.ranks.world, "device": str(self.ranks.device),
            "trainable_params": {"g": sum(q.numel() for q in self.g_phase.params),
                                 "d": sum(q.numel() for q in self.d_phase.params)},
            "frozen_tensors": {"g": len(self.frozen_g), "d": len(self.frozen_d)},
        }

    def _open_live(self, resumed: bool):
        os.environ.setdefault("DVCLIVE_OPEN", "false")
        from dvclive import Live

        # dvcyaml=None: dvc.yaml (the lead's) declares these plots; DVCLive must not rewrite it.
        return Live(dir=str(self.outputs.live_dir), resume=resumed, save_dvc_exp=False, dvcyaml=None)

    def _log(self, live, window: dict[str, list[float]], seconds: float) -> None:
        steps = max(len(v) for v in window.values())
        live.step = self.step
        for name, values in window.items():
            live.log_metric(f"train/{name}", sum(values) / len(values))
        live.log_metric("train/ada_p", self.ada.p)
        live.log_metric("train/ada_rt", self.ada.rt)
        live.log_metric("train/kimg", self.step * self.params.batch / 1000)
        live.log_metric("speed/images_per_s", steps * self.params.batch / seconds)
        live.log_metric("speed/sec_per_kimg", seconds * 1000 / (steps * self.params.batch))
        live.next_step()

    @torch.no_grad()
    def write_samples(self, live=None) -> None:
        """G_ema on the fixed z (constant noise), and beside the reference G on the same z."""
        tuned = render_z(self.g_ema, self.sample_z)
        tile = tile_for(self.nets.config.size)
        save_sheet(self.outputs.samples_png, tuned, tile=tile, cols=8)
        if live:
            live.log_image("samples.png", self.outputs.samples_png)
        if self.reference_g is not None and self.outputs.comparison_png is not None:
            count = min(8, len(tuned))
            before = render_z(self.reference_g.to(self.ranks.device).eval(), self.sample_z[:count])
            save_sheet(self.outputs.comparison_png, before + tuned[:count], ["base"] * count + ["tuned"] * count,
                       tile=tile, cols=count)


@torch.no_grad()
def render_z(g: Generator, z: torch.Tensor) -> np.ndarray:
    """uint8 HWC images of g on z (no truncation) with g's constant noise: a grid depends on z alone."""
    return to_uint8(render(g, g.broadcast([g.style(z)])))
