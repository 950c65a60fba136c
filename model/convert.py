"""Convert stylegan2-ada-pytorch network pickles (`G`, `D`, `G_ema`) into our checkpoint.

NVIDIA's pickles rebuild their networks by exec'ing source code stored inside the file
(`torch_utils.persistence`), so unpickling one normally runs whatever it carries. Here nothing
is executed: a restricted unpickler resolves only an allow-list of globals, the persistence
helper is replaced by one that keeps each object's class name and attribute dict, and the
tensors are read out of those dicts. Any other global is refused, naming it.

Every parameter maps by name onto rosinality's layout and differs at most by unit dimensions:
both store raw weights and apply the same run-time gains (NVIDIA's weight_gain/bias_gain and
lr_multiplier are rosinality's `scale`/`lr_mul`), NVIDIA's up-convs use the same transposed
convolution without a flip, and the affine biases already include the +1 initialisation.
"""

from __future__ import annotations

import codecs
import importlib
import io
import pickle
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from styleforge.core.errors import UserError
from styleforge.model.checkpoint import (
    NO_D_NOTE,
    Checkpoint,
    CheckpointError,
    build_networks,
    config_from_widths,
    first_line,
    load_state_strict,
    save_checkpoint,
)
from styleforge.model.layers import BLUR_KERNEL, make_kernel
from styleforge.model.networks import Discriminator, Generator


class UnsafePickleError(UserError, pickle.UnpicklingError):
    """The pickle asks for a global outside the allow-list; nothing from it was run."""


class EasyDict(dict):
    """Stand-in for dnnlib.EasyDict: a dict, which is all its pickled form needs."""


@dataclass
class PersistentObject:
    """What NVIDIA's persistence helper would have rebuilt, kept as data: class name + __dict__."""

    class_name: str
    state: dict = field(repr=False)

    def child(self, name: str) -> PersistentObject:
        return self.state["_modules"][name]


def _reconstruct_persistent_obj(meta: dict) -> PersistentObject:
    # the real helper exec's meta["module_src"]; we only keep the data
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("state"), dict):
        raise pickle.UnpicklingError("malformed torch_utils.persistence object")
    return PersistentObject(str(meta.get("class_name")), meta["state"])


def _load_storage(data: bytes):
    # torch's own _load_from_bytes is a full torch.load; a storage only needs weights_only
    try:
        return torch.load(io.BytesIO(data), weights_only=True)
    except Exception as exc:  # torch raises several types for refused or corrupt payloads
        raise UnsafePickleError(f"a tensor storage did not load with weights_only: {exc}") from None


def _rebuild_parameter(data, requires_grad, backward_hooks, *state):
    return data  # a Parameter's value; training flags do not matter here


def _numpy_multiarray():
    try:
        return importlib.import_module("numpy._core.multiarray")
    except ImportError:  # numpy 1.x
        return importlib.import_module("numpy.core.multiarray")


