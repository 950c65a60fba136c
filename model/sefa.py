"""Latent editing: SeFa directions (Shen & Zhou, "Closed-Form Factorization of Latent Semantics
in GANs", 2021) and style mixing.

Each styled conv turns w into per-channel scales through its affine `modulation` layer, s = A w
+ b. The directions n of unit length that change s the most over the chosen layers maximise
|A n|^2 = n^T A^T A n: the top eigenvectors of A^T A, A being the chosen layers' modulation
weights stacked. As in the authors' code, each row of A (one output channel) is first scaled to
unit length so that wide layers do not outvote narrow ones. ToRGB layers are left out, as both
the authors and rosinality do: they set colour, not content.

Layer k is the k-th styled conv (0 = conv1, k = convs.(k-1)); it reads W+ entry k, so an edit
restricted to layers [start, stop) moves exactly those W+ entries.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from styleforge.core.io import atomic_write
from styleforge.model.generate import render, to_uint8
from styleforge.model.networks import Generator


def styled_conv_names(generator: Generator) -> list[str]:
    """State-dict names of the modulation weights, in layer (= W+ index) order."""
    return ["conv1.conv.modulation.weight"] + [
        f"convs.{i}.conv.modulation.weight" for i in range(len(generator.convs))
    ]


def _checked(layers: tuple[int, int], count: int) -> range:
    start, stop = layers
    if not 0 <= start < stop <= count:
        raise ValueError(f"layers must be a range START:STOP within 0:{count}, got {start}:{stop}")
    return range(start, stop)


@dataclass(frozen=True)
class Directions:
    """Unit directions in W, strongest first, and the layers they were computed for."""

    vectors: np.ndarray  # [k, style_dim], rows orthonormal
    eigenvalues: np.ndarray  # [k], descending
    layers: tuple[int, int]

    def save(self, path: str | Path) -> Path:
        arrays = {"vectors": self.vectors, "eigenvalues": self.eigenvalues, "layers": np.array(self.layers)}
        return atomic_write(path, lambda tmp: np.savez(tmp, **arrays))  # tmp ends in .npz: no suffix added

    @classmethod
    def load(cls, path: str | Path) -> "Directions":
        with np.load(path) as data:
            return cls(data["vectors"], data["eigenvalues"], tuple(int(v) for v in data["layers"]))


def factorize(generator: Generator, components: int, layers: tuple[int, int] | None = None) -> Directions:
    """The top `components` SeFa directions of the generator's styled convs in `layers`."""
    names = styled_conv_names(generator)
    chosen = _checked(layers or (0, len(names)), len(names))
    state = generator.state_dict()
    weight = torch.cat([state[names[k]] for k in chosen]).double().cpu()  # [channels, style_dim]
    weight = weight / weight.norm(dim=1, keepdim=True)
    eigenvalues, eigenvectors = torch.linalg.eigh(weight.T @ weight)  # ascending
    order = eigenvalues.argsort(descending=True)[:components]
    return Directions(
        vectors=eigenvectors[:, order].T.float().numpy(),
        eigenvalues=eigenvalues[order].float().numpy(),
        layers=(chosen.start, chosen.stop),
    )


def edit(latent: torch.Tensor, direction: torch.Tensor, degree: float, layers: range) -> torch.Tensor:
    """W+ latents [N, n_latent, D] moved by degree * direction on the W+ entries in layers."""
    moved = latent.clone()
    moved[:, layers.start : layers.stop] += degree * direction.to(latent)
    return moved


def mix(photo: torch.Tensor, other: torch.Tensor, layers: range) -> torch.Tensor:
    """Style mixing on W+ [N, n_latent, D]: the photo's latents with other's in `layers`."""
    mixed = photo.clone()
    mixed[:, layers.start : layers.stop] = other[:, layers.start : layers.stop].to(photo)
    return mixed


@torch.inference_mode()
def edit_grid(
    generator: Generator, latents: torch.Tensor, directions: Directions, indices: list[int], degrees: list[float]
) -> tuple[list[np.ndarray], list[str]]:
    """One row per (latent, direction), one column per degree: images and captions."""
    layers = range(*directions.layers)
    rows, captions = [], []
    for n in range(latents.shape[0]):
        for index in indices:
            direction = torch.from_numpy(directions.vectors[index])
            rows += [edit(latents[n : n + 1], direction, degree, layers) for degree in degrees]
            captions += [f"#{n} d{index} {degree:+g}" for degree in degrees]
    return list(to_uint8(render(generator, torch.cat(rows)))), captions


def mix_grid(
    generator: Generator, rows: torch.Tensor, cols: torch.Tensor, layers: tuple[int, int]
) -> tuple[list[np.ndarray], int]:
    """Style-mixing table of W+ latents, laid out as NVIDIA's style_mixing.py lays it: a blank
    corner, the plain cols across the top, the plain rows down the side, each cell the row's
    latent with the col's entries in `layers`. Images row by row, and the column count."""
    chosen = _checked(layers, generator.n_latent)  # W+ entries: the last one feeds only the final ToRGB
    cells = [mix(rows[r : r + 1], cols[c : c + 1], chosen) for r in range(len(rows)) for c in range(len(cols))]
    tops, sides = to_uint8(render(generator, cols)), to_uint8(render(generator, rows))
    rendered = list(to_uint8(render(generator, torch.cat(cells))))
    blank = np.zeros_like(tops[0])
    images = [blank, *tops]
    for r, side in enumerate(sides):
        images += [side, *rendered[r * len(cols) : (r + 1) * len(cols)]]
    return images, len(cols) + 1
