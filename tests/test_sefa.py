import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from styleforge.app.cli import app
from styleforge.core.grid import tile_for
from styleforge.model.checkpoint import save_checkpoint
from styleforge.model.generate import generate, render, seed_latents, to_uint8
from styleforge.model.sefa import (
    Directions,
    edit,
    edit_grid,
    factorize,
    mix,
    mix_grid,
    styled_conv_names,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _numpy_sefa(generator, layers):
    """SeFa as the paper's code computes it: unit rows, eigenvectors of A^T A, largest first."""
    state = generator.state_dict()
    names = styled_conv_names(generator)[slice(*layers)]
    weight = np.concatenate([state[name].numpy().astype(np.float64) for name in names])
    weight /= np.linalg.norm(weight, axis=1, keepdims=True)
    values, vectors = np.linalg.eigh(weight.T @ weight)
    order = np.argsort(values)[::-1]
    return values[order], vectors[:, order].T


@pytest.mark.parametrize("layers", [None, (1, 4)])
def test_directions_are_orthonormal_eigenvectors(generator, layers):
    directions = factorize(generator, components=6, layers=layers)
    vectors = directions.vectors.astype(np.float64)
    np.testing.assert_allclose(vectors @ vectors.T, np.eye(6), atol=1e-5)

    expected_values, expected_vectors = _numpy_sefa(generator, directions.layers)
    np.testing.assert_allclose(directions.eigenvalues, expected_values[:6], rtol=1e-5)
    agreement = np.abs(np.sum(vectors * expected_vectors[:6], axis=1))  # sign is arbitrary
    np.testing.assert_allclose(agreement, np.ones(6), atol=1e-4)
    assert directions.layers == (layers or (0, len(generator.convs) + 1))


def test_top_direction_moves_the_styles_most(generator):
    directions = factorize(generator, components=1, layers=(0, 3))
    weight = torch.cat([generator.state_dict()[n] for n in styled_conv_names(generator)[:3]])
    weight = weight / weight.norm(dim=1, keepdim=True)
    top = torch.from_numpy(directions.vectors[0])
    random = torch.nn.functional.normalize(torch.randn(100, generator.style_dim), dim=1)
    assert (weight @ top).norm() >= (random @ weight.T).norm(dim=1).max()


def test_edit_and_mix_touch_only_the_chosen_layers(generator):
    latents = seed_latents(generator, [0, 1])
    direction = torch.from_numpy(factorize(generator, 1).vectors[0])
    moved = edit(latents, direction, 3.0, range(2, 5))
    assert torch.equal(moved[:, :2], latents[:, :2]) and torch.equal(moved[:, 5:], latents[:, 5:])
    assert torch.allclose(moved[:, 2:5] - latents[:, 2:5], 3.0 * direction.expand(2, 3, -1))
    mixed = mix(latents[:1], latents[1:], range(0, 4))
    assert torch.equal(mixed[0, :4], latents[1, :4]) and torch.equal(mixed[0, 4:], latents[0, 4:])


def test_a_seed_is_the_same_face_in_generate_as_in_edit_and_mix(generator, tmp_path):
    generated = generate(generator, tmp_path, seeds=[7], noise_mode="const")[0]
    assert np.array_equal(np.asarray(Image.open(generated)), to_uint8(render(generator, seed_latents(generator, [7])))[0])


def test_directions_round_trip_and_grids_render(generator, tmp_path):
    directions = factorize(generator, 3, (0, 4))
    loaded = Directions.load(directions.save(tmp_path / "sefa.npz"))
    assert np.array_equal(loaded.vectors, directions.vectors) and loaded.layers == (0, 4)

    latents = seed_latents(generator, [0, 1], truncation=0.7)
    images, captions = edit_grid(generator, latents, loaded, [0, 2], [-5, 0, 5])
    assert len(images) == len(captions) == 2 * 2 * 3 and images[0].shape == (32, 32, 3)
    assert np.array_equal(images[1], images[4])  # degree 0 is the unedited latent in every row
    assert not np.array_equal(images[0], images[1])

    others = seed_latents(generator, [5, 6, 7])
    table, cols = mix_grid(generator, latents, others, (0, 4))
    assert cols == 4 and len(table) == 4 * 3 and not table[0].any()  # a blank corner
    assert np.array_equal(table[2], to_uint8(render(generator, others[1:2]))[0])  # the plain cols on top
    assert np.array_equal(table[4], to_uint8(render(generator, latents[:1]))[0])  # the plain rows at the side
    assert np.array_equal(table[11], to_uint8(render(generator, mix(latents[1:], others[2:], range(0, 4))))[0])


def test_cli_mix_takes_seeds_and_projected_latents_as_rows(generator, tmp_path):
    config = generator.config
    save_checkpoint(tmp_path / "model.pt", config, g=generator, d=config.discriminator(), g_ema=generator)
    photo = seed_latents(generator, [9])[0].numpy()
    np.savez(tmp_path / "photo.npz", latent=photo)
    common = ["mix", "--checkpoint", str(tmp_path / "model.pt"), "--cols", "2,3,4", "--styles", "0:4"]
    result = CliRunner().invoke(app, [*common, "--rows", "0,1", "--latent", str(tmp_path / "photo.npz"),
                                      "--out", str(tmp_path / "mix.png")])
    assert result.exit_code == 0, result.output
    assert Image.open(tmp_path / "mix.png").size == (4 * tile_for(config.size), 4 * tile_for(config.size))
    result = CliRunner().invoke(app, [*common, "--out", str(tmp_path / "none.png")])
    assert result.exit_code == 2 and "--rows: no seeds given" in result.output


def test_layer_ranges_are_checked(generator):
    with pytest.raises(ValueError, match="layers"):
        factorize(generator, 3, (0, len(generator.convs) + 2))
    with pytest.raises(ValueError, match="layers"):
        mix_grid(generator, seed_latents(generator, [0]), seed_latents(generator, [1]), (3, 3))
