"""Checkpoints: ours (everything a resume needs) and rosinality's `.pt` layout.

Ours is one `torch.save` dict, written atomically and read with `weights_only=True`, so it holds
only tensors, numbers, strings, lists and dicts:

    format      FORMAT
    config      ModelConfig as a plain dict: the file alone rebuilds its networks
    g, d, g_ema state dicts (rosinality names, plus the generators' `w_avg`)
    g_optim, d_optim   optimiser state dicts, or None
    step        training step
    augment     augmentation state, e.g. {"p": 0.3} for ADA
    latent_avg  g_ema's w_avg, where rosinality-based tools look for it

rosinality's files (`g_ema`, optionally `g`, `d`, optimisers, `latent_avg`, `args`) load as
they are; their config is read off the tensor shapes. Every state dict is checked against the
model before anything is copied: a mismatch names the first tensor that differs.
"""

from __future__ import annotations

import argparse
import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from styleforge.core.errors import UserError
from styleforge.core.io import atomic_write
from styleforge.model.networks import Discriminator, Generator, ModelConfig

FORMAT = "styleforge-checkpoint/1"
MEAN_LATENT_SAMPLES = 4096  # rosinality's generate.py default for its truncation centre
NO_D_NOTE = "no discriminator in the file: d is freshly initialised"


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be read, or does not fit the model it is loaded into."""


@dataclass
class Checkpoint:
    """A loaded checkpoint: networks rebuilt and filled, training state as stored."""

    config: ModelConfig
    g: Generator
    d: Discriminator
    g_ema: Generator
    step: int = 0
    g_optim: dict | None = None
    d_optim: dict | None = None
    augment: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # what was filled in rather than read


def build_networks(config: ModelConfig) -> tuple[Generator, Discriminator, Generator]:
    """Fresh (g, d, g_ema); g_ema starts as an exact copy of g, in eval mode."""
    g = config.generator()
    return g, config.discriminator(), copy.deepcopy(g).eval()


def save_checkpoint(
    path: str | Path,
    config: ModelConfig,
    g: Generator,
    d: Discriminator | None,
    g_ema: Generator,
    g_optim: torch.optim.Optimizer | None = None,
    d_optim: torch.optim.Optimizer | None = None,
    step: int = 0,
    augment: dict | None = None,
) -> Path:
    """Write our checkpoint atomically: a killed run leaves the old file or the new one.

    d may be None (a converted generator-only pickle): loading then starts a fresh one.
    """
    payload = {
        "format": FORMAT,
        "config": config.to_dict(),
        "g": g.state_dict(),
        "d": d.state_dict() if d is not None else None,
        "g_ema": g_ema.state_dict(),
        "g_optim": g_optim.state_dict() if g_optim is not None else None,
        "d_optim": d_optim.state_dict() if d_optim is not None else None,
        "step": int(step),
        "augment": dict(augment or {}),
        "latent_avg": g_ema.w_avg.detach().clone(),
    }
    _check_plain(payload["augment"], "augment")
    return atomic_write(path, lambda tmp: torch.save(payload, tmp))


def _check_plain(value: Any, where: str) -> None:
    """Refuse at save time what weights_only loading would refuse at resume time."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"{where}: key {key!r} is not a str or int")
            _check_plain(item, f"{where}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
    elif not (value is None or isinstance(value, (bool, int, float, str, torch.Tensor))):
        raise TypeError(f"{where}: {type(value).__name__} cannot be stored; use tensors, numbers, strings, lists, dicts")


def read_raw(path: str | Path) -> dict:
    """torch.load with weights_only; rosinality's `args` Namespace is the one class allowed."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the file is empty (0 bytes): an interrupted download or copy?")
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            # CPU first: nothing is held twice on a GPU (the caller moves the networks)
            raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for unreadable or unsafe files
        raise CheckpointError(f"{path}: cannot be read as a checkpoint: {first_line(exc)}") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: expected a dict, got {type(raw).__name__}")
    return raw


def first_line(exc: BaseException) -> str:
    """An exception as one line: torch's load errors run to paragraphs of advice."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def load_state_strict(module: nn.Module, state: Any, what: str) -> None:
    """Load state into module only if every name and shape fits; else say what does not."""
    if not isinstance(state, dict):
        raise CheckpointError(f"{what}: expected a state dict, got {type(state).__name__}")
    expected = module.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    problems = []
    for key, tensor in expected.items():
        value = state.get(key)
        if value is None:
            continue
        if not isinstance(value, torch.Tensor):
            problems.append(f"{key!r} is a {type(value).__name__}, not a tensor")
            break
        if value.shape != tensor.shape:
            problems.append(
                f"tensor {key!r} has shape {tuple(value.shape)} in the checkpoint but {tuple(tensor.shape)} in the model"
            )
            break
    if missing:
        problems.append(f"missing keys ({len(missing)}): {_head(missing)}")
    if unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): {_head(unexpected)}")
    if problems:
        raise CheckpointError(f"{what} does not fit the model: " + "; ".join(problems))
    module.load_state_dict(state)


