"""base: the model fine-tuning starts from -> data/base/model.pt (our checkpoint format).

With `base.checkpoint` (a path, or an http(s) URL downloaded once into `base.cache_dir`, checked
against `base.sha256` when given): a rosinality `.pt`, an NVIDIA `.pkl` (converted) or one of
ours, rewritten in our format. Without one -- the embedded default, no download -- a small model
(`base.model`) is trained from scratch on the real photos in `base.dataset` for `base.kimg`,
resumable from data/base_ckpt/<run key>/ like the finetune stage.
"""

from __future__ import annotations

from pathlib import Path

import torch
from styleforge.model.checkpoint import (
    NO_D_NOTE,
    CheckpointError,
    build_networks,
    load_checkpoint,
    save_checkpoint,
)
from styleforge.model.networks import ModelConfig
from styleforge.model.train import Networks, Outputs, Trainer
from styleforge.tasks.finetune import run_checkpoint_dir, run_key

from styleforge.core.config import BaseParams
from styleforge.core.fetch import FetchError, fetch, file_sha256
from styleforge.core.reports import timed, write_report

MODEL = Path("data/base/model.pt")
CHECKPOINTS = Path("data/base_ckpt")
LIVE_DIR = Path("dvclive/base")
SAMPLES = Path("reports/base_samples.png")


def load_any(path: Path):
    """Our checkpoint or rosinality's `.pt` directly; NVIDIA's `.pkl` through model.convert."""
    if path.suffix == ".pkl":
        from styleforge.model.convert import load_nvidia_pkl

        return load_nvidia_pkl(path)
    return load_checkpoint(path)


def from_checkpoint(params: BaseParams, root: Path) -> dict:
    try:
        path = fetch(params.checkpoint, root / params.cache_dir, params.sha256, root)
    except FetchError as exc:
        raise CheckpointError(f"base.checkpoint: {exc}") from None
    sha256 = file_sha256(path)
    ckpt = load_any(path)
    d = None if NO_D_NOTE in ckpt.notes else ckpt.d  # a missing D stays visible to the finetune stage
    save_checkpoint(root / MODEL, ckpt.config, ckpt.g, d, ckpt.g_ema, step=ckpt.step, augment=ckpt.augment)
    return {"source": params.checkpoint, "file": str(path), "sha256": sha256, "step": ckpt.step,
            "config": ckpt.config.to_dict(), "notes": ckpt.notes}


def from_scratch(params: BaseParams, root: Path) -> tuple[dict, bool]:
    """Train base.model on base.dataset; returns (report, whether this process writes outputs)."""
    config = ModelConfig(**params.model.model_dump())
    torch.manual_seed(params.seed)  # the initial weights are part of the run
    g, d, g_ema = build_networks(config)
    dataset_dir = root / params.dataset
    key = run_key(params, "from-scratch", dataset_dir)
    trainer = Trainer(Networks(config, g, d, g_ema), params, dataset_dir,
                      Outputs(run_checkpoint_dir(root / CHECKPOINTS, key), root / LIVE_DIR, root / SAMPLES))
    report = {"source": f"trained from scratch on {params.dataset}", "config": config.to_dict(),
              "run_key": key, **trainer.run()}
    writer = trainer.ranks.rank == 0
    if writer:
        save_checkpoint(root / MODEL, config, trainer.g, trainer.d, trainer.g_ema,
                        step=trainer.step, augment=trainer.ada.state())
    return report, writer


def run(params: BaseParams, root: Path = Path(".")) -> dict:
    report: dict = {}
    writer = True
    with timed(report):
        if params.checkpoint:
            report.update(from_checkpoint(params, root))
        else:
            summary, writer = from_scratch(params, root)
            report.update(summary)
    if writer:
        write_report("base", report, root)
    return report
