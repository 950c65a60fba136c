"""Adaptive discriminator augmentation (Karras et al. 2020, "Training GANs with Limited Data").

Every image the discriminator sees, real or fake (and the reals of R1), goes through the same
random, differentiable pipeline with probability p per transform; p follows the overfitting
heuristic r_t = E[sign(D(real))] toward a target (0.6), moving by at most one unit per
`speed_kimg` thousand real images.

The pipeline is NVIDIA's 'bgc' set (stylegan2-ada-pytorch training/augment.py):
  blit:   xflip, rotate90, integer translation
  geom:   isotropic scale, rotation (pre and post), anisotropic scale, fractional translation
  colour: brightness, contrast, luma flip, hue rotation, saturation
Written here by hand because no installed library gives it (torchvision/kornia are absent and
neither adapts p): the transforms are composed into one inverse 3x3 pixel matrix per image and
executed once with torch's affine_grid + grid_sample between a 2x sym6 wavelet up/downsample
(the project's upfirdn2d) so rotations do not alias; colours are one 4x4 matrix per image.
Gradients flow to the input through all of it, twice over (R1 differentiates through it).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from styleforge.model.ops import backend, upfirdn2d

# Orthogonal low-pass filter for the geometric resampling (sym6 wavelet, NVIDIA's choice).
SYM6 = [
    0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
    0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
    -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148,
]

# NVIDIA's 'bgc' strengths (all probability multipliers 1).
XINT_MAX, SCALE_STD, ROTATE_MAX, ANISO_STD, XFRAC_STD = 0.125, 0.2, 1.0, 0.2, 0.125
BRIGHTNESS_STD, CONTRAST_STD, HUE_MAX, SATURATION_STD = 0.2, 0.5, 1.0, 1.0


def _matrix(*rows: list, like: torch.Tensor) -> torch.Tensor:
    """Stack per-image entries (tensors [N] or Python numbers) into [N, rows, cols]."""
    entries = [e if isinstance(e, torch.Tensor) else torch.full_like(like, float(e))
               for row in rows for e in row]
    return torch.stack(entries, dim=-1).reshape(like.shape[0], len(rows), len(rows[0]))


def translate2d(tx, ty, like):
    return _matrix([1, 0, tx], [0, 1, ty], [0, 0, 1], like=like)


def scale2d(sx, sy, like):
    return _matrix([sx, 0, 0], [0, sy, 0], [0, 0, 1], like=like)


def rotate2d(theta, like):
    cos, sin = torch.cos(theta), torch.sin(theta)
    return _matrix([cos, -sin, 0], [sin, cos, 0], [0, 0, 1], like=like)


def translate3d(t, like):
    return _matrix([1, 0, 0, t], [0, 1, 0, t], [0, 0, 1, t], [0, 0, 0, 1], like=like)


def scale3d(s, like):
    return _matrix([s, 0, 0, 0], [0, s, 0, 0], [0, 0, s, 0], [0, 0, 0, 1], like=like)


def rotate3d(axis: tuple[float, float, float], theta: torch.Tensor, like) -> torch.Tensor:
    """Rotation by theta around a unit 3-vector (Rodrigues), homogeneous 4x4."""
    vx, vy, vz = axis
    s, c = torch.sin(theta), torch.cos(theta)
    cc = 1 - c
    return _matrix(
        [vx * vx * cc + c, vx * vy * cc - vz * s, vx * vz * cc + vy * s, 0],
        [vy * vx * cc + vz * s, vy * vy * cc + c, vy * vz * cc - vx * s, 0],
        [vz * vx * cc - vy * s, vz * vy * cc + vx * s, vz * vz * cc + c, 0],
        [0, 0, 0, 1],
        like=like,
    )


def _resample_filter(images: torch.Tensor, taps: torch.Tensor, pad: tuple[int, int], up: int = 1, down: int = 1):
    """upfirdn2d with the separable filter `taps` on both axes (pad applies to each axis).

    The compiled kernels take the 2-D outer product in one pass. The pure-PyTorch reference
    (conv2d over a one-channel view) is ~3x faster, backward included, as a row pass then a
    column pass (2k taps per pixel instead of k^2); the result is the same.
    """
    if backend(images.device, images.dtype) != "ref":
        return upfirdn2d(images, taps, up=up, down=down, pad=pad * 2)
    images = upfirdn2d(images, taps[None, :], up=(up, 1), down=(down, 1), pad=(*pad, 0, 0))
    return upfirdn2d(images, taps[:, None], up=(1, up), down=(1, down), pad=(0, 0, *pad))


def _chosen(value: torch.Tensor, identity: torch.Tensor, prob: float) -> torch.Tensor:
    """value where a per-image coin with P(heads)=prob says so, identity elsewhere."""
    coin = torch.rand(value.shape[0], *([1] * (value.ndim - 1)), device=value.device) < prob
    return torch.where(coin, value, identity)


class AdaptiveAugment(nn.Module):
    """The bgc pipeline with an adaptive probability p; `state()` is what a checkpoint keeps."""

    def __init__(self, target: float = 0.6, speed_kimg: float = 500.0, interval: int = 4,
                 p: float = 0.0, adaptive: bool = True):
        super().__init__()
        self.target, self.speed_kimg, self.interval, self.adaptive = target, speed_kimg, interval, adaptive
        self.p = float(p)
        self.rt = 0.0  # the last measured E[sign(D(real))], for logs
        # [sum of sign(D(real)), number of reals] since the last adjustment; a tensor on the
        # training device so accumulating it costs no host sync.
        self.register_buffer("signs", torch.zeros(2, dtype=torch.float64), persistent=False)
        self.register_buffer("filter", torch.tensor(SYM6) / sum(SYM6), persistent=False)

    # --- the heuristic -------------------------------------------------------------------
    @torch.no_grad()
    def observe(self, real_logits: torch.Tensor) -> None:
        self.signs += torch.stack([real_logits.detach().sign().sum().double(),
                                   torch.tensor(real_logits.numel(), dtype=torch.float64, device=self.signs.device)])

    @torch.no_grad()
    def adjust(self, all_reduce=None) -> None:
        """Move p toward the target by (reals seen) / (speed_kimg * 1000); call every `interval` steps.

        all_reduce sums the statistics over data-parallel ranks so every rank gets the same p.
        """
        if not self.adaptive:
            return
        stats = self.signs.clone()
        if all_reduce is not None:
            all_reduce(stats)
        sign_sum, count = stats.tolist()
        self.signs.zero_()
        if count == 0:
            return
        self.rt = sign_sum / count
        step = count / (self.speed_kimg * 1000)
        self.p = min(1.0, max(0.0, self.p + math.copysign(step, self.rt - self.target)))

    def state(self) -> dict:
        sign_sum, count = self.signs.tolist()
        return {"p": self.p, "rt": self.rt, "sign_sum": sign_sum, "count": count}

    def load_state(self, state: dict) -> None:
        self.p, self.rt = float(state["p"]), float(state["rt"])
        self.signs.copy_(torch.tensor([state["sign_sum"], state["count"]], dtype=torch.float64))

    # --- the pipeline --------------------------------------------------------------------
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.p <= 0:  # nothing fires: skip the resampling (and its random draws) entirely
            return images
        images = self._geometric(images)
        return self._colour(images)

    def _geometric(self, images: torch.Tensor) -> torch.Tensor:
        """Compose NVIDIA's inverse pixel transform (output pixel -> input pixel, centre origin)."""
        n, _, height, width = images.shape
        device, p = images.device, self.p
        one = torch.ones(n, device=device)
        zero = torch.zeros(n, device=device)
        g_inv = torch.eye(3, device=device).expand(n, 3, 3)

        flip = _chosen(torch.floor(torch.rand(n, device=device) * 2), zero, p)
        g_inv = g_inv @ scale2d(1 - 2 * flip, one, like=one)
        quarter = _chosen(torch.floor(torch.rand(n, device=device) * 4), zero, p)
        g_inv = g_inv @ rotate2d(math.pi / 2 * quarter, like=one)
        shift = _chosen((torch.rand(n, 2, device=device) * 2 - 1) * XINT_MAX, torch.zeros(n, 2, device=device), p)
        g_inv = g_inv @ translate2d(-torch.round(shift[:, 0] * width), -torch.round(shift[:, 1] * height), like=one)

        scale = _chosen(torch.exp2(torch.randn(n, device=device) * SCALE_STD), one, p)
        g_inv = g_inv @ scale2d(1 / scale, 1 / scale, like=one)
        p_rot = 1 - math.sqrt(min(max(1 - p, 0.0), 1.0))  # P(pre or post rotation) = p
        theta = _chosen((torch.rand(n, device=device) * 2 - 1) * math.pi * ROTATE_MAX, zero, p_rot)
        g_inv = g_inv @ rotate2d(theta, like=one)
        aniso = _chosen(torch.exp2(torch.randn(n, device=device) * ANISO_STD), one, p)
        g_inv = g_inv @ scale2d(1 / aniso, aniso, like=one)
        theta = _chosen((torch.rand(n, device=device) * 2 - 1) * math.pi * ROTATE_MAX, zero, p_rot)
        g_inv = g_inv @ rotate2d(theta, like=one)
        frac = _chosen(torch.randn(n, 2, device=device) * XFRAC_STD, torch.zeros(n, 2, device=device), p)
        g_inv = g_inv @ translate2d(-frac[:, 0] * width, -frac[:, 1] * height, like=one)
        return self._resample(images, g_inv)

    def _resample(self, images: torch.Tensor, g_inv: torch.Tensor) -> torch.Tensor:
        """Execute an inverse pixel transform: reflect-pad, 2x up, grid_sample, 2x down, crop."""
        n, channels, height, width = images.shape
        device, one = images.device, torch.ones(n, device=images.device)
        taps = self.filter.to(images.dtype)
        filter_pad = taps.numel() // 4

        # Reflect-pad far enough that every sampled point lands on real (mirrored) content.
        cx, cy = (width - 1) / 2, (height - 1) / 2
        corners = torch.tensor([[-cx, -cy, 1], [cx, -cy, 1], [cx, cy, 1], [-cx, cy, 1]], device=device)
        corners = g_inv @ corners.t()  # [N, xyz, corner]
        margin = corners[:, :2, :].permute(1, 0, 2).flatten(1)  # [xy, N * corner]
        margin = torch.cat([-margin, margin]).max(dim=1).values  # [x0, y0, x1, y1]
        margin = margin + torch.tensor([filter_pad * 2 - cx, filter_pad * 2 - cy] * 2, device=device)
        margin = margin.clamp(min=0).minimum(torch.tensor([width - 1, height - 1] * 2, device=device))
        mx0, my0, mx1, my1 = (int(v) for v in margin.ceil().tolist())
        images = F.pad(images, [mx0, mx1, my0, my1], mode="reflect")
        g_inv = translate2d((mx0 - mx1) / 2 * one, (my0 - my1) / 2 * one, like=one) @ g_inv

        # 2x upsample (convolution with the filter, gain 2 per axis), as NVIDIA's upsample2d.
        fw = taps.numel()
        images = _resample_filter(images, taps * 2, up=2, pad=((fw + 1) // 2, (fw - 2) // 2))
        g_inv = scale2d(2 * one, 2 * one, like=one) @ g_inv @ scale2d(one / 2, one / 2, like=one)
        g_inv = translate2d(-0.5 * one, -0.5 * one, like=one) @ g_inv @ translate2d(0.5 * one, 0.5 * one, like=one)

        # Sample the output (image plus a filter-wide border, at 2x) in normalised coordinates.
        shape = [n, channels, (height + filter_pad * 2) * 2, (width + filter_pad * 2) * 2]
        g_inv = (scale2d(2 / images.shape[3] * one, 2 / images.shape[2] * one, like=one) @ g_inv
                 @ scale2d(shape[3] / 2 * one, shape[2] / 2 * one, like=one))
        grid = F.affine_grid(g_inv[:, :2, :].to(images.dtype), shape, align_corners=False)
        images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

        # 2x downsample (correlation: the adjoint of the upsample) and crop the border away.
        crop = (-filter_pad * 2 + (fw - 1) // 2, -filter_pad * 2 + (fw - 2) // 2)
        return _resample_filter(images, taps.flip(0), down=2, pad=crop)

    def _colour(self, images: torch.Tensor) -> torch.Tensor:
        n, channels, height, width = images.shape
        device, p = images.device, self.p
        one, zero = torch.ones(n, device=device), torch.zeros(n, device=device)
        eye = torch.eye(4, device=device)
        luma = torch.tensor([1.0, 1.0, 1.0, 0.0], device=device) / math.sqrt(3)
        luma_outer = torch.outer(luma, luma)
        colour = eye.expand(n, 4, 4)

        brightness = _chosen(torch.randn(n, device=device) * BRIGHTNESS_STD, zero, p)
        colour = translate3d(brightness, like=one) @ colour
        contrast = _chosen(torch.exp2(torch.randn(n, device=device) * CONTRAST_STD), one, p)
        colour = scale3d(contrast, like=one) @ colour
        flip = _chosen(torch.floor(torch.rand(n, device=device) * 2), zero, p)
        colour = (eye - 2 * luma_outer * flip.view(n, 1, 1)) @ colour  # Householder reflection of luma
        hue = _chosen((torch.rand(n, device=device) * 2 - 1) * math.pi * HUE_MAX, zero, p)
        colour = rotate3d((1 / math.sqrt(3),) * 3, hue, like=one) @ colour
        saturation = _chosen(torch.exp2(torch.randn(n, device=device) * SATURATION_STD), one, p)
        colour = (luma_outer + (eye - luma_outer) * saturation.view(n, 1, 1)) @ colour

        colour = colour.to(images.dtype)
        flat = images.reshape(n, channels, height * width)
        flat = colour[:, :3, :3] @ flat + colour[:, :3, 3:]
        return flat.reshape(n, channels, height, width)
