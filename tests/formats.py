"""Checkpoints in every format users bring, made by the tests themselves as small models:
styleforge's own, rosinality's `.pt`, and stylegan2-ada-pytorch's network pickle (`.pkl`)."""

import contextlib
import pickle
import sys
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from styleforge.model.checkpoint import build_networks, save_checkpoint
from styleforge.model.layers import make_kernel
from styleforge.model.networks import ModelConfig


def stand_in_modules() -> tuple[types.SimpleNamespace, dict[str, types.ModuleType]]:
    """Modules named torch_utils.persistence and dnnlib.util, so pickles name NVIDIA's globals
    (their reconstruct helper refuses to run: the converter must never call it)."""
    persistence = types.ModuleType("torch_utils.persistence")
    torch_utils = types.ModuleType("torch_utils")
    torch_utils.persistence = persistence

    def _reconstruct_persistent_obj(meta):
        raise AssertionError("the converter must never call NVIDIA's reconstruction")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    util = types.ModuleType("dnnlib.util")

    class EasyDict(dict):
        pass

    EasyDict.__module__, EasyDict.__qualname__ = "dnnlib.util", "EasyDict"
    util.EasyDict = EasyDict
    modules = {"torch_utils": torch_utils, "torch_utils.persistence": persistence,
               "dnnlib": types.ModuleType("dnnlib"), "dnnlib.util": util}
    return types.SimpleNamespace(reconstruct=_reconstruct_persistent_obj, EasyDict=EasyDict), modules


@contextlib.contextmanager
def nvidia_globals():
    """The stand-in modules installed in sys.modules for as long as pickles are written."""
    namespace, modules = stand_in_modules()
    saved = {name: sys.modules.get(name) for name in modules}
    sys.modules.update(modules)
    try:
        yield namespace
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


class Persistent:
    """Pickles like a @persistent_class module: the reconstruct helper plus a meta dict."""

    def __init__(self, reconstruct, class_name, params=(), buffers=(), modules=(), **attrs):
        self.reconstruct = reconstruct
        self.meta = dict(
            type="class",
            version=6,
            module_src="raise SystemExit('module source must never be executed')",
            class_name=class_name,
            state=dict(
                training=False,
                _parameters=OrderedDict((k, torch.nn.Parameter(v, requires_grad=False)) for k, v in params),
                _buffers=OrderedDict(buffers),
                _non_persistent_buffers_set=set(),
                _modules=OrderedDict(modules),
                **attrs,
            ),
        )

    def __reduce__(self):
        return self.reconstruct, (self.meta,)


