"""upfirdn2d: upsample by zero insertion, pad (or crop), FIR filter, downsample.

`upfirdn2d_ref` reproduces rosinality's `upfirdn2d_native` (NCHW, conv2d with the flipped
kernel), which is what rosinality FFHQ checkpoints were trained against.
"""
from collections import abc

import torch
from torch.autograd import Function
from torch.nn import functional as F

from . import build, check


def _pair(value):
    return tuple(value) if isinstance(value, abc.Iterable) else (value, value)


def _normalise_args(kernel, up, down, pad):
    """Rosinality's conventions: int or (x, y) factors; pad (p0, p1) or (x0, x1, y0, y1)."""
    if kernel.ndim == 1:  # a separable 1-D filter, as NVlabs accepts
        kernel = kernel[:, None] * kernel[None, :]
    pad = tuple(int(p) for p in pad)
    if len(pad) == 2:
        pad = (pad[0], pad[1], pad[0], pad[1])
    return kernel, _pair(up), _pair(down), pad


def upfirdn2d_ref(input, kernel, up=1, down=1, pad=(0, 0)):
    """Pure-PyTorch upfirdn2d, numerically rosinality's `upfirdn2d_native`."""
    kernel, (up_x, up_y), (down_x, down_y), (pad_x0, pad_x1, pad_y0, pad_y1) = _normalise_args(
        kernel, up, down, pad
    )
    batch, channel, in_h, in_w = input.shape
    kernel_h, kernel_w = kernel.shape

    out = input.reshape(-1, in_h, 1, in_w, 1)
    out = F.pad(out, [0, up_x - 1, 0, 0, 0, up_y - 1])
    out = out.reshape(-1, 1, in_h * up_y, in_w * up_x)
    out = F.pad(out, [max(pad_x0, 0), max(pad_x1, 0), max(pad_y0, 0), max(pad_y1, 0)])
    out = out[
        :,
        :,
        max(-pad_y0, 0) : out.shape[2] - max(-pad_y1, 0),
        max(-pad_x0, 0) : out.shape[3] - max(-pad_x1, 0),
    ]
    weight = torch.flip(kernel, [0, 1]).reshape(1, 1, kernel_h, kernel_w).to(out)
    out = F.conv2d(out, weight)
    out = out[:, :, ::down_y, ::down_x]
    return out.reshape(batch, channel, out.shape[2], out.shape[3])


class _UpFirDn2d(Function):
    """upfirdn2d through the extension. Its backward is an upfirdn2d of the gradient with the
    flipped kernel, up and down swapped and the pads adjusted, applied through this same
    Function, so the op is differentiable any number of times (R1 and path length need two).
    The kernel is a constant: it gets no gradient here."""

    @staticmethod
    def forward(ctx, input, kernel, up, down, pad):
        out = build.extension_for(input).upfirdn2d(input, kernel, *up, *down, *pad)
        ctx.save_for_backward(kernel)
        ctx.geometry = (up, down, pad, input.shape[2:], out.shape[2:])
        return out

    @staticmethod
    def backward(ctx, grad_output):
        (kernel,) = ctx.saved_tensors
        up, down, pad, in_size, out_size = ctx.geometry
        grad_pad = []
        for axis in (0, 1):  # x, then y, as pad is laid out
            up_a, down_a, pad0 = up[axis], down[axis], pad[2 * axis]
            taps, n_in, n_out = kernel.shape[1 - axis], in_size[1 - axis], out_size[1 - axis]
            grad_pad += [taps - pad0 - 1, n_in * up_a - n_out * down_a + pad0 - up_a + 1]
        grad_input = _UpFirDn2d.apply(grad_output, kernel.flip([0, 1]), down, up, tuple(grad_pad))
        return grad_input, None, None, None, None


def upfirdn2d(input, kernel, up=1, down=1, pad=(0, 0)):
    """upfirdn2d on input [N, C, H, W] with a 2-D kernel [kh, kw] (or a 1-D separable one).

    Runs the C++/CUDA kernel when one is built for the input's device and dtype and has passed
    its check there (check.py), and the reference otherwise (and whenever the kernel itself
    needs a gradient)."""
    if kernel.requires_grad or not check.use_kernel("upfirdn2d", input):
        return upfirdn2d_ref(input, kernel, up, down, pad)
    return _upfirdn2d_kernel(input, kernel, up, down, pad)


def _upfirdn2d_kernel(input, kernel, up, down, pad):
    kernel, up, down, pad = _normalise_args(kernel, up, down, pad)
    return _UpFirDn2d.apply(input, kernel.to(input.dtype), up, down, pad)


def _check_cases(generator):
    """StyleGAN2's three uses (blur, 2x up, 2x down), then what they do not exercise: a
    non-separable kernel, mixed x/y factors, a cropping pad and a transposed (strided) input.
    Non-square sizes, so a swapped axis cannot pass."""

    def randn(*shape, grad=False):
        return torch.randn(*shape, generator=generator, dtype=torch.float64).requires_grad_(grad)

    taps = torch.tensor([1.0, 3, 3, 1], dtype=torch.float64)
    blur = taps[:, None] * taps[None, :] / 64
    cases = [
        ("blur pad (1, 1)", randn(2, 3, 9, 7, grad=True), blur * 4, 1, 1, (1, 1)),
        ("2x up pad (2, 1)", randn(2, 3, 7, 6, grad=True), blur * 4, 2, 1, (2, 1)),
        ("2x down pad (1, 1)", randn(2, 3, 9, 10, grad=True), blur, 1, 2, (1, 1)),
        ("3x4 kernel up (2, 1) down (1, 2) pad (1, 2, 0, -1)", randn(1, 2, 8, 5, grad=True), randn(3, 4),
         (2, 1), (1, 2), (1, 2, 0, -1)),
    ]
    checked = [
        check.Case(label, _geometry(_upfirdn2d_kernel, up, down, pad), _geometry(upfirdn2d_ref, up, down, pad), (x, k))
        for label, x, k, up, down, pad in cases
    ]
    x = randn(1, 2, 7, 9, grad=True)
    transposed = check.Case(
        "transposed input, 2x up pad (2, 1)",
        lambda x, k: _upfirdn2d_kernel(x.transpose(2, 3), k, 2, 1, (2, 1)),
        lambda x, k: upfirdn2d_ref(x.transpose(2, 3), k, 2, 1, (2, 1)),
        (x, blur * 4),
    )
    return checked + [transposed]


def _geometry(fn, up, down, pad):
    return lambda x, k: fn(x, k, up, down, pad)


check.register("upfirdn2d", _check_cases)
