"""The whole chain, scrape -> portraits: every dvc.yaml stage in DVC's order, one Prefect task each.

DVC reruns a stage only if its inputs changed; this is what `styleforge demo` and the nightly run.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger

from styleforge.flows.gallery import write_pages
from styleforge.flows.repro import repro_task


def pipeline_order(root: Path) -> list[str]:
    """The root dvc.yaml's stages, each after the stages it depends on (DVC's graph, read without
    its lock)."""
    import networkx as nx
    from dvc.repo import Repo
    from dvc.stage import PipelineStage

    with Repo(str(root)) as repo:
        graph = repo.index.graph  # edges run from a stage to the stages it depends on
        stages = [s for s in reversed(list(nx.topological_sort(graph))) if isinstance(s, PipelineStage)]
    # the project's own pipeline only: other dvc.yaml files (recipes/) are run by hand, in their folder
    return [s.name for s in stages if s.path_in_repo == "dvc.yaml"]


@flow(name="pipeline", log_prints=False)
def pipeline_flow(root: str = ".", force: bool = False) -> dict[str, bool]:
    """Bring every stage up to date (all of them with force); return which ran."""
    root_path = str(Path(root).resolve())
    try:
        ran = {stage: repro_task(stage, root_path, force) for stage in pipeline_order(Path(root_path))}
    finally:  # a run that stopped early gets a page too: it shows how far it came
        write_pages(Path(root_path))  # reports/index.html and reports/history.html
    get_run_logger().info("stages run: %s", ", ".join(s for s, r in ran.items() if r) or "none (all up to date)")
    return ran
