"""Checkpoints (ours and rosinality's), the NVIDIA pickle converter, and image generation."""

import argparse
import io
import os
import pickle
import random
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from styleforge.app.cli import app
from styleforge.model.checkpoint import (
    FORMAT,
    NO_D_NOTE,
    CheckpointError,
    build_networks,
    load_checkpoint,
    load_generator,
    save_checkpoint,
    to_rosinality,
)
from styleforge.model.convert import (
    UnsafePickleError,
    convert_pickle,
    discriminator_names,
    generator_names,
)
from styleforge.model.generate import generate, to_uint8
from styleforge.model.networks import ModelConfig
from tests.formats import Persistent, nvidia_networks, stand_in_modules

CONFIG = ModelConfig(32, style_dim=32, n_mlp=2, channel_base=512, channel_max=32)


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
    random.seed(0)
    np.random.seed(0)


def render(g, z, **kw):
    with torch.no_grad():
        return g([z], randomize_noise=False, **kw)[0]


def trained_networks(config=CONFIG):
    """Networks with non-trivial weights and a stepped Adam for each."""
    g, d, g_ema = build_networks(config)
    g_optim = torch.optim.Adam(g.parameters(), lr=2e-3, betas=(0.0, 0.99))
    d_optim = torch.optim.Adam(d.parameters(), lr=2e-3, betas=(0.0, 0.99))
    z = torch.randn(4, config.style_dim)
    fake, _ = g([z])
    (torch.nn.functional.softplus(-d(fake)).mean()).backward()
    g_optim.step()
    d_optim.step()
    g_ema.load_state_dict(g.state_dict())
    return g, d, g_ema.eval(), g_optim, d_optim


# -- rosinality's layout ---------------------------------------------------------------------


def test_rosinality_layout_round_trip_gives_identical_images(tmp_path):
    g, d, g_ema, g_optim, _ = trained_networks()
    g_ema.w_avg.copy_(torch.randn(CONFIG.style_dim))
    raw = to_rosinality(g_ema, g, d)
    assert set(raw["g_ema"]) == set(g_ema.state_dict()) - {"w_avg"}  # rosinality's names exactly
    raw |= {"g_optim": g_optim.state_dict(), "args": argparse.Namespace(size=32, lr=0.002), "ada_aug_p": 0.25}
    torch.save(raw, tmp_path / "004000.pt")

    loaded = load_generator(tmp_path / "004000.pt")
    z = torch.randn(3, CONFIG.style_dim)
    assert torch.equal(render(g_ema, z, truncation=0.6), render(loaded, z, truncation=0.6))
    assert torch.equal(loaded.w_avg, g_ema.w_avg)

    ckpt = load_checkpoint(tmp_path / "004000.pt")
    assert ckpt.config.channels() == CONFIG.channels() and ckpt.config.n_mlp == 2 and ckpt.config.size == 32
    assert ckpt.step == 4000 and ckpt.augment == {"p": 0.25} and ckpt.notes == []
    for ours, theirs in ((ckpt.g, g), (ckpt.d, d)):
        theirs_state = theirs.state_dict()
        assert all(torch.equal(v, theirs_state[k]) for k, v in ours.state_dict().items() if k != "w_avg")
    assert torch.equal(ckpt.g.w_avg, g_ema.w_avg)  # rosinality keeps one latent_avg for both
    torch.optim.Adam(ckpt.g.parameters()).load_state_dict(ckpt.g_optim)


def test_rosinality_file_with_g_ema_only_gets_a_mean_latent_and_notes(tmp_path):
    g_ema = CONFIG.generator().eval()
    torch.save({"g_ema": to_rosinality(g_ema)["g_ema"]}, tmp_path / "ffhq.pt")
    ckpt = load_checkpoint(tmp_path / "ffhq.pt")
    assert torch.allclose(ckpt.g_ema.w_avg, g_ema.mean_latent(4096)[0], atol=0.1)
    assert any("latent_avg" in n for n in ckpt.notes) and NO_D_NOTE in ckpt.notes


def test_config_is_inferred_from_rosinality_widths():
    from styleforge.model.checkpoint import infer_config

    for config in (ModelConfig(64, channel_multiplier=1), ModelConfig(128), ModelConfig(256, n_mlp=4), CONFIG):
        with torch.device("meta"):  # shapes only
            state = config.generator().state_dict()
        inferred = infer_config(state)
        assert inferred.channels() == config.channels()
        assert (inferred.size, inferred.style_dim, inferred.n_mlp) == (config.size, config.style_dim, config.n_mlp)
        if config.channel_base is None:
            assert inferred.channel_multiplier == config.channel_multiplier


