"""evaluate: FID and KID of the fine-tuned G_ema against the training set -> reports/evaluate.json.

Generated images come from fixed seeds (seed .. seed+N-1; each seed fixes its z and its noise),
so two nights differ only by their models. Features come from StyleGAN2-ADA's TorchScript
Inception (model/inception.py): no torchvision. Without weights the metrics are null with the
reason, never a made-up number. Beside them: the dataset figures (images, rejects by stage and
reason, duplicates), a grid of the first samples and a 2-D PCA of both feature sets (DVC plots).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from styleforge.core.config import EvaluateParams
from styleforge.core.fetch import Unavailable, fetch
from styleforge.core.grid import save_sheet
from styleforge.core.images import load_image
from styleforge.core.io import atomic_write
from styleforge.core.reports import read_report, report_path, timed, write_report
from styleforge.model.checkpoint import load_generator
from styleforge.model.generate import seed_z
from styleforge.model.inception import extract_features, load_detector
from styleforge.model.metrics import fid, kid
from styleforge.tasks.paths import EVALUATE_PLOTS, FINETUNED_MODEL, TRAIN_DIR

GRID_SAMPLES = 32


def run(params: EvaluateParams, root: Path = Path(".")) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    report: dict = {"fid": None, "kid": None, "kid_std": None, "dataset": dataset_figures(root)}
    with timed(report):
        try:
            weights = inception_weights(params, root)  # first: wrong weights fail before any work
        except Unavailable as exc:
            weights, report["skipped"] = None, f"no Inception weights: {exc}"
        generator = load_generator(root / FINETUNED_MODEL, map_location=device)
        seeds = range(params.seed, params.seed + params.num_generated)
        grid = torch.cat(list(generate(generator, seeds[:GRID_SAMPLES], params.batch_size, device)))
        save_sheet(root / EVALUATE_PLOTS / "samples.png", list(grid.permute(0, 2, 3, 1).numpy()),
                   [f"seed {s}" for s in seeds[:GRID_SAMPLES]])
        real = generated = np.empty((0, 2))  # no features: empty PCA plots, so DVC still finds its outputs
        if weights is not None:
            detector = load_detector(weights, device)
            real = extract_features(detector, training_images(root / TRAIN_DIR, params.batch_size), device)
            generated = extract_features(detector, generate(generator, seeds, params.batch_size, device), device)
            report.update(score(real, generated, params))
        write_pca(root / EVALUATE_PLOTS, real, generated)
    write_report("evaluate", report, root)
    return report


def inception_weights(params: EvaluateParams, root: Path) -> Path:
    """The detector file; Unavailable (a skip, not a failure) when unset, unpinned, missing or not
    downloadable.

    The detector is TorchScript, which carries code that torch.jit.load runs: it loads only with
    a pinned sha256, so whoever serves the URL cannot run code in the nightly. Wrong weights (a
    sha256 mismatch) raise FetchError: that is a failure, not a skip.
    """
    if params.inception is None:
        raise Unavailable("set evaluate.inception")
    if params.inception_sha256 is None:
        raise Unavailable("evaluate.inception_sha256 is not set: the TorchScript detector carries code, so it is "
                          f"loaded only with a pinned sha256 (sha256sum the file at {params.inception})")
    return fetch(params.inception, root / params.cache_dir, params.inception_sha256, root)


class FidMeter:
    """FID of generators against the training set: the detector loaded and the real features
    extracted once (the finetune stage measures every snapshot with it)."""

    def __init__(self, weights: Path, params: EvaluateParams, train_dir: Path, device: torch.device):
        self.params, self.device = params, device
        self.detector = load_detector(weights, device)
        self.real = extract_features(self.detector, training_images(train_dir, params.batch_size), device)

    def __call__(self, generator: torch.nn.Module) -> dict[str, float]:
        seeds = range(self.params.seed, self.params.seed + self.params.num_generated)
        generated = extract_features(self.detector, generate(generator, seeds, self.params.batch_size, self.device),
                                     self.device)
        return {"fid": fid(self.real, generated)}


def fid_meter(params: EvaluateParams, train_dir: Path, root: Path) -> tuple[FidMeter | None, str | None]:
    """(a meter, None), or (None, why FID cannot be measured)."""
    try:
        weights = inception_weights(params, root)
    except Unavailable as exc:
        return None, f"no Inception weights: {exc}"
    return FidMeter(weights, params, train_dir, torch.device("cuda" if torch.cuda.is_available() else "cpu")), None


def score(real: np.ndarray, generated: np.ndarray, params: EvaluateParams) -> dict:
    kid_mean, kid_std = kid(real, generated, params.kid_subsets, params.kid_subset_size, seed=params.seed)
    return {"fid": fid(real, generated), "kid": kid_mean, "kid_std": kid_std,
            "num_real": len(real), "num_generated": len(generated)}


def seeded_inputs(generator: torch.nn.Module, seeds: range) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """z (model.generate.seed_z: seed k is the face `styleforge generate` draws for k) and per-layer
    noise from each seed's own torch RNG: image k depends on seed k alone, not on its batch."""
    z = torch.from_numpy(seed_z(seeds, generator.style_dim))
    noises = []
    for seed in seeds:
        rng = torch.Generator().manual_seed(seed)
        noises.append([torch.randn(buffer.shape[1:], generator=rng) for buffer in generator.const_noise()])
    return z, [torch.stack(layer) for layer in zip(*noises)]


