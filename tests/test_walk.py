"""`styleforge walk`: latent walks and the portrait morph, encoded for real (ffmpeg) and decoded by
an independent decoder (PyAV's own FFmpeg libraries), with a tiny generator the tests make."""

import itertools
import subprocess
import sys

import av
import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from styleforge.app.cli import app
from styleforge.model.blend import blend_generators
from styleforge.model.checkpoint import save_checkpoint
from styleforge.model.generate import render, seed_latents, to_uint8
from styleforge.model.networks import ModelConfig
from styleforge.model.walk import Keyframes, morph_cuts, path, seed_keyframes, slerp, walk_frames

pytestmark = pytest.mark.usefixtures("one_thread")
CONFIG = ModelConfig(size=32, style_dim=32, n_mlp=2, channel_max=32, channel_base=256)


def _save(generator, path):
    save_checkpoint(path, generator.config, g=generator, d=generator.config.discriminator(), g_ema=generator)
    return str(path)


@pytest.fixture(scope="module")
def finetuned():
    """A second generator of the same shape, with other weights: the morph's far end."""
    torch.manual_seed(1)
    return CONFIG.generator().eval()


@pytest.fixture
def checkpoint(generator, tmp_path):
    return _save(generator, tmp_path / "model.pt")


def _run(*args: str):
    return CliRunner().invoke(app, list(args))


def _ok(*args: str):
    result = _run(*args)
    assert result.exit_code == 0, result.output
    return result


def _frames(folder) -> list[np.ndarray]:
    return [np.asarray(Image.open(p)) for p in sorted(folder.glob("frame*.png"))]


def _generated(checkpoint, seed, truncation, out) -> np.ndarray:
    _ok("generate", "--checkpoint", checkpoint, "--seeds", str(seed), "--noise", "const",
        "--truncation", str(truncation), "--out", str(out))
    return np.asarray(Image.open(out / f"seed{seed:04d}.png"))


def test_path_hits_keyframes_exactly_and_a_loop_never_shows_a_frame_twice():
    open_path = list(path(7, 3))
    assert open_path[0] == (0, 1, 0.0) and open_path[3][::2] == (1, 0.0) and open_path[-1][::2] == (2, 0.0)
    looped = list(path(6, 2, loop=True))  # 0 -> 1 -> back toward 0; frame 6 would be keyframe 0
    assert [(k, f) for k, _, f in looped] == [(0, 0.0), (0, 1 / 3), (0, 2 / 3), (1, 0.0), (1, 1 / 3), (1, 2 / 3)]
    assert looped[-1][1] == 0
    with pytest.raises(ValueError, match="at least 2 frames"):
        list(path(1, 3))


def test_slerp_stays_on_the_great_circle_and_ends_on_the_keyframes():
    a, b = np.random.RandomState(0).randn(2, 512).astype(np.float32)
    middle = slerp(a, b, 0.5)

    def angle(u, v):
        return np.arccos(np.clip(u @ v / np.linalg.norm(u) / np.linalg.norm(v), -1, 1))

    assert np.isclose(angle(a, middle), angle(middle, b), atol=1e-5) and np.isclose(angle(a, middle) * 2, angle(a, b), atol=1e-5)
    np.testing.assert_allclose(slerp(a, b, 0.0), a, rtol=1e-5)
    np.testing.assert_allclose(slerp(a, b, 1.0), b, rtol=1e-5)


@pytest.mark.parametrize("suffix", [".mp4", ".gif", ".webp"])
def test_video_decodes_with_the_asked_frames_size_and_fps(checkpoint, tmp_path, suffix):
    out = tmp_path / f"walk{suffix}"
    _ok("walk", "--checkpoint", checkpoint, "--seeds", "0-3", "--grid", "2x1", "--frames", "25", "--fps", "24", "--out", str(out))
    if suffix == ".webp":  # PyAV's FFmpeg decodes still WebP only; Pillow reads the animation
        with Image.open(out) as image:
            assert image.n_frames == 25 and image.size == (64, 32) and image.info["loop"] == 0
        return
    with av.open(str(out)) as container:
        stream = container.streams.video[0]
        decoded = [frame for frame in container.decode(stream)]
        assert len(decoded) == 25 and (decoded[0].width, decoded[0].height) == (64, 32)
        if suffix == ".mp4":
            assert stream.codec_context.name == "h264" and stream.average_rate == 24


def test_png_frames_start_and_end_on_generate_of_the_end_seeds(checkpoint, tmp_path):
    for space in ("w", "z"):
        out = tmp_path / f"frames_{space}"
        _ok("walk", "--checkpoint", checkpoint, "--seeds", "3,11,7", "--frames", "12", "--truncation", "0.6",
            "--space", space, "--out", f"{out}/")
        frames = _frames(out)
        assert len(frames) == 12 and frames[0].shape == (32, 32, 3)
        assert np.array_equal(frames[0], _generated(checkpoint, 3, 0.6, tmp_path / "g3"))
        assert np.array_equal(frames[-1], _generated(checkpoint, 7, 0.6, tmp_path / "g7"))
        steps = [np.abs(a.astype(int) - b).mean() for a, b in itertools.pairwise(frames)]
        assert max(steps) < np.abs(frames[0].astype(int) - frames[-1]).mean()  # moves in small steps