# -- our format --------------------------------------------------------------------------------


def test_checkpoint_round_trip_keeps_networks_optimisers_step_augment_and_rng(tmp_path):
    g, d, g_ema, g_optim, d_optim = trained_networks()
    path = save_checkpoint(
        tmp_path / "ckpt.pt", CONFIG, g, d, g_ema, g_optim, d_optim, step=123, augment={"p": 0.3, "history": [0.1, 0.2]}
    )

    raw = torch.load(path, weights_only=True)
    assert raw["format"] == FORMAT and raw["config"] == CONFIG.to_dict()
    assert torch.equal(raw["latent_avg"], g_ema.w_avg)

    ckpt = load_checkpoint(path)
    assert ckpt.config == CONFIG and ckpt.step == 123 and ckpt.augment == {"p": 0.3, "history": [0.1, 0.2]}
    for ours, theirs in ((ckpt.g, g), (ckpt.d, d), (ckpt.g_ema, g_ema)):
        assert ours.state_dict().keys() == theirs.state_dict().keys()
        assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), theirs.state_dict().values()))
    resumed = torch.optim.Adam(ckpt.g.parameters(), lr=2e-3, betas=(0.0, 0.99))
    resumed.load_state_dict(ckpt.g_optim)
    for a, b in zip(resumed.state_dict()["state"].values(), g_optim.state_dict()["state"].values()):
        assert all(torch.equal(a[k], b[k]) for k in ("exp_avg", "exp_avg_sq", "step"))
    assert ckpt.d_optim["state"].keys() == d_optim.state_dict()["state"].keys()


def test_checkpoint_alone_rebuilds_its_model_and_images(tmp_path):
    g, d, g_ema = build_networks(CONFIG)
    save_checkpoint(tmp_path / "c.pt", CONFIG, g, d, g_ema)
    z = torch.randn(2, CONFIG.style_dim)
    assert torch.equal(render(load_generator(tmp_path / "c.pt"), z), render(g_ema, z))


def test_mismatched_checkpoint_is_refused_naming_the_tensor(tmp_path):
    g, d, g_ema = build_networks(CONFIG)
    save_checkpoint(tmp_path / "c.pt", CONFIG, g, d, g_ema)

    wider = ModelConfig(32, style_dim=32, n_mlp=2, channel_base=1024, channel_max=64)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path / "c.pt", config=wider)
    message = str(err.value)
    assert "'input.input'" in message and "(1, 32, 4, 4)" in message and "(1, 64, 4, 4)" in message

    deeper = ModelConfig(32, style_dim=32, n_mlp=4, channel_base=512, channel_max=32)
    with pytest.raises(CheckpointError, match=r"missing keys \(4\): style\.3\.weight"):
        load_checkpoint(tmp_path / "c.pt", config=deeper)

    bigger = ModelConfig(64, style_dim=32, n_mlp=2, channel_base=512, channel_max=32)
    with pytest.raises(CheckpointError, match="missing keys"):
        load_checkpoint(tmp_path / "c.pt", config=bigger)

    raw = to_rosinality(g_ema)
    raw["g_ema"]["convs.1.conv.weight"] = torch.zeros(1, 32, 16, 3, 3)
    torch.save(raw, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match=r"'convs\.1\.conv\.weight' has shape \(1, 32, 16, 3, 3\)"):
        load_generator(tmp_path / "bad.pt")


def test_unstorable_augment_state_is_refused_at_save_time(tmp_path):
    g, d, g_ema = build_networks(CONFIG)
    with pytest.raises(TypeError, match=r"augment\.pipe"):
        save_checkpoint(tmp_path / "c.pt", CONFIG, g, d, g_ema, augment={"pipe": object()})
    assert not (tmp_path / "c.pt").exists()


