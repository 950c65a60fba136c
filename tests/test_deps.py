"""Rerun exactly what changed: every file a stage runs is among its dvc.yaml deps (walked from
the stage's module through every import, lazy ones included, and the package data it reads), and
a change to a file makes stale the stages that run it and those downstream, nothing else."""

import ast
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from styleforge.tasks.stages import STAGES
from tests.conftest import REPO, copy_project

BIN = str(Path(sys.executable).parent)
PACKAGE_DIRS = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
RESOURCE = re.compile(r"""importlib\.resources\.files\(\s*["']([\w.]+)["']\s*\)""")


def module_path(name: str) -> Path | None:
    """The file of one of our modules (a package's __init__.py), from pyproject's package-dir map."""
    for package, folder in sorted(PACKAGE_DIRS.items(), key=lambda item: -len(item[0])):
        if name == package or name.startswith(package + "."):
            base = REPO / folder / Path(*name[len(package):].lstrip(".").split(".")) if name != package else REPO / folder
            for candidate in (base.with_suffix(".py"), base / "__init__.py"):
                if candidate.is_file():
                    return candidate
            return base if base.is_dir() else None  # package data without Python (csrc)
    return None


def imports_of(path: Path, name: str) -> set[str]:
    """The styleforge modules a module names: top-level and inside functions, relative resolved,
    `from package import module` counted as the module, package data read through importlib."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    found |= set(RESOURCE.findall(path.read_text()))
    return {n for n in found if n.startswith("styleforge") and module_path(n) is not None}


def files_run_by(stage: str) -> set[Path]:
    """Every file of ours the stage's module runs, transitively; each package's __init__ too."""
    start = STAGES[stage][0]
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:k]) for k in range(2, len(parts))]  # importing a.b.c runs a.b's __init__
        path = module_path(name)
        if path is not None and path.suffix == ".py":
            todo += imports_of(path, name)
    return {module_path(n) for n in seen if module_path(n) is not None}


def stage_deps(stage: str, dvc_file: str = "dvc.yaml") -> list[Path]:
    """A stage's deps as absolute paths, templated from the params.yaml beside its dvc.yaml."""
    folder = (REPO / dvc_file).parent
    params = yaml.safe_load((folder / "params.yaml").read_text())
    deps = yaml.safe_load((REPO / dvc_file).read_text())["stages"][stage]["deps"]

    def resolve(dep: str) -> str:  # DVC templating from params.yaml
        return re.sub(r"\$\{([\w.]+)\}", lambda m: _lookup(params, m.group(1)), dep)

    return [(folder / resolve(dep)).resolve() for dep in deps]


def _lookup(params: dict, dotted: str) -> str:
    value = params
    for part in dotted.split("."):
        value = value[part]
    return str(value)


# styleforge's own __init__ holds the version: not stage code
ENTRY = {REPO / "styleforge/__init__.py"}


def runs_nothing(path: Path) -> bool:
    """A package __init__ holding only its docstring."""
    body = ast.parse(path.read_text()).body
    return path.suffix == ".py" and all(isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body)


RECIPE = "recipes/base-faces/dvc.yaml"


@pytest.mark.parametrize(("dvc_file", "stage"), [("dvc.yaml", s) for s in sorted(STAGES)]
                         + [(RECIPE, s) for s in yaml.safe_load((REPO / RECIPE).read_text())["stages"]])
def test_every_file_a_stage_runs_is_among_its_deps(dvc_file, stage):
    deps = stage_deps(stage, dvc_file)
    uncovered = sorted(str(f.relative_to(REPO)) for f in files_run_by(stage) - ENTRY
                       if not any(f == d or d in f.parents for d in deps) and not (f.is_file() and runs_nothing(f)))
    assert uncovered == [], f"{dvc_file} stage {stage} runs these without depending on them: {uncovered}"


def test_every_stage_is_in_dvc_yaml_and_runs_through_the_cli():
    pipeline = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    assert set(pipeline) == set(STAGES)
    for name, spec in pipeline.items():
        assert spec["cmd"] == f"styleforge stage {name}", name
        assert set(spec.get("params", [])) == set(STAGES[name][1]), f"{name}: params must be the sections it reads"


