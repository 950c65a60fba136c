"""The nightly flow: what is new on the sources in; a model no worse than the last release out.

scrape (forced: it resumes from its manifest, so only new images are fetched) -> every other
dvc.yaml stage in DVC's order (each reruns only if its inputs changed; evaluate writes
reports/evaluate.json) -> the metric gate -> publish (dvc push, commit, tag) or keep the last
release and say why. One run per workspace at a time; a markdown artifact tells what happened.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from contextlib import contextmanager
from datetime import date, datetime
from pathlib import Path
from typing import Iterator
from zoneinfo import ZoneInfo

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact

from styleforge.core.config import NightlyParams, load_params
from styleforge.core.errors import UserError
from styleforge.core.reports import report_path, write_report
from styleforge.flows.gallery import write_pages
from styleforge.flows.pipeline import pipeline_order
from styleforge.flows.release import Outcome, read_metrics, release
from styleforge.flows.repro import repro_task

DEPLOYMENT_NAME = "nightly"  # read back as "nightly/nightly": flow name / deployment name
LOCK_DIR = Path(".dvc/tmp")  # DVC's own scratch folder: git-ignored, never cached


class WorkspaceBusy(UserError, RuntimeError):
    """Another run (or a dvc command) held the workspace longer than nightly.lock_timeout_s."""


def _wait_for_flock(path: Path, deadline: float, holder: str) -> int:
    """An fd holding an exclusive flock on path, polling until deadline; flock is what DVC uses."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                raise WorkspaceBusy(f"{path} is held by {holder}: gave up waiting, nothing was run") from None
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))


@contextmanager
def workspace_lock(root: Path, timeout_s: float) -> Iterator[None]:
    """Hold the workspace for one nightly run, waiting at most timeout_s for whoever has it.

    Our lock is held for the whole run, so a second nightly waits, then fails having touched
    nothing. DVC's lock (held by any dvc command, a `dvc repro` by hand) is only waited for:
    every dvc this run starts must take it itself.
    """
    lock_dir = root / LOCK_DIR
    lock_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout_s
    ours = _wait_for_flock(lock_dir / "nightly.lock", deadline, "another nightly run")
    try:
        os.close(_wait_for_flock(lock_dir / "lock", deadline, "a running dvc command"))
        yield
    finally:
        os.close(ours)  # closing the fd releases the flock


def _read_json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def training_images(root: Path) -> int:
    return len(_read_json(root / "data/train/dataset.json").get("images", []))


def new_images(root: Path) -> int:
    """Images the scrape kept this run, from its report (this_run.statuses.ok)."""
    return _read_json(report_path("scrape", root)).get("this_run", {}).get("statuses", {}).get("ok", 0)


@task(retries=2, retry_delay_seconds=30, task_run_name="release")  # retried: a push to S3 can fail in passing
def release_task(root: str, params: NightlyParams, day: date) -> Outcome:
    return release(Path(root), params, day)


@flow(name="nightly", log_prints=False)
def nightly_flow(root: str = ".") -> dict:
    """Scrape what is new, rebuild what changed, gate on the metric, publish or keep the last release."""
    root_path = Path(root).resolve()
    params = load_params(root_path / "params.yaml").nightly
    logger = get_run_logger()
    started = datetime.now(ZoneInfo(params.timezone))
    # The whole night is bounded: a stage still running at the deadline is ended with everything
    # it started, the lock is released, and the next night resumes from the stages' checkpoints.
    deadline = time.time() + params.deadline_h * 3600
    with workspace_lock(root_path, params.lock_timeout_s):
        stages = pipeline_order(root_path)
        if "evaluate" not in stages or "scrape" not in stages:
            raise RuntimeError(f"dvc.yaml needs scrape and evaluate stages for the nightly; it has {stages}")
        images_before = training_images(root_path)
        ran = {"scrape": repro_task("scrape", str(root_path), force=True, deadline=deadline)}
        ran |= {stage: repro_task(stage, str(root_path), deadline=deadline) for stage in stages if stage != "scrape"}
        outcome = release_task(str(root_path), params, started.date())
    summary = {
        "started": started.isoformat(),
        "new_images": new_images(root_path),
        "training_images": {"before": images_before, "after": training_images(root_path)},
        "stages_ran": [stage for stage in stages if ran[stage]],
        "stages_skipped": [stage for stage in stages if not ran[stage]],
        "metrics": read_metrics(root_path),
        "previous_release": outcome.previous.tag if outcome.previous else None,
        "previous_metrics": outcome.previous.metrics if outcome.previous else {},
        "published": outcome.published,
        "reason": outcome.reason,
        "release": outcome.release.tag if outcome.release else None,
        "grids": sorted(str(p.relative_to(root_path)) for p in (root_path / "reports").glob("*.png")),
    }
    write_report("nightly", summary, root_path)
    write_pages(root_path)  # this run's page, and the history with tonight's decision in it
    create_markdown_artifact(key="nightly", markdown=render_markdown(summary, root_path),
                             description=f"nightly run of {started:%Y-%m-%d}")
    logger.info("%s: %s", "published " + summary["release"] if outcome.published else "kept the last release",
                outcome.reason)
    return summary


def render_markdown(summary: dict, root: Path) -> str:
    metrics, before, images = summary["metrics"], summary["previous_metrics"], summary["training_images"]
    verb = "published" if summary["published"] else "kept"
    rows = [f"| {name} | {_cell(metrics.get(name))} | {_cell(before.get(name))} |" for name in ("fid", "kid", "kid_std")]
    blocks = [
        f"# Nightly {summary['started'][:10]}: {verb} `{summary['release']}`\n\n**Why:** {summary['reason']}",
        "## What changed\n\n"
        f"- new images scraped: {summary['new_images']}; training images {images['before']} → {images['after']}\n"
        f"- stages rerun: {', '.join(summary['stages_ran']) or 'none'}\n"
        f"- stages up to date (skipped): {', '.join(summary['stages_skipped']) or 'none'}",
        "## Metrics\n\n"
        f"| metric | this run | {summary['previous_release'] or 'no release before'} |\n|---|---|---|\n" + "\n".join(rows)
        + (f"\n\n_not measured: {metrics['skipped']}_" if metrics.get("skipped") else ""),
        "## Grids\n\n" + "\n".join(f"- `{root / grid}`" for grid in summary["grids"]),
        f"## Restore\n\n`git checkout {summary['release']} && dvc pull`",
    ]
    return "\n\n".join(blocks)


def _cell(value) -> str:
    return "—" if value is None else f"{value:.4g}"


def deployment(root: Path, nightly: NightlyParams):
    """The nightly flow on nightly.cron in nightly.timezone, for root, one run at a time."""
    from prefect.client.schemas.objects import (
        ConcurrencyLimitConfig,
        ConcurrencyLimitStrategy,
    )
    from prefect.flows import EntrypointType
    from prefect.schedules import Cron

    return nightly_flow.to_deployment(
        name=DEPLOYMENT_NAME,
        schedule=Cron(nightly.cron, timezone=nightly.timezone),
        # a run due while the last one still works is cancelled rather than queued behind it:
        # two nights' runs must not pile up, and the next night picks up whatever was missed
        concurrency_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW),
        parameters={"root": str(Path(root).resolve())},
        description=f"scrape, rebuild, gate and publish {Path(root).resolve()}",
        entrypoint_type=EntrypointType.MODULE_PATH,  # importable wherever the runner starts
    )
