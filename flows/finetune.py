"""The finetune flow: `dvc repro finetune` under Prefect, with retries and a time limit.

DVC brings base (and any stale dataset stage) up to date first and skips finetune when nothing
changed. A retry resumes from data/finetune_ckpt (a persisted DVC output), so a crash or a
killed machine costs at most checkpoint_every steps. Failures that a retry would only repeat
(a non-finite loss: the run is deterministic; a bad checkpoint or params) are not retried.
The training runs in its own process group: a cancelled or timed-out run ends all of it.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

from prefect import flow, get_run_logger, task
from styleforge.flows.dataset import end_process_group, publish_report

# Signs in DVC's output of a failure that every retry would repeat: the error classes (in a
# traceback), and exit code 2, which `styleforge stage` uses for errors it reports cleanly.
NOT_RETRIED = ("NonFiniteLossError", "CheckpointError", "ParamsError", "exited with 2")


class FinetuneFailed(RuntimeError):
    def __init__(self, message: str, retry: bool):
        super().__init__(message)
        self.retry = retry


def run_in_own_group(cmd: list[str], cwd: Path, timeout_s: float | None) -> tuple[int, str]:
    """Run cmd in a new session, passing its output through; return (exit code, all output).

    On timeout, cancellation (Prefect raises in this thread), Ctrl-C or any error, the whole
    process group -- dvc, its shell, the stage and any torchrun ranks -- is ended.
    """
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    captured: list[str] = []

    def pump(source, sink) -> None:  # chunks, not lines, so progress bars stay live
        for chunk in iter(lambda: source.read(512), ""):
            sink.write(chunk)
            sink.flush()
            captured.append(chunk)

    pumps = [threading.Thread(target=pump, args=pipe, daemon=True)
             for pipe in ((proc.stdout, sys.stdout), (proc.stderr, sys.stderr))]
    for thread in pumps:
        thread.start()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        end_process_group(proc)
        raise TimeoutError(f"{' '.join(cmd)} ran past {timeout_s} s: its process group was ended") from None
    except BaseException:
        end_process_group(proc)
        raise
    for thread in pumps:
        thread.join()
    return proc.returncode, "".join(captured)


def dvc_repro_finetune(root: Path, force: bool = False, timeout_s: float | None = None) -> bool:
    """`dvc repro finetune`; True if the stage ran, False if DVC found it up to date."""
    cmd = ["dvc", "--wait-for-lock", "repro", "finetune"] + (["--force", "--single-item"] if force else [])
    code, output = run_in_own_group(cmd, root, timeout_s)
    if code != 0:
        deterministic = any(name in output for name in NOT_RETRIED)
        raise FinetuneFailed(f"dvc repro finetune failed (exit {code}):\n{output[-3000:]}", retry=not deterministic)
    return "Running stage 'finetune'" in output


def _worth_retrying(task, task_run, state) -> bool:
    try:
        state.result()
    except FinetuneFailed as exc:
        return exc.retry
    except Exception:  # noqa: BLE001 - timeouts, crashes: a retry resumes from the checkpoint
        return True
    return False


@task(retries=2, retry_delay_seconds=30, retry_condition_fn=_worth_retrying, task_run_name="repro-finetune")
def repro_finetune(root: str, force: bool = False, timeout_s: float | None = None) -> bool:
    ran = dvc_repro_finetune(Path(root), force, timeout_s)
    logger = get_run_logger()
    if ran:
        logger.info("finetune ran")
        publish_report("finetune", Path(root))
    else:
        logger.info("finetune is up to date: skipped")
    return ran


@flow(name="finetune", log_prints=False)
def finetune_flow(root: str = ".", force: bool = False, timeout_s: float | None = None) -> bool:
    """Fine-tune data/base/model.pt on data/train (resuming if a run was cut short)."""
    return repro_finetune(str(Path(root).resolve()), force, timeout_s)
