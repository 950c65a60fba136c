"""The Inception feature detector FID and KID are measured with, without torchvision.

StyleGAN2-ADA ships the 2015 TensorFlow Inception graph that FID was defined with as a TorchScript
file, `inception-2015-12-05.pt` (NVlabs/stylegan2-ada-pytorch, metrics/metric_utils.py). It loads
with `torch.jit.load` alone, takes uint8 RGB images [N, 3, H, W] of any size (it resizes to
299² inside) and returns the 2048-d pool features when called with `return_features=True`. So no
torchvision (which has no CPU build here) and no hand-ported network are needed, and the figures
match NVIDIA's. NVIDIA publishes it at
https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/inception-2015-12-05.pt;
params.yaml names a path or URL (`evaluate.inception`), fetched once by styleforge.fetch.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch


def load_detector(path: Path, device: torch.device) -> torch.jit.ScriptModule:
    return torch.jit.load(str(path), map_location=device).eval()


@torch.inference_mode()
def extract_features(
    detector: torch.jit.ScriptModule, batches: Iterable[torch.Tensor], device: torch.device
) -> np.ndarray:
    """Features [N, D] in float64 (D = 2048 for NVIDIA's detector) of uint8 RGB batches [B, 3, H, W].

    Batches are consumed as they come: 5000 generated images at 1024² would be 15 GB at once.
    """
    chunks = []
    for images in batches:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"need uint8 [B, 3, H, W] images, got {images.dtype} {list(images.shape)}")
        chunks.append(detector(images.to(device), return_features=True).double().cpu())
    features = torch.cat(chunks).numpy()
    if features.ndim != 2:
        raise ValueError(f"the detector returned {list(features.shape)}, expected [N, features]")
    return features
