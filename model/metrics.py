"""FID and KID from Inception features, written out in NumPy/SciPy.

The maintained implementations (torch-fidelity, pytorch-fid, clean-fid) all import torchvision,
which has no CPU build here, so the two statistics are written by hand and checked in
tests/test_metrics.py against direct computations and a closed form:

- FID (Heusel et al. 2017): the Fréchet distance between Gaussians fitted to the two feature
  sets, with pytorch-fid's handling of singular covariance products and complex round-off.
- KID (Bińkowski et al. 2018): the unbiased MMD² under the cubic polynomial kernel
  k(x, y) = (x·y / d + 1)³, averaged over random subsets as StyleGAN2-ADA computes it.
"""

from __future__ import annotations

import numpy as np
from scipy import linalg


def gaussian_fit(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance of [N, D] features, in float64 (float32 loses FID's small differences)."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < 2:
        raise ValueError(f"need [N >= 2, D] features, got shape {features.shape}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(
    mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray, eps: float = 1e-6
) -> float:
    """||mu1 - mu2||² + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^½), as pytorch-fid computes it."""
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"shapes differ: mean {mu1.shape} vs {mu2.shape}, covariance {sigma1.shape} vs {sigma2.shape}")
    diff = mu1 - mu2
    covmean = linalg.sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        # fewer samples than feature dimensions leave the product singular: nudge both diagonals
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        # a real PSD product has a real root; small imaginary parts are round-off, large ones a bug
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"imaginary component {np.max(np.abs(covmean.imag)):.3g} in the covariance root")
        covmean = covmean.real
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def fid(real: np.ndarray, generated: np.ndarray) -> float:
    return frechet_distance(*gaussian_fit(real), *gaussian_fit(generated))


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD² between two equal-sized sets under k(a, b) = (a·b / d + 1)³."""
    m, d = x.shape
    k_xx, k_yy, k_xy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3
    within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within - 2 * k_xy.sum() / m**2)


def kid(
    real: np.ndarray, generated: np.ndarray, num_subsets: int = 100, max_subset_size: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """KID as (mean, std) of the unbiased MMD² over random subsets drawn without replacement.

    The subset size is min(len(real), len(generated), max_subset_size), as in StyleGAN2-ADA;
    the mean equals its kid50k figure, the std is the spread the KID paper reports beside it.
    """
    real, generated = np.asarray(real, dtype=np.float64), np.asarray(generated, dtype=np.float64)
    m = min(len(real), len(generated), max_subset_size)
    if m < 2:
        raise ValueError(f"KID needs at least 2 images a side, got {len(real)} real and {len(generated)} generated")
    rng = np.random.default_rng(seed)
    values = [
        mmd2_unbiased(generated[rng.choice(len(generated), m, replace=False)], real[rng.choice(len(real), m, replace=False)])
        for _ in range(num_subsets)
    ]
    return float(np.mean(values)), float(np.std(values))
