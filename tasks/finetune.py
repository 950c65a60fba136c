"""finetune: data/base/model.pt + data/train -> data/finetune/model.pt.

StyleGAN2 with ADA, FreezeD and FreezeG (model/freeze.py says exactly which layers those are).
Resumable: checkpoints go to data/finetune_ckpt/<run key>/latest.pt, a DVC output kept across
reruns (persist, no cache). The run key hashes the base model, the training set and every
setting that changes the weights (not kimg or logging), so raising kimg continues the run while
any other change starts a new one. Under torchrun every rank runs this; rank 0 writes.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
from pathlib import Path

from styleforge.model.checkpoint import (
    NO_D_NOTE,
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from styleforge.model.freeze import frozen_discriminator_names, frozen_generator_names
from styleforge.model.train import Networks, Outputs, Trainer, list_images

from styleforge.core.config import FinetuneParams
from styleforge.core.fetch import file_sha256
from styleforge.core.reports import timed, write_report

BASE_MODEL = Path("data/base/model.pt")
MODEL = Path("data/finetune/model.pt")
CHECKPOINTS = Path("data/finetune_ckpt")
LIVE_DIR = Path("dvclive/finetune")
SAMPLES = Path("reports/finetune_samples.png")
COMPARISON = Path("reports/finetune_vs_base.png")
# Settings that do not change what the weights become: a change to these resumes the run.
NOT_IN_RUN_KEY = {"kimg", "checkpoint_every", "sample_every", "log_every", "samples", "device", "workers"}


def run_key(params, base_sha256: str, dataset_dir: Path) -> str:
    """Short hash naming a run: base model, training-set listing, weight-affecting settings."""
    paths, _ = list_images(dataset_dir)
    listing = [[p.name, p.stat().st_size] for p in paths]
    settings = params.model_dump(exclude=NOT_IN_RUN_KEY)
    blob = json.dumps([base_sha256, listing, settings], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run_checkpoint_dir(checkpoints: Path, key: str) -> Path:
    """This run's checkpoint folder; other runs' folders are removed (one resumable run kept)."""
    if checkpoints.is_dir():
        for stale in checkpoints.iterdir():
            if stale.is_dir() and stale.name != key:
                shutil.rmtree(stale, ignore_errors=True)  # every torchrun rank gets here
    return checkpoints / key


def load_base(path: Path):
    try:
        return load_checkpoint(path)
    except CheckpointError as exc:
        raise CheckpointError(f"base model: {exc} (the base stage writes it: `dvc repro base`)") from None


def run(params: FinetuneParams, root: Path = Path(".")) -> dict:
    report: dict = {}
    with timed(report):
        base_path = root / BASE_MODEL
        base = load_base(base_path)
        config = base.config
        if NO_D_NOTE in base.notes and params.freeze_d:
            raise CheckpointError(f"{base_path} has no discriminator, so FreezeD would freeze random layers: "
                                  "set finetune.freeze_d: 0 (D then trains from scratch)")
        report["notes"] = base.notes
        frozen_d = frozen_discriminator_names(base.d, config, params.freeze_d)
        frozen_g = frozen_generator_names(base.g, config, params.freeze_g, params.freeze_mapping)
        dataset_dir = root / params.dataset
        key = run_key(params, file_sha256(base_path), dataset_dir)
        trainer = Trainer(
            Networks(config, base.g, base.d, base.g_ema), params, dataset_dir,
            Outputs(run_checkpoint_dir(root / CHECKPOINTS, key), root / LIVE_DIR, root / SAMPLES, root / COMPARISON),
            frozen_g=frozen_g, frozen_d=frozen_d, reference_g=copy.deepcopy(base.g_ema),
        )
        report.update(trainer.run())
        report.update(run_key=key, resolution=config.size, freeze_d=params.freeze_d, freeze_g=params.freeze_g,
                      freeze_mapping=params.freeze_mapping, frozen_d_blocks=_blocks(frozen_d),
                      frozen_g_blocks=_blocks(frozen_g))
        if trainer.ranks.rank == 0:
            # the delivered model: networks and step, no optimiser state (the checkpoint has it)
            save_checkpoint(root / MODEL, config, trainer.g, trainer.d, trainer.g_ema,
                            step=trainer.step, augment=trainer.ada.state())
    if trainer.ranks.rank == 0:
        write_report("finetune", report, root)
    return report


def _blocks(names: set[str]) -> list[str]:
    """Parameter names folded to their module prefix (convs.3, style, to_rgbs.0, ...) for reports."""
    return sorted({".".join(n.split(".")[:2]) if n.split(".")[1].isdigit() else n.split(".")[0] for n in names})
