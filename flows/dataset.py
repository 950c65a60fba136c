"""The dataset flow: `dvc repro` of scrape -> faces -> augment, one Prefect task per stage.

DVC decides what is stale; Prefect adds retries, logs and a table artifact per stage report.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_table_artifact
from styleforge.tasks.stages import DATASET_STAGES

from styleforge.core.reports import read_report, report_path


def dvc_repro(stage: str, root: Path, force: bool = False) -> tuple[bool, str]:
    """Run `dvc repro` for one stage; return (whether it ran, DVC's output).

    DVC runs the stage through a shell, so killing dvc alone would leave the stage running: it
    starts in its own session, and a cancelled run (Prefect raises in this thread on SIGTERM),
    Ctrl-C or any error here ends that whole process group.
    """
    cmd = ["dvc", "repro", "--single-item", stage] + (["--force"] if force else [])
    proc = subprocess.Popen(  # stderr (progress bars) passes through
        cmd, cwd=root, stdout=subprocess.PIPE, text=True, start_new_session=True
    )
    lines = []
    try:
        for line in proc.stdout:
            print(line, end="", flush=True)
            lines.append(line)
        proc.wait()
    except BaseException:
        end_process_group(proc)
        raise
    output = "".join(lines)
    if proc.returncode != 0:
        raise RuntimeError(f"dvc repro {stage} failed (exit {proc.returncode}):\n{output[-2000:]}")
    return f"Running stage '{stage}'" in output, output


def end_process_group(proc: subprocess.Popen, grace_s: float = 10.0) -> None:
    """SIGTERM the group (DVC releases its lock on it), SIGKILL whatever is left after grace_s."""
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, None)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait_s)


def publish_report(stage: str, root: Path) -> None:
    if not report_path(stage, root).exists():
        return
    flat = [{"key": key, "value": str(value)} for key, value in read_report(stage, root).items()]
    create_table_artifact(key=f"{stage}-report", table=flat, description=f"reports/{stage}.json")


@task(retries=2, retry_delay_seconds=10, task_run_name="repro-{stage}")
def repro_stage(stage: str, root: str, force: bool = False) -> bool:
    ran, _ = dvc_repro(stage, Path(root), force)
    logger = get_run_logger()
    if ran:
        logger.info("stage %s ran", stage)
        publish_report(stage, Path(root))
    else:
        logger.info("stage %s is up to date: skipped", stage)
    return ran


@flow(name="dataset", log_prints=False)
def dataset_flow(root: str = ".", force: bool = False) -> dict[str, bool]:
    """Rebuild data/train from the sources in params.yaml; only stale stages run unless force."""
    ran = {stage: repro_stage(stage, str(Path(root).resolve()), force) for stage in DATASET_STAGES}
    logger = get_run_logger()
    if not any(ran.values()):
        logger.info("nothing changed: every dataset stage is up to date, no work done")
    else:
        logger.info("stages run: %s", ", ".join(s for s, r in ran.items() if r))
    return ran
