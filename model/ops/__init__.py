"""StyleGAN2 custom ops: upfirdn2d and fused bias + leaky ReLU.

Each op has a pure-PyTorch reference (`*_ref`, rosinality's numerics) and C++/CUDA kernels
built just in time; `backend(device, dtype)` says which one runs ('cpp', 'cuda' or 'ref').
STYLEFORGE_OPS=auto|cpp|ref and STYLEFORGE_OPS_CACHE choose and place the build (build.py).
"""
from .build import backend
from .fused_act import FusedLeakyReLU, fused_leaky_relu, fused_leaky_relu_ref
from .upfirdn2d import upfirdn2d, upfirdn2d_ref

__all__ = [
    "backend",
    "FusedLeakyReLU",
    "fused_leaky_relu",
    "fused_leaky_relu_ref",
    "upfirdn2d",
    "upfirdn2d_ref",
]
