"""GAN inversion by optimisation: find the W (or W+) latent and noise maps that make the
generator reproduce a photo (rosinality's `projector.py`, after Karras et al. 2020, app. D).

Adam on the latent and the per-layer noise images, with
- a perceptual distance between the render and the photo (LPIPS, or its fallback),
- noise regularisation: the noise maps' autocorrelation at every scale pushed to zero, so they
  stay noise and do not learn the picture,
- Gaussian noise on the latent early on (ramped down), to explore before settling,
- a cosine learning-rate ramp: warm up over the first 5 %, cool down over the last 25 %.
"""

from __future__ import annotations

import math
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from PIL import Image
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from styleforge.core.errors import UserError
from styleforge.core.io import atomic_write
from styleforge.model.networks import Generator

DISTANCE_RES = 256  # LPIPS was calibrated on 64-256 px patches; larger renders are averaged down


@dataclass
class Projection:
    latent: torch.Tensor  # [N, n_latent, D]: W+ (W repeated per layer unless w_plus)
    noises: list[torch.Tensor]  # one [N, 1, r, r] map per styled conv
    images: torch.Tensor  # [N, 3, H, W] render of latent + noises, in [-1, 1]
    distance: torch.Tensor  # [N] distance of that render to the target
    history: list[float]  # mean distance at each optimisation step


def cosine_lr(t: float, initial_lr: float, rampdown: float = 0.25, rampup: float = 0.05) -> float:
    """Learning rate at progress t in [0, 1): linear warm-up, cosine cool-down."""
    ramp = min(1.0, (1 - t) / rampdown)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    return initial_lr * ramp * min(1.0, t / rampup)


def noise_regularization(noises: list[torch.Tensor]) -> torch.Tensor:
    """Sum of squared one-pixel autocorrelations of each noise map, at every scale down to 8."""
    loss = torch.zeros((), device=noises[0].device)
    for noise in noises:
        size = noise.shape[2]
        while True:
            loss = loss + (noise * torch.roll(noise, 1, dims=3)).mean().pow(2)
            loss = loss + (noise * torch.roll(noise, 1, dims=2)).mean().pow(2)
            if size <= 8:
                break
            noise = F.avg_pool2d(noise, 2)
            size //= 2
    return loss


def _normalize_noises_(noises: list[torch.Tensor]) -> None:
    with torch.no_grad():
        for noise in noises:
            noise.sub_(noise.mean()).div_(noise.std())


@contextmanager
def _frozen(module: nn.Module) -> Iterator[None]:
    """No parameter gradients while optimising the inputs; the caller's flags come back after."""
    flags = [p.requires_grad for p in module.parameters()]
    training = module.training
    module.requires_grad_(False).eval()
    try:
        yield
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)
        module.train(training)


def _for_distance(images: torch.Tensor) -> torch.Tensor:
    if images.shape[-1] > DISTANCE_RES:
        return F.interpolate(images, size=(DISTANCE_RES, DISTANCE_RES), mode="area")
    return images


def project(
    generator: Generator,
    targets: torch.Tensor,
    distance: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    steps: int,  # optimisation steps (rosinality: 1000)
    lr: float,  # peak Adam learning rate of the cosine ramp (0.1)
    lr_rampup: float,  # fraction of the steps spent warming up (0.05)
    lr_rampdown: float,  # fraction of the steps spent cooling down (0.25)
    latent_noise: float,  # initial latent jitter, a fraction of W's spread (0.05)
    latent_noise_ramp: float,  # fraction of the steps the jitter takes to vanish (0.75)
    noise_regularize: float,  # weight that keeps the noise maps from learning the photo (1e5)
    mse: float,  # weight of an extra pixel MSE term (0)
    w_plus: bool,  # one W per layer: a closer fit, weaker edits and blends
    n_mean_latent: int,  # z samples that locate W's mean and spread (10000)
    seed: int = 0,
    progress: bool = True,
) -> Projection:
    """Project targets [N, 3, size, size] in [-1, 1]; distance(a, b) gives one value per sample.

    The settings are the portraits section's `projection` (rosinality's defaults in brackets).
    """
    device = generator.input.input.device
    targets = targets.to(device)
    rng = torch.Generator(device=device).manual_seed(seed)
    batch, style_dim = targets.shape[0], generator.style_dim
    with _frozen(generator):
        with torch.no_grad():  # where W lives: its mean starts the search, its spread scales the jitter
            w_samples = generator.style(torch.randn(n_mean_latent, style_dim, generator=rng, device=device))
            w_mean = w_samples.mean(0)
            w_std = ((w_samples - w_mean).pow(2).sum() / n_mean_latent).sqrt().item()

        shape = (batch, generator.n_latent, style_dim) if w_plus else (batch, style_dim)
        latent = w_mean.expand(shape).clone().requires_grad_(True)
        noises = [
            torch.randn(batch, *buffer.shape[1:], generator=rng, device=device).requires_grad_(True)
            for buffer in generator.const_noise()
        ]
        optimizer = torch.optim.Adam([latent, *noises], lr=lr)
        target_small = _for_distance(targets)
        history = []

        bar = tqdm(range(steps), desc="project", disable=not progress, leave=False)
        for step in bar:
            t = step / steps
            optimizer.param_groups[0]["lr"] = cosine_lr(t, lr, lr_rampdown, lr_rampup)
            jitter = w_std * latent_noise * max(0.0, 1 - t / latent_noise_ramp) ** 2
            noisy = latent + jitter * torch.randn(latent.shape, generator=rng, device=device)
            images, _ = generator([noisy], input_is_latent=True, noise=noises)

            perceptual = distance(_for_distance(images), target_small)
            loss = perceptual.sum() + noise_regularize * noise_regularization(noises)
            if mse:
                loss = loss + mse * F.mse_loss(images, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            _normalize_noises_(noises)

            history.append(perceptual.mean().item())
            bar.set_postfix(distance=f"{history[-1]:.4f}", refresh=False)

        with torch.no_grad():
            images, w_plus = generator([latent], input_is_latent=True, noise=noises, return_latents=True)
            final = distance(_for_distance(images), target_small)
    return Projection(w_plus.detach(), [n.detach() for n in noises], images.detach(), final.detach(), history)


def to_tensor(rgb: np.ndarray, size: int) -> torch.Tensor:
    """An RGB uint8 image as a [1, 3, size, size] tensor in [-1, 1] (Lanczos resize)."""
    image = Image.fromarray(rgb).convert("RGB")
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.LANCZOS)
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1
    return torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0)