def _declared(spec: dict) -> list[str]:
    return [next(iter(item)) if isinstance(item, dict) else item
            for kind in ("outs", "metrics", "plots") for item in spec.get(kind, [])]


@pytest.mark.slow
def test_a_change_makes_stale_exactly_the_stages_that_run_it_and_what_follows(tmp_path):
    """Every output and data dep stands in as a placeholder, `dvc commit` records the lock, then a
    code change is made and `dvc status` asked which stages it makes stale (nothing is run)."""
    root = copy_project(tmp_path / "project")
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ["PATH"]}

    def dvc(*args: str) -> str:
        proc = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=root, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc.stdout

    dvc("init", "--no-scm", "-q")
    pipeline = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    params = yaml.safe_load((root / "params.yaml").read_text())
    for spec in pipeline.values():
        for name in _declared(spec) + [re.sub(r"\$\{([\w.]+)\}", lambda m: _lookup(params, m.group(1)), d)
                                       for d in spec["deps"]]:
            path = root / name
            if path.exists():
                continue
            if path.suffix:  # a file
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("placeholder\n")
            else:
                path.mkdir(parents=True, exist_ok=True)
                (path / "placeholder.txt").write_text("placeholder\n")
    dvc("commit", "--force", "dvc.yaml")  # the project pipeline, not the recipes
    assert json.loads(dvc("status", "--json", "dvc.yaml")) == {}

    def stale_after(edit: str) -> set[str]:
        path = root / edit
        original = path.read_text()
        path.write_text(original + "\n# a change\n")
        try:
            return set(json.loads(dvc("status", "--json", "dvc.yaml")))
        finally:
            path.write_text(original)

    assert stale_after("model/layers.py") == {"base", "finetune", "blend", "portraits", "evaluate", "walk"}
    assert stale_after("tasks/scrape/http.py") == {"scrape"}  # its outputs, unchanged here, decide the rest
    assert stale_after("tasks/augment.py") == {"augment"}


def _paths_in_dvc_yaml() -> set[str]:
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    found = set()
    for spec in stages.values():
        for key in ("deps", "outs", "metrics", "plots"):
            for entry in spec.get(key, []):
                path = entry if isinstance(entry, str) else next(iter(entry))
                if path.split("/")[0] in ("data", "reports", "dvclive"):
                    found.add(path)
    return found


def test_each_output_path_is_named_once_in_tasks_paths_and_dvc_yaml_agrees():
    """tasks/paths.py names where the stages write; dvc.yaml is the other place a path is said.
    Each path of dvc.yaml is one of those names, inside one (a folder's files), or a stage report;
    each name is in dvc.yaml, inside a path it declares, or holds one (dvclive/base)."""
    from styleforge.core.reports import report_path
    from styleforge.tasks import paths

    named = {str(value) for name, value in vars(paths).items() if name.isupper() and isinstance(value, Path)}
    named.discard(str(paths.REPORTS_DIR))
    declared = _paths_in_dvc_yaml()
    reports = {str(report_path(stage)) for stage in STAGES}

    def under(path: str, folders: set[str]) -> bool:
        return any(path == folder or path.startswith(folder + "/") for folder in folders)

    assert [path for path in declared if not (under(path, named) or path in reports)] == []
    assert [name for name in named if not (under(name, declared) or any(under(path, {name}) for path in declared))] == []
    assert reports <= declared, "every stage's report is a dvc.yaml metric"
    for module in ("styleforge.tasks.stages", "styleforge.flows.gallery"):  # no path said twice in the code
        assert not re.search(r'Path\("(data|reports|dvclive)/', module_path(module).read_text()), module
    literal = re.compile(r'= Path\("(data|reports|dvclive)/')
    said_elsewhere = [str(path.relative_to(REPO)) for folder in ("tasks", "flows", "styleforge")
                      for path in (REPO / folder).rglob("*.py")
                      if path.name != "paths.py" and literal.search(path.read_text())]
    assert said_elsewhere == []
