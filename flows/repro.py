"""The one way a flow runs a stage: `dvc repro` under the project's supervisor, its output passed
through to the terminal, each line into the Prefect task run's log, its failure classified.

- The command runs under styleforge.core.procs: a cancelled or timed-out run, Ctrl-C, or a SIGKILL
  of this process ends dvc, its shell, the stage and anything they started (torchrun ranks,
  Chromium), and DVC's lock with them.
- Lines keep the level and time the stage logged them with (styleforge.core.logs' format); DVC's
  own lines and progress bars come through as INFO. Progress bars redraw with carriage returns:
  only the state a line ends in is logged.
- A failure that a retry would only repeat -- the stage exited 2 (a UserError: bad params, a
  missing input, a 404 or mismatched checkpoint, a diverged run) -- is never retried; anything
  else (a crash, a killed machine) is, and resumes from the stage's own checkpoints.
"""

from __future__ import annotations

import contextvars
import logging
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_table_artifact

from styleforge.core import procs
from styleforge.core.reports import read_report, report_path

# `styleforge stage` exits 2 on a UserError; DVC reports it so. A traceback of these classes is
# deterministic too (a run through torchrun, whose launcher exits 1).
DETERMINISTIC = ("exited with 2", "NonFiniteLossError", "CheckpointError", "ParamsError", "EverySourceFailed")
LEVEL = re.compile(r"^\S+ \S+ (DEBUG|INFO|WARNING|ERROR|CRITICAL) ")
DVC_LEVEL = re.compile(r"^(ERROR|WARNING):")


class StageFailed(RuntimeError):
    """dvc repro of a stage failed; `retry` says whether trying again could help."""

    def __init__(self, message: str, retry: bool):
        super().__init__(message)
        self.retry = retry


class StageTimedOut(StageFailed):
    """The stage ran past its deadline; its whole process tree was ended."""

    def __init__(self, message: str):
        super().__init__(message, retry=False)


def _run_logger() -> logging.Logger | logging.LoggerAdapter:
    try:
        return get_run_logger()
    except Exception:  # noqa: BLE001 - outside a flow or task run (a test, a plain call): log locally
        return logging.getLogger("styleforge.flows")


def forward(line: str, logger) -> None:
    """One complete output line into the run's log at the level it was written with."""
    text = line.rsplit("\r", 1)[-1].rstrip()  # a progress bar's last state
    if not text.strip():
        return
    found = LEVEL.match(text) or DVC_LEVEL.match(text)
    logger.log(getattr(logging, found.group(1)) if found else logging.INFO, "%s", text)


def run_dvc(args: list[str], root: Path, timeout_s: float | None = None) -> str:
    """`dvc ARGS` in root under the supervisor; returns its whole output, raises StageFailed."""
    cmd = [sys.executable, "-m", "dvc", *args]
    proc = procs.start(cmd, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=0)
    logger, captured = _run_logger(), []

    def pump() -> None:  # chunks pass through at once (bars stay live); whole lines go to the log
        pending = ""
        for chunk in iter(lambda: proc.stdout.read(512), b""):
            text = chunk.decode(errors="replace")
            sys.stderr.write(text)
            sys.stderr.flush()
            captured.append(text)
            *lines, pending = (pending + text).split("\n")
            for line in lines:
                forward(line, logger)
        forward(pending, logger)

    # in this thread's context: the Prefect settings (the API the log lines go to) live in contextvars
    reader = threading.Thread(target=contextvars.copy_context().run, args=(pump,), daemon=True)
    reader.start()
    try:
        code = proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        procs.stop(proc)
        reader.join(5)
        raise StageTimedOut(f"dvc {' '.join(args)} ran past its deadline ({timeout_s:.0f} s): "
                            "every process of it was ended") from None
    except BaseException:  # cancelled (Prefect raises here), Ctrl-C: end the stage's whole tree
        procs.stop(proc)
        raise
    reader.join()
    output = "".join(captured)
    if code != 0:
        deterministic = any(sign in output for sign in DETERMINISTIC)
        raise StageFailed(f"dvc {' '.join(args)} failed (exit {code}):\n{output[-3000:]}", retry=not deterministic)
    return output


def repro(stage: str, root: Path, force: bool = False, upstream: bool = False, timeout_s: float | None = None) -> bool:
    """`dvc repro` of one stage (upstream: the stages it depends on too, where stale); True if it ran."""
    args = ["--wait-for-lock", "repro", stage] + ([] if upstream else ["--single-item"]) + (["--force"] if force else [])
    return f"Running stage '{stage}'" in run_dvc(args, root, timeout_s)


def publish_report(stage: str, root: Path) -> None:
    if not report_path(stage, root).exists():
        return
    flat = [{"key": key, "value": str(value)} for key, value in read_report(stage, root).items()]
    create_table_artifact(key=f"{stage}-report", table=flat, description=f"reports/{stage}.json")


def worth_retrying(task, task_run, state) -> bool:
    """Prefect's retry condition: retry crashes, never what a retry would only repeat."""
    try:
        state.result()
    except StageFailed as exc:
        return exc.retry
    except Exception:  # noqa: BLE001 - a crash of the flow's own machinery: worth another try
        return True
    return False


@task(retries=2, retry_delay_seconds=30, retry_condition_fn=worth_retrying, task_run_name="repro-{stage}")
def repro_task(stage: str, root: str, force: bool = False, upstream: bool = False,
               deadline: float | None = None) -> bool:
    """A stage as a Prefect task; deadline: a time.time() after which the stage is ended."""
    timeout_s = None if deadline is None else max(1.0, deadline - time.time())
    ran = repro(stage, Path(root), force, upstream, timeout_s)
    logger = get_run_logger()
    if ran:
        logger.info("stage %s ran", stage)
        publish_report(stage, Path(root))
    else:
        logger.info("stage %s is up to date: skipped", stage)
    return ran
