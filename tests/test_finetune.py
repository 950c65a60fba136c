"""The base and finetune stages on a tiny model: losses, FreezeD/FreezeG, resume, NaN, inputs."""

import hashlib
import json
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from styleforge.core.config import BaseParams, EvaluateParams, FacesParams, FinetuneParams
from styleforge.model import losses
from styleforge.model.checkpoint import (
    CheckpointError,
    build_networks,
    load_checkpoint,
    load_generator,
    save_checkpoint,
)
from styleforge.model.freeze import frozen_discriminator_names, frozen_generator_names
from styleforge.model.networks import ModelConfig
from styleforge.model.train import NonFiniteLossError, Trainer
from styleforge.tasks import base as base_stage
from styleforge.tasks import finetune as finetune_stage
from styleforge.tasks import paths

TINY = ModelConfig(size=16, style_dim=32, n_mlp=2, channel_max=32)
BATCH = 4


def make_base(root: Path, seed: int = 0) -> Path:
    """A tiny base checkpoint at data/base/model.pt, with g != g_ema as in a real checkpoint."""
    torch.manual_seed(seed)
    g, d, g_ema = build_networks(TINY)
    with torch.no_grad():
        for p in g.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return save_checkpoint(root / paths.BASE_MODEL, TINY, g, d, g_ema)


