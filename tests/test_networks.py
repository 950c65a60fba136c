"""StyleGAN2 networks: shapes, channel tables, truncation, style mixing, per-resolution names."""

import random

import pytest
import torch

from styleforge.model.layers import ModulatedConv2d, StyledConv, ToRGB
from styleforge.model.networks import (
    ModelConfig,
    generator_param_resolution,
    mixing_noise,
)

# rosinality's model.py table, per channel_multiplier
ROSINALITY_CHANNELS = {
    cm: {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * cm, 128: 128 * cm, 256: 64 * cm, 512: 32 * cm, 1024: 16 * cm}
    for cm in (1, 2)
}


def tiny(size: int, **kw) -> ModelConfig:
    return ModelConfig(size, **({"style_dim": 32, "n_mlp": 2, "channel_base": 1024, "channel_max": 32} | kw))


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
    random.seed(0)


@pytest.mark.parametrize("cm", [1, 2])
@pytest.mark.parametrize("size", [32, 64, 256, 1024])
def test_default_channel_table_is_rosinalitys(size, cm):
    table = ModelConfig(size, channel_multiplier=cm).channels()
    assert table == {res: ch for res, ch in ROSINALITY_CHANNELS[cm].items() if res <= size}


@pytest.mark.parametrize(
    "config",
    [tiny(32), tiny(64), tiny(256), ModelConfig(1024, style_dim=16, n_mlp=1, channel_base=2048, channel_max=16)],
    ids=lambda c: f"{c.size}px",
)
def test_generator_and_discriminator_shapes(config):
    g, d = config.generator().eval(), config.discriminator()
    n_latent = 2 * config.log_size - 2
    z = torch.randn(2, config.style_dim)
    with torch.no_grad():
        image, latent = g([z], return_latents=True)
        logits = d(image)
    assert image.shape == (2, 3, config.size, config.size)
    assert latent.shape == (2, n_latent, config.style_dim) and g.n_latent == n_latent
    assert logits.shape == (2, 1)
    assert len(g.convs) == 2 * (config.log_size - 2) and len(g.to_rgbs) == config.log_size - 2
    assert len(d.convs) == config.log_size - 1  # fromRGB + one ResBlock per halving down to 4
    for i in range(g.num_layers):
        res = 2 ** ((i + 5) // 2)
        assert getattr(g.noises, f"noise_{i}").shape == (1, 1, res, res)


def test_config_f_state_dict_names_and_shapes():
    with torch.device("meta"):  # shapes only
        state = ModelConfig(64).generator().state_dict()
        d_state = ModelConfig(64, channel_multiplier=1).discriminator().state_dict()
    assert state["style.8.weight"].shape == (512, 512) and "style.9.weight" not in state
    assert state["input.input"].shape == (1, 512, 4, 4)
    assert state["conv1.conv.weight"].shape == (1, 512, 512, 3, 3)
    assert state["convs.6.conv.weight"].shape == (1, 512, 512, 3, 3)  # 64x64 up-conv
    assert state["convs.6.conv.blur.kernel"].shape == (4, 4)
    assert state["to_rgbs.3.conv.weight"].shape == (1, 3, 512, 1, 1)
    assert state["to_rgbs.3.upsample.kernel"].shape == (4, 4)
    assert state["noises.noise_8"].shape == (1, 1, 64, 64)
    assert d_state["convs.0.0.weight"].shape == (256, 3, 1, 1)
    assert d_state["convs.1.conv2.1.weight"].shape == (512, 256, 3, 3)
    assert d_state["convs.1.skip.1.weight"].shape == (512, 256, 1, 1)
    assert d_state["final_conv.0.weight"].shape == (512, 513, 3, 3)
    assert d_state["final_linear.0.weight"].shape == (512, 512 * 16)


def test_bad_configs_are_refused():
    with pytest.raises(ValueError, match="power of two"):
        ModelConfig(96)
    with pytest.raises(ValueError, match="unknown model config keys"):
        ModelConfig.from_dict({"size": 32, "resolution": 32})
    assert ModelConfig.from_dict(tiny(32).to_dict()) == tiny(32)


@pytest.mark.parametrize("upsample", [False, True])
def test_modulated_conv_training_path_matches_grouped_path(upsample):
    conv = ModulatedConv2d(8, 6, 3, 16, upsample=upsample)
    x, style = torch.randn(3, 8, 8, 8), torch.randn(3, 16)
    grouped = conv.eval()(x, style)
    scaled = conv.train()(x, style)
    assert torch.allclose(grouped, scaled, atol=1e-5)


def test_truncation_moves_w_toward_w_avg():
    g = tiny(32).generator().eval()
    g.w_avg.copy_(torch.randn(32))
    z = torch.randn(3, 32)
    with torch.no_grad():
        w = g.get_latent(z)
        _, half = g([z], truncation=0.5, return_latents=True)
        assert torch.allclose(half, (g.w_avg + 0.5 * (w - g.w_avg)).unsqueeze(1).expand_as(half), atol=1e-6)
        distances = [(g([z], truncation=psi, return_latents=True)[1] - g.w_avg).norm() for psi in (1, 0.7, 0.3, 0)]
        assert distances == sorted(distances, reverse=True) and distances[-1] < 1e-5
        at_zero, _ = g([z], truncation=0, randomize_noise=False)
        of_w_avg = g.synthesis(g.broadcast([g.w_avg.expand(3, -1)]), randomize_noise=False)
    assert torch.allclose(at_zero, of_w_avg, atol=1e-6)
    assert torch.allclose(at_zero[0], at_zero[1])  # every z collapses onto the average image


def test_w_avg_tracks_mapped_latents_only_in_training():
    config = tiny(32, w_avg_beta=0.9)
    g = config.generator()
    z = torch.randn(8, 32)
    g.eval().get_latent(z)
    assert torch.count_nonzero(g.w_avg) == 0
    w = g.train().get_latent(z)
    assert torch.allclose(g.w_avg, 0.1 * w.detach().mean(0), atol=1e-6)


def test_style_mixing_changes_only_the_layers_after_the_inject_index():
    g = tiny(64).generator().eval()
    z1, z2 = torch.randn(2, 32), torch.randn(2, 32)
    seen: dict[str, torch.Tensor] = {}
    hooks = [
        m.register_forward_hook(lambda mod, args, out, name=name: seen.__setitem__(name, out.detach().clone()))
        for name, m in g.named_modules()
        if name.endswith("conv.modulation")
    ]
    with torch.no_grad():
        plain_image, plain = g([z1], return_latents=True, randomize_noise=False)
        plain_styles = dict(seen)
        mixed_image, mixed = g([z1, z2], inject_index=4, return_latents=True, randomize_noise=False)
    for h in hooks:
        h.remove()
    w1, w2 = g.get_latent(z1), g.get_latent(z2)
    assert torch.allclose(mixed[:, :4], w1.unsqueeze(1).expand(-1, 4, -1))
    assert torch.allclose(mixed[:, 4:], w2.unsqueeze(1).expand(-1, g.n_latent - 4, -1))
    # latent index per layer: conv1 0, to_rgb1 1, convs.k k+1, to_rgbs.k 2k+3
    index = {"conv1": 0, "to_rgb1": 1}
    index |= {f"convs.{k}": k + 1 for k in range(len(g.convs))}
    index |= {f"to_rgbs.{k}": 2 * k + 3 for k in range(len(g.to_rgbs))}
    for name, style in seen.items():
        layer = name.removesuffix(".conv.conv.modulation").removesuffix(".conv.modulation")
        assert torch.equal(style, plain_styles[name]) == (index[layer] < 4), name
    assert not torch.equal(plain_image, mixed_image)
    assert torch.equal(plain, g([z1], return_latents=True)[1])


def test_mixing_noise_draws_two_latents_with_the_given_probability():
    assert len(mixing_noise(4, 32, 0.0)) == 1
    assert len(mixing_noise(4, 32, 1.0)) == 2
    counts = [len(mixing_noise(2, 8, 0.9)) for _ in range(200)]
    assert 150 < counts.count(2) < 200


def test_generator_param_resolution_follows_the_layers_outputs():
    config = tiny(64)
    g = config.generator().eval()
    out_size: dict[str, int] = {}
    hooks = [
        m.register_forward_hook(lambda mod, args, out, name=name: out_size.__setitem__(name, out.shape[-1]))
        for name, m in g.named_modules()
        if isinstance(m, (StyledConv, ToRGB))
    ]
    with torch.no_grad():
        g([torch.randn(1, 32)])
    for h in hooks:
        h.remove()
    state = g.state_dict()
    for name, tensor in state.items():
        res = generator_param_resolution(name, config.size)
        layer = next((layer for layer in out_size if name.startswith(layer + ".")), None)
        if layer is not None:
            assert res == out_size[layer], name
        elif name.startswith("noises."):
            assert res == tensor.shape[-1], name
        elif name.startswith("style.") or name == "w_avg":
            assert res == 0, name
    coarse = {k for k in state if generator_param_resolution(k) <= 16}
    assert "input.input" in coarse and "style.1.weight" in coarse and "w_avg" in coarse
    assert "convs.3.conv.weight" in coarse and "convs.4.conv.weight" not in coarse
    assert "to_rgbs.1.bias" in coarse and "to_rgbs.2.bias" not in coarse
    assert "noises.noise_4" in coarse and "noises.noise_5" not in coarse
    with pytest.raises(KeyError):
        generator_param_resolution("convs.10.conv.weight", 64)
    with pytest.raises(KeyError):
        generator_param_resolution("mapping.fc0.weight")


def test_minibatch_stddev_needs_a_batch_that_fills_its_groups():
    d = tiny(32).discriminator()
    assert d(torch.randn(8, 3, 32, 32)).shape == (8, 1)
    assert d(torch.randn(3, 3, 32, 32)).shape == (3, 1)  # one group of three
    with pytest.raises(ValueError, match="minibatch-stddev"):
        d(torch.randn(6, 3, 32, 32))
