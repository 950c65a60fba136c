"""The CLI's habits: seed ranges everywhere seeds are taken, --version, examples in every
command's help that the README shows, and NVIDIA's projected_w.npz wherever a projection is read."""

from importlib.metadata import version
from pathlib import Path

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from styleforge.app.cli import app
from styleforge.model.checkpoint import save_checkpoint
from styleforge.model.generate import seed_latents
from styleforge.model.project import LatentFileError, load_projected

pytestmark = pytest.mark.usefixtures("one_thread")
README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture
def checkpoint(generator, tmp_path):
    path = tmp_path / "model.pt"
    save_checkpoint(path, generator.config, g=generator, d=generator.config.discriminator(), g_ema=generator)
    return str(path)


def _run(*args: str):
    return CliRunner().invoke(app, list(args))


def test_version():
    result = _run("--version")
    assert result.exit_code == 0 and result.output.strip() == f"styleforge {version('styleforge')}"


def test_seed_ranges_are_inclusive_and_mix_with_single_seeds(checkpoint, tmp_path):
    result = _run("generate", "--checkpoint", checkpoint, "--seeds", "0-2,7, 9", "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").glob("seed*.png")) == [f"seed{s:04d}.png" for s in (0, 1, 2, 7, 9)]


@pytest.mark.parametrize("seeds, message", [
    ("5-2", "'5-2' is not a seed from 0 to 4294967295, or a range upward"),
    ("-1", "expected seeds like 0,5,9 or ranges like 0-7,12, got '-1'"),
    ("0-x", "expected seeds like 0,5,9"),
    ("4294967296", "'4294967296' is not a seed"),
])
def test_bad_seeds_exit_2_naming_the_option(checkpoint, tmp_path, seeds, message):
    for option, command in (("--seeds", ["generate", "--checkpoint", checkpoint, "--out", str(tmp_path / "g")]),
                            ("--rows", ["mix", "--checkpoint", checkpoint, "--out", str(tmp_path / "m.png")]),
                            ("--cols", ["mix", "--checkpoint", checkpoint, "--rows", "0", "--out", str(tmp_path / "m.png")]),
                            ("--seeds", ["edit", "--model", checkpoint, "--layers", "0:4", "--out", str(tmp_path / "e.png")]),
                            ("--seeds", ["walk", "--checkpoint", checkpoint, "--out", str(tmp_path / "w.mp4")])):
        result = _run(*command, option, seeds)
        assert result.exit_code == 2, (command, result.output)
        assert result.output.strip() == result.output.strip().splitlines()[0], result.output
        assert f"{option}: {message}" in result.output, result.output


def test_ranges_reach_mix_edit_and_walk(generator, checkpoint, tmp_path):
    result = _run("mix", "--checkpoint", checkpoint, "--rows", "0-1", "--cols", "2-4", "--styles", "0:4",
                  "--out", str(tmp_path / "mix.png"))
    assert result.exit_code == 0 and "2 rows x 3 seeds" in result.output, result.output
    result = _run("edit", "--model", checkpoint, "--layers", "0:4", "--directions", "0:2", "--steps", "3",
                  "--seeds", "0-2", "--out", str(tmp_path / "edit.png"))
    assert result.exit_code == 0 and "3 latents" in result.output, result.output
    result = _run("walk", "--checkpoint", checkpoint, "--seeds", "0-3", "--grid", "2x1", "--frames", "2",
                  "--out", f"{tmp_path}/walk/")
    assert result.exit_code == 0 and "64x32" in result.output, result.output


def test_every_command_has_examples_the_readme_shows():
    readme = README.read_text()
    commands = typer.main.get_command(app).commands
    for name, command in commands.items():
        assert command.epilog and command.epilog.startswith("Examples:"), f"`styleforge {name} --help` has no examples"
        examples = [line for line in command.epilog.splitlines()[1:] if line.strip()]
        assert examples and all(example.startswith(f"styleforge {name}") for example in examples), name
        missing = [example for example in examples if example not in readme]
        assert not missing, f"README.md does not show: {missing}"


