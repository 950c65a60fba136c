"""FID and KID against direct NumPy/SciPy computations and the Gaussian closed form."""

import itertools

import numpy as np
import pytest
from scipy.stats import special_ortho_group

from styleforge.model.metrics import (
    fid,
    frechet_distance,
    gaussian_fit,
    kid,
    mmd2_unbiased,
)


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Tr((sigma1 sigma2)^½) from eigenvalues: sigma1 sigma2 is similar to a PSD matrix."""
    return float(np.sqrt(np.clip(np.linalg.eigvals(sigma1 @ sigma2).real, 0, None)).sum())


def test_frechet_distance_of_two_gaussians_is_the_closed_form():
    rng = np.random.default_rng(0)
    dim = 6
    mu1, mu2 = rng.normal(size=dim), rng.normal(size=dim)
    var1, var2 = rng.uniform(0.5, 3, dim), rng.uniform(0.5, 3, dim)
    rotation = special_ortho_group.rvs(dim, random_state=1)  # same axes for both: still closed form
    sigma1, sigma2 = rotation @ np.diag(var1) @ rotation.T, rotation @ np.diag(var2) @ rotation.T
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(var1 + var2 - 2 * np.sqrt(var1 * var2))
    assert frechet_distance(mu1, sigma1, mu2, sigma2) == pytest.approx(expected, rel=1e-9)


def test_fid_of_samples_matches_a_direct_computation():
    rng = np.random.default_rng(1)
    real, generated = rng.normal(size=(400, 16)), rng.normal(0.3, 1.2, size=(300, 16))
    mu1, mu2 = real.mean(0), generated.mean(0)
    sigma1, sigma2 = np.cov(real.T), np.cov(generated.T)
    direct = np.sum((mu1 - mu2) ** 2) + np.trace(sigma1 + sigma2) - 2 * trace_sqrt_product(sigma1, sigma2)
    assert fid(real, generated) == pytest.approx(direct, rel=1e-8)
    assert fid(real, real) == pytest.approx(0, abs=1e-8)


def test_fid_with_singular_covariances_stays_finite_and_close():
    rng = np.random.default_rng(2)
    real, generated = rng.normal(size=(10, 32)), rng.normal(0.5, 1, size=(10, 32))  # rank 9 < 32
    value = fid(real, generated)
    (mu1, sigma1), (mu2, sigma2) = gaussian_fit(real), gaussian_fit(generated)
    direct = np.sum((mu1 - mu2) ** 2) + np.trace(sigma1 + sigma2) - 2 * trace_sqrt_product(sigma1, sigma2)
    assert np.isfinite(value) and value == pytest.approx(direct, rel=1e-4)


def test_mmd2_matches_the_double_sum_definition():
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(9, 5)), rng.normal(1, 1, size=(9, 5))
    m, d = x.shape

    def k(a, b):
        return (a @ b / d + 1) ** 3

    pairs = [(i, j) for i, j in itertools.product(range(m), repeat=2) if i != j]
    within = sum(k(x[i], x[j]) + k(y[i], y[j]) for i, j in pairs) / (m * (m - 1))
    across = sum(k(x[i], y[j]) for i, j in itertools.product(range(m), repeat=2)) / m**2
    assert mmd2_unbiased(x, y) == pytest.approx(within - 2 * across, rel=1e-12)


def test_kid_over_the_whole_set_is_the_mmd2_and_spreads_over_subsets():
    rng = np.random.default_rng(4)
    real, generated = rng.normal(size=(50, 8)), rng.normal(0.5, 1, size=(50, 8))
    mean, std = kid(real, generated, num_subsets=3, max_subset_size=50)
    assert mean == pytest.approx(mmd2_unbiased(generated, real)) and std == pytest.approx(0, abs=1e-12)
    mean, std = kid(real, generated, num_subsets=20, max_subset_size=20)
    assert mean > 0 and std > 0


def test_kid_is_near_zero_for_one_distribution_and_not_for_two():
    rng = np.random.default_rng(5)
    real, same, shifted = (rng.normal(loc, 1, size=(600, 16)) for loc in (0, 0, 0.5))
    apart, _ = kid(real, shifted, num_subsets=20, max_subset_size=200)
    for other in (real, same):  # the very same set, and a fresh sample of the same Gaussian
        near, _ = kid(real, other, num_subsets=20, max_subset_size=200)
        assert abs(near) < 0.05 * apart


def test_too_few_images_is_an_error():
    with pytest.raises(ValueError, match="at least 2"):
        kid(np.ones((1, 4)), np.ones((5, 4)))
    with pytest.raises(ValueError, match="N >= 2"):
        fid(np.ones((1, 4)), np.ones((5, 4)))
