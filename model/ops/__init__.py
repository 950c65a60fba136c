"""StyleGAN2 custom ops: upfirdn2d and fused bias + leaky ReLU.

Each op has a pure-PyTorch reference (`*_ref`, rosinality's numerics) and C++/CUDA kernels
built just in time (build.py). A kernel runs on a device only after it has matched its
reference there on a small fixed problem, forward and two derivatives (check.py).
`backend(device, dtype, op)` says which implementation runs ('cpp', 'cuda' or 'ref') and
`reason(...)` why. STYLEFORGE_OPS=auto|cpp|ref and STYLEFORGE_OPS_CACHE choose and place the
build.
"""
from .check import backend, reason
from .fused_act import FusedLeakyReLU, fused_leaky_relu, fused_leaky_relu_ref
from .upfirdn2d import upfirdn2d, upfirdn2d_ref

__all__ = [
    "backend",
    "reason",
    "FusedLeakyReLU",
    "fused_leaky_relu",
    "fused_leaky_relu_ref",
    "upfirdn2d",
    "upfirdn2d_ref",
]
