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

from styleforge.core.errors import UserError
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


# The curves dvc.yaml's top-level plots draw against kimg: one TSV per chart's group of figures,
# each row with the step and kimg it was logged at. DVCLive's own TSVs (one per metric, x = step)
# cannot give that x: DVC joins an x column from another file row by row only, and the lazy
# regularisers (r1 every r1_every steps, pl every pl_every) leave rows out. A group's row is
# written when all its figures were measured in the log window.
KIMG_CURVES_DIR = Path("plots/kimg")
KIMG_CURVES = {
    "losses": ("loss_g", "loss_d"),
    "d_outputs": ("d_real", "d_fake"),
    "r1": ("r1",),
    "pl": ("pl", "pl_mean"),
    "ada": ("ada_p", "ada_rt"),
    "speed": ("sec_per_kimg", "images_per_s"),
}


class KimgCurves:
    """KIMG_CURVES as TSVs in folder, appended row by row."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._resumed = False

    def open(self, resume: bool) -> None:
        """Header-only files for a new run (so a run that trains nothing, a loaded base model, still
        leaves the files dvc.yaml plots); a resumed run appends to what it wrote before."""
        self._resumed = resume and all((self.folder / f"{group}.tsv").exists() for group in KIMG_CURVES)
        if self._resumed:
            return
        shutil.rmtree(self.folder, ignore_errors=True)  # DVCLive clears only its own subfolders
        self.folder.mkdir(parents=True)
        for group, fields in KIMG_CURVES.items():
            (self.folder / f"{group}.tsv").write_text("\t".join(("step", "kimg", *fields)) + "\n")

    def log(self, step: int, kimg: float, stats: dict[str, float]) -> None:
        if self._resumed:
            self._drop_from(step)
            self._resumed = False
        for group, fields in KIMG_CURVES.items():
            if all(name in stats for name in fields):
                with open(self.folder / f"{group}.tsv", "a") as tsv:
                    tsv.write("\t".join(str(v) for v in (step, kimg, *(float(stats[n]) for n in fields))) + "\n")

    def _drop_from(self, step: int) -> None:
        """A resumed run restarts at its last checkpoint: the rows the killed process logged after
        it are logged again, so the old ones go (else the curves would run back in kimg)."""
        for group in KIMG_CURVES:
            path = self.folder / f"{group}.tsv"
            header, *rows = path.read_text().splitlines(keepends=True)
            path.write_text(header + "".join(row for row in rows if int(row.split("\t", 1)[0]) < step))


class LiveLog:
    """DVCLive for a run: one row of figures per log window, the sample grid as an image, and the
    same rows by kimg for the grouped charts (KimgCurves). Only rank 0 writes (under torchrun the
    other ranks get a LiveLog that does nothing).

    dvcyaml=None: dvc.yaml declares these metrics and plots; DVCLive must not rewrite it.
    """

    def __init__(self, folder: Path, resume: bool):
        self.live = None
        self.curves = KimgCurves(folder / KIMG_CURVES_DIR)
        if os.environ.get("RANK", "0") == "0":
            os.environ.setdefault("DVCLIVE_OPEN", "false")
            from dvclive import Live
            from scmrepo.exceptions import SCMError

            try:
                self.live = Live(dir=str(folder), resume=resume, save_dvc_exp=False, dvcyaml=None)
            except SCMError as exc:  # DVCLive reads HEAD, which a repository without a commit lacks
                raise UserError(f"{folder}: DVCLive needs the project's git repository to have a commit "
                                f"({exc}): `git add -A && git commit` first") from None
            self.curves.open(resume)

    def log(self, step: int, kimg: float, stats: dict[str, float]) -> None:
        self.live.step = step
        for name, value in stats.items():
            group = "speed" if name in ("images_per_s", "sec_per_kimg") else "train"
            self.live.log_metric(f"{group}/{name}", value)
        self.live.next_step()
        self.curves.log(step, kimg, stats)

    def sample_grid(self, path: Path) -> None:
        self.live.log_image("samples.png", path)

    def summary(self, values: dict) -> None:
        """For a run that trains nothing (a loaded model): metrics.json with its figures only, and
        the (empty) curves folder dvc.yaml declares, so DVC finds every output it expects."""
        if self.live:
            self.live.summary = values
            self.live.make_summary()
            (Path(self.live.plots_dir) / "metrics").mkdir(parents=True, exist_ok=True)

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
