"""The stage registry: name -> the tasks/ module that runs it and the params sections it reads.

Every stage function has the signature run(*sections, root: Path) -> dict, its own section
first, and writes reports/<name>.json itself. dvc.yaml calls `styleforge stage NAME`, which
lands here; a stage's dvc.yaml `params:` lists the same sections.
"""

from __future__ import annotations

import importlib
import logging
import time
from pathlib import Path

from styleforge.core.config import load_params

STAGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "scrape": ("styleforge.tasks.scrape", ("scrape",)),
    "faces": ("styleforge.tasks.faces", ("faces",)),
    "augment": ("styleforge.tasks.augment", ("augment",)),
    "base": ("styleforge.tasks.base", ("base", "faces")),  # faces: are its samples faces
    # evaluate: the FID of snapshots; faces: are the fine-tuned samples still faces
    "finetune": ("styleforge.tasks.finetune", ("finetune", "evaluate", "faces")),
    "blend": ("styleforge.tasks.blend", ("blend",)),
    # photos go through the dataset's own face detection and alignment
    "portraits": ("styleforge.tasks.portraits", ("portraits", "faces")),
    "evaluate": ("styleforge.tasks.evaluate", ("evaluate",)),
    # blend: the side the coarse layers come from, for the morphs
    "walk": ("styleforge.tasks.walk", ("walk", "blend")),
}
log = logging.getLogger(__name__)
DATASET_STAGES = ["scrape", "faces", "augment"]


class UnknownStage(KeyError):
    def __str__(self) -> str:
        return f"unknown stage {self.args[0]!r}; stages are: {', '.join(STAGES)}"


def run_stage(name: str, root: Path = Path("."), params_file: str = "params.yaml") -> dict:
    if name not in STAGES:
        raise UnknownStage(name)
    module_name, sections = STAGES[name]
    params = load_params(root / params_file)
    module = importlib.import_module(module_name)
    log.info("stage %s: started in %s", name, Path(root).resolve())
    started = time.perf_counter()
    report = module.run(*(getattr(params, section) for section in sections), root=root)
    log.info("stage %s: done in %.1f s", name, time.perf_counter() - started)
    return report
