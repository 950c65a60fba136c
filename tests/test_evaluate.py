"""The evaluate stage on a tiny generator, with a tiny TorchScript detector in place of Inception."""

import csv
import hashlib
import http.server
import json
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from styleforge.core.config import EvaluateParams
from styleforge.core.fetch import FetchError
from styleforge.core.reports import write_report
from styleforge.model.checkpoint import load_generator, save_checkpoint
from styleforge.model.inception import extract_features, load_detector
from styleforge.model.metrics import fid
from styleforge.model.networks import ModelConfig
from styleforge.tasks import evaluate, paths

SIZE = 16
# NVIDIA's detector is TorchScript, which torch 2.13 marks deprecated but still loads
pytestmark = pytest.mark.filterwarnings("ignore:.*torch.jit.*:DeprecationWarning")


class TinyDetector(torch.nn.Module):
    """StyleGAN2-ADA's detector call: detector(uint8 [N, 3, H, W], return_features=True) -> [N, D]."""

    def __init__(self):
        super().__init__()
        self.project = torch.nn.Linear(3 * 4 * 4, 12)

    def forward(self, images: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        pooled = torch.nn.functional.adaptive_avg_pool2d(images.float() / 255, 4).flatten(1)
        return self.project(pooled)


@pytest.fixture
def project(tmp_path):
    torch.manual_seed(0)
    config = ModelConfig(size=SIZE, style_dim=8, n_mlp=1, channel_base=64, channel_max=8)
    generator = config.generator()
    save_checkpoint(tmp_path / paths.FINETUNED_MODEL, config, generator, None, generator)
    train = tmp_path / paths.TRAIN_DIR
    train.mkdir(parents=True)
    rng = np.random.default_rng(0)
    names = [f"face{i}.png" for i in range(20)]
    for name in names:
        Image.fromarray(rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)).save(train / name)
    (train / "dataset.json").write_text(json.dumps({"images": [{"file": n} for n in names]}))
    write_report("scrape", {"statuses": {"ok": 30, "duplicate": 4, "near_duplicate": 2, "too_small": 1}}, tmp_path)
    write_report("augment", {"rejects": {"unreadable": 1}}, tmp_path)
    return tmp_path


@pytest.fixture
def detector_path(tmp_path):
    path = tmp_path / "tiny-inception.pt"
    torch.manual_seed(1)
    torch.jit.save(torch.jit.script(TinyDetector()), str(path))
    return path


def pinned(detector: Path) -> dict:
    """The evaluate settings that load a detector: its path and its sha256 (TorchScript runs code)."""
    return {"inception": str(detector), "inception_sha256": hashlib.sha256(detector.read_bytes()).hexdigest()}


def params(**overrides) -> EvaluateParams:
    return EvaluateParams(**{"num_generated": 24, "batch_size": 7, "kid_subsets": 5, "kid_subset_size": 10, **overrides})


def test_metrics_come_from_the_detectors_features(project, detector_path):
    report = evaluate.run(params(**pinned(detector_path)), project)

    assert json.loads((project / "reports/evaluate.json").read_text())["fid"] == report["fid"]
    assert report["num_real"] == 20 and report["num_generated"] == 24 and "skipped" not in report
    cpu = torch.device("cpu")
    detector = load_detector(detector_path, cpu)
    real = extract_features(detector, evaluate.training_images(project / paths.TRAIN_DIR, 6), cpu)
    generated = extract_features(detector, evaluate.generate(load_generator(project / paths.FINETUNED_MODEL), range(24), 24, cpu), cpu)
    assert report["fid"] == pytest.approx(fid(real, generated))
    first_image = torch.from_numpy(np.array(Image.open(project / paths.TRAIN_DIR / "face0.png")))
    alone = detector(first_image.permute(2, 0, 1)[None], return_features=True)[0]
    assert real[0] == pytest.approx(alone.tolist(), rel=1e-5)  # float32: batch size moves the last bit
    with open(project / paths.EVALUATE_PLOTS / "pca_generated.csv") as stream:
        assert len(list(csv.DictReader(stream))) == 24
    assert (project / paths.EVALUATE_PLOTS / "samples.png").exists()
    assert report["dataset"] == {"images": 20, "duplicates": 6,
                                 "rejects": {"scrape": {"duplicate": 4, "near_duplicate": 2, "too_small": 1},
                                             "faces": {}, "augment": {"unreadable": 1}}}


def test_fixed_seeds_give_the_same_numbers_whatever_the_batch(project, detector_path):
    first = evaluate.run(params(**pinned(detector_path), batch_size=24), project)
    second = evaluate.run(params(**pinned(detector_path), batch_size=5), project)
    assert (first["fid"], first["kid"]) == pytest.approx((second["fid"], second["kid"]), rel=1e-6)


def test_no_weights_is_a_clear_skip_not_a_number(project):
    report = evaluate.run(params(), project)
    metrics = json.loads((project / "reports/evaluate.json").read_text())
    assert metrics["fid"] is None and metrics["kid"] is None
    assert metrics["skipped"] == "no Inception weights: set evaluate.inception"
    assert (project / paths.EVALUATE_PLOTS / "samples.png").exists()  # DVC still finds every output
    assert (project / paths.EVALUATE_PLOTS / "pca_real.csv").read_text().strip() == "pc1,pc2"
    assert report["dataset"]["images"] == 20


def test_weights_by_url_are_downloaded_once_and_wrong_ones_fail(project, detector_path):
    requests_seen = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            requests_seen.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(detector_path.parent)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/{detector_path.name}"
    digest = hashlib.sha256(detector_path.read_bytes()).hexdigest()
    try:
        for _ in range(2):
            assert evaluate.run(params(inception=url, inception_sha256=digest), project)["fid"] is not None
    finally:
        server.shutdown()
    assert len(requests_seen) == 1 and len(list((project / ".cache/inception").iterdir())) == 1
    with pytest.raises(FetchError, match="sha256"):
        evaluate.run(params(inception=str(detector_path), inception_sha256="0" * 64), project)
    missing = evaluate.run(params(inception=str(project / "missing.pt"), inception_sha256="0" * 64), project)
    assert missing["fid"] is None and missing["skipped"].startswith("no Inception weights: ")


def test_code_bearing_weights_without_a_pin_are_not_loaded(project, detector_path):
    """TorchScript runs code when loaded: an unpinned detector is a skip with the reason, never a load."""
    report = evaluate.run(params(inception=str(detector_path)), project)
    assert report["fid"] is None and "inception_sha256 is not set" in report["skipped"]