@torch.inference_mode()
def generate(generator: torch.nn.Module, seeds: range, batch_size: int, device: torch.device) -> Iterator[torch.Tensor]:
    """uint8 RGB batches [B, 3, H, W], untruncated (psi 1), converted as StyleGAN2-ADA does."""
    for start in range(0, len(seeds), batch_size):
        z, noise = seeded_inputs(generator, seeds[start : start + batch_size])
        images, _ = generator([z.to(device)], noise=[n.to(device) for n in noise])
        # not model.generate.to_uint8 (rounding): StyleGAN2-ADA's metrics truncate x*127.5+128, and
        # FID and KID shift with the conversion, so ours stay comparable with NVIDIA's published figures
        yield (images * 127.5 + 128).clamp(0, 255).to(torch.uint8).cpu()


def training_images(train_dir: Path, batch_size: int) -> Iterator[torch.Tensor]:
    paths = sorted(train_dir.glob("*.png"))
    if len(paths) < 2:
        raise ValueError(f"{train_dir} holds {len(paths)} images: FID and KID need at least 2")
    for start in range(0, len(paths), batch_size):
        arrays = [load_image(p) for p in paths[start : start + batch_size]]
        yield torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def write_pca(plots_dir: Path, real: np.ndarray, generated: np.ndarray) -> None:
    """Both feature sets on the two main axes of their union: gaps show modes the model misses."""
    both = np.concatenate([real, generated])
    if len(both) >= 2:
        centred = both - both.mean(axis=0)
        projected = centred @ np.linalg.svd(centred, full_matrices=False)[2][:2].T
    else:
        projected = np.empty((0, 2))
    for name, rows in (("pca_real.csv", projected[: len(real)]), ("pca_generated.csv", projected[len(real) :])):
        atomic_write(plots_dir / name, lambda tmp, rows=rows: write_csv(tmp, rows))


def write_csv(path: Path, rows: np.ndarray) -> None:
    with path.open("w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["pc1", "pc2"])
        writer.writerows(np.round(rows, 6).tolist())


def dataset_figures(root: Path) -> dict:
    """What the model was trained on, from the dataset stages' own reports."""
    dataset_json = root / TRAIN_DIR / "dataset.json"
    figures: dict = {"images": len(json.loads(dataset_json.read_text())["images"]) if dataset_json.exists() else 0}
    reports = {stage: read_report(stage, root) for stage in ("scrape", "faces", "augment")
               if report_path(stage, root).exists()}
    statuses = reports.get("scrape", {}).get("statuses", {})
    figures["duplicates"] = statuses.get("duplicate", 0) + statuses.get("near_duplicate", 0)
    figures["rejects"] = {"scrape": {status: n for status, n in statuses.items() if status != "ok" and n}}
    for stage in ("faces", "augment"):
        figures["rejects"][stage] = reports.get(stage, {}).get("rejects", {})
    return figures
