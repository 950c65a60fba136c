"""`styleforge demo`: the whole chain on the embedded sample site, no GPU, no internet."""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import urlsplit

from rich.console import Console
from rich.table import Table

from styleforge.core.config import load_params
from styleforge.core.reports import read_report, report_path

console = Console()
SUMMARY_KEYS = 8  # rows of each report shown; the JSON files hold the rest


def sample_site_port(root: Path) -> int:
    """The demo serves the sample site where params.yaml's loopback sources expect it."""
    ports = {urlsplit(s.url).port for s in load_params(root / "params.yaml").scrape.sources
             if urlsplit(s.url).hostname in ("127.0.0.1", "localhost")}
    if len(ports) != 1:
        raise SystemExit("the demo needs params.yaml's sources on one 127.0.0.1 port (the sample site)")
    return ports.pop()


def sample_photos(folder: Path) -> list[Path]:
    """Real photos that ship inside installed packages, for the portraits stage to render."""
    import cv2
    from matplotlib import cbook
    from skimage import data

    folder.mkdir(parents=True, exist_ok=True)
    astronaut = folder / "astronaut.png"
    if not astronaut.exists():
        cv2.imwrite(str(astronaut), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    hopper = folder / "grace_hopper.jpg"
    if not hopper.exists():
        shutil.copyfile(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False), hopper)
    return [astronaut, hopper]


def print_reports(root: Path, stages: list[str]) -> None:
    for stage in stages:
        if not report_path(stage, root).exists():
            continue
        table = Table(title=f"reports/{stage}.json", show_header=False)
        for key, value in list(read_report(stage, root).items())[:SUMMARY_KEYS]:
            table.add_row(key, str(value)[:100])
        console.print(table)


def run_demo(root: Path) -> None:
    from styleforge.app.samplesite import serve
    from styleforge.flows.pipeline import pipeline_flow

    port = sample_site_port(root)
    sample_photos(root / load_params(root / "params.yaml").portraits.photos)
    with serve(port) as base_url:
        console.print(f"sample site at {base_url}")
        ran = pipeline_flow(root=str(root))
    print_reports(root, list(ran))
    print_figures(root)
    console.print(
        "\n[bold]Look at[/bold]\n"
        f"  everything, offline  {root / 'reports/index.html'}\n"
        f"  crops and rejects    {root / 'reports/faces.png'}, {root / 'reports/faces_rejects.png'}\n"
        f"  base vs fine-tuned   {root / 'reports/finetune_vs_base.png'}\n"
        f"  layer-swap sweep     {root / 'reports/blend_sweep.png'}\n"
        f"  blended portraits    {root / 'reports/portraits.png'}\n"
        f"  walk and morphs      {root / 'reports/videos'}\n"
        "[bold]Next[/bold]\n"
        "  styleforge server & styleforge schedule   # the nightly fine-tune on a schedule\n"
        "  dvc repro                                 # rerun what a params.yaml change made stale\n"
        "  dvc plots show                            # training curves and grids as HTML\n"
    )


def print_figures(root: Path) -> None:
    """The quality figures beside their targets (bench/quality.py prints the same)."""
    from styleforge.tasks.quality import figures

    table = Table(title="what the pictures show")
    for column in ("figure", "value", "target", ""):
        table.add_column(column)
    for row in figures(root):
        verdict = {True: "[green]met[/green]", False: "[red]missed[/red]", None: "not measured"}[row["met"]]
        table.add_row(row["figure"], str(row["value"]), row["target"], verdict)
    console.print(table)
