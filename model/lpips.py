"""Perceptual distance for projection: LPIPS on VGG16 (Zhang et al. 2018), in plain torch.

The trunk is torchvision's `vgg16().features` rebuilt layer for layer, so a torchvision VGG16
state dict (`features.N.weight`, `features.N.bias`) loads as it is; the five learned 1x1 heads
load from the LPIPS `vgg.pth` (`lin0.model.1.weight` ... `lin4`). Both are local files here:
the portraits stage fetches them (path or URL, sha256-checked) and hands over the paths.

Where no weights can be had, `perceptual_distance` falls back to `MultiScalePixelDistance`
(pixel MSE over an image pyramid) and says so in one warning: it reconstructs colours and
layout, not the texture detail LPIPS rewards.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

from styleforge.core.errors import UserError

VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
LPIPS_LIN_URL = "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/vgg.pth"

# torchvision's VGG16 "D" configuration: conv widths per stage, a 2x2 max-pool between stages.
VGG16_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
# LPIPS v0.1 input scaling: ImageNet statistics expressed for inputs in [-1, 1]
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
EPS = 1e-10  # LPIPS' normalize_tensor epsilon


class WeightsError(UserError, RuntimeError):
    """Weights were found but do not fit VGG16/LPIPS (a checksum mismatch is styleforge.fetch's FetchError)."""


class VGG16Features(nn.Module):
    """torchvision's vgg16().features up to relu5_3 (same indices); returns the five LPIPS taps.

    stages: conv widths per stage; VGG16's own unless weights of another width are loaded.
    """

    def __init__(self, stages: tuple[tuple[int, ...], ...] = VGG16_STAGES):
        super().__init__()
        layers: list[nn.Module] = []
        self.taps: list[int] = []  # index of the last ReLU of each stage
        in_channels = 3
        for stage, widths in enumerate(stages):
            if stage:
                layers.append(nn.MaxPool2d(2, 2))
            for width in widths:
                layers += [nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU()]
                in_channels = width
            self.taps.append(len(layers) - 1)
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        outputs = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in self.taps:
                outputs.append(x)
        return outputs


def _stage_widths(features: dict[str, torch.Tensor]) -> tuple[tuple[int, ...], ...]:
    """The conv widths a torchvision-layout state dict holds, checked against VGG16's layout."""
    index, stages = 0, []
    for stage, reference in enumerate(VGG16_STAGES):
        index += 1 if stage else 0  # the max-pool
        widths = []
        for _ in reference:
            weight = features.get(f"{index}.weight")
            if weight is None or weight.ndim != 4:
                raise WeightsError(f"not a torchvision VGG16 state dict: no 4-d features.{index}.weight")
            widths.append(weight.shape[0])
            index += 2  # conv, ReLU
        stages.append(tuple(widths))
    return tuple(stages)


class LPIPS(nn.Module):
    """LPIPS-VGG v0.1 distance between images in [-1, 1]: one value per sample, 0 for equal images."""

    def __init__(self, stages: tuple[tuple[int, ...], ...] = VGG16_STAGES):
        super().__init__()
        self.vgg = VGG16Features(stages)
        self.lins = nn.ModuleList(nn.Conv2d(widths[-1], 1, 1, bias=False) for widths in stages)
        self.register_buffer("shift", torch.tensor(LPIPS_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(LPIPS_SCALE).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    @classmethod
    def from_state_dicts(cls, vgg_state: dict, lin_state: dict) -> "LPIPS":
        """vgg_state: a torchvision VGG16 state dict; lin_state: LPIPS' vgg.pth (`linK.model.N.weight`)."""
        features = {k[len("features.") :]: v for k, v in vgg_state.items() if k.startswith("features.")}
        lins = {}
        for key, value in lin_state.items():  # index 1 with LPIPS' dropout, 0 without
            head, _, rest = key.partition(".")
            if head.startswith("lin") and rest.endswith("weight"):
                lins[f"{head[3:]}.weight"] = value
        model = cls(_stage_widths(features))
        try:
            model.vgg.features.load_state_dict(features)
            model.lins.load_state_dict(lins)
        except RuntimeError as exc:
            raise WeightsError(f"weights do not fit VGG16/LPIPS: {exc}") from None
        return model

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        features_a = self.vgg((a - self.shift) / self.scale)
        features_b = self.vgg((b - self.shift) / self.scale)
        distance = 0
        for lin, fa, fb in zip(self.lins, features_a, features_b):
            fa = fa / (fa.pow(2).sum(1, keepdim=True).sqrt() + EPS)  # unit length per position
            fb = fb / (fb.pow(2).sum(1, keepdim=True).sqrt() + EPS)
            distance = distance + lin((fa - fb).pow(2)).mean([1, 2, 3])
        return distance


class MultiScalePixelDistance(nn.Module):
    """Fallback distance: mean squared error at full size and each 2x-smaller level down to 16 px.

    The coarse levels weigh layout and colour as much as the full-size one weighs detail, which
    steers the early steps of a projection the way a perceptual loss would, if more bluntly.
    """

    def __init__(self, smallest: int = 16):
        super().__init__()
        self.smallest = smallest

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        levels = []
        while True:
            levels.append((a - b).pow(2).mean([1, 2, 3]))
            if min(a.shape[-2:]) < 2 * self.smallest:
                break
            a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
        return torch.stack(levels).mean(0)


def load_lpips(vgg: Path, lin: Path) -> LPIPS:
    """LPIPS from a torchvision VGG16 state dict file and the LPIPS heads file; WeightsError if unfit."""
    return LPIPS.from_state_dicts(_read_state(vgg), _read_state(lin))


def _read_state(path: Path) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for unreadable or unsafe files
        raise WeightsError(f"{path}: not a state dict torch can load safely: {exc}") from None
    if not isinstance(state, dict):
        raise WeightsError(f"{path}: holds a {type(state).__name__}, not a state dict")
    return state


def perceptual_distance(
    vgg: Path | None, lin: Path | None, missing: str = "no LPIPS weights configured"
) -> tuple[nn.Module, str]:
    """(distance module, its name): LPIPS-VGG from both weight files, else the pixel fallback
    with one warning that gives `missing` as the reason.

    A layout mismatch is an error, not a fallback: wrong weights must not pass.
    """
    if vgg is not None and lin is not None:
        return load_lpips(vgg, lin), "lpips_vgg"
    reason = missing
    warnings.warn(
        f"LPIPS unavailable ({reason}); projecting with the multi-scale pixel MSE fallback, which "
        f"recovers colour and layout but little texture. For LPIPS set the VGG16 weights "
        f"({VGG16_URL}) and the LPIPS heads ({LPIPS_LIN_URL}), as paths or URLs.",
        stacklevel=2,
    )
    return MultiScalePixelDistance(), "pixel_multiscale"