def _head(names: list[str], n: int = 6) -> str:
    return ", ".join(names[:n]) + (", ..." if len(names) > n else "")


_STYLE = re.compile(r"style\.(\d+)\.weight")
_TO_RGB = re.compile(r"to_rgbs\.(\d+)\.conv\.weight")


def infer_config(g_state: dict[str, torch.Tensor], **overrides: Any) -> ModelConfig:
    """Rebuild the ModelConfig of a rosinality-layout generator state dict from its shapes.

    size from the number of ToRGB layers, style_dim from the modulation inputs, n_mlp from the
    mapping layers, and the channel table from the conv widths (as rosinality's
    channel_multiplier when it fits, else as channel_base/channel_max).
    """
    try:
        style_dim = g_state["conv1.conv.modulation.weight"].shape[1]
        n_mlp = sum(1 for k in g_state if _STYLE.fullmatch(k))
        n_to_rgbs = sum(1 for k in g_state if _TO_RGB.fullmatch(k))
        widths = {4: g_state["input.input"].shape[1]}
        widths |= {2 ** (k + 3): g_state[f"convs.{2 * k}.conv.weight"].shape[1] for k in range(n_to_rgbs)}
    except (KeyError, TypeError, AttributeError, IndexError) as exc:
        raise CheckpointError(f"not a StyleGAN2 generator state dict (rosinality layout): {exc!r}") from None
    return config_from_widths(widths, style_dim=style_dim, n_mlp=n_mlp, **overrides)