def test_w_walk_is_a_lerp_of_the_keyframes_and_z_walk_maps_every_frame(generator):
    cells = [seed_keyframes(generator, [0, 9], truncation=0.7)]
    halfway = torch.lerp(cells[0].latents[0], cells[0].latents[1], 0.5)
    frames = list(walk_frames(generator, cells, 3, truncation=0.7))
    expected = to_uint8(render(generator, halfway[None]))[0]
    assert np.abs(frames[1].astype(int) - expected).max() <= 1  # batched render: last bits may differ

    z_cells = [seed_keyframes(generator, [0, 9], truncation=0.7, space="z")]
    z_middle = list(walk_frames(generator, z_cells, 3, truncation=0.7))[1]
    assert not np.array_equal(z_middle, frames[1])  # a different path between the same ends


def test_loop_returns_to_the_first_seed(checkpoint, tmp_path):
    """A looped walk 0 -> 5 is the open walk 0 -> 5 -> 0 without that walk's last frame (seed 0
    again): the frame after the loop's last is its first."""
    _ok("walk", "--checkpoint", checkpoint, "--seeds", "0,5", "--loop", "--frames", "8", "--out", f"{tmp_path}/loop/")
    _ok("walk", "--checkpoint", checkpoint, "--seeds", "0,5,0", "--frames", "9", "--out", f"{tmp_path}/open/")
    looped, there_and_back = _frames(tmp_path / "loop"), _frames(tmp_path / "open")
    assert len(looped) == 8 and all(np.array_equal(a, b) for a, b in zip(looped, there_and_back))
    seed0 = _generated(checkpoint, 0, 0.7, tmp_path / "g0")
    assert np.array_equal(looped[0], seed0) and np.array_equal(there_and_back[8], seed0)
    assert np.array_equal(looped[4], _generated(checkpoint, 5, 0.7, tmp_path / "g5"))


def test_grid_cells_walk_their_own_seeds_in_order(checkpoint, generator, tmp_path):
    _ok("walk", "--checkpoint", checkpoint, "--seeds", "0-7", "--grid", "2x2", "--frames", "3", "--out", f"{tmp_path}/grid/")
    first, last = _frames(tmp_path / "grid")[0], _frames(tmp_path / "grid")[-1]
    assert first.shape == (64, 64, 3)
    cells = {(0, 0): (0, 1), (0, 1): (2, 3), (1, 0): (4, 5), (1, 1): (6, 7)}  # (row, col): seeds; 2 across
    for (row, col), (start, end) in cells.items():
        tile = np.s_[row * 32 : (row + 1) * 32, col * 32 : (col + 1) * 32]
        assert np.array_equal(first[tile], _generated(checkpoint, start, 0.7, tmp_path / f"g{start}"))
        assert np.array_equal(last[tile], _generated(checkpoint, end, 0.7, tmp_path / f"g{end}"))


def test_latents_walk_accepts_ours_and_nvidias_projections(checkpoint, generator, tmp_path):
    ours, theirs = seed_latents(generator, [4])[0].numpy(), seed_latents(generator, [8])[0].numpy()
    np.savez(tmp_path / "latent.npz", latent=ours, noise_0=np.zeros((1, 4, 4), np.float32))
    np.savez(tmp_path / "projected_w.npz", w=theirs[None])
    _ok("walk", "--checkpoint", checkpoint, "--latents", f"{tmp_path}/latent.npz,{tmp_path}/projected_w.npz",
        "--frames", "5", "--out", f"{tmp_path}/photos/")
    frames = _frames(tmp_path / "photos")
    assert np.array_equal(frames[0], to_uint8(render(generator, torch.from_numpy(ours)[None]))[0])
    assert np.array_equal(frames[-1], to_uint8(render(generator, torch.from_numpy(theirs)[None]))[0])


def test_morph_runs_from_the_base_render_through_the_blends_to_the_finetuned_render(generator, finetuned, tmp_path):
    base, end = _save(generator, tmp_path / "base.pt"), _save(finetuned, tmp_path / "ft.pt")
    latent = seed_latents(generator, [6], truncation=0.7)
    np.savez(tmp_path / "latent.npz", latent=latent[0].numpy())
    assert morph_cuts(32) == [16, 8, 4] and morph_cuts(32, reverse=True) == [4, 8, 16]
    # 5 renderers (base, cuts 16, 8, 4, fine-tuned), 4 legs: with 9 frames every other frame is one
    _ok("walk", "--morph", str(tmp_path / "latent.npz"), "--base", base, "--finetuned", end, "--frames", "9",
        "--out", f"{tmp_path}/morph/")
    frames = _frames(tmp_path / "morph")
    renders = [generator] + [blend_generators(generator, finetuned, cut)[0] for cut in (16, 8, 4)] + [finetuned]
    for index, renderer in zip(range(0, 9, 2), renders):
        assert np.array_equal(frames[index], to_uint8(render(renderer, latent))[0]), index
    assert not np.array_equal(frames[1], frames[0]) and not np.array_equal(frames[1], frames[2])  # in between

    # Toonify's direction, looped: out through the blends coarsest cut first, and back down them
    _ok("walk", "--morph", str(tmp_path / "latent.npz"), "--base", base, "--finetuned", end, "--frames", "8",
        "--reverse", "--loop", "--out", f"{tmp_path}/back/")
    toonify = {cut: blend_generators(generator, finetuned, cut, reverse=True)[0] for cut in (4, 8, 16)}
    renders = [generator, toonify[4], toonify[8], toonify[16], finetuned, toonify[16], toonify[8], toonify[4]]
    for index, (frame, renderer) in enumerate(zip(_frames(tmp_path / "back"), renders)):
        assert np.array_equal(frame, to_uint8(render(renderer, latent))[0]), index