def make_dataset(folder: Path, count: int = 8, side: int = 24) -> Path:
    """The augment stage's layout: PNGs + dataset.json, at a resolution the model does not have."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    records = []
    for i in range(count):
        ramp = np.linspace(0, 255, side)[None, :, None] * rng.uniform(0.3, 1.0, size=(1, 1, 3))
        pixels = np.clip(ramp + rng.normal(0, 20, (side, side, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"face{i}.png")
        records.append({"file": f"face{i}.png"})
    (folder / "dataset.json").write_text(json.dumps({"resolution": side, "images": records}))
    return folder


def finetune_params(steps: int = 6, **overrides) -> FinetuneParams:
    settings = dict(kimg=steps * BATCH / 1000, batch=BATCH, workers=0, r1_every=2, pl_every=2, ada_interval=2,
                    ada_kimg=0.5, augment_p=0.3, ema_kimg=0.01, checkpoint_every=4, sample_every=4, log_every=2,
                    samples=4, freeze_d=1, freeze_g=1, freeze_mapping=True)
    return FinetuneParams(**(settings | overrides))


@pytest.fixture
def project(tmp_path) -> Path:
    make_base(tmp_path)
    make_dataset(tmp_path / "data/train")
    return tmp_path


def state(module_state: dict) -> dict:
    return {k: v.clone() for k, v in module_state.items()}


def latest_checkpoint(root: Path) -> Path:
    (path,) = (root / paths.FINETUNE_CHECKPOINTS).glob("*/latest.pt")
    return path


def test_finetune_trains_unfrozen_layers_and_leaves_frozen_ones_bit_identical(project, caplog):
    base = load_checkpoint(project / paths.BASE_MODEL)
    with caplog.at_level("INFO"):
        report = finetune_stage.run(finetune_params(), EvaluateParams(), FacesParams(), project)

    assert report["steps"] == 6 and report["frozen_d_blocks"] == ["convs.0", "convs.1"]
    assert report["frozen_g_blocks"] == ["conv1", "input", "style.1", "style.2", "to_rgb1"]
    assert sum("resized" in r.getMessage() and "16x16" in r.getMessage() for r in caplog.records) == 1
    metrics = json.loads((project / "dvclive/finetune/metrics.json").read_text())["train"]
    assert all(np.isfinite(metrics[k]) for k in ("loss_d", "loss_g", "r1", "pl"))
    for png in ("finetune_samples.png", "finetune_vs_base.png", "finetune.json"):
        assert (project / "reports" / png).stat().st_size > 0

    tuned = load_checkpoint(project / paths.FINETUNED_MODEL)
    frozen_d = frozen_discriminator_names(base.d, TINY, 1)
    frozen_g = frozen_generator_names(base.g, TINY, 1, mapping=True, noise=True)  # finetune.freeze_noise: true
    for name_set, before, after in [(frozen_d, base.d, tuned.d), (frozen_g, base.g, tuned.g),
                                    (frozen_g, base.g_ema, tuned.g_ema)]:
        after_params = dict(after.named_parameters())
        for name, param in before.named_parameters():
            if name in name_set:
                assert torch.equal(param, after_params[name]), f"frozen {name} changed"
            else:
                assert not torch.equal(param, after_params[name]), f"trainable {name} did not change"

    # frozen parameters are not in the optimisers at all: no Adam state for them
    ckpt = torch.load(latest_checkpoint(project), weights_only=True)
    for optim, module, frozen in (("g_optim", base.g, frozen_g), ("d_optim", base.d, frozen_d)):
        trainable = sum(1 for n, _ in module.named_parameters() if n not in frozen)
        assert len(ckpt[optim]["state"]) == trainable == len(ckpt[optim]["param_groups"][0]["params"])

    # the delivered model is what `styleforge generate` loads
    image, _ = load_generator(project / paths.FINETUNED_MODEL)([torch.randn(2, TINY.style_dim)])
    assert image.shape == (2, 3, 16, 16)


def test_kill_and_resume_gives_the_same_weights_as_an_uninterrupted_run(tmp_path, monkeypatch):
    full, cut = tmp_path / "full", tmp_path / "cut"
    for root in (full, cut):
        make_base(root)
        make_dataset(root / "data/train")
    # checkpoint at 3: mid-way through an ADA interval and between lazy-regularisation steps
    params = finetune_params(steps=6, checkpoint_every=3)
    finetune_stage.run(params, EvaluateParams(), FacesParams(), full)

    real_step = Trainer.train_step

    def killed_after_six(self, reals):
        if self.step == 5:  # two steps past the checkpoint at 3: their work is lost with the process
            raise KeyboardInterrupt("killed")
        return real_step(self, reals)

    monkeypatch.setattr(Trainer, "train_step", killed_after_six)
    with pytest.raises(KeyboardInterrupt):
        finetune_stage.run(params, EvaluateParams(), FacesParams(), cut)
    assert torch.load(latest_checkpoint(cut), weights_only=True)["step"] == 3
    monkeypatch.undo()
    report = finetune_stage.run(params, EvaluateParams(), FacesParams(), cut)
    assert report["resumed_from_step"] == 3 and report["steps"] == 6

    a = torch.load(full / paths.FINETUNED_MODEL, weights_only=True)
    b = torch.load(cut / paths.FINETUNED_MODEL, weights_only=True)
    for net in ("g", "d", "g_ema"):
        for name, tensor in a[net].items():
            assert torch.equal(tensor, b[net][name]), f"{net}.{name} differs after resume"
    assert a["augment"] == b["augment"]
    a_opt = torch.load(latest_checkpoint(full), weights_only=True)
    b_opt = torch.load(latest_checkpoint(cut), weights_only=True)
    assert a_opt["augment"] == b_opt["augment"]  # ADA p, its statistics and the path-length mean
    for optim in ("g_optim", "d_optim"):
        for index, slots in a_opt[optim]["state"].items():
            for slot, value in slots.items():
                assert torch.equal(value, b_opt[optim]["state"][index][slot]), f"{optim}[{index}].{slot}"


def test_non_finite_loss_stops_with_a_clear_error_and_keeps_the_last_good_checkpoint(project, monkeypatch):
    calls = {"n": 0}
    real_loss = losses.generator_loss

    def nan_from_the_fourth_step(logits):
        calls["n"] += 1
        return real_loss(logits) * (float("nan") if calls["n"] >= 4 else 1.0)

    monkeypatch.setattr(losses, "generator_loss", nan_from_the_fourth_step)
    with pytest.raises(NonFiniteLossError, match=r"step 3: non-finite loss_g=nan.*Last good checkpoint: .*\(step 2\)"):
        finetune_stage.run(finetune_params(steps=6, checkpoint_every=2), EvaluateParams(), FacesParams(), project)
    kept = load_checkpoint(latest_checkpoint(project))
    assert kept.step == 2 and all(torch.isfinite(p).all() for p in kept.g.parameters())
    assert not (project / paths.FINETUNED_MODEL).exists()


def test_missing_or_corrupt_base_checkpoint_is_a_clear_error(tmp_path):
    make_dataset(tmp_path / "data/train")
    with pytest.raises(CheckpointError, match=r"base model: .*no such checkpoint.*dvc repro base"):
        finetune_stage.run(finetune_params(), EvaluateParams(), FacesParams(), tmp_path)
    (tmp_path / paths.BASE_MODEL).parent.mkdir(parents=True)
    (tmp_path / paths.BASE_MODEL).write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"base model: .*cannot be read"):
        finetune_stage.run(finetune_params(), EvaluateParams(), FacesParams(), tmp_path)


def test_freeze_beyond_the_network_is_refused(project):
    with pytest.raises(ValueError, match=r"freeze_d must be 0..2 for a 16x16"):
        finetune_stage.run(finetune_params(freeze_d=3), EvaluateParams(), FacesParams(), project)


def rosinality_file(path: Path) -> dict:
    """A checkpoint in rosinality's layout (g, d, g_ema without w_avg, latent_avg beside)."""
    torch.manual_seed(1)
    g, d, g_ema = build_networks(TINY)
    strip = lambda gen: {k: v for k, v in gen.state_dict().items() if k != "w_avg"}  # noqa: E731
    raw = {"g": strip(g), "d": d.state_dict(), "g_ema": strip(g_ema), "latent_avg": torch.randn(TINY.style_dim)}
    torch.save(raw, path)
    return raw