def _allowed_globals() -> dict[tuple[str, str], Any]:
    multiarray = _numpy_multiarray()
    allowed = {
        ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
        ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
        ("torch.storage", "_load_from_bytes"): _load_storage,
        ("collections", "OrderedDict"): OrderedDict,
        ("builtins", "set"): set,
        ("__builtin__", "set"): set,  # protocol 2 spells builtins the Python 2 way
        ("builtins", "frozenset"): frozenset,
        ("_codecs", "encode"): codecs.encode,  # protocol 2 stores bytes through it
        ("numpy", "dtype"): np.dtype,
        ("numpy", "ndarray"): np.ndarray,
        ("dnnlib.util", "EasyDict"): EasyDict,
        ("dnnlib", "EasyDict"): EasyDict,
    }
    for module in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(module, "scalar")] = multiarray.scalar
        allowed[(module, "_reconstruct")] = multiarray._reconstruct
    return allowed


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals NVIDIA network pickles need."""

    _allowed = _allowed_globals()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._allowed[(module, name)]
        except KeyError:
            pass
        hint = ""
        if module.startswith("dnnlib.tflib"):
            hint = " (a TensorFlow-era pickle: convert it with stylegan2-ada-pytorch's legacy.py first)"
        raise UnsafePickleError(
            f"refusing to load global {module}.{name}: not on the allow-list for NVIDIA network pickles{hint}"
        )


def read_nvidia_pickle(path: str | Path) -> dict:
    """Unpickle with the allow-list; returns the top-level dict (G, D, G_ema, augment_pipe, ...).

    Every way a file can fail to be a network pickle (empty, cut short, not a pickle, a refused
    global, allowed globals called with the wrong arguments) is a CheckpointError naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: the file is empty (0 bytes): an interrupted download or copy?")
    with path.open("rb") as f:
        if f.read(4) == b"PK\x03\x04":
            raise CheckpointError(f"{path} is a torch.save archive, not an NVIDIA pickle: load it as a checkpoint")
        f.seek(0)
        try:
            data = RestrictedUnpickler(f).load()
        except UnsafePickleError as exc:
            raise UnsafePickleError(f"{path}: {exc}") from None
        except EOFError:
            raise CheckpointError(f"{path}: the pickle ends early (a truncated file)") from None
        except Exception as exc:  # noqa: BLE001 - a malformed pickle can raise almost any type
            raise CheckpointError(f"{path}: not a readable network pickle: {type(exc).__name__}: "
                                  f"{first_line(exc)}") from None
    if not isinstance(data, dict) or not isinstance(data.get("G_ema"), PersistentObject):
        raise CheckpointError(f"{path}: not a stylegan2-ada-pytorch network pickle (no G_ema network)")
    return data


def nvidia_state_dict(obj: PersistentObject, prefix: str = "") -> dict[str, torch.Tensor]:
    """The tensors an nn.Module.state_dict() of the pickled network would hold, same names."""
    state = obj.state
    skip = state.get("_non_persistent_buffers_set") or set()
    out = {prefix + k: v for k, v in (state.get("_parameters") or {}).items() if v is not None}
    out |= {prefix + k: v for k, v in (state.get("_buffers") or {}).items() if v is not None and k not in skip}
    for name, child in (state.get("_modules") or {}).items():
        if isinstance(child, PersistentObject):
            out |= nvidia_state_dict(child, f"{prefix}{name}.")
    return out


def _resolutions(low: int, high: int) -> list[int]:
    return [2**i for i in range(low.bit_length() - 1, high.bit_length())]


def _conv_names(nvidia: str, ours: str) -> dict[str, str]:
    return {
        f"{nvidia}.weight": f"{ours}.conv.weight",
        f"{nvidia}.bias": f"{ours}.activate.bias",
        f"{nvidia}.affine.weight": f"{ours}.conv.modulation.weight",
        f"{nvidia}.affine.bias": f"{ours}.conv.modulation.bias",
        f"{nvidia}.noise_strength": f"{ours}.noise.weight",
    }


def _torgb_names(nvidia: str, ours: str) -> dict[str, str]:
    return {
        f"{nvidia}.weight": f"{ours}.conv.weight",
        f"{nvidia}.bias": f"{ours}.bias",
        f"{nvidia}.affine.weight": f"{ours}.conv.modulation.weight",
        f"{nvidia}.affine.bias": f"{ours}.conv.modulation.bias",
    }


def generator_names(size: int, n_mlp: int) -> dict[str, str]:
    """NVIDIA generator state-dict name -> ours, for every learned tensor and w_avg.

    Our blur kernels are constants of the architecture and have no NVIDIA counterpart
    (NVIDIA's `resample_filter` buffers are checked against them instead).
    """
    names = {"mapping.w_avg": "w_avg", "synthesis.b4.const": "input.input"}
    for i in range(n_mlp):
        names |= {f"mapping.fc{i}.weight": f"style.{i + 1}.weight", f"mapping.fc{i}.bias": f"style.{i + 1}.bias"}
    names |= _conv_names("synthesis.b4.conv1", "conv1")
    names["synthesis.b4.conv1.noise_const"] = "noises.noise_0"
    names |= _torgb_names("synthesis.b4.torgb", "to_rgb1")
    for k, res in enumerate(_resolutions(8, size)):
        block = f"synthesis.b{res}"
        names |= _conv_names(f"{block}.conv0", f"convs.{2 * k}")
        names |= _conv_names(f"{block}.conv1", f"convs.{2 * k + 1}")
        names[f"{block}.conv0.noise_const"] = f"noises.noise_{2 * k + 1}"
        names[f"{block}.conv1.noise_const"] = f"noises.noise_{2 * k + 2}"
        names |= _torgb_names(f"{block}.torgb", f"to_rgbs.{k}")
    return names