def config_from_widths(widths: dict[int, int], **fields: Any) -> ModelConfig:
    """The ModelConfig whose channel table is widths {resolution: channels, 4..size}.

    Prefers rosinality's channel_multiplier; falls back to an explicit channel_base.
    """
    size = max(widths)
    base = dict(size=size, channel_max=max(widths.values())) | fields
    candidates = [ModelConfig(**base)]
    if size >= 64 and widths[64] % 256 == 0:
        candidates.append(ModelConfig(**base, channel_multiplier=widths[64] // 256))
    below_cap = [res for res, width in sorted(widths.items()) if width < base["channel_max"]]
    if below_cap:
        candidates.append(ModelConfig(**base, channel_base=widths[below_cap[0]] * below_cap[0]))
    for config in candidates:
        if config.channels() == widths:
            return config
    raise CheckpointError(f"generator widths {widths} do not follow min(channel_max, channel_base / resolution)")


def load_checkpoint(
    path: str | Path, config: ModelConfig | None = None, map_location: str | torch.device = "cpu"
) -> Checkpoint:
    """Load ours or a rosinality file into fresh networks on map_location.

    With config, the networks are built from it (a resume with the run's own settings) and the
    file must fit it exactly; without, they are built from the file's own config. Optimiser
    states stay on the CPU (Optimizer.load_state_dict moves them to the parameters).
    """
    path = Path(path)
    raw = read_raw(path)
    if "format" in raw:
        if raw["format"] != FORMAT:
            raise CheckpointError(f"{path}: format {raw['format']!r} is not {FORMAT!r}")
        ckpt = _load_ours(path, raw, config)
    elif "g_ema" in raw or "g" in raw:
        ckpt = _load_rosinality(path, raw, config)
    else:
        raise CheckpointError(f"{path}: not a StyleGAN2 checkpoint (top-level keys: {_head(sorted(map(str, raw)))})")
    for network in (ckpt.g, ckpt.d, ckpt.g_ema):
        network.to(map_location)
    return ckpt


def _build_for(path: Path, stored: ModelConfig, wanted: ModelConfig | None) -> tuple[ModelConfig, str]:
    config = wanted or stored
    where = str(path)
    if wanted is not None and wanted != stored:
        where += f" (stored config {stored}, loading into {wanted})"
    return config, where


def _load_ours(path: Path, raw: dict, wanted: ModelConfig | None) -> Checkpoint:
    try:
        stored = ModelConfig.from_dict(raw["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: bad config: {exc}") from None
    config, where = _build_for(path, stored, wanted)
    g, d, g_ema = build_networks(config)
    notes = []
    load_state_strict(g_ema, raw.get("g_ema"), f"{where}: g_ema")
    load_state_strict(g, raw.get("g"), f"{where}: g")
    if raw.get("d") is None:  # a converted generator-only pickle
        notes.append(NO_D_NOTE)
    else:
        load_state_strict(d, raw["d"], f"{where}: d")
    return Checkpoint(
        config=config,
        g=g,
        d=d,
        g_ema=g_ema,
        step=int(raw.get("step", 0)),
        g_optim=raw.get("g_optim"),
        d_optim=raw.get("d_optim"),
        augment=dict(raw.get("augment") or {}),
        notes=notes,
    )


def _load_rosinality(path: Path, raw: dict, wanted: ModelConfig | None) -> Checkpoint:
    g_ema_state = raw.get("g_ema", raw.get("g"))
    stored = infer_config(g_ema_state)
    config, where = _build_for(path, stored, wanted)
    g, d, g_ema = build_networks(config)
    notes = []

    # rosinality keeps the truncation centre beside the state dict, or not at all
    load_state_strict(g_ema, {**g_ema_state, "w_avg": g_ema.w_avg}, f"{where}: g_ema")
    latent_avg = raw.get("latent_avg")
    if latent_avg is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            latent_avg = g_ema.mean_latent(MEAN_LATENT_SAMPLES)
        notes.append(f"no latent_avg: w_avg is the mean W of {MEAN_LATENT_SAMPLES} random z (seed 0)")
    w_avg = torch.as_tensor(latent_avg).reshape(-1)
    if w_avg.shape != g_ema.w_avg.shape:
        raise CheckpointError(f"{where}: latent_avg has {w_avg.numel()} values, style_dim is {config.style_dim}")
    g_ema.w_avg.copy_(w_avg)
    if "g" in raw:
        g_state = raw["g"] if isinstance(raw["g"], dict) else {}
        load_state_strict(g, {**g_state, "w_avg": w_avg}, f"{where}: g")
    else:
        g.load_state_dict(g_ema.state_dict())
        notes.append("no g: g starts as a copy of g_ema")
    if "d" in raw:
        load_state_strict(d, raw["d"], f"{where}: d")
    else:
        notes.append(NO_D_NOTE)

    # rosinality's train.py names each checkpoint after its iteration, e.g. 550000.pt
    step = int(path.stem) if path.stem.isdigit() else 0
    ada_p = raw.get("ada_aug_p")
    return Checkpoint(
        config=config,
        g=g,
        d=d,
        g_ema=g_ema,
        step=step,
        g_optim=raw.get("g_optim"),
        d_optim=raw.get("d_optim"),
        augment={"p": float(ada_p)} if ada_p is not None else {},
        notes=notes,
    )


def load_generator(path: str | Path, which: str = "g_ema", map_location: str | torch.device = "cpu") -> Generator:
    """One generator (g_ema by default) from our checkpoint or a rosinality file, in eval mode."""
    if which not in ("g", "g_ema"):
        raise ValueError(f"which must be 'g' or 'g_ema', got {which!r}")
    return getattr(load_checkpoint(path, map_location=map_location), which).eval()


def to_rosinality(g_ema: Generator, g: Generator | None = None, d: Discriminator | None = None) -> dict:
    """rosinality's layout (for his scripts and the encoders built on them): w_avg -> latent_avg."""
    def strip(gen: Generator) -> dict:
        return {k: v for k, v in gen.state_dict().items() if k != "w_avg"}

    out: dict[str, Any] = {"g_ema": strip(g_ema), "latent_avg": g_ema.w_avg.detach().clone()}
    if g is not None:
        out["g"] = strip(g)
    if d is not None:
        out["d"] = d.state_dict()
    return out
