import os
import sys
from pathlib import Path

import pytest

from styleforge.env import quiet

quiet()
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True, scope="session")
def _isolated_prefect_home(tmp_path_factory):
    """Prefect state (its SQLite database, logs) lives in a temp folder, never in ~/.prefect."""
    home = tmp_path_factory.mktemp("prefect-home")
    os.environ["PREFECT_HOME"] = str(home)
    # the temporary server logs its shutdown at exit, after pytest has closed the streams
    os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
    os.environ.pop("PREFECT_API_URL", None)
    yield home


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

    from model.networks import ModelConfig

    torch.manual_seed(0)
    return ModelConfig(size=32, style_dim=32, n_mlp=2, channel_max=32, channel_base=256).generator().eval()
