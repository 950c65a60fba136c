"""The path real users take: a pretrained `base.checkpoint` in each format they bring (rosinality
`.pt`, NVIDIA `.pkl`, ours, an http URL with its sha256), at a resolution other than
faces.resolution, through `styleforge stage base`, `dvc repro` and `styleforge finetune`; the
sample site reached by the machine's host name in both scrape modes; and every bad checkpoint a
clear exit 2 naming the file, with nothing written to data/base."""

import hashlib
import os
import socket
import subprocess
import sys
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from styleforge.app.cli import app
from styleforge.app.demo import sample_photos
from styleforge.app.samplesite import serve
from styleforge.core.config import load_params
from styleforge.core.grid import sheet_tiles, tile_for
from styleforge.model.checkpoint import load_checkpoint
from styleforge.model.networks import ModelConfig
from styleforge.model.train import render_z
from tests.conftest import copy_project
from tests.formats import write_nvidia_pickle, write_ours, write_rosinality

pytestmark = pytest.mark.slow
BIN = str(Path(sys.executable).parent)  # dvc and styleforge live beside this python
SMALL = dict(style_dim=32, n_mlp=2, channel_max=32, channel_base=512)
TRAIN = {"kimg": 0.008, "batch": 4, "workers": 0, "checkpoint_every": 2, "sample_every": 2, "samples": 4,
         "snapshot_kimg": 0.004}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(cmd: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": BIN + os.pathsep + os.environ["PATH"]}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


class Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class Files:
    """An http server on 127.0.0.1 serving a folder, as a model hub would."""

    def __init__(self, folder: Path):
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(folder)))
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """The project with its dataset built by `dvc repro augment` from the sample site, reached by the
    machine's host name (not localhost) in both static and browser mode."""
    root = copy_project(tmp_path_factory.mktemp("pretrained") / "project")
    with serve(0) as site:
        port = site.rsplit(":", 1)[1]
        host_url = f"http://{socket.gethostname()}:{port}"
        params = yaml.safe_load((root / "params.yaml").read_text())
        params["scrape"]["sources"] = [
            {"url": f"{host_url}/index.html", "mode": "static", "max_images": 60},
            {"url": f"{host_url}/scroll.html", "mode": "browser", "max_images": 30, "scroll_rounds": 3},
        ]
        params["scrape"]["allow_private"] = [f"127.0.0.1:{port}"]  # the host name resolves to loopback here
        params["base"].update(TRAIN)
        params["finetune"].update({**TRAIN, "freeze_d": 1})
        params["portraits"]["projection"].update({"steps": 4, "n_mean_latent": 64})
        params["evaluate"].update({"num_generated": 8, "batch_size": 8})
        (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        sample_photos(root / params["portraits"]["photos"])
        run(["dvc", "init", "--no-scm", "-q"], root)
        run(["dvc", "repro", "augment"], root)
    scrape = yaml.safe_load((root / "reports/scrape.json").read_text())
    assert [s["status"] for s in scrape["sources"]] == ["ok", "ok"], scrape["sources"]
    assert all(s["statuses"]["ok"] > 0 for s in scrape["sources"]), "both modes must bring images by host name"
    files = Files(root / "checkpoints")
    yield root, files
    files.close()


def make_checkpoint(root: Path, files: Files, fmt: str) -> tuple[str, str | None]:
    """(base.checkpoint, base.sha256) for a small model of this format; none at 256x256."""
    folder = root / "checkpoints"
    folder.mkdir(exist_ok=True)
    if fmt == "rosinality":  # rosinality's train.py names checkpoints by iteration
        write_rosinality(folder / "020000.pt", ModelConfig(size=64, **SMALL))
        return "checkpoints/020000.pt", None
    if fmt == "nvidia":
        write_nvidia_pickle(folder / "network-snapshot-000100.pkl", size=32, z_dim=32, channel_max=32)
        return "checkpoints/network-snapshot-000100.pkl", None
    path = write_ours(folder / f"{fmt}.pt", ModelConfig(size=32, **SMALL))
    if fmt == "ours":
        return f"checkpoints/{path.name}", None
    return f"{files.url}/{path.name}", sha256(path)  # url: downloaded, then checked


def set_base(root: Path, checkpoint: str, digest: str | None) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["base"].update(checkpoint=checkpoint, sha256=digest)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def declared_outputs(root: Path, stage: str) -> list[Path]:
    spec = yaml.safe_load((root / "dvc.yaml").read_text())["stages"][stage]
    names = [next(iter(item)) if isinstance(item, dict) else item
             for kind in ("outs", "metrics", "plots") for item in spec.get(kind, [])]
    return [root / name for name in names]


@pytest.mark.parametrize("fmt", ["rosinality", "nvidia", "ours", "url"])
def test_each_format_goes_through_stage_base_and_the_whole_dvc_chain(project, fmt):
    root, files = project
    set_base(root, *make_checkpoint(root, files, fmt))
    run(["styleforge", "stage", "base"], root)
    missing = [str(p.relative_to(root)) for p in declared_outputs(root, "base") if not p.exists()]
    assert missing == [], f"declared outputs of base missing after a loaded checkpoint: {missing}"
    loaded = load_checkpoint(root / "data/base/model.pt")
    assert loaded.config.size != 256  # faces.resolution: the training set is resized as it loads

    # the samples of a loaded base are that model's, on the fixed z of its seed
    params = load_params(root / "params.yaml").base
    z = torch.randn(params.samples, loaded.config.style_dim, generator=torch.Generator().manual_seed(params.seed))
    tiles = sheet_tiles(root / "reports/base_samples.png", params.samples, loaded.config.size,
                        tile_for(loaded.config.size), 8, captioned=False)
    assert all(np.array_equal(a, b) for a, b in zip(tiles, render_z(loaded.g_ema.eval(), z), strict=True))

    output = run(["dvc", "repro"], root)
    assert "Running stage 'finetune'" in output and "Running stage 'portraits'" in output, output[-3000:]
    for stage in ("base", "finetune", "blend", "portraits", "evaluate"):
        assert all(p.exists() for p in declared_outputs(root, stage)), stage
    tuned = load_checkpoint(root / "data/finetune/model.pt")
    assert tuned.config == loaded.config
    assert yaml.safe_load((root / "reports/portraits.json").read_text())["portraits"] >= 1


def test_the_finetune_flow_takes_a_pretrained_base(project):
    """`styleforge finetune` (a Prefect flow over `dvc repro finetune`) from an NVIDIA pickle."""
    root, files = project
    set_base(root, *make_checkpoint(root, files, "nvidia"))
    output = run(["styleforge", "finetune", "--root", str(root)], root)
    assert "finetune ran" in output
    assert load_checkpoint(root / "data/finetune/model.pt").config.size == 32


# --- bad checkpoints ---------------------------------------------------------------------------


class Truncating(Quiet):
    """Announces the whole file, sends half of it, hangs up: a connection that drops mid-download."""

    def do_GET(self):
        data = Path(self.directory, self.path.lstrip("/")).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.wfile.flush()
        self.close_connection = True


def bad_sources(tmp_path: Path) -> dict[str, tuple[str, str | None, str]]:
    """case -> (base.checkpoint, base.sha256, words the error must hold)."""
    import collections
    import pickle

    good = write_ours(tmp_path / "good.pt", ModelConfig(size=32, **SMALL))
    data = good.read_bytes()
    (tmp_path / "empty.pt").write_bytes(b"")
    (tmp_path / "empty.pkl").write_bytes(b"")
    (tmp_path / "cut.pt").write_bytes(data[: len(data) // 2])
    pkl = write_nvidia_pickle(tmp_path / "net.pkl", size=32, z_dim=32, channel_max=32)
    (tmp_path / "cut.pkl").write_bytes(pkl.read_bytes()[: pkl.stat().st_size // 2])
    torch.save({"conv1.weight": torch.zeros(8, 3, 3, 3), "fc.weight": torch.zeros(10, 8)}, tmp_path / "resnet.pt")

    class Malformed:  # built only from allowed globals, called with arguments they refuse
        def __reduce__(self):
            return collections.OrderedDict, (5,)

    (tmp_path / "malformed.pkl").write_bytes(pickle.dumps({"G_ema": Malformed()}))
    return {
        "wrong sha256": ("good.pt", "0" * 64, "sha256"),
        "0-byte .pt": ("empty.pt", None, "empty"),
        "0-byte .pkl": ("empty.pkl", None, "empty"),
        "truncated .pt": ("cut.pt", None, "cannot be read"),
        "truncated .pkl": ("cut.pkl", None, "truncated"),
        "another architecture": ("resnet.pt", None, "not a StyleGAN2 checkpoint"),
        "malformed pickle": ("malformed.pkl", None, "not a readable network pickle"),
    }


def assert_refused(root: Path, checkpoint: str, digest: str | None, words: str) -> None:
    (root / "params.yaml").write_text(yaml.safe_dump({"base": {"checkpoint": checkpoint, "sha256": digest}}))
    result = CliRunner().invoke(app, ["stage", "base", "--params", str(root / "params.yaml")])
    # what is left once the progress bar and the stage's INFO lines ("started in ...") are set aside
    lines = [line for line in result.output.splitlines() if line.strip() and "%|" not in line and " INFO " not in line]
    message = "\n".join(lines)
    assert result.exit_code == 2, f"{checkpoint}: exit {result.exit_code}: {message}"
    assert len(lines) == 1, message
    assert lines[0] in (root / "logs/base.log").read_text(), "the error is in the stage's log file too"
    assert Path(checkpoint).name in message and words in message, message
    assert not (root / "data/base").exists() or not any((root / "data/base").iterdir())


def test_every_bad_checkpoint_is_one_clear_line_and_exit_2(tmp_path):
    for case, (checkpoint, digest, words) in bad_sources(tmp_path).items():
        assert_refused(tmp_path, checkpoint, digest, words)


def test_a_url_that_404s_or_drops_is_refused_and_nothing_is_cached(tmp_path):
    write_ours(tmp_path / "hub/model.pt", ModelConfig(size=32, **SMALL))
    files = Files(tmp_path / "hub")
    try:
        assert_refused(tmp_path, f"{files.url}/missing.pt", None, "404")
    finally:
        files.close()
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Truncating, directory=str(tmp_path / "hub")))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/model.pt"
        assert_refused(tmp_path, url, sha256(tmp_path / "hub/model.pt"), "truncated")
    finally:
        server.shutdown()
        server.server_close()
    cache = tmp_path / ".cache/checkpoints"
    assert not cache.exists() or not any(cache.iterdir()), "a bad download must never take the cached name"