def test_memory_stays_flat_as_the_walk_grows(checkpoint, tmp_path):
    """Peak RSS of a 2,000-frame walk against a 200-frame one, each in its own process: holding
    the extra 1,800 frames (64x64x3 bytes each, 22 MB) would show; streaming shows none."""
    measure = ("import resource, sys, torch; torch.set_num_threads(1)\n"
               "from styleforge.app.cli import app\n"
               "app(sys.argv[1:], standalone_mode=False)\n"
               "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)")  # KiB on Linux
    peaks = {}
    for frames in (200, 2000):
        run = subprocess.run([sys.executable, "-c", measure, "walk", "--checkpoint", checkpoint, "--seeds", "0-7",
                              "--grid", "2x2", "--frames", str(frames), "--out", str(tmp_path / f"{frames}.mp4")],
                             capture_output=True, text=True, timeout=300, check=False)
        assert run.returncode == 0, run.stderr
        peaks[frames] = int(run.stdout.split()[-1])
    held = 1800 * 64 * 64 * 3
    assert peaks[2000] - peaks[200] < held / 2, peaks


@pytest.mark.parametrize("args, message", [
    (["--seeds", "0,1", "--out", "walk.avi"], "walk.avi: unknown extension '.avi'"),
    (["--seeds", "3", "--out", "walk.mp4"], "--seeds: a walk needs at least 2 keyframes per grid cell, got 1"),
    (["--seeds", "0-5", "--grid", "2x2", "--out", "walk.mp4"], "--seeds: 6 keyframes do not split evenly among 4 grid cells"),
    (["--seeds", "0,1", "--grid", "2by2", "--out", "walk.mp4"], "--grid: expected COLSxROWS"),
    (["--seeds", "0,1", "--latents", "a.npz", "--out", "walk.mp4"], "give one of --seeds, --latents or --morph, got --seeds and --latents"),
    (["--latents", "{tmp}/wrong.npz,{tmp}/wrong.npz", "--out", "walk.mp4"], "wrong.npz: `latent` [5, 32] does not fit this model, which takes [8, 32]"),
    (["--latents", "{tmp}/missing.npz,{tmp}/wrong.npz", "--out", "walk.mp4"], "missing.npz: no such file"),
    (["--latents", "{tmp}/wrong.npz,{tmp}/wrong.npz", "--space", "z", "--out", "walk.mp4"], "--space z: only seeds have a z"),
    (["--seeds", "0,1", "--noise", "random", "--out", "walk.mp4"], "--noise const or none"),
    (["--seeds", "0,1", "--fps", "0", "--out", "walk.mp4"], "--fps: must be above 0"),
    (["--morph", "{tmp}/wrong.npz", "--base", "{tmp}/nope.pt", "--out", "walk.mp4"], "nope.pt: no such checkpoint"),
])
def test_bad_input_exits_2_with_one_clear_line(checkpoint, tmp_path, args, message):
    np.savez(tmp_path / "wrong.npz", latent=np.zeros((5, 32), np.float32))
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = _run("walk", "--checkpoint", checkpoint, *[a if not a.startswith("walk.") else str(tmp_path / a) for a in args])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.output
    assert not list(tmp_path.glob("walk.*"))


def test_a_missing_checkpoint_and_a_folder_of_old_frames_are_refused(checkpoint, tmp_path):
    result = _run("walk", "--checkpoint", str(tmp_path / "none.pt"), "--seeds", "0,1", "--out", str(tmp_path / "w.mp4"))
    assert result.exit_code == 2 and "none.pt: no such checkpoint" in result.output
    _ok("walk", "--checkpoint", checkpoint, "--seeds", "0,1", "--frames", "2", "--out", f"{tmp_path}/frames/")
    result = _run("walk", "--checkpoint", checkpoint, "--seeds", "0,1", "--frames", "2", "--out", str(tmp_path / "frames"))
    assert result.exit_code == 2 and "already holds frame*.png" in result.output


def test_walk_frames_checks_its_cells(generator):
    with pytest.raises(ValueError, match="same number"):
        list(walk_frames(generator, [Keyframes([torch.zeros(8, 32)] * 2), Keyframes([torch.zeros(8, 32)] * 3)], 4, cols=2))
