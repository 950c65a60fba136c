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
    os.environ.pop("PREFECT_API_URL", None)
    yield home


@pytest.fixture
def python_bin() -> str:
    return sys.executable
