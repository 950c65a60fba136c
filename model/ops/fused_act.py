"""Fused bias + leaky ReLU + gain (+ optional clamp), as in StyleGAN2."""
import torch
from torch import nn
from torch.autograd import Function
from torch.nn import functional as F

from . import build, check

_NO_CLAMP = -1.0  # the kernels' convention for "clamp disabled"


def fused_leaky_relu_ref(input, bias=None, negative_slope=0.2, scale=2**0.5, clamp=None):
    """Pure-PyTorch reference: rosinality's native path, plus NVlabs' clamp."""
    if bias is not None:
        input = input + bias.reshape(1, -1, *([1] * (input.ndim - 2)))
    out = F.leaky_relu(input, negative_slope=negative_slope) * scale
    if clamp is not None:
        out = out.clamp(-clamp, clamp)
    return out


class _FusedLeakyReLU(Function):
    @staticmethod
    def forward(ctx, input, bias, negative_slope, scale, clamp):
        empty = input.new_empty(0)
        ext = build.extension_for(input)
        out = ext.fused_bias_act(input, empty if bias is None else bias, empty, 0,
                                 negative_slope, scale, clamp)
        ctx.save_for_backward(out)
        ctx.has_bias = bias is not None
        ctx.args = (negative_slope, scale, clamp)
        return out

    @staticmethod
    def backward(ctx, grad_output):
        (out,) = ctx.saved_tensors
        grad_input, grad_bias = _FusedLeakyReLUBackward.apply(grad_output, out, ctx.has_bias, *ctx.args)
        return grad_input, grad_bias if ctx.has_bias else None, None, None, None


class _FusedLeakyReLUBackward(Function):
    """The gradient as its own Function, so that R1 and path length can differentiate it.

    The gradient is linear in grad_output with a slope read off the forward output, and leaky
    ReLU is piecewise linear, so its own gradient is the same fused op again and the
    derivative through `out` is zero."""

    @staticmethod
    def forward(ctx, grad_output, out, has_bias, negative_slope, scale, clamp):
        ext = build.extension_for(grad_output)
        grad_input, grad_bias = ext.fused_bias_act_backward(grad_output, out, has_bias, negative_slope, scale, clamp)
        ctx.save_for_backward(out)
        ctx.args = (negative_slope, scale, clamp)
        return grad_input, grad_bias

    @staticmethod
    def backward(ctx, gradgrad_input, gradgrad_bias):
        (out,) = ctx.saved_tensors
        ext = build.extension_for(gradgrad_input)
        gradgrad_out = ext.fused_bias_act(gradgrad_input, gradgrad_bias, out, 1, *ctx.args)
        return gradgrad_out, None, None, None, None, None


def fused_leaky_relu(input, bias=None, negative_slope=0.2, scale=2**0.5, clamp=None):
    """leaky_relu(input + bias) * scale, clamped to ±clamp; bias broadcasts over dim 1.

    Runs the C++/CUDA kernel when one is built for the input's device and dtype and has passed
    its check there (check.py), and the reference otherwise."""
    if clamp is not None and clamp < 0:
        raise ValueError(f"clamp must be >= 0 or None, got {clamp}")
    if not check.use_kernel("fused_bias_act", input):
        return fused_leaky_relu_ref(input, bias, negative_slope, scale, clamp)
    return _fused_leaky_relu_kernel(input, bias, negative_slope, scale, clamp)


def _fused_leaky_relu_kernel(input, bias, negative_slope, scale, clamp):
    if bias is not None:
        bias = bias.to(input.dtype)
    clamp = _NO_CLAMP if clamp is None else float(clamp)
    return _FusedLeakyReLU.apply(input, bias, float(negative_slope), float(scale), clamp)


def _check_cases(generator):
    """Conv maps with and without bias, a clamp that bites, another slope, a linear layer.
    Inputs are kept away from the kinks (0 and ±clamp), where float32 and float64 may land
    on different sides and legitimately disagree on the derivative."""
    settings = [  # label, shape, bias, negative_slope, scale, clamp
        ("conv map, bias", (2, 4, 5, 3), True, 0.2, 2**0.5, None),
        ("conv map, bias, clamp 0.5, slope 0.1", (2, 4, 5, 3), True, 0.1, 2**0.5, 0.5),
        ("conv map, no bias", (2, 4, 3, 5), False, 0.2, 2**0.5, None),
        ("linear layer, bias, gain 1", (3, 8), True, 0.2, 1.0, None),
    ]
    cases = []
    for label, shape, has_bias, slope, scale, clamp in settings:
        bias = torch.randn(shape[1], generator=generator, dtype=torch.float64) if has_bias else None
        offset = bias.reshape(1, -1, *[1] * (len(shape) - 2)) if has_bias else 0

        def near_kink(x):
            pre = x + offset
            near = pre.abs() < 1e-2
            if clamp is not None:
                near |= ((pre.clamp_min(0) + slope * pre.clamp_max(0)) * scale).abs().sub(clamp).abs() < 1e-2
            return near

        x = torch.randn(shape, generator=generator, dtype=torch.float64)
        while (near := near_kink(x)).any():  # redraw those elements; the generator keeps it fixed
            x = torch.where(near, torch.randn(shape, generator=generator, dtype=torch.float64), x)
        kwargs = dict(negative_slope=slope, scale=scale, clamp=clamp, **({} if has_bias else {"bias": None}))
        inputs = (x.requires_grad_(), bias.requires_grad_()) if has_bias else (x.requires_grad_(),)
        cases.append(check.Case(label, _with(_fused_leaky_relu_kernel, kwargs), _with(fused_leaky_relu_ref, kwargs), inputs))
    return cases


def _with(fn, kwargs):
    return lambda *tensors: fn(*tensors, **kwargs)


check.register("fused_bias_act", _check_cases)


class FusedLeakyReLU(nn.Module):
    """Bias + leaky ReLU + gain; the parameter is named `bias` to load rosinality checkpoints."""

    def __init__(self, channel, bias=True, negative_slope=0.2, scale=2**0.5, clamp=None):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channel)) if bias else None
        self.negative_slope = negative_slope
        self.scale = scale
        self.clamp = clamp

    def forward(self, input):
        return fused_leaky_relu(input, self.bias, self.negative_slope, self.scale, self.clamp)