def discriminator_names(size: int) -> dict[str, str]:
    """NVIDIA discriminator state-dict name -> ours (rosinality's ConvLayer/ResBlock indices)."""
    names = {f"b{size}.fromrgb.weight": "convs.0.0.weight", f"b{size}.fromrgb.bias": "convs.0.1.bias"}
    for j, res in enumerate(reversed(_resolutions(8, size)), start=1):
        block = f"b{res}"
        names |= {
            f"{block}.conv0.weight": f"convs.{j}.conv1.0.weight",
            f"{block}.conv0.bias": f"convs.{j}.conv1.1.bias",
            f"{block}.conv1.weight": f"convs.{j}.conv2.1.weight",  # conv2.0 is the blur
            f"{block}.conv1.bias": f"convs.{j}.conv2.2.bias",
            f"{block}.skip.weight": f"convs.{j}.skip.1.weight",
        }
    names |= {
        "b4.conv.weight": "final_conv.0.weight",
        "b4.conv.bias": "final_conv.1.bias",
        "b4.fc.weight": "final_linear.0.weight",
        "b4.fc.bias": "final_linear.0.bias",
        "b4.out.weight": "final_linear.1.weight",
        "b4.out.bias": "final_linear.1.bias",
    }
    return names


def rename(nvidia: dict[str, torch.Tensor], names: dict[str, str], what: str) -> dict[str, torch.Tensor]:
    """NVIDIA tensors under our names; every one must be accounted for, none left over."""
    expected_filter = make_kernel(BLUR_KERNEL)
    filters = {k for k in nvidia if k.endswith("resample_filter")}
    for key in sorted(filters):
        if nvidia[key].shape != expected_filter.shape or not torch.allclose(nvidia[key].float(), expected_filter):
            raise CheckpointError(f"{what}: {key} is not the [1, 3, 3, 1] filter this model uses")
    unmapped = sorted(set(nvidia) - set(names) - filters)
    if unmapped:
        raise CheckpointError(f"{what}: NVIDIA tensors with no counterpart here ({len(unmapped)}): {unmapped[:6]}")
    missing = [nv for nv in names if nv not in nvidia]
    if missing:
        raise CheckpointError(f"{what}: the pickle has no {missing[0]} (for {names[missing[0]]})")
    return {ours: nvidia[nv] for nv, ours in names.items()}


def fit(model: Generator | Discriminator, renamed: dict[str, torch.Tensor], what: str) -> dict[str, torch.Tensor]:
    """Reshape renamed tensors to the model's shapes, which may only add or drop unit dimensions.

    The model's own blur kernels (constants) fill the names NVIDIA has no tensor for.
    """
    state = dict(model.state_dict())
    for name, value in renamed.items():
        target = state[name]
        if value.squeeze().shape != target.squeeze().shape:
            raise CheckpointError(f"{what}: {name} has shape {tuple(value.shape)} in the pickle, needs {tuple(target.shape)}")
        state[name] = value.detach().to(torch.float32).reshape(target.shape).clone()
    return state


def _mapping_settings(g: PersistentObject) -> dict[str, Any]:
    """Forward-pass settings that tensors do not show: lr multiplier and w_avg decay."""
    info = g.state
    if info.get("c_dim", 0):
        raise CheckpointError("conditional (c_dim > 0) networks are not supported")
    if info.get("img_channels", 3) != 3:
        raise CheckpointError(f"only RGB generators are supported, got img_channels={info.get('img_channels')}")
    mapping = g.child("mapping").state
    fc0 = g.child("mapping").child("fc0").state
    beta = mapping.get("w_avg_beta")
    return {"lr_mlp": float(fc0.get("bias_gain", 0.01)), "w_avg_beta": float(beta if beta is not None else 0.995)}