def test_one_loader_reads_ours_and_nvidias_projections(generator, tmp_path):
    latent = seed_latents(generator, [3])[0].numpy()
    np.savez(tmp_path / "latent.npz", latent=latent, noise_0=np.zeros((1, 4, 4), np.float32))
    np.savez(tmp_path / "projected_w.npz", w=latent[None])  # stylegan2-ada-pytorch's projector.py layout
    np.savez(tmp_path / "two.npz", w=np.stack([latent, latent]))  # its generate.py renders any N
    shape = generator.n_latent, generator.style_dim
    ours, theirs = load_projected(tmp_path / "latent.npz", *shape), load_projected(tmp_path / "projected_w.npz", *shape)
    assert ours.shape == theirs.shape == (1, *shape) and np.array_equal(ours.numpy(), theirs.numpy())
    assert load_projected(tmp_path / "two.npz", *shape).shape == (2, *shape)


@pytest.mark.parametrize("arrays, message", [
    ({"latents": np.zeros((8, 32))}, "neither `latent` (styleforge portraits) nor `w` (NVIDIA's projector) in it, only ['latents']"),
    ({"w": np.zeros((1, 8, 16))}, "`w` [1, 8, 16] does not fit this model, which takes ['N', 8, 32]"),
    ({"w": np.zeros((8, 32))}, "`w` [8, 32] does not fit this model, which takes ['N', 8, 32]"),
    ({"latent": np.zeros((1, 8, 32))}, "`latent` [1, 8, 32] does not fit this model, which takes [8, 32]"),
])
def test_projection_files_that_do_not_fit_are_named(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(LatentFileError) as caught:
        load_projected(tmp_path / "bad.npz", 8, 32)
    assert str(caught.value) == f"{tmp_path / 'bad.npz'}: {message}"


def test_unreadable_projection_files_are_named(tmp_path):
    np.save(tmp_path / "bare.npy", np.zeros((8, 32)))
    (tmp_path / "text.npz").write_text("not a zip")
    for name, message in (("missing.npz", "no such file"), ("bare.npy", "not an .npz"), ("text.npz", "not an .npz")):
        with pytest.raises(LatentFileError, match="not an .npz|no such file") as caught:
            load_projected(tmp_path / name, 8, 32)
        assert str(caught.value).startswith(f"{tmp_path / name}: {message}")


def test_mix_and_edit_take_nvidias_projected_w(generator, checkpoint, tmp_path):
    latent = seed_latents(generator, [9])[0].numpy()
    np.savez(tmp_path / "projected_w.npz", w=latent[None])
    np.savez(tmp_path / "latent.npz", latent=latent)
    for name in ("projected_w.npz", "latent.npz"):
        result = _run("edit", "--model", checkpoint, "--layers", "0:4", "--directions", "0:1", "--steps", "3", "--seeds", "",
                      "--latent", str(tmp_path / name), "--degree", "0", "--out", str(tmp_path / f"edit_{name}.png"))
        assert result.exit_code == 0, result.output
        result = _run("mix", "--checkpoint", checkpoint, "--latent", str(tmp_path / name), "--cols", "1",
                      "--out", str(tmp_path / f"mix_{name}.png"))
        assert result.exit_code == 0, result.output
    for sheet in ("edit", "mix"):  # the two files hold one latent: the sheets are the same, pixel for pixel
        a, b = (np.asarray(Image.open(tmp_path / f"{sheet}_{name}.png")) for name in ("projected_w.npz", "latent.npz"))
        assert np.array_equal(a, b)
    np.savez(tmp_path / "small.npz", w=np.zeros((1, 6, 32), np.float32))
    result = _run("mix", "--checkpoint", checkpoint, "--latent", str(tmp_path / "small.npz"), "--out", str(tmp_path / "m.png"))
    assert result.exit_code == 2
    assert result.output.strip() == f"{tmp_path / 'small.npz'}: `w` [1, 6, 32] does not fit this model, which takes ['N', 8, 32]"
