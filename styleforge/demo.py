"""`styleforge demo`: the whole chain on the embedded sample site, no GPU, no internet."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from rich.console import Console
from rich.table import Table

from styleforge.config import load_params
from styleforge.reports import read_report, report_path
from styleforge.stages import DATASET_STAGES

console = Console()


def sample_site_port(root: Path) -> int:
    """The demo serves the sample site where params.yaml's loopback sources expect it."""
    ports = {urlsplit(s.url).port for s in load_params(root / "params.yaml").scrape.sources
             if urlsplit(s.url).hostname in ("127.0.0.1", "localhost")}
    if len(ports) != 1:
        raise SystemExit("the demo needs params.yaml's sources on one 127.0.0.1 port (the sample site)")
    return ports.pop()


def print_reports(root: Path, stages: list[str]) -> None:
    for stage in stages:
        if not report_path(stage, root).exists():
            continue
        table = Table(title=f"reports/{stage}.json", show_header=False)
        for key, value in read_report(stage, root).items():
            table.add_row(key, str(value)[:100])
        console.print(table)


def run_demo(root: Path) -> None:
    from flows.dataset import dataset_flow
    from styleforge.samplesite import serve

    port = sample_site_port(root)
    with serve(port) as base_url:
        console.print(f"sample site at {base_url}")
        dataset_flow(root=str(root))
    print_reports(root, DATASET_STAGES)
    console.print(f"crops: {root / 'reports/faces.png'}  rejects: {root / 'reports/faces_rejects.png'}  "
                  f"training set: {root / 'data/train'}")
