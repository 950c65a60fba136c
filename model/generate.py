"""Render images from a generator: one PNG per latent plus a grid (style mixing: model/sefa.py).

Seeds become z as NVIDIA's generate.py draws them (`RandomState(seed).randn(style_dim)`, in
`seed_z`), so a seed names the same latent there and in every styleforge command and stage.
Random noise is drawn from the image's own seed, so an image does not depend on which batch it
was rendered in.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from styleforge.model.checkpoint import load_generator
from styleforge.model.networks import Generator

NOISE_MODES = ("random", "const", "none")


def seed_z(seeds: Sequence[int], style_dim: int) -> np.ndarray:
    """z [N, style_dim] of seeds, as NVIDIA draws it: every part of styleforge names a face by its seed so."""
    return np.stack([np.random.RandomState(seed).randn(style_dim) for seed in seeds]).astype(np.float32)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """[N, 3, H, W] in [-1, 1] -> [N, H, W, 3] uint8: round((x + 1) * 127.5), clamped."""
    pixels = torch.round((images.detach().float().cpu() + 1) * 127.5).clamp(0, 255)
    return pixels.to(torch.uint8).permute(0, 2, 3, 1).numpy()


def image_grid(images: np.ndarray, cols: int | None = None) -> np.ndarray:
    """Tile [N, H, W, 3] row by row into one image; missing cells stay black."""
    n, h, w, c = images.shape
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.zeros((rows * h, cols * w, c), dtype=images.dtype)
    for i, image in enumerate(images):
        r, col = divmod(i, cols)
        grid[r * h : (r + 1) * h, col * w : (col + 1) * w] = image
    return grid


def noise_inputs(g: Generator, mode: str, noise_seeds: Sequence[int]) -> list[torch.Tensor]:
    """Noise images for a batch: drawn from each image's seed, the stored buffers, or zeros."""
    if mode not in NOISE_MODES:
        raise ValueError(f"noise mode must be one of {NOISE_MODES}, got {mode!r}")
    stored = g.const_noise()
    batch = len(noise_seeds)
    if mode == "const":
        return [n.expand(batch, -1, -1, -1) for n in stored]
    if mode == "none":
        return [torch.zeros(batch, *n.shape[1:], device=n.device) for n in stored]
    per_image = []
    for seed in noise_seeds:
        gen = torch.Generator().manual_seed(int(seed))
        per_image.append([torch.randn(n.shape, generator=gen) for n in stored])
    return [torch.cat(layer).to(stored[0].device) for layer in zip(*per_image)]


@torch.no_grad()
def render(
    g: Generator,
    latent: torch.Tensor,
    noise_mode: str = "const",
    noise_seeds: Sequence[int] | None = None,
    batch_size: int = 8,
) -> torch.Tensor:
    """W+ latents [N, n_latent, D] -> images [N, 3, H, W], in batches."""
    noise_seeds = list(range(len(latent))) if noise_seeds is None else list(noise_seeds)
    out = []
    for start in range(0, len(latent), batch_size):
        chunk = latent[start : start + batch_size].to(g.w_avg.device)
        noise = noise_inputs(g, noise_mode, noise_seeds[start : start + batch_size])
        out.append(g.synthesis(chunk, noise=noise).cpu())
    return torch.cat(out)


def _generator(checkpoint: str | Path | Generator, device: str | torch.device) -> Generator:
    g = checkpoint if isinstance(checkpoint, Generator) else load_generator(checkpoint)
    return g.to(device).eval()


@torch.no_grad()
def z_latents(g: Generator, z: np.ndarray, truncation: float) -> torch.Tensor:
    """W+ [N, n_latent, D] of z [N, style_dim], truncated toward w_avg: what `generate` renders
    for them. psi 1 leaves w bit for bit, as the generator's own forward does."""
    w = g.style(torch.from_numpy(np.asarray(z, dtype=np.float32)).to(g.w_avg.device))
    if truncation < 1:
        w = g.truncate(w, truncation)
    return g.broadcast([w])


def seed_latents(g: Generator, seeds: Sequence[int], truncation: float = 1.0) -> torch.Tensor:
    """W+ of seeds (z by seed_z): the one way every command and stage turns a seed into a latent."""
    return z_latents(g, seed_z(seeds, g.style_dim), truncation)


@torch.no_grad()
def render_seeds(g: Generator, seeds: Sequence[int], truncation: float) -> list[np.ndarray]:
    """RGB uint8 images of seeds with the model's constant noise: images differ only by the model."""
    return list(to_uint8(render(g, seed_latents(g, seeds, truncation))))


def _save(image: np.ndarray, path: Path) -> Path:
    Image.fromarray(image).save(path)
    return path


def generate(
    checkpoint: str | Path | Generator,
    out_dir: str | Path,
    seeds: Sequence[int] | None = None,
    z: np.ndarray | None = None,
    truncation: float = 1.0,
    noise_mode: str = "const",
    batch_size: int = 8,
    device: str | torch.device = "cpu",
) -> list[Path]:
    """One PNG per latent (seedNNNN.png, or zNNNN.png for a z array) and grid.png; returns them all."""
    if (seeds is None) == (z is None):
        raise ValueError("give seeds or z, not both")
    g = _generator(checkpoint, device)
    if z is None:
        z, names, noise_seeds = seed_z(seeds, g.style_dim), [f"seed{s:04d}" for s in seeds], list(seeds)
    else:
        z = np.asarray(z, dtype=np.float32)
        z = z[None] if z.ndim == 1 else z
        if z.ndim != 2 or z.shape[1] != g.style_dim or len(z) == 0:
            raise ValueError(f"z must be [N, {g.style_dim}], got shape {list(np.shape(z))}")
        names, noise_seeds = [f"z{i:04d}" for i in range(len(z))], list(range(len(z)))

    images = to_uint8(render(g, z_latents(g, z, truncation), noise_mode, noise_seeds, batch_size))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = [_save(image, out_dir / f"{name}.png") for name, image in zip(names, images)]
    paths.append(_save(image_grid(images), out_dir / "grid.png"))
    return paths