def test_files_that_are_not_checkpoints_are_refused(tmp_path):
    torch.save({"model": {}}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a StyleGAN2 checkpoint"):
        load_checkpoint(tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


# -- NVIDIA pickles ----------------------------------------------------------------------------


@pytest.fixture
def nvidia_modules(monkeypatch):
    """Stand-ins for torch_utils.persistence and dnnlib so pickles name NVIDIA's globals."""
    namespace, modules = stand_in_modules()
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    return namespace


def flat_state(obj, prefix=""):
    state = obj.meta["state"]
    out = {prefix + k: v.detach() for k, v in [*state["_parameters"].items(), *state["_buffers"].items()]}
    for name, child in state["_modules"].items():
        out |= flat_state(child, f"{prefix}{name}.")
    return out


@pytest.mark.parametrize("protocol", [3, 4])
def test_nvidia_pickle_converts_completely_and_invertibly(tmp_path, nvidia_modules, protocol):
    networks = nvidia_networks(nvidia_modules, mbstd=8)
    (tmp_path / "net.pkl").write_bytes(pickle.dumps(networks, protocol=protocol))
    summary = convert_pickle(tmp_path / "net.pkl", tmp_path / "net.pt")

    ckpt = load_checkpoint(tmp_path / "net.pt")
    config = ckpt.config
    assert config.channels() == CONFIG.channels() and config.mbstd_group == 8 and config.lr_mlp == 0.01
    assert ckpt.augment == summary["augment"] == {"p": pytest.approx(0.42)}
    for key, ours, names in (
        ("G_ema", ckpt.g_ema, generator_names(32, 2)),
        ("G", ckpt.g, generator_names(32, 2)),
        ("D", ckpt.d, discriminator_names(32)),
    ):
        nvidia = {k: v for k, v in flat_state(networks[key]).items() if not k.endswith("resample_filter")}
        state = ours.state_dict()
        assert sorted(names) == sorted(nvidia)  # every NVIDIA tensor is mapped ...
        assert len(set(names.values())) == len(names)  # ... to its own tensor ...
        assert set(names.values()) == {k for k in state if not k.endswith(".kernel")}  # ... covering ours
        for nv_name, our_name in names.items():  # and the values come back unchanged
            assert torch.equal(state[our_name].reshape(nvidia[nv_name].shape), nvidia[nv_name]), nv_name
    z = torch.randn(2, 32)
    assert torch.isfinite(render(ckpt.g_ema, z, truncation=0.5)).all()


def test_nvidia_pickle_without_d_converts_to_a_generator_checkpoint(tmp_path, nvidia_modules):
    networks = nvidia_networks(nvidia_modules)
    del networks["D"], networks["G"]
    (tmp_path / "g.pkl").write_bytes(pickle.dumps(networks))
    summary = convert_pickle(tmp_path / "g.pkl", tmp_path / "g.pt")
    assert NO_D_NOTE in summary["notes"]
    ckpt = load_checkpoint(tmp_path / "g.pt")
    assert NO_D_NOTE in ckpt.notes
    assert torch.equal(ckpt.g.w_avg, flat_state(networks["G_ema"])["mapping.w_avg"])


def test_nvidia_pickle_with_unknown_tensors_is_refused(tmp_path, nvidia_modules):
    networks = nvidia_networks(nvidia_modules)
    networks["G_ema"].meta["state"]["_modules"]["mapping"].meta["state"]["_modules"]["embed"] = Persistent(
        nvidia_modules.reconstruct, "FullyConnectedLayer", [("weight", torch.randn(32, 10))]
    )
    (tmp_path / "c.pkl").write_bytes(pickle.dumps(networks))
    with pytest.raises(CheckpointError, match=r"no counterpart here \(1\): \['mapping\.embed\.weight'\]"):
        convert_pickle(tmp_path / "c.pkl", tmp_path / "c.pt")


class Hostile:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_hostile_pickle_is_refused_without_running_anything(tmp_path, nvidia_modules):
    marker = tmp_path / "pwned"
    networks = nvidia_networks(nvidia_modules)
    networks["G_ema"].meta["state"]["payload"] = Hostile(marker)
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(networks))
    with pytest.raises(UnsafePickleError, match=r"global posix\.system"):
        convert_pickle(tmp_path / "evil.pkl", tmp_path / "evil.pt")
    assert not marker.exists() and not (tmp_path / "evil.pt").exists()


def test_hostile_tensor_storage_is_refused_without_running_anything(tmp_path):
    """torch's own storage loader is a full torch.load; ours must stay weights_only."""
    marker = tmp_path / "pwned"
    buffer = io.BytesIO()
    torch.save(Hostile(marker), buffer, _use_new_zipfile_serialization=False)

    class EvilStorage:
        def __reduce__(self):
            return torch.storage._load_from_bytes, (buffer.getvalue(),)

    (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"G_ema": EvilStorage()}))
    with pytest.raises(UnsafePickleError, match="weights_only"):
        convert_pickle(tmp_path / "evil.pkl", tmp_path / "evil.pt")
    assert not marker.exists()


