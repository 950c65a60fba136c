"""StyleGAN2 building blocks, named after the paper and laid out as rosinality's `model.py`.

Attribute names, parameter shapes and initialisation follow rosinality exactly, so his `.pt`
state dicts load into these modules unchanged. Weights are stored raw and scaled at run time
(equalised learning rate), as both rosinality and NVIDIA do.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from styleforge.model.ops import FusedLeakyReLU, fused_leaky_relu, upfirdn2d

BLUR_KERNEL = (1, 3, 3, 1)


class PixelNorm(nn.Module):
    """Normalise each latent to unit second moment (NVIDIA's normalize_2nd_moment)."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return input * torch.rsqrt(torch.mean(input**2, dim=1, keepdim=True) + 1e-8)


def make_kernel(k: Sequence[float]) -> torch.Tensor:
    """A separable 1-D FIR filter as its normalised 2-D outer product."""
    k = torch.tensor(k, dtype=torch.float32)
    if k.ndim == 1:
        k = k[None, :] * k[:, None]
    return k / k.sum()


class Upsample(nn.Module):
    """2x upsampling by zero insertion and FIR filtering (ToRGB skip path)."""

    def __init__(self, kernel: Sequence[float], factor: int = 2):
        super().__init__()
        self.factor = factor
        # zero insertion loses factor**2 of the energy; the kernel gives it back
        self.register_buffer("kernel", make_kernel(kernel) * factor**2)
        p = self.kernel.shape[0] - factor
        self.pad = ((p + 1) // 2 + factor - 1, p // 2)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(input, self.kernel, up=self.factor, down=1, pad=self.pad)


class Blur(nn.Module):
    """FIR low-pass filter applied around a strided (transposed) convolution."""

    def __init__(self, kernel: Sequence[float], pad: tuple[int, int], upsample_factor: int = 1):
        super().__init__()
        kernel = make_kernel(kernel)
        if upsample_factor > 1:
            kernel = kernel * upsample_factor**2
        self.register_buffer("kernel", kernel)
        self.pad = pad

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return upfirdn2d(input, self.kernel, pad=self.pad)


class EqualConv2d(nn.Module):
    """Conv2d with the He-init constant applied at run time (equalised learning rate)."""

    def __init__(self, in_channel, out_channel, kernel_size, stride=1, padding=0, bias=True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channel, in_channel, kernel_size, kernel_size))
        self.scale = 1 / math.sqrt(in_channel * kernel_size**2)
        self.stride = stride
        self.padding = padding
        self.bias = nn.Parameter(torch.zeros(out_channel)) if bias else None

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return F.conv2d(input, self.weight * self.scale, bias=self.bias, stride=self.stride, padding=self.padding)

    def extra_repr(self) -> str:
        out_channel, in_channel, k, _ = self.weight.shape
        return f"{in_channel}, {out_channel}, {k}, stride={self.stride}, padding={self.padding}"


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate; lr_mul slows the mapping network (0.01)."""

    def __init__(self, in_dim, out_dim, bias=True, bias_init=0.0, lr_mul=1.0, activation=None):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_dim, in_dim).div_(lr_mul))
        self.bias = nn.Parameter(torch.zeros(out_dim).fill_(bias_init)) if bias else None
        self.activation = activation
        self.scale = (1 / math.sqrt(in_dim)) * lr_mul
        self.lr_mul = lr_mul

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        bias = self.bias * self.lr_mul if self.bias is not None else None
        if self.activation:
            return fused_leaky_relu(F.linear(input, self.weight * self.scale), bias)
        return F.linear(input, self.weight * self.scale, bias=bias)

    def extra_repr(self) -> str:
        out_dim, in_dim = self.weight.shape
        return f"{in_dim}, {out_dim}, lr_mul={self.lr_mul}, activation={self.activation}"


class ModulatedConv2d(nn.Module):
    """Convolution whose weights are scaled per sample by the style, then demodulated.

    Two equivalent execution orders: grouped (one conv with per-sample weights, rosinality's
    default and cheapest for small batches) and activation scaling (scale input by the style,
    plain conv, scale output by the demodulation coefficients), which NVIDIA uses while
    training because its backward pass avoids building per-sample weight gradients.
    """

    def __init__(
        self,
        in_channel,
        out_channel,
        kernel_size,
        style_dim,
        demodulate=True,
        upsample=False,
        blur_kernel: Sequence[float] = BLUR_KERNEL,
    ):
        super().__init__()
        self.kernel_size = kernel_size
        self.in_channel = in_channel
        self.out_channel = out_channel
        self.upsample = upsample
        if upsample:
            factor = 2
            p = (len(blur_kernel) - factor) - (kernel_size - 1)
            self.blur = Blur(blur_kernel, pad=((p + 1) // 2 + factor - 1, p // 2 + 1), upsample_factor=factor)

        self.scale = 1 / math.sqrt(in_channel * kernel_size**2)
        self.padding = kernel_size // 2
        self.weight = nn.Parameter(torch.randn(1, out_channel, in_channel, kernel_size, kernel_size))
        # bias 1 so that an untrained affine layer leaves the weights unscaled
        self.modulation = EqualLinear(style_dim, in_channel, bias_init=1)
        self.demodulate = demodulate

    def extra_repr(self) -> str:
        return (
            f"{self.in_channel}, {self.out_channel}, {self.kernel_size}, "
            f"upsample={self.upsample}, demodulate={self.demodulate}"
        )

    def forward(self, input: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        style = self.modulation(style)
        if self.training:
            return self._forward_scaled_activations(input, style)
        return self._forward_grouped(input, style)

    def _forward_grouped(self, input: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        batch, in_channel, height, width = input.shape
        weight = self.scale * self.weight * style.view(batch, 1, in_channel, 1, 1)
        if self.demodulate:
            demod = torch.rsqrt(weight.pow(2).sum([2, 3, 4]) + 1e-8)
            weight = weight * demod.view(batch, self.out_channel, 1, 1, 1)

        if self.upsample:
            input = input.view(1, batch * in_channel, height, width)
            weight = weight.transpose(1, 2).reshape(batch * in_channel, self.out_channel, self.kernel_size, self.kernel_size)
            out = F.conv_transpose2d(input, weight, padding=0, stride=2, groups=batch)
            out = self.blur(out.view(batch, self.out_channel, *out.shape[2:]))
        else:
            input = input.view(1, batch * in_channel, height, width)
            weight = weight.view(batch * self.out_channel, in_channel, self.kernel_size, self.kernel_size)
            out = F.conv2d(input, weight, padding=self.padding, groups=batch)
            out = out.view(batch, self.out_channel, *out.shape[2:])
        return out

    def _forward_scaled_activations(self, input: torch.Tensor, style: torch.Tensor) -> torch.Tensor:
        batch, in_channel = input.shape[:2]
        weight = self.scale * self.weight.squeeze(0)
        input = input * style.view(batch, in_channel, 1, 1)

        if self.upsample:
            out = self.blur(F.conv_transpose2d(input, weight.transpose(0, 1), padding=0, stride=2))
        else:
            out = F.conv2d(input, weight, padding=self.padding)

        if self.demodulate:
            # sum over (in, kh, kw) of (weight * style)^2, as style^2 @ (sum over kh, kw of weight^2)^T:
            # the same sum without building the [N, out, in, kh, kw] modulated weights, whose
            # forward and (double) backward cost as much as a conv on the CPU. In float32 even
            # under bf16 autocast, as the elementwise form was (fp32 weight promotes the style).
            with torch.autocast(input.device.type, enabled=False):
                demod = torch.rsqrt(style.float().square() @ weight.float().square().sum([2, 3]).t() + 1e-8)
            out = out * demod.view(batch, self.out_channel, 1, 1)
        return out


class NoiseInjection(nn.Module):
    """Adds per-pixel Gaussian noise scaled by a learned strength (stochastic detail)."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def forward(self, image: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        if noise is None:
            batch, _, height, width = image.shape
            noise = image.new_empty(batch, 1, height, width).normal_()
        return image + self.weight * noise


class ConstantInput(nn.Module):
    """The learned 4x4 tensor that synthesis starts from."""

    def __init__(self, channel: int, size: int = 4):
        super().__init__()
        self.input = nn.Parameter(torch.randn(1, channel, size, size))

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return self.input.repeat(input.shape[0], 1, 1, 1)


class StyledConv(nn.Module):
    """Modulated conv, then noise, then bias + leaky ReLU: one synthesis layer."""

    def __init__(
        self,
        in_channel,
        out_channel,
        kernel_size,
        style_dim,
        upsample=False,
        blur_kernel: Sequence[float] = BLUR_KERNEL,
        demodulate=True,
    ):
        super().__init__()
        self.conv = ModulatedConv2d(
            in_channel, out_channel, kernel_size, style_dim, upsample=upsample, blur_kernel=blur_kernel, demodulate=demodulate
        )
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channel)

    def forward(self, input: torch.Tensor, style: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        return self.activate(self.noise(self.conv(input, style), noise=noise))


class ToRGB(nn.Module):
    """1x1 modulated conv to RGB (no demodulation), added to the upsampled skip image."""

    def __init__(self, in_channel, style_dim, upsample=True, blur_kernel: Sequence[float] = BLUR_KERNEL):
        super().__init__()
        if upsample:
            self.upsample = Upsample(blur_kernel)
        self.conv = ModulatedConv2d(in_channel, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(1, 3, 1, 1))

    def forward(self, input: torch.Tensor, style: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv(input, style) + self.bias
        if skip is not None:
            out = out + self.upsample(skip)
        return out


class ConvLayer(nn.Sequential):
    """[Blur] -> EqualConv2d -> [bias + leaky ReLU]; the discriminator's conv."""

    def __init__(
        self,
        in_channel,
        out_channel,
        kernel_size,
        downsample=False,
        blur_kernel: Sequence[float] = BLUR_KERNEL,
        bias=True,
        activate=True,
    ):
        layers: list[nn.Module] = []
        if downsample:
            factor = 2
            p = (len(blur_kernel) - factor) + (kernel_size - 1)
            layers.append(Blur(blur_kernel, pad=((p + 1) // 2, p // 2)))
            stride, padding = 2, 0
        else:
            stride, padding = 1, kernel_size // 2
        # with an activation the bias lives in FusedLeakyReLU, as in rosinality's checkpoints
        layers.append(
            EqualConv2d(in_channel, out_channel, kernel_size, padding=padding, stride=stride, bias=bias and not activate)
        )
        if activate:
            layers.append(FusedLeakyReLU(out_channel, bias=bias))
        super().__init__(*layers)


class ResBlock(nn.Module):
    """Discriminator residual block: two convs (the second halves resolution) plus a 1x1 skip."""

    def __init__(self, in_channel, out_channel, blur_kernel: Sequence[float] = BLUR_KERNEL):
        super().__init__()
        self.conv1 = ConvLayer(in_channel, in_channel, 3, blur_kernel=blur_kernel)
        self.conv2 = ConvLayer(in_channel, out_channel, 3, downsample=True, blur_kernel=blur_kernel)
        self.skip = ConvLayer(in_channel, out_channel, 1, downsample=True, blur_kernel=blur_kernel, activate=False, bias=False)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        # divide by sqrt(2) so the sum keeps unit variance
        return (self.conv2(self.conv1(input)) + self.skip(input)) / math.sqrt(2)
