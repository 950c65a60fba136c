import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from styleforge.core.config import BlendParams
from styleforge.core.grid import tile_for
from styleforge.model.blend import blend_generators, fine_fraction
from styleforge.model.checkpoint import load_generator, save_checkpoint
from styleforge.model.generate import render_seeds
from styleforge.model.networks import generator_param_resolution
from styleforge.tasks.blend import (
    BLEND_MODEL,
    SEFA_FILE,
    SWEEP_SHEET,
    run,
)

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def models(generator):
    """A base generator and a 'fine-tuned' one that differs from it in every learned tensor."""
    base = generator
    finetuned = base.config.generator().eval()
    finetuned.load_state_dict(base.state_dict())
    with torch.no_grad():
        for name, tensor in finetuned.state_dict().items():
            if not name.endswith(".kernel"):  # fixed FIR filters: the same in every model
                tensor.add_(0.1 * torch.randn_like(tensor) + 0.05)
    return base, finetuned


@pytest.mark.parametrize("swap_res", [4, 8, 16])
@pytest.mark.parametrize("reverse", [False, True])
def test_every_tensor_comes_from_the_model_the_rule_names(models, swap_res, reverse):
    base, finetuned = models
    blended, from_finetuned = blend_generators(base, finetuned, swap_res, reverse=reverse)
    coarse, fine = (finetuned, base) if reverse else (base, finetuned)
    coarse_state, fine_state = coarse.state_dict(), fine.state_dict()
    state = blended.state_dict()
    assert state.keys() == coarse_state.keys()  # nothing dropped, nothing extra
    for name, tensor in state.items():
        res = generator_param_resolution(name, base.config.size)
        expected, other = (coarse_state, fine_state) if res <= swap_res else (fine_state, coarse_state)
        assert torch.equal(tensor, expected[name]), name
        if not name.endswith(".kernel"):
            assert not torch.equal(tensor, other[name]), name
    assert from_finetuned[0] == (1.0 if reverse else 0.0)  # the mapping network goes with the coarse side
    assert from_finetuned[32] == (0.0 if reverse else 1.0)


def test_cut_at_the_top_resolution_is_the_base_model(models):
    base, finetuned = models
    blended, _ = blend_generators(base, finetuned, base.config.size)
    seeds = [0, 1, 2]
    assert all(np.array_equal(a, b) for a, b in zip(render_seeds(blended, seeds, 0.7), render_seeds(base, seeds, 0.7)))
    reversed_blend, _ = blend_generators(base, finetuned, base.config.size, reverse=True)
    assert all(torch.equal(reversed_blend.state_dict()[k], v) for k, v in finetuned.state_dict().items())


def test_blend_width_interpolates_the_resolutions_above_the_cut(models):
    base, finetuned = models
    blended, from_finetuned = blend_generators(base, finetuned, swap_res=8, blend_width=2)
    assert from_finetuned == {0: 0.0, 4: 0.0, 8: 0.0, 16: pytest.approx(1 / 3), 32: pytest.approx(2 / 3)}
    name = "to_rgbs.2.conv.weight"  # the 32x32 ToRGB
    expected = torch.lerp(base.state_dict()[name], finetuned.state_dict()[name], 2 / 3)
    assert torch.allclose(blended.state_dict()[name], expected)
    assert [fine_fraction(res, 32, 1) for res in (16, 32, 64, 128)] == [0, 0, 0.5, 1]


def test_refuses_mismatched_models_and_cuts(models):
    base, _ = models
    other = replace(base.config, n_mlp=base.config.n_mlp + 1).generator()
    with pytest.raises(ValueError, match="configs differ"):
        blend_generators(base, other, 8)
    for swap_res in (2, 12, 64):
        with pytest.raises(ValueError, match="swap_res"):
            blend_generators(base, base, swap_res)


def test_stage_writes_model_sweep_directions_and_report(models, tmp_path):
    base, finetuned = models
    config = base.config
    for path, generator in (("data/base/model.pt", base), ("data/finetune/model.pt", finetuned)):
        save_checkpoint(tmp_path / path, config, g=generator, d=config.discriminator(), g_ema=generator)
    params = BlendParams(swap_res=8, sweep_seeds=[0, 1], sefa_components=4)
    report = run(params, tmp_path)

    saved = load_generator(tmp_path / BLEND_MODEL)
    expected, _ = blend_generators(base, finetuned, 8)
    assert all(torch.equal(saved.state_dict()[k], v) for k, v in expected.state_dict().items())
    assert report["sweep_columns"] == ["base", "cut 8", "cut 16", "finetuned"]
    assert Image.open(tmp_path / SWEEP_SHEET).size[0] == 4 * tile_for(config.size)
    with np.load(tmp_path / SEFA_FILE) as sefa:
        assert sefa["vectors"].shape == (4, config.style_dim)
    written = json.loads((tmp_path / "reports/blend.json").read_text())
    assert written["fraction_from_finetuned"] == {"0": 0.0, "4": 0.0, "8": 0.0, "16": 1.0, "32": 1.0}
