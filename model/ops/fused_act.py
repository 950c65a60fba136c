"""Fused bias + leaky ReLU + gain (+ optional clamp), as in StyleGAN2."""
import torch
from torch import nn
from torch.autograd import Function
from torch.nn import functional as F

from . import build

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

    Runs the C++/CUDA kernel when one is built for the input's device and dtype, and the
    reference otherwise."""
    if clamp is not None and clamp < 0:
        raise ValueError(f"clamp must be >= 0 or None, got {clamp}")
    if build.extension_for(input) is None:
        return fused_leaky_relu_ref(input, bias, negative_slope, scale, clamp)
    if bias is not None:
        bias = bias.to(input.dtype)
    clamp = _NO_CLAMP if clamp is None else float(clamp)
    return _FusedLeakyReLU.apply(input, bias, float(negative_slope), float(scale), clamp)


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