def nvidia_networks(nv, size=32, z_dim=32, n_mlp=2, channel_base=512, channel_max=32, mbstd=4):
    """G/D object graphs with stylegan2-ada-pytorch's module names, attributes and shapes."""
    P = lambda *a, **k: Persistent(nv.reconstruct, *a, **k)  # noqa: E731
    ch = lambda res: min(channel_base // res, channel_max)  # noqa: E731
    filt = [("resample_filter", make_kernel([1, 3, 3, 1]))]
    r = torch.randn

    def fc(i, o, lr=1.0, bias_init=0.0):
        return P("FullyConnectedLayer", [("weight", r(o, i) / lr), ("bias", torch.full([o], bias_init) + 0.1 * r(o))],
                 activation="lrelu", weight_gain=np.float64(lr / np.sqrt(i)), bias_gain=lr)

    def layer(i, o, res):
        return P("SynthesisLayer", [("weight", r(o, i, 3, 3)), ("noise_strength", r([])), ("bias", r(o))],
                 filt + [("noise_const", r(res, res))], [("affine", fc(z_dim, i, bias_init=1))],
                 resolution=res, activation="lrelu", conv_clamp=None)

    def generator():
        mapping = P("MappingNetwork", buffers=[("w_avg", r(z_dim))],
                    modules=[(f"fc{i}", fc(z_dim, z_dim, lr=0.01)) for i in range(n_mlp)],
                    num_layers=n_mlp, w_avg_beta=0.995, z_dim=z_dim, w_dim=z_dim)
        blocks = []
        for res in [2**i for i in range(2, int(np.log2(size)) + 1)]:
            torgb = P("ToRGBLayer", [("weight", r(3, ch(res), 1, 1)), ("bias", r(3))],
                      modules=[("affine", fc(z_dim, ch(res), bias_init=1))], conv_clamp=None)
            mods = [("conv1", layer(ch(res), ch(res), res)), ("torgb", torgb)]
            params = [("const", r(ch(res), 4, 4))] if res == 4 else []
            if res > 4:
                mods.insert(0, ("conv0", layer(ch(res // 2), ch(res), res)))
            blocks.append((f"b{res}", P("SynthesisBlock", params, filt, mods, architecture="skip", resolution=res)))
        synthesis = P("SynthesisNetwork", modules=blocks, img_resolution=size, num_ws=2 * int(np.log2(size)) - 2)
        return P("Generator", modules=[("synthesis", synthesis), ("mapping", mapping)], z_dim=z_dim, c_dim=0,
                 w_dim=z_dim, img_resolution=size, img_channels=3, init_kwargs=nv.EasyDict(z_dim=z_dim))

    def conv(i, o, k, bias=True):
        return P("Conv2dLayer", [("weight", r(o, i, k, k))] + ([("bias", r(o))] if bias else []), filt,
                 activation="lrelu" if bias else "linear", weight_gain=np.float64(1 / np.sqrt(i * k * k)))

    def discriminator():
        blocks = []
        for res in [2**i for i in range(int(np.log2(size)), 2, -1)]:
            mods = [("fromrgb", conv(3, ch(res), 1))] if res == size else []
            mods += [("conv0", conv(ch(res), ch(res), 3)), ("conv1", conv(ch(res), ch(res // 2), 3)),
                     ("skip", conv(ch(res), ch(res // 2), 1, bias=False))]
            blocks.append((f"b{res}", P("DiscriminatorBlock", buffers=filt, modules=mods, architecture="resnet")))
        epilogue = P("DiscriminatorEpilogue", modules=[
            ("mbstd", P("MinibatchStdLayer", group_size=mbstd, num_channels=1)),
            ("conv", conv(ch(4) + 1, ch(4), 3)), ("fc", fc(ch(4) * 16, ch(4))), ("out", fc(ch(4), 1))])
        return P("Discriminator", modules=blocks + [("b4", epilogue)], c_dim=0, img_resolution=size)

    pipe = P("AugmentPipe", buffers=[("p", torch.tensor(0.42))], xflip=1.0)
    return dict(G=generator(), D=discriminator(), G_ema=generator(), augment_pipe=pipe,
                training_set_kwargs=nv.EasyDict(class_name="training.dataset.ImageFolderDataset", resolution=size))


def write_nvidia_pickle(path: Path, size: int = 32, **shape) -> Path:
    """A stylegan2-ada-pytorch network pickle (G, D, G_ema, augment_pipe) of random weights."""
    with nvidia_globals() as nv:
        path.write_bytes(pickle.dumps(nvidia_networks(nv, size=size, **shape)))
    return path


def write_rosinality(path: Path, config: ModelConfig, seed: int = 0) -> dict:
    """rosinality's train.py layout: g, d, g_ema (no w_avg buffer) and latent_avg."""
    torch.manual_seed(seed)
    g, d, g_ema = build_networks(config)
    strip = lambda gen: {k: v for k, v in gen.state_dict().items() if k != "w_avg"}  # noqa: E731
    raw = {"g": strip(g), "d": d.state_dict(), "g_ema": strip(g_ema), "latent_avg": torch.randn(config.style_dim)}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(raw, path)
    return raw


def write_ours(path: Path, config: ModelConfig, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    g, d, g_ema = build_networks(config)
    return save_checkpoint(path, config, g, d, g_ema)
