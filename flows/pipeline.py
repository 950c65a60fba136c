"""The whole chain, scrape -> portraits: every dvc.yaml stage in DVC's order, one Prefect task each.

DVC reruns a stage only if its inputs changed; this is what `styleforge demo` and the nightly run.
"""

from __future__ import annotations

from pathlib import Path

from prefect import flow, get_run_logger
from styleforge.flows.dataset import repro_stage
from styleforge.flows.finetune import repro_finetune


def pipeline_order(root: Path) -> list[str]:
    """dvc.yaml's stages, each after the stages it depends on (DVC's graph, read without its lock)."""
    import networkx as nx
    from dvc.repo import Repo
    from dvc.stage import PipelineStage

    with Repo(str(root)) as repo:
        graph = repo.index.graph  # edges run from a stage to the stages it depends on
        stages = [s for s in reversed(list(nx.topological_sort(graph))) if isinstance(s, PipelineStage)]
    # addresses as `dvc repro` takes them from root (Stage.addressing is relative to our cwd)
    return [s.name if s.path_in_repo == "dvc.yaml" else f"{s.path_in_repo}:{s.name}" for s in stages]


def repro(stage: str, root: str, force: bool = False) -> bool:
    """`dvc repro` of one stage as a Prefect task; finetune keeps its own retry rules (a crash
    resumes from its checkpoint, a deterministic failure is not retried)."""
    return repro_finetune(root, force) if stage == "finetune" else repro_stage(stage, root, force)


@flow(name="pipeline", log_prints=False)
def pipeline_flow(root: str = ".", force: bool = False) -> dict[str, bool]:
    """Bring every stage up to date (all of them with force); return which ran."""
    root_path = str(Path(root).resolve())
    ran = {stage: repro(stage, root_path, force) for stage in pipeline_order(Path(root_path))}
    get_run_logger().info("stages run: %s", ", ".join(s for s, r in ran.items() if r) or "none (all up to date)")
    return ran
