"""Latent walks: frames that move through keyframes (seeds or projected photos), and the portrait
morph (one photo's latent rendered by the base model, the blends, then the fine-tuned model).

Space. Walks run in W by default, as NVIDIA's gen_video.py does: W is the mapping network's
output, where the StyleGAN paper measured far shorter perceptual paths than in Z (less sudden
change between neighbouring frames), and where truncation and projected photos live. W+ latents
(projections, and seeds broadcast to every layer) move by lerp. `space="z"` slerps between the
seeds' z instead and maps every frame, as the paper's Z-path measurement does; it takes seeds only.
gen_video.py goes further with a cubic spline through W; this walk is piecewise linear in W, so
its speed is even within each leg and turns at each keyframe.

Frames stream: they are made `batch` at a time and handed on one by one, so a walk's memory does
not grow with its length.

Exactness. CPU kernels give results whose last bits depend on the batch (matmul blocking,
grouped convolutions), so a face rendered beside others can differ by one level in a few pixels
from the same face rendered alone. A frame that sits exactly on a keyframe is therefore rendered
alone, from the keyframe's own latent: it equals `styleforge generate` of that seed (which maps
and renders a single seed alone) pixel for pixel, and the morph's ends equal the base and the
fine-tuned model's own renders. Frames between keyframes are rendered in batches.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import islice

import numpy as np
import torch
from scipy.spatial import geometric_slerp

from styleforge.model.blend import blend_generators
from styleforge.model.generate import image_grid, render, seed_z, to_uint8, z_latents
from styleforge.model.networks import Generator

SPACES = ("w", "z")
# Noise must not change from frame to frame, or the walk flickers: `random` is for stills.
NOISE_MODES = ("const", "none")


def path(frames: int, keys: int, loop: bool = False) -> Iterator[tuple[int, int, float]]:
    """(keyframe, next keyframe, fraction of the way) for each frame, evenly spaced.

    Open: the first frame is keyframe 0 and the last is keyframe keys - 1. Loop: the path goes on
    from the last keyframe back to the first, and the frame after the last would be keyframe 0
    again, so the video repeats seamlessly with no frame shown twice. Integer arithmetic makes a
    frame on a keyframe have fraction exactly 0.
    """
    legs, steps = (keys, frames) if loop else (keys - 1, frames - 1)
    if steps < 1:
        raise ValueError(f"an open walk needs at least 2 frames, got {frames}")
    for index in range(frames):
        key, rest = divmod(index * legs, steps)
        yield key, (key + 1) % keys, rest / steps


@dataclass(frozen=True)
class Keyframes:
    """One walk's keyframes: the W+ each renders, and for a walk in Z their z."""

    latents: list[torch.Tensor]  # [n_latent, D] each
    z: list[np.ndarray] | None = None  # [style_dim] each, where the walk is in Z


def seed_keyframes(g: Generator, seeds: Sequence[int], truncation: float, space: str = "w") -> Keyframes:
    """Keyframes of seeds, each mapped alone exactly as `styleforge generate` maps one seed."""
    if space not in SPACES:
        raise ValueError(f"space must be one of {SPACES}, got {space!r}")
    zs = [seed_z([seed], g.style_dim) for seed in seeds]
    latents = [z_latents(g, z, truncation)[0] for z in zs]
    return Keyframes(latents, [z[0] for z in zs] if space == "z" else None)


def slerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """The point a fraction t along the great circle from a to b, with the length lerped.

    The mapping network starts with PixelNorm, which discards z's length: only the direction
    moves the image. The length is lerped so that the path's z stay the size of Gaussian draws.
    """
    a, b = a.astype(np.float64), b.astype(np.float64)  # scipy wants unit length to 1e-9
    length_a, length_b = np.linalg.norm(a), np.linalg.norm(b)
    unit = geometric_slerp(a / length_a, b / length_b, [t])[0]  # an array t: one shape, also for a == b
    return (unit * ((1 - t) * length_a + t * length_b)).astype(np.float32)


def _frame_latents(g: Generator, cells: Sequence[Keyframes], steps, truncation: float) -> tuple[torch.Tensor, list[bool]]:
    """W+ of every (frame, cell) pair in steps, frame by frame, and whether each sits on a keyframe."""
    latents: list[torch.Tensor | None] = []
    on_key: list[bool] = []
    to_map: list[tuple[int, np.ndarray]] = []  # Z walks: (index, z) mapped together below
    for key, following, fraction in steps:
        for cell in cells:
            on_key.append(fraction == 0.0)
            if fraction == 0.0:
                latents.append(cell.latents[key])
            elif cell.z is None:
                latents.append(torch.lerp(cell.latents[key], cell.latents[following], fraction))
            else:
                to_map.append((len(latents), slerp(cell.z[key], cell.z[following], fraction)))
                latents.append(None)
    if to_map:
        mapped = z_latents(g, np.stack([z for _, z in to_map]), truncation)
        for (index, _), latent in zip(to_map, mapped):
            latents[index] = latent
    return torch.stack(latents), on_key


