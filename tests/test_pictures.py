"""Every report picture checked by content: a row or a column is the render it claims to be,
pixel for pixel (constant noise), read back from the PNG a person would open."""


from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data
from typer.testing import CliRunner

from styleforge.app.cli import app
from styleforge.core.config import BlendParams, EvaluateParams, FacesParams, PortraitsParams, ProjectionParams
from styleforge.core.grid import sheet_tiles, tile_for
from styleforge.model.checkpoint import load_checkpoint, load_generator, save_checkpoint
from styleforge.model.generate import render, render_seeds, to_uint8
from styleforge.model.project import load_latent
from styleforge.model.train import render_z
from styleforge.tasks import blend as blend_stage
from styleforge.tasks import finetune as finetune_stage
from styleforge.tasks import paths
from styleforge.tasks import portraits as portraits_stage
from tests.test_finetune import TINY, finetune_params, make_base, make_dataset

pytestmark = pytest.mark.usefixtures("one_thread")


def sample_z(count: int, seed: int) -> torch.Tensor:
    """The fixed z of a training run's grids (model/train.py: from the run's seed)."""
    return torch.randn(count, TINY.style_dim, generator=torch.Generator().manual_seed(seed))


def test_finetune_vs_base_shows_the_base_above_and_the_tuned_model_below(tmp_path):
    make_base(tmp_path)
    make_dataset(tmp_path / "data/train")
    params = finetune_params(samples=6)
    finetune_stage.run(params, EvaluateParams(), FacesParams(), tmp_path)

    base = load_checkpoint(tmp_path / paths.BASE_MODEL).g_ema.eval()
    tuned = load_generator(tmp_path / paths.FINETUNED_MODEL)
    z = sample_z(params.samples, params.seed)
    tiles = sheet_tiles(tmp_path / paths.COMPARISON, 2 * 6, TINY.size, tile_for(TINY.size), 6, captioned=True)
    for got, want in zip(tiles, [*render_z(base, z), *render_z(tuned, z)], strict=True):
        assert np.array_equal(got, want)
    assert not np.array_equal(tiles[0], tiles[6]), "the fine-tune changed nothing: the test would prove nothing"
    samples = sheet_tiles(tmp_path / paths.FINETUNE_SAMPLES, 6, TINY.size, tile_for(TINY.size), 8, captioned=False)
    assert all(np.array_equal(a, b) for a, b in zip(samples, render_z(tuned, z), strict=True))


@pytest.fixture
def base_and_tuned(tmp_path):
    """data/base and data/finetune models that differ in every learned tensor."""
    make_base(tmp_path)
    base = load_checkpoint(tmp_path / "data/base/model.pt")
    tuned = TINY.generator().eval()
    tuned.load_state_dict(base.g_ema.state_dict())
    with torch.no_grad():
        for name, tensor in tuned.state_dict().items():
            if not name.endswith(".kernel"):
                tensor.add_(0.2 * torch.randn_like(tensor))
    save_checkpoint(tmp_path / "data/finetune/model.pt", TINY, tuned, base.d, tuned)
    return tmp_path, base.g_ema.eval(), tuned


def test_blend_sweep_starts_with_the_base_and_ends_with_the_fine_tuned_model(base_and_tuned):
    root, base, tuned = base_and_tuned
    params = BlendParams(swap_res=8, sweep_seeds=[0, 1, 2], sefa_components=2, truncation=0.7)
    columns = blend_stage.run(params, root)["sweep_columns"]
    assert columns == ["base", "cut 8", "finetuned"]
    tiles = sheet_tiles(root / paths.SWEEP_SHEET, 9, TINY.size, tile_for(TINY.size), 3, captioned=True)
    blended = load_generator(root / paths.BLEND_MODEL)
    for row, seed in enumerate(params.sweep_seeds):
        first, cut, last = tiles[3 * row: 3 * row + 3]
        assert np.array_equal(first, render_seeds(base, [seed], 0.7)[0])
        assert np.array_equal(cut, render_seeds(blended, [seed], 0.7)[0])
        assert np.array_equal(last, render_seeds(tuned, [seed], 0.7)[0])
        assert not np.array_equal(first, last)


def test_portraits_sheet_holds_input_reconstruction_and_portrait_per_photo(base_and_tuned):
    root, base, tuned = base_and_tuned
    blend_stage.run(BlendParams(swap_res=8, sweep_seeds=[0], sefa_components=2), root)
    photos = root / "photos"
    photos.mkdir()
    Image.fromarray(data.astronaut()).save(photos / "astronaut.png")
    Image.fromarray(data.astronaut()[:, ::-1]).save(photos / "mirrored.png")
    make_dataset(root / "data/train")  # the target look the portraits are measured against
    params = PortraitsParams(projection=ProjectionParams(steps=6, n_mean_latent=200))
    with pytest.warns(UserWarning, match="fallback"):
        report = portraits_stage.run(params, FacesParams(), root)
    names = [r["name"] for r in report["results"]]
    assert names == ["astronaut", "mirrored"]

    tiles = sheet_tiles(root / paths.PORTRAITS_SHEET, 6, TINY.size, tile_for(TINY.size), 3, captioned=True)
    blended = load_generator(root / paths.BLEND_MODEL)
    for row, name in enumerate(names):
        folder = root / paths.PORTRAITS_DIR / name
        files = [np.asarray(Image.open(folder / f"{part}.png")) for part in ("input", "reconstruction", "portrait")]
        for got, want in zip(tiles[3 * row: 3 * row + 3], files, strict=True):
            assert np.array_equal(got, want)
        latent, noises = load_latent(folder / "latent.npz")
        with torch.no_grad():
            reconstruction = to_uint8(base.synthesis(latent[None], noise=[n[None] for n in noises]))[0]
            portrait = to_uint8(render(blended, latent[None]))[0]
        assert np.array_equal(files[1], reconstruction) and np.array_equal(files[2], portrait)


def test_portrait_folders_are_safe_unique_and_inside_out():
    photos = [Path(name) for name in ("a.jpg", "a.png", "a-2.jpg", "A.jpg", "...jpg", ".hidden.png", "über café.jpg",
                                      "x..y.png", "-.png", "日本.png")]
    names = portraits_stage._unique_names(photos)
    assert names == ["a", "a-2", "a-2-2", "A-3", "photo", "hidden", "uber-cafe", "x-y", "photo-2", "photo-3"]
    assert len({n.lower() for n in names}) == len(names)
    assert all(n and "." not in n and "/" not in n for n in names)


def test_the_portraits_command_writes_only_inside_out(base_and_tuned):
    root, _, _ = base_and_tuned
    blend_stage.run(BlendParams(swap_res=8, sweep_seeds=[0], sefa_components=2), root)
    inbox = root / "inbox"
    inbox.mkdir()
    for name in ("...jpg", "a.jpg", "a.png"):
        Image.fromarray(data.astronaut()).save(inbox / name, format="PNG")
    (root / "params.yaml").write_text("portraits:\n  projection: {steps: 2, n_mean_latent: 64}\n")
    before = {p for p in root.rglob("*") if p.is_file()}
    out = root / "out"
    result = CliRunner().invoke(app, ["portraits", *map(str, sorted(inbox.iterdir())), "--out", str(out),
                                      "--params", str(root / "params.yaml"), "--base", str(root / "data/base/model.pt"),
                                      "--blend", str(root / "data/blend/model.pt")])
    assert result.exit_code == 0, result.output
    written = {p for p in root.rglob("*") if p.is_file()} - before
    assert written and all(out in p.parents for p in written), sorted(map(str, written))
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["a", "a-2", "photo"]