def test_base_from_a_rosinality_file_and_from_a_url(tmp_path):
    raw = rosinality_file(tmp_path / "550000.pt")
    report = base_stage.run(BaseParams(checkpoint="550000.pt"), FacesParams(), tmp_path)
    converted = load_checkpoint(tmp_path / paths.BASE_MODEL)
    assert report["step"] == 550000 and converted.config == TINY
    for name, tensor in raw["g_ema"].items():
        assert torch.equal(converted.g_ema.state_dict()[name], tensor)
    assert torch.equal(converted.g_ema.w_avg, raw["latent_avg"])

    sha = hashlib.sha256((tmp_path / "550000.pt").read_bytes()).hexdigest()
    handler = partial(SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/550000.pt"
        params = BaseParams(checkpoint=url, sha256=sha)
        assert base_stage.run(params, FacesParams(), tmp_path)["sha256"] == sha
        (tmp_path / "550000.pt").unlink()  # a second run uses the cached download
        assert base_stage.run(params, FacesParams(), tmp_path)["sha256"] == sha
        with pytest.raises(CheckpointError, match="base.checkpoint: .*sha256 is"):
            base_stage.run(BaseParams(checkpoint=url, sha256="0" * 64), FacesParams(), tmp_path)
    finally:
        server.shutdown()


def test_base_from_scratch_on_a_folder_of_mixed_photos_resumes_when_kimg_grows(tmp_path):
    faces = tmp_path / "data/faces"
    faces.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, (mode, size) in enumerate([("RGB", (40, 40)), ("RGBA", (40, 30)), ("L", (30, 40)), ("P", (33, 33))]):
        pixels = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
        Image.fromarray(pixels).convert(mode).save(faces / f"{i}.png")
    model = dict(size=16, style_dim=16, n_mlp=1, channel_multiplier=1, channel_max=16)
    common = dict(batch=BATCH, workers=0, checkpoint_every=2, sample_every=4, log_every=2, samples=4, model=model)
    first = base_stage.run(BaseParams(kimg=2 * BATCH / 1000, **common), FacesParams(), tmp_path)
    second = base_stage.run(BaseParams(kimg=4 * BATCH / 1000, **common), FacesParams(), tmp_path)
    assert first["steps"] == 2 and second["resumed_from_step"] == 2 and second["steps"] == 4
    # kimg lowered below where the run is: it ends where it is, trains nothing, still delivers
    third = base_stage.run(BaseParams(kimg=3 * BATCH / 1000, **common), FacesParams(), tmp_path)
    assert third["resumed_from_step"] == 4 and third["steps"] == 4
    assert load_checkpoint(tmp_path / paths.BASE_MODEL).config == ModelConfig(**model)
    assert (tmp_path / paths.BASE_SAMPLES).exists()
