"""The finetune flow: `dvc repro finetune` under Prefect, with retries and a time limit.

DVC brings base (and any stale dataset stage) up to date first and skips finetune when nothing
changed. A retry resumes from data/finetune_ckpt (a persisted DVC output), so a crash or a
killed machine costs at most checkpoint_every steps; a failure a retry would only repeat (a
non-finite loss, a bad checkpoint or params) is not retried (flows/repro.py).
"""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow

from styleforge.flows.repro import repro_task


@flow(name="finetune", log_prints=False)
def finetune_flow(root: str = ".", force: bool = False, timeout_s: float | None = None) -> bool:
    """Fine-tune data/base/model.pt on data/train (resuming if a run was cut short)."""
    deadline = None if timeout_s is None else time.time() + timeout_s
    return repro_task("finetune", str(Path(root).resolve()), force, upstream=not force, deadline=deadline)