def _render(g: Generator, latents: torch.Tensor, on_key: list[bool], noise_mode: str) -> np.ndarray:
    """uint8 images of latents: those on a keyframe alone, the others in one batch."""
    images = torch.empty(len(latents), 3, g.size, g.size)
    between = [i for i, alone in enumerate(on_key) if not alone]
    if between:
        images[between] = render(g, latents[between], noise_mode, batch_size=len(between))
    for i in (i for i, alone in enumerate(on_key) if alone):
        images[i] = render(g, latents[i : i + 1], noise_mode)[0]
    return to_uint8(images)


def walk_frames(
    g: Generator,
    cells: Sequence[Keyframes],
    frames: int,
    *,
    loop: bool = False,
    truncation: float = 1.0,
    noise_mode: str = "const",
    batch: int = 8,
    cols: int = 1,
) -> Iterator[np.ndarray]:
    """RGB uint8 frames [rows * size, cols * size, 3] of walks side by side, one walk per cell
    (row by row), all through the same number of keyframes in step.

    truncation applies to frames mapped from z (the keyframes carry their own).
    """
    if noise_mode not in NOISE_MODES:
        raise ValueError(f"noise mode for a walk must be one of {NOISE_MODES}, got {noise_mode!r}")
    keys = {len(cell.latents) for cell in cells}
    if len(keys) != 1 or min(keys) < 2 or len(cells) % cols:
        raise ValueError(f"each of the {len(cells)} walks needs the same number (>= 2) of keyframes, "
                         f"in whole rows of {cols}: got {sorted(len(c.latents) for c in cells)}")
    steps = path(frames, keys.pop(), loop)
    with torch.no_grad():
        while chunk := list(islice(steps, batch)):
            latents, on_key = _frame_latents(g, cells, chunk, truncation)
            images = _render(g, latents, on_key, noise_mode)
            for frame in range(len(chunk)):
                yield image_grid(images[frame * len(cells) : (frame + 1) * len(cells)], cols)


def morph_cuts(size: int, reverse: bool = False) -> list[int]:
    """The layer-swap cuts a morph passes through, in the order the fine-tuned model takes over.

    Coarse layers from base (the portraits' blend): the fine-tuned model takes the finest
    resolution first, so the cut walks down from size/2 to 4. reverse (Toonify: coarse layers
    from the fine-tuned model): it takes the coarsest first, the cut walks up from 4 to size/2.
    One resolution changes hands per leg.
    """
    cuts = [2**i for i in range(2, int(math.log2(size)))]
    return cuts if reverse else cuts[::-1]


def morph_frames(
    base: Generator,
    finetuned: Generator,
    latent: torch.Tensor,
    frames: int,
    *,
    loop: bool = False,
    reverse: bool = False,
    noise_mode: str = "const",
) -> Iterator[np.ndarray]:
    """RGB uint8 frames of one W+ latent [n_latent, D] rendered by base, by the blends at each of
    morph_cuts, then by finetuned, the weights (and stored noise) interpolated between neighbours.

    Loop: back down the same blends to base. Each frame has its own weights, so frames render one
    at a time; only the tensors that differ between a leg's two ends are touched per frame.
    """
    if noise_mode not in NOISE_MODES:
        raise ValueError(f"noise mode for a morph must be one of {NOISE_MODES}, got {noise_mode!r}")
    cuts = morph_cuts(base.config.size, reverse)
    stops = len(cuts) + 2  # base, the blends, finetuned
    order = list(range(stops)) + (list(range(stops - 2, 0, -1)) if loop else [])

    def weights(stop: int) -> dict[str, torch.Tensor]:
        if stop == 0:
            return base.state_dict()
        if stop == stops - 1:
            return finetuned.state_dict()
        return blend_generators(base, finetuned, cuts[stop - 1], reverse=reverse)[0].state_dict()

    frame_g = copy.deepcopy(base).eval()
    live = frame_g.state_dict()  # shares storage with frame_g's parameters and buffers
    latent = latent[None].to(base.w_avg.device)
    leg, ends, changing = None, {}, []
    with torch.no_grad():
        for key, following, fraction in path(frames, len(order), loop):
            if leg != (key, following):
                leg = key, following
                ends = {stop: ends.get(stop) or weights(stop) for stop in (order[key], order[following])}
                start, end = ends[order[key]], ends[order[following]]
                changing = [name for name in start if not torch.equal(start[name], end[name])]
                for name, tensor in start.items():
                    live[name].copy_(tensor)
            for name in changing:
                live[name].copy_(start[name] if fraction == 0.0 else torch.lerp(start[name], end[name], fraction))
            yield to_uint8(render(frame_g, latent, noise_mode))[0]