def test_tensorflow_pickles_and_torch_archives_get_a_clear_refusal(tmp_path, nvidia_modules, monkeypatch):
    class Network:
        pass

    Network.__module__, Network.__qualname__ = "dnnlib.tflib.network", "Network"
    for name in ("dnnlib.tflib", "dnnlib.tflib.network"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    sys.modules["dnnlib.tflib.network"].Network = Network
    (tmp_path / "tf.pkl").write_bytes(pickle.dumps(Network()))
    with pytest.raises(UnsafePickleError, match="TensorFlow-era pickle"):
        convert_pickle(tmp_path / "tf.pkl", tmp_path / "tf.pt")
    torch.save({"g_ema": {}}, tmp_path / "x.pkl")
    with pytest.raises(CheckpointError, match="torch.save archive"):
        convert_pickle(tmp_path / "x.pkl", tmp_path / "x.pt")


# -- generation ------------------------------------------------------------------------------


def test_pixel_conversion_rounds_and_clamps():
    x = torch.tensor([-2.0, -1.0, 0.0, 0.5, 1.0, 3.0]).view(1, 1, 1, 6).expand(1, 3, 1, 6)
    assert to_uint8(x)[0, 0, :, 0].tolist() == [0, 0, 128, 191, 255, 255]


def test_generate_writes_one_png_per_latent_and_a_grid(tmp_path):
    g = CONFIG.generator().eval()
    g.w_avg.copy_(torch.randn(32))
    paths = generate(g, tmp_path, seeds=[3, 1, 4], truncation=0.5, noise_mode="const")
    assert [p.name for p in paths] == ["seed0003.png", "seed0001.png", "seed0004.png", "grid.png"]
    z = torch.from_numpy(np.stack([np.random.RandomState(s).randn(32) for s in (3, 1, 4)]).astype(np.float32))
    expected = to_uint8(render(g, z, truncation=0.5))[1]
    assert np.array_equal(np.asarray(Image.open(tmp_path / "seed0001.png")), expected)
    grid = np.asarray(Image.open(tmp_path / "grid.png"))
    assert grid.shape == (64, 64, 3) and np.array_equal(grid[:32, 32:], expected) and not grid[32:, 32:].any()

    again = generate(g, tmp_path / "z", z=np.random.RandomState(1).randn(2, 32), noise_mode="none")
    assert [p.name for p in again] == ["z0000.png", "z0001.png", "grid.png"]
    random_a = generate(g, tmp_path / "a", seeds=[7], noise_mode="random")[0]
    random_b = generate(g, tmp_path / "b", seeds=[5, 7], noise_mode="random", batch_size=1)[1]
    assert np.array_equal(np.asarray(Image.open(random_a)), np.asarray(Image.open(random_b)))
    with pytest.raises(ValueError, match=r"z must be \[N, 32\]"):
        generate(g, tmp_path, z=np.zeros((2, 31)))


def test_cli_generate_mix_and_convert(tmp_path, nvidia_modules):
    (tmp_path / "net.pkl").write_bytes(pickle.dumps(nvidia_networks(nvidia_modules)))
    runner = CliRunner()
    result = runner.invoke(app, ["convert", str(tmp_path / "net.pkl"), str(tmp_path / "net.pt")])
    assert result.exit_code == 0, result.output
    result = runner.invoke(
        app, ["generate", "--checkpoint", str(tmp_path / "net.pt"), "--seeds", "0,1", "--truncation", "0.7", "--out", str(tmp_path / "gen")]
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "gen").iterdir()) == ["grid.png", "seed0000.png", "seed0001.png"]
    result = runner.invoke(
        app, ["mix", "--checkpoint", str(tmp_path / "net.pt"), "--rows", "0,1", "--cols", "2", "--out", str(tmp_path / "mix.png")]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "mix.png").exists()
    result = runner.invoke(app, ["generate", "--checkpoint", str(tmp_path / "nope.pt"), "--seeds", "0", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "no such checkpoint" in result.output
    result = runner.invoke(app, ["generate", "--checkpoint", str(tmp_path / "net.pt"), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--seeds or --z" in result.output
