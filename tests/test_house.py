"""The house: the built wheel holds every package in place, its floors point down
(import-linter), and a non-editable install runs the compiled ops from its own files."""

import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import REPO, copy_project

pytestmark = pytest.mark.slow
GENERIC_NAMES = ("model", "tasks", "flows", "csrc")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Built from a copy of the project's files: setuptools writes build/ beside the sources."""
    source, out = copy_project(tmp_path_factory.mktemp("source")), tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", str(out), str(source)],
                   check=True, capture_output=True)
    (built,) = out.glob("styleforge-*.whl")
    return built


@pytest.fixture(scope="module")
def unpacked(wheel, tmp_path_factory) -> Path:
    """The wheel's files as site-packages would hold them."""
    import zipfile

    tree = tmp_path_factory.mktemp("tree")
    zipfile.ZipFile(wheel).extractall(tree)
    return tree


def test_the_wheel_installs_everything_under_styleforge(unpacked):
    top = {p.name for p in unpacked.iterdir() if not p.name.endswith(".dist-info")}
    assert top == {"styleforge"}, f"top-level names in site-packages: {top}"
    package = unpacked / "styleforge"
    assert {"core", "app", *GENERIC_NAMES} <= {p.name for p in package.iterdir()}
    assert (package / "csrc/upfirdn2d_cpu.cpp").is_file() and (package / "csrc/fused_bias_act_cuda.cu").is_file()
    assert (package / "app/sample_site/index.html").is_file()


def test_import_linter_contracts_hold(unpacked):
    """Run where only the wheel's tree is importable as styleforge (grimp reads the package's own
    folder, and in a checkout model/, tasks/ and flows/ sit beside it, mapped by setuptools)."""
    lint = Path(sys.executable).parent / "lint-imports"
    proc = subprocess.run([str(lint), str(REPO / "pyproject.toml"), "--no-cache"], cwd=unpacked,
                          env={"PYTHONPATH": str(unpacked), "PATH": "/usr/bin:/bin"}, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "broken" not in proc.stdout.lower().split("contracts:")[-1].replace("0 broken", "")


def test_no_module_imports_the_generic_names_bare():
    """Only styleforge.model etc. exist once installed: a bare `import model` works in a checkout only."""
    bare = re.compile(rf"^\s*(from|import) ({'|'.join(GENERIC_NAMES)})\b", re.M)
    offenders = [str(p.relative_to(REPO)) for folder in ("styleforge", "model", "tasks", "flows", "bench", "tests")
                 for p in (REPO / folder).rglob("*.py") if bare.search(p.read_text())]
    assert offenders == []


# Files decoded elsewhere than styleforge/core/images.py, and why: scrape checks bytes off the wire
# before they are a file (and then decodes them with its to_rgb); the run's page re-encodes
# pictures it shows; grid.sheet_tiles reads a sheet back for the tests.
OWN_DECODERS = {"tasks/scrape/download.py", "flows/gallery.py", "styleforge/core/grid.py", "styleforge/core/images.py",
                "styleforge/app/samplesite.py"}


def test_one_image_reader():
    """Every stage reads images through styleforge.core.images.load_image: one rule for 16-bit,
    EXIF, CMYK, palette and transparency, one pixel cap."""
    decoders = re.compile(r"\b(Image\.open|cv2\.imread|imageio\.v?\d?\.?imread|iio\.imread)\(")
    found = sorted(str(path.relative_to(REPO)) for folder in ("tasks", "model", "flows", "styleforge")
                   for path in (REPO / folder).rglob("*.py") if decoders.search(path.read_text()))
    assert set(found) <= OWN_DECODERS, set(found) - OWN_DECODERS


def test_a_non_editable_install_runs_generate_on_the_cpp_backend(wheel, tmp_path):
    """A fresh venv holding the wheel (its third-party packages borrowed from this one through a
    path entry, which does not bring this checkout's editable finder along)."""
    from styleforge.model.checkpoint import save_checkpoint
    from styleforge.model.networks import ModelConfig

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(venv / "bin/python"), "install", "--quiet",
                    "--no-deps", "--no-index", str(wheel)], check=True, capture_output=True)
    config = ModelConfig(size=32, style_dim=32, n_mlp=2, channel_max=32, channel_base=256)
    g = config.generator()
    save_checkpoint(tmp_path / "model.pt", config, g, None, g)

    env = {"PATH": f"{venv / 'bin'}:{Path(sys.executable).parent}:/usr/bin:/bin", "STYLEFORGE_OPS": "cpp",
           "HOME": str(Path.home()), "OMP_NUM_THREADS": "1"}
    where = subprocess.run([str(venv / "bin/python"), "-c", "import styleforge.model.ops.build as b; print(b.SOURCE_DIR)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert where.startswith(str(site)), f"the ops' sources came from {where}, not the installed wheel"
    proc = subprocess.run([str(venv / "bin/styleforge"), "generate", "--checkpoint", "model.pt", "--seeds", "0,1",
                           "--out", "out"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (tmp_path / "out/seed0000.png").is_file() and (tmp_path / "out/grid.png").is_file()
