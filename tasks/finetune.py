"""finetune: data/base/model.pt + data/train -> data/finetune/model.pt.

StyleGAN2 with ADA, FreezeD and FreezeG (model/freeze.py says exactly which layers those are).
Resumable: checkpoints go to data/finetune_ckpt/<run key>/latest.pt, a DVC output kept across
reruns (persist, no cache); tasks/training.py says what the run key covers and how long earlier
runs are kept. Every snapshot_kimg a numbered snapshot (checkpoint + grid) is kept, with its FID
where Inception weights are set; `pick` chooses which becomes data/finetune/model.pt. Under
torchrun every rank runs this; rank 0 writes.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

from styleforge.core.config import EvaluateParams, FacesParams, FinetuneParams
from styleforge.core.fetch import file_sha256
from styleforge.core.io import atomic_write
from styleforge.core.reports import timed, write_report
from styleforge.model.checkpoint import NO_D_NOTE, CheckpointError, load_checkpoint
from styleforge.model.freeze import frozen_discriminator_names, frozen_generator_names
from styleforge.model.train import Networks, Outputs, Snapshot, Trainer, TrainingSettings
from styleforge.tasks.evaluate import fid_meter
from styleforge.tasks.paths import (
    BASE_MODEL,
    COMPARISON,
    FINETUNE_CHECKPOINTS,
    FINETUNE_LIVE,
    FINETUNE_SAMPLES,
    FINETUNED_MODEL,
)
from styleforge.tasks.quality import moved_toward_look, target_signature
from styleforge.tasks.training import LiveLog, RunFolders, run_key


def load_base(path: Path):
    try:
        return load_checkpoint(path)
    except CheckpointError as exc:
        raise CheckpointError(f"base model: {exc} (the base stage writes it: `dvc repro base`)") from None


def run(params: FinetuneParams, evaluate: EvaluateParams, faces: FacesParams, root: Path = Path(".")) -> dict:
    """evaluate: the Inception settings, to measure each snapshot's FID (pick: best); faces: the
    faces stage's settings, to check the fine-tuned samples are still faces."""
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
        frozen_g = frozen_generator_names(base.g, config, params.freeze_g, params.freeze_mapping, params.freeze_noise)
        dataset_dir = root / params.dataset
        folders = RunFolders(root / FINETUNE_CHECKPOINTS, run_key(params, file_sha256(base_path), dataset_dir), params.keep_runs)
        meter, unmeasured = fid_meter(evaluate, dataset_dir, root) if params.pick == "best" else (None, "pick: last")
        reference = copy.deepcopy(base.g_ema)  # the base as loaded: the trainer moves base.g_ema itself
        live = LiveLog(root / FINETUNE_LIVE, resume=(folders.current / "latest.pt").exists())
        trainer = Trainer(
            Networks(config, base.g, base.d, base.g_ema), TrainingSettings.of(params), dataset_dir,
            Outputs(folders.current, root / FINETUNE_SAMPLES, root / COMPARISON),
            frozen_g=frozen_g, frozen_d=frozen_d, reference_g=reference,
            hooks=live.hooks(saved=folders.saved, snapshot_metrics=meter, best_metric="fid"),
        )
        report.update(trainer.run())
        live.end()
        report.update(run_key=folders.key, resolution=config.size, freeze_d=params.freeze_d,
                      freeze_g=params.freeze_g, freeze_mapping=params.freeze_mapping, freeze_noise=params.freeze_noise,
                      frozen_d_blocks=_blocks(frozen_d), frozen_g_blocks=_blocks({n for n in frozen_g if not n.endswith(".noise.weight")}))
        if trainer.ranks.rank == 0:
            chosen, why = pick(trainer.snapshots(), params.pick, unmeasured)
            # the delivered model: that snapshot's networks and step (no optimiser state)
            atomic_write(root / FINETUNED_MODEL, lambda tmp: shutil.copyfile(chosen.checkpoint, tmp))
            report["picked"] = {**chosen.to_json(), "why": why}
            report["look"] = moved_toward_look(reference, load_checkpoint(root / FINETUNED_MODEL).g_ema,
                                               target_signature(dataset_dir, config.size), faces)
    if trainer.ranks.rank == 0:
        write_report("finetune", report, root)
    return report


def pick(snapshots: list[Snapshot], rule: str, unmeasured: str | None) -> tuple[Snapshot, str]:
    """The snapshot to deliver under rule (last | best: lowest FID), and why it was chosen."""
    last = snapshots[-1]
    if rule == "last":
        return last, f"pick: last (step {last.step}, {last.kimg} kimg)"
    measured = [s for s in snapshots if "fid" in s.metrics]
    if not measured:
        return last, f"pick: best, but no snapshot has an FID ({unmeasured}): the last one"
    best = min(measured, key=lambda s: s.metrics["fid"])
    return best, f"pick: best: lowest FID {best.metrics['fid']:.4g} of {len(measured)} snapshots (step {best.step})"


def _blocks(names: set[str]) -> list[str]:
    """Parameter names folded to their module prefix (convs.3, style, to_rgbs.0, ...) for reports."""
    return sorted({".".join(n.split(".")[:2]) if n.split(".")[1].isdigit() else n.split(".")[0] for n in names})