def _mbstd_group(d: PersistentObject) -> int:
    mbstd = d.child("b4").state["_modules"].get("mbstd")
    if mbstd is None or mbstd.state.get("num_channels", 1) != 1:
        raise CheckpointError("the discriminator's minibatch-stddev layer must have one channel")
    group = mbstd.state.get("group_size")
    if not isinstance(group, int):
        raise CheckpointError(f"minibatch-stddev group size {group!r} is not supported (need an integer)")
    return group


def _conv_clamp(obj: PersistentObject) -> list[float]:
    clamps = [obj.state["conv_clamp"]] if obj.state.get("conv_clamp") is not None else []
    for child in (obj.state.get("_modules") or {}).values():
        if isinstance(child, PersistentObject):
            clamps += _conv_clamp(child)
    return clamps


def load_nvidia_pkl(path: str | Path) -> Checkpoint:
    """An NVIDIA pickle as a loaded Checkpoint (no optimiser state; ADA p kept as augment)."""
    data = read_nvidia_pickle(path)
    try:
        return _checkpoint_of(data)
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    except (KeyError, TypeError, AttributeError, ValueError, IndexError) as exc:  # pieces missing or misshapen
        raise CheckpointError(f"{path}: not a stylegan2-ada-pytorch network pickle: {type(exc).__name__}: "
                              f"{first_line(exc)}") from None


def _checkpoint_of(data: dict) -> Checkpoint:
    g_ema_obj = data["G_ema"]
    try:
        size = int(g_ema_obj.state["img_resolution"])
        n_mlp = int(g_ema_obj.child("mapping").state["num_layers"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"G_ema is not a stylegan2-ada-pytorch Generator ({exc!r} missing)") from None
    g_names = generator_names(size, n_mlp)
    g_ema_nv = rename(nvidia_state_dict(g_ema_obj), g_names, "G_ema")
    settings = _mapping_settings(g_ema_obj)
    d_nv = None
    if isinstance(data.get("D"), PersistentObject):
        d_nv = rename(nvidia_state_dict(data["D"]), discriminator_names(size), "D")
        settings["mbstd_group"] = _mbstd_group(data["D"])
    # NVIDIA's conv weights are [out, in, k, k]: widths are dim 0 (ours: dim 1 after a unit dim)
    widths = {4: g_ema_nv["conv1.conv.weight"].shape[0]}
    widths |= {res: g_ema_nv[f"convs.{2 * k + 1}.conv.weight"].shape[0] for k, res in enumerate(_resolutions(8, size))}
    config = config_from_widths(widths, style_dim=g_ema_nv["w_avg"].shape[0], n_mlp=n_mlp, **settings)

    notes = []
    g, d, g_ema = build_networks(config)
    load_state_strict(g_ema, fit(g_ema, g_ema_nv, "G_ema"), "G_ema")
    if isinstance(data.get("G"), PersistentObject):
        load_state_strict(g, fit(g, rename(nvidia_state_dict(data["G"]), g_names, "G"), "G"), "G")
    else:
        g.load_state_dict(g_ema.state_dict())
        notes.append("no G in the pickle: g starts as a copy of G_ema")
    if d_nv is not None:
        load_state_strict(d, fit(d, d_nv, "D"), "D")
    else:
        notes.append(NO_D_NOTE)
    if _conv_clamp(g_ema_obj):
        notes.append("conv_clamp is not reproduced: activations beyond it are not clipped here")

    augment = {}
    pipe = data.get("augment_pipe")
    if isinstance(pipe, PersistentObject) and isinstance((pipe.state.get("_buffers") or {}).get("p"), torch.Tensor):
        augment["p"] = float(pipe.state["_buffers"]["p"])
    return Checkpoint(config=config, g=g, d=d, g_ema=g_ema, augment=augment, notes=notes)


def convert_pickle(src: str | Path, dst: str | Path) -> dict:
    """Convert src (.pkl) into our checkpoint at dst; returns a summary with config and notes."""
    ckpt = load_nvidia_pkl(src)
    d = None if NO_D_NOTE in ckpt.notes else ckpt.d  # keep "no discriminator" visible to later loads
    save_checkpoint(dst, ckpt.config, ckpt.g, d, ckpt.g_ema, augment=ckpt.augment)
    return {"config": ckpt.config.to_dict(), "augment": ckpt.augment, "notes": ckpt.notes}
