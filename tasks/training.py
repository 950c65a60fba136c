"""What the base and finetune stages share around model/train.py's loop: the run's checkpoint
folder (a run key, and earlier runs kept until this one has saved), DVCLive, the sample grid of
a loaded model.

A run key hashes what makes the weights (the starting model, the training-set listing, every
setting that changes them), so raising kimg continues a run while any other change starts a new
one in a folder of its own. Earlier runs' folders stay (up to keep_runs of them, newest first)
until the new run has saved its first checkpoint: a changed param costs no hours of training,
and changing it back resumes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import torch

from styleforge.core.grid import save_sheet, tile_for
from styleforge.model.data import list_images
from styleforge.model.networks import Generator
from styleforge.model.train import LATEST, Hooks, render_z

# Settings that do not change what the weights become: a change to these resumes the run.
NOT_IN_RUN_KEY = {"kimg", "checkpoint_every", "sample_every", "log_every", "samples", "device", "workers",
                  "snapshot_kimg", "keep_snapshots", "keep_runs", "pick"}


def run_key(params, start: str, dataset_dir: Path) -> str:
    """Short hash naming a run: where it starts (a model's sha256, or how it is initialised), the
    training-set listing, and the weight-affecting settings of params."""
    paths, _ = list_images(dataset_dir)
    listing = [[p.name, p.stat().st_size] for p in paths]
    settings = params.model_dump(exclude=NOT_IN_RUN_KEY)
    blob = json.dumps([start, listing, settings], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class RunFolders:
    """data/<stage>_ckpt/<run key>/ for this run; other runs' folders pruned to keep_runs - 1 (the
    most recently saved) once this run has written its own first checkpoint, never before."""

    def __init__(self, root: Path, key: str, keep_runs: int):
        self.root, self.key, self.keep_runs = root, key, keep_runs
        self.current = root / key
        self._pruned = False

    def others(self) -> list[Path]:
        """Other runs' folders, most recently saved first."""
        if not self.root.is_dir():
            return []
        folders = [f for f in self.root.iterdir() if f.is_dir() and f.name != self.key]
        return sorted(folders, key=lambda f: _saved_at(f), reverse=True)

    def saved(self, _checkpoint: Path) -> None:
        """Hook: a checkpoint of this run exists now, so the oldest other runs may go."""
        if self._pruned or os.environ.get("RANK", "0") != "0":
            return
        for stale in self.others()[max(0, self.keep_runs - 1):]:
            shutil.rmtree(stale, ignore_errors=True)
        self._pruned = True


def _saved_at(folder: Path) -> float:
    latest = folder / LATEST
    return latest.stat().st_mtime if latest.exists() else folder.stat().st_mtime


class LiveLog:
    """DVCLive for a run: one row of figures per log window, the sample grid as an image. Only
    rank 0 writes (under torchrun the other ranks get a LiveLog that does nothing).

    dvcyaml=None: dvc.yaml declares these metrics and plots; DVCLive must not rewrite it.
    """

    def __init__(self, folder: Path, resume: bool):
        self.live = None
        if os.environ.get("RANK", "0") == "0":
            os.environ.setdefault("DVCLIVE_OPEN", "false")
            from dvclive import Live

            self.live = Live(dir=str(folder), resume=resume, save_dvc_exp=False, dvcyaml=None)

    def log(self, step: int, kimg: float, stats: dict[str, float]) -> None:
        self.live.step = step
        for name, value in stats.items():
            group = "speed" if name in ("images_per_s", "sec_per_kimg") else "train"
            self.live.log_metric(f"{group}/{name}", value)
        self.live.next_step()

    def sample_grid(self, path: Path) -> None:
        self.live.log_image("samples.png", path)

    def summary(self, values: dict) -> None:
        """For a run that trains nothing (a loaded model): metrics.json with its figures only."""
        self.live.summary = values
        self.live.make_summary()

    def end(self) -> None:
        if self.live:
            self.live.end()

    def hooks(self, **more) -> Hooks:
        return Hooks(log=self.log, sample_grid=self.sample_grid, **more)


@torch.no_grad()
def write_sample_grid(g: Generator, count: int, seed: int, path: Path) -> Path:
    """g on the same fixed z a training run of this seed uses for its grids (model.train)."""
    z = torch.randn(count, g.style_dim, generator=torch.Generator().manual_seed(seed)).to(g.w_avg.device)
    return save_sheet(path, render_z(g.eval(), z), tile=tile_for(g.size), cols=8)
