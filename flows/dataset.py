"""The dataset flow: `dvc repro` of scrape -> faces -> augment, one Prefect task per stage.

DVC decides what is stale; Prefect adds retries (never of what a retry would repeat), the stage's
log lines in each task run, and a table artifact per stage report (flows/repro.py).
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger

from styleforge.flows.repro import repro_task
from styleforge.tasks.stages import DATASET_STAGES


@flow(name="dataset", log_prints=False)
def dataset_flow(root: str = ".", force: bool = False) -> dict[str, bool]:
    """Rebuild data/train from the sources in params.yaml; only stale stages run unless force."""
    ran = {stage: repro_task(stage, str(Path(root).resolve()), force) for stage in DATASET_STAGES}
    logger = get_run_logger()
    if not any(ran.values()):
        logger.info("nothing changed: every dataset stage is up to date, no work done")
    else:
        logger.info("stages run: %s", ", ".join(s for s, r in ran.items() if r))
    return ran
