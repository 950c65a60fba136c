"""The stage registry: name -> params section and the tasks/ function that runs it.

Every stage function has the signature run(params_section, root: Path) -> dict and writes
reports/<name>.json itself. dvc.yaml calls `styleforge stage NAME`, which lands here.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from styleforge.config import load_params

# name -> module in tasks/ (the params section has the same name)
STAGES = {
    "scrape": "tasks.scrape",
    "faces": "tasks.faces",
    "augment": "tasks.augment",
}
DATASET_STAGES = ["scrape", "faces", "augment"]


def run_stage(name: str, root: Path = Path("."), params_file: str = "params.yaml") -> dict:
    if name not in STAGES:
        raise KeyError(f"unknown stage {name!r}; stages are: {', '.join(STAGES)}")
    params = load_params(root / params_file)
    module = importlib.import_module(STAGES[name])
    return module.run(getattr(params, name), root=root)
