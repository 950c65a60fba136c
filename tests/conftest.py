import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from styleforge.core.env import quiet

quiet()
REPO = Path(__file__).resolve().parents[1]


def project_files() -> list[str]:
    """The project's own files, from git: tracked ones and new ones git does not ignore.

    Never what a run left in the checkout (data/, reports/, dvclive/, .prefect/, caches are all
    git-ignored), so a test's project is the same after `make demo` as on a clean clone.
    """
    listing = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                             cwd=REPO, capture_output=True, check=True).stdout.decode()
    return [name for name in listing.split("\0") if name and (REPO / name).is_file()]


def copy_project(dest: Path) -> Path:
    """The project's code and config (project_files) copied into dest, without DVC's own folder:
    the test runs `dvc init` there itself."""
    for name in project_files():
        if name.startswith(".dvc/"):
            continue
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target)
    return dest


@pytest.fixture(autouse=True, scope="session")
def _isolated_prefect_home(tmp_path_factory):
    """Prefect state (its SQLite database, logs) lives in a temp folder, never in ~/.prefect."""
    home = tmp_path_factory.mktemp("prefect-home")
    os.environ["PREFECT_HOME"] = str(home)
    os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
    os.environ.pop("PREFECT_API_URL", None)
    yield home
    if "prefect.server.api.server" in sys.modules:
        # Flows run here without PREFECT_API_URL start Prefect's temporary server; left to its
        # exit hook, it logs its shutdown after pytest has closed the streams (a "Logging error"
        # traceback at the end of every run). Stopped here, while they are open.
        from prefect.server.api.server import SubprocessASGIServer

        SubprocessASGIServer().stop()


@pytest.fixture
def python_bin() -> str:
    return sys.executable


@pytest.fixture
def one_thread():
    """Tiny convolutions on a shared 2-core box: a second thread only adds contention."""
    import torch  # here, not at the top: many test files never load torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def generator():
    """A 32x32 generator with random weights (torch seed 0), built once per test module."""
    import torch

    from styleforge.model.networks import ModelConfig

    torch.manual_seed(0)
    return ModelConfig(size=32, style_dim=32, n_mlp=2, channel_max=32, channel_base=256).generator().eval()
