"""Stage reports: reports/<stage>.json, small and flat enough to read and to table."""

from __future__ import annotations

import json
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from styleforge.core.io import atomic_write_json

REPORTS_DIR = Path("reports")


def report_path(stage: str, root: Path = Path(".")) -> Path:
    return root / REPORTS_DIR / f"{stage}.json"


def write_report(stage: str, report: dict, root: Path = Path(".")) -> Path:
    return atomic_write_json(report_path(stage, root), {"stage": stage, **report})


def read_report(stage: str, root: Path = Path(".")) -> dict:
    return json.loads(report_path(stage, root).read_text())


@contextmanager
def timed(report: dict) -> Iterator[dict]:
    """Fill report['seconds'] with the wall time of the block."""
    start = time.perf_counter()
    try:
        yield report
    finally:
        report["seconds"] = round(time.perf_counter() - start, 3)
