"""StyleGAN2 config-F generator and residual discriminator (rosinality's layout).

State-dict names follow rosinality's `model.py`, plus one generator buffer, `w_avg`: the moving
average of W that NVIDIA tracks while training and truncation pulls toward. rosinality keeps
that vector beside the state dict as `latent_avg`; `model.checkpoint` converts between the two.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

from styleforge.model.layers import (
    ConstantInput,
    ConvLayer,
    EqualLinear,
    PixelNorm,
    ResBlock,
    StyledConv,
    ToRGB,
)


@dataclass(frozen=True)
class ModelConfig:
    """Everything that decides G's and D's tensor shapes and forward passes."""

    size: int
    style_dim: int = 512
    n_mlp: int = 8
    channel_multiplier: int = 2
    channel_max: int = 512
    channel_base: int | None = None  # None: 16384 * channel_multiplier, rosinality's table
    lr_mlp: float = 0.01
    w_avg_beta: float = 0.995
    mbstd_group: int = 4

    def __post_init__(self):
        if self.size < 8 or self.size & (self.size - 1):
            raise ValueError(f"size must be a power of two >= 8, got {self.size}")
        if min(self.style_dim, self.n_mlp, self.channel_multiplier, self.channel_max, self.mbstd_group) < 1:
            raise ValueError(f"style_dim, n_mlp, channel_multiplier, channel_max, mbstd_group must be >= 1: {self}")
        if min(self.channels().values()) < 1:
            raise ValueError(f"channel_base {self.channel_base} leaves a resolution with no channels")

    @property
    def log_size(self) -> int:
        return int(math.log2(self.size))

    @property
    def n_latent(self) -> int:
        """Number of W vectors one image consumes (W+ length): 2 per resolution, minus 2."""
        return self.log_size * 2 - 2

    def channels(self) -> dict[int, int]:
        """Feature maps per resolution: min(channel_max, channel_base / resolution), as NVIDIA.

        With the defaults this is rosinality's table (512 up to 32, then 256 * multiplier at 64,
        halving with each resolution); a small channel_base/channel_max gives tiny test models.
        """
        base = self.channel_base or 16384 * self.channel_multiplier
        return {2**i: min(self.channel_max, base // 2**i) for i in range(2, self.log_size + 1)}

    def generator(self) -> Generator:
        return Generator(self)

    def discriminator(self) -> Discriminator:
        return Discriminator(self)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> ModelConfig:
        unknown = set(raw) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown model config keys: {sorted(unknown)}")
        return cls(**raw)


class Generator(nn.Module):
    """Mapping network (`style`) and skip-architecture synthesis network."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.size = config.size
        self.style_dim = style_dim = config.style_dim
        self.log_size = config.log_size
        self.n_latent = config.n_latent
        self.num_layers = (self.log_size - 2) * 2 + 1  # styled convs = noise inputs
        self.channels = channels = config.channels()

        self.style = nn.Sequential(
            PixelNorm(),
            *(EqualLinear(style_dim, style_dim, lr_mul=config.lr_mlp, activation="fused_lrelu") for _ in range(config.n_mlp)),
        )
        self.register_buffer("w_avg", torch.zeros(style_dim))

        self.input = ConstantInput(channels[4])
        self.conv1 = StyledConv(channels[4], channels[4], 3, style_dim)
        self.to_rgb1 = ToRGB(channels[4], style_dim, upsample=False)

        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        self.noises = nn.Module()
        for layer_idx in range(self.num_layers):
            res = 2 ** ((layer_idx + 5) // 2)
            self.noises.register_buffer(f"noise_{layer_idx}", torch.randn(1, 1, res, res))

        in_channel = channels[4]
        for i in range(3, self.log_size + 1):
            out_channel = channels[2**i]
            self.convs.append(StyledConv(in_channel, out_channel, 3, style_dim, upsample=True))
            self.convs.append(StyledConv(out_channel, out_channel, 3, style_dim))
            self.to_rgbs.append(ToRGB(out_channel, style_dim))
            in_channel = out_channel

    def make_noise(self) -> list[torch.Tensor]:
        """Fresh noise images, one per styled conv (rosinality's layout)."""
        return [torch.randn_like(noise) for noise in self.const_noise()]

    def const_noise(self) -> list[torch.Tensor]:
        """The stored noise buffers: fixed noise makes an image depend on its latent alone."""
        return [getattr(self.noises, f"noise_{i}") for i in range(self.num_layers)]

    @torch.no_grad()
    def mean_latent(self, n_latent: int) -> torch.Tensor:
        """Mean W of n_latent random z, shape [1, style_dim] (rosinality's truncation centre)."""
        z = torch.randn(n_latent, self.style_dim, device=self.input.input.device)
        return self.style(z).mean(0, keepdim=True)

    def get_latent(self, z: torch.Tensor) -> torch.Tensor:
        """Map z to W; in training mode also moves w_avg toward this batch's mean W."""
        w = self.style(z)
        if self.training:
            with torch.no_grad():
                self.w_avg.copy_(w.detach().mean(0).lerp(self.w_avg, self.config.w_avg_beta))
        return w

    def truncate(self, w: torch.Tensor, psi: float, truncation_latent: torch.Tensor | None = None) -> torch.Tensor:
        """Move W (or W+) a fraction psi of the way from the average toward w."""
        centre = self.w_avg if truncation_latent is None else truncation_latent
        return centre + psi * (w - centre)

    def broadcast(self, styles: list[torch.Tensor], inject_index: int | None = None) -> torch.Tensor:
        """One W per synthesis layer [N, n_latent, D]; two styles switch at inject_index."""
        if len(styles) < 2:
            if styles[0].ndim == 3:
                return styles[0]
            return styles[0].unsqueeze(1).repeat(1, self.n_latent, 1)
        if inject_index is None:
            inject_index = random.randint(1, self.n_latent - 1)
        first = styles[0].unsqueeze(1).repeat(1, inject_index, 1)
        second = styles[1].unsqueeze(1).repeat(1, self.n_latent - inject_index, 1)
        return torch.cat([first, second], 1)

    def synthesis(
        self, latent: torch.Tensor, noise: list[torch.Tensor | None] | None = None, randomize_noise: bool = True
    ) -> torch.Tensor:
        """Render W+ latents [N, n_latent, style_dim] to images [N, 3, size, size] in about [-1, 1]."""
        if latent.shape[1:] != (self.n_latent, self.style_dim):
            raise ValueError(f"latent must be [N, {self.n_latent}, {self.style_dim}], got {list(latent.shape)}")
        if noise is None:
            noise = [None] * self.num_layers if randomize_noise else self.const_noise()

        out = self.input(latent)
        out = self.conv1(out, latent[:, 0], noise=noise[0])
        skip = self.to_rgb1(out, latent[:, 1])
        i = 1
        for conv_up, conv, noise1, noise2, to_rgb in zip(
            self.convs[::2], self.convs[1::2], noise[1::2], noise[2::2], self.to_rgbs
        ):
            out = conv_up(out, latent[:, i], noise=noise1)
            out = conv(out, latent[:, i + 1], noise=noise2)
            skip = to_rgb(out, latent[:, i + 2], skip)
            i += 2
        return skip

    def forward(
        self,
        styles: list[torch.Tensor],
        return_latents: bool = False,
        inject_index: int | None = None,
        truncation: float = 1,
        truncation_latent: torch.Tensor | None = None,
        input_is_latent: bool = False,
        noise: list[torch.Tensor | None] | None = None,
        randomize_noise: bool = True,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """rosinality's signature: styles is a list of one or two z (or W / W+ with input_is_latent).

        truncation_latent defaults to the tracked w_avg.
        """
        if not input_is_latent:
            styles = [self.get_latent(s) for s in styles]
        if truncation < 1:
            styles = [self.truncate(s, truncation, truncation_latent) for s in styles]
        latent = self.broadcast(styles, inject_index)
        image = self.synthesis(latent, noise=noise, randomize_noise=randomize_noise)
        return image, (latent if return_latents else None)


class Discriminator(nn.Module):
    """Residual discriminator: convs[0] is fromRGB, convs[1:] ResBlocks from size down to 8."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        channels = config.channels()
        size = config.size

        convs: list[nn.Module] = [ConvLayer(3, channels[size], 1)]
        in_channel = channels[size]
        for i in range(config.log_size, 2, -1):
            out_channel = channels[2 ** (i - 1)]
            convs.append(ResBlock(in_channel, out_channel))
            in_channel = out_channel
        self.convs = nn.Sequential(*convs)

        self.stddev_group = config.mbstd_group
        self.stddev_feat = 1
        self.final_conv = ConvLayer(in_channel + 1, channels[4], 3)
        self.final_linear = nn.Sequential(
            EqualLinear(channels[4] * 4 * 4, channels[4], activation="fused_lrelu"),
            EqualLinear(channels[4], 1),
        )

    def minibatch_stddev(self, out: torch.Tensor) -> torch.Tensor:
        """Append the feature stddev across each group of samples, so D can see low variety."""
        batch, channel, height, width = out.shape
        group = min(batch, self.stddev_group)
        if batch % group:
            raise ValueError(f"batch {batch} is not a multiple of the minibatch-stddev group {group}")
        stddev = out.view(group, -1, self.stddev_feat, channel // self.stddev_feat, height, width)
        stddev = torch.sqrt(stddev.var(0, unbiased=False) + 1e-8)
        stddev = stddev.mean([2, 3, 4], keepdim=True).squeeze(2)
        stddev = stddev.repeat(group, 1, height, width)
        return torch.cat([out, stddev], 1)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        out = self.minibatch_stddev(self.convs(input))
        out = self.final_conv(out)
        return self.final_linear(out.view(out.shape[0], -1))


def mixing_noise(batch: int, style_dim: int, prob: float, device: torch.device | str = "cpu") -> list[torch.Tensor]:
    """Style-mixing regularisation: with probability prob, two z per image instead of one."""
    count = 2 if prob > 0 and random.random() < prob else 1
    return list(torch.randn(count, batch, style_dim, device=device).unbind(0))


_MAPPING = re.compile(r"style\.\d+\.\w+|w_avg")
_FIRST_BLOCK = re.compile(r"(input|conv1|to_rgb1)\..+")
_CONVS = re.compile(r"convs\.(\d+)\..+")
_TO_RGBS = re.compile(r"to_rgbs\.(\d+)\..+")
_NOISE = re.compile(r"noises\.noise_(\d+)")


def generator_param_resolution(name: str, size: int | None = None) -> int:
    """Resolution a generator state-dict entry works at; 0 for the mapping network and w_avg.

    "Every tensor at resolution <= R" (layer swapping) is then
    `{k for k in state if generator_param_resolution(k) <= R}`, mapping network included.
    Given size, names that a generator of that size cannot have are refused.
    """
    if _MAPPING.fullmatch(name):
        res = 0
    elif _FIRST_BLOCK.fullmatch(name):
        res = 4
    elif m := _CONVS.fullmatch(name):
        res = 2 ** (int(m.group(1)) // 2 + 3)
    elif m := _TO_RGBS.fullmatch(name):
        res = 2 ** (int(m.group(1)) + 3)
    elif m := _NOISE.fullmatch(name):
        res = 2 ** ((int(m.group(1)) + 5) // 2)
    else:
        raise KeyError(f"not a generator state-dict name: {name!r}")
    if size is not None and res > size:
        raise KeyError(f"{name!r} works at {res}x{res}, beyond a {size}x{size} generator")
    return res