def save_latent(path: str | Path, projection: Projection, index: int, **metadata) -> Path:
    """One projected sample as .npz: `latent` [n_latent, D] W+, `noise_K` maps, plus metadata."""
    arrays = {"latent": projection.latent[index].cpu().numpy()}
    arrays |= {f"noise_{k}": noise[index].cpu().numpy() for k, noise in enumerate(projection.noises)}
    arrays |= {key: np.asarray(value) for key, value in metadata.items()}
    return atomic_write(path, lambda tmp: np.savez(tmp, **arrays))  # tmp ends in .npz: no suffix added


def load_latent(path: str | Path) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(W+ latent [n_latent, D], noise maps [1, r, r] in layer order) from save_latent's file."""
    with np.load(path) as data:
        count = sum(1 for key in data.files if key.startswith("noise_"))
        noises = [torch.from_numpy(data[f"noise_{k}"]) for k in range(count)]
        return torch.from_numpy(data["latent"]), noises


class LatentFileError(UserError, ValueError):
    """A projected-latent file that is missing, not an .npz, or does not fit the model."""


def load_projected(path: str | Path, n_latent: int, style_dim: int) -> torch.Tensor:
    """W+ latents [N, n_latent, style_dim] from a projection: ours (save_latent's `latent`, one
    [n_latent, D]) or NVIDIA's `projected_w.npz` (`w`, [N, num_ws, w_dim]; stylegan2-ada-pytorch's
    projector.py writes N = 1). The two W+ layouts agree entry for entry: NVIDIA's num_ws is our
    n_latent, and each entry feeds the same conv or toRGB layer.
    """
    unreadable = (OSError, ValueError, EOFError, zipfile.BadZipFile)  # what np.load raises on anything else
    try:
        data = np.load(path)
    except FileNotFoundError:
        raise LatentFileError(f"{path}: no such file") from None
    except unreadable as exc:
        raise LatentFileError(f"{path}: not an .npz of projected latents ({exc})") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise LatentFileError(f"{path}: not an .npz of projected latents (a bare {list(data.shape)} array)")
    try:
        with data:
            files = data.files
            ours = "latent" in files
            stored = data["latent"] if ours else data["w"] if "w" in files else None
    except unreadable as exc:
        raise LatentFileError(f"{path}: not an .npz of projected latents ({exc})") from None
    if stored is None:
        raise LatentFileError(f"{path}: neither `latent` (styleforge portraits) nor `w` (NVIDIA's projector) in it, only {files}")
    expected = [n_latent, style_dim]
    fits = list(stored.shape) == expected if ours else stored.ndim == 3 and list(stored.shape[1:]) == expected and len(stored) > 0
    if not fits:
        key, takes = ("latent", expected) if ours else ("w", ["N", *expected])
        raise LatentFileError(f"{path}: `{key}` {list(stored.shape)} does not fit this model, which takes {takes}")
    latent = stored[None] if ours else stored
    return torch.from_numpy(np.ascontiguousarray(latent, dtype=np.float32))
