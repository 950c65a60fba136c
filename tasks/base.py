"""base: the model fine-tuning starts from -> data/base/model.pt (our checkpoint format).

With `base.checkpoint` (a path, or an http(s) URL downloaded once into `base.cache_dir`, checked
against `base.sha256` when given): a rosinality `.pt`, an NVIDIA `.pkl` (converted) or one of
ours, rewritten in our format, with its sample grid. Without one, a small model (`base.model`)
is trained from scratch on the real photos in `base.dataset` for `base.kimg`, resumable from
data/base_ckpt/<run key>/ like the finetune stage.

Every output dvc.yaml declares exists after either: a loaded model gets an empty checkpoint
folder and a DVCLive summary of what was loaded.
"""

from __future__ import annotations

from pathlib import Path

import torch

from styleforge.core.config import BaseParams, FacesParams
from styleforge.core.fetch import FetchError, fetch, file_sha256
from styleforge.core.reports import timed, write_report
from styleforge.model.checkpoint import NO_D_NOTE, CheckpointError, build_networks, load_checkpoint, save_checkpoint
from styleforge.model.convert import load_nvidia_pkl
from styleforge.model.networks import ModelConfig
from styleforge.model.train import Networks, Outputs, Trainer, TrainingSettings
from styleforge.tasks.paths import BASE_CHECKPOINTS, BASE_LIVE, BASE_MODEL, BASE_SAMPLES
from styleforge.tasks.quality import sample_faces
from styleforge.tasks.training import LiveLog, RunFolders, run_key, write_sample_grid


def load_any(path: Path):
    """Our checkpoint or rosinality's `.pt` directly; NVIDIA's `.pkl` through model.convert."""
    try:
        return load_nvidia_pkl(path) if path.suffix == ".pkl" else load_checkpoint(path)
    except CheckpointError as exc:
        message = str(exc)
        raise CheckpointError(message if str(path) in message else f"{path}: {message}") from None


def from_checkpoint(params: BaseParams, root: Path) -> dict:
    try:
        path = fetch(params.checkpoint, root / params.cache_dir, params.sha256, root)
    except FetchError as exc:
        raise CheckpointError(f"base.checkpoint: {exc}") from None
    ckpt = load_any(path)
    d = None if NO_D_NOTE in ckpt.notes else ckpt.d  # a missing D stays visible to the finetune stage
    save_checkpoint(root / BASE_MODEL, ckpt.config, ckpt.g, d, ckpt.g_ema, step=ckpt.step, augment=ckpt.augment)
    (root / BASE_CHECKPOINTS).mkdir(parents=True, exist_ok=True)  # nothing to resume: the folder stays empty
    write_sample_grid(ckpt.g_ema, params.samples, params.seed, root / BASE_SAMPLES)
    summary = {"source": params.checkpoint, "file": str(path), "sha256": file_sha256(path), "step": ckpt.step,
               "config": ckpt.config.to_dict(), "notes": ckpt.notes}
    live = LiveLog(root / BASE_LIVE, resume=False)
    live.summary({"loaded": {"step": ckpt.step, "resolution": ckpt.config.size}})
    live.end()
    return summary


def from_scratch(params: BaseParams, root: Path) -> tuple[dict, bool]:
    """Train base.model on base.dataset; returns (report, whether this process writes outputs)."""
    config = ModelConfig(**params.model.model_dump())
    torch.manual_seed(params.seed)  # the initial weights are part of the run
    g, d, g_ema = build_networks(config)
    dataset_dir = root / params.dataset
    folders = RunFolders(root / BASE_CHECKPOINTS, run_key(params, "from-scratch", dataset_dir), params.keep_runs)
    live = LiveLog(root / BASE_LIVE, resume=(folders.current / "latest.pt").exists())
    trainer = Trainer(Networks(config, g, d, g_ema), TrainingSettings.of(params), dataset_dir,
                      Outputs(folders.current, root / BASE_SAMPLES), hooks=live.hooks(saved=folders.saved))
    report = {"source": f"trained from scratch on {params.dataset}", "config": config.to_dict(),
              "run_key": folders.key, **trainer.run()}
    live.end()
    writer = trainer.ranks.rank == 0
    if writer:
        save_checkpoint(root / BASE_MODEL, config, trainer.g, trainer.d, trainer.g_ema,
                        step=trainer.step, augment=trainer.ada.state())
    return report, writer


def run(params: BaseParams, faces: FacesParams, root: Path = Path(".")) -> dict:
    """faces: the faces stage's settings, to measure whether the model's samples are faces."""
    report: dict = {}
    writer = True
    with timed(report):
        if params.checkpoint:
            report.update(from_checkpoint(params, root))
        else:
            summary, writer = from_scratch(params, root)
            report.update(summary)
        if writer:
            report["quality"] = sample_faces(load_checkpoint(root / BASE_MODEL).g_ema, faces)
    if writer:
        write_report("base", report, root)
    return report
