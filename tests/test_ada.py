"""ADA: p follows the overfitting heuristic, the pipeline is differentiable, p survives a checkpoint."""

import pytest
import torch

from styleforge.model.ada import AdaptiveAugment
from styleforge.model.checkpoint import build_networks, load_checkpoint, save_checkpoint
from styleforge.model.networks import ModelConfig


def test_p_rises_when_d_overfits_and_falls_when_it_does_not():
    ada = AdaptiveAugment(target=0.6, speed_kimg=1.0, interval=4)
    for _ in range(4):  # D is sure every real is real: r_t = 1 > 0.6
        ada.observe(torch.full((8,), 3.0))
    ada.adjust()
    assert ada.rt == 1.0
    assert ada.p == pytest.approx(32 / 1000)  # 32 reals seen, 1000 per unit of p
    for _ in range(4):  # r_t = 0 < 0.6: back down, and never below 0
        ada.observe(torch.full((8,), -3.0))
    ada.adjust()
    ada.observe(torch.full((8,), -3.0))
    ada.adjust()
    assert ada.p == 0.0


def test_fixed_p_does_not_move():
    ada = AdaptiveAugment(p=0.25, adaptive=False)
    ada.observe(torch.ones(16))
    ada.adjust()
    assert ada.p == 0.25


def test_adjust_sums_statistics_across_ranks():
    ada = AdaptiveAugment(target=0.6, speed_kimg=1.0)
    ada.observe(torch.full((4,), -1.0))  # this rank alone: r_t = -1
    ada.adjust(all_reduce=lambda t: t.add_(torch.tensor([12.0, 12.0], dtype=t.dtype)))  # others: +12 of 12
    assert ada.rt == pytest.approx(8 / 16)
    assert ada.p == 0.0  # 0.5 < 0.6: p would fall, and is clamped at 0


def test_p_zero_is_the_identity_and_draws_nothing():
    images = torch.randn(2, 3, 16, 16)
    state = torch.get_rng_state()
    assert AdaptiveAugment(p=0.0)(images) is images
    assert torch.equal(torch.get_rng_state(), state)


def test_augment_changes_images_keeps_shape_and_is_random():
    ada = AdaptiveAugment(p=1.0)
    images = torch.rand(4, 3, 32, 32) * 2 - 1
    torch.manual_seed(0)
    a = ada(images)
    torch.manual_seed(1)
    b = ada(images)
    assert a.shape == images.shape and torch.isfinite(a).all()
    assert not torch.allclose(a, images) and not torch.allclose(a, b)


def _seeded_augment(ada, seed):
    def apply(x):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return ada(x)
    return apply


def test_augment_is_differentiable_gradcheck():
    """Every transform at once (p=1), double precision, with the same random draws each call."""
    ada = AdaptiveAugment(p=1.0).double()
    x = torch.rand(1, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(_seeded_augment(ada, 3), (x,), eps=1e-6, atol=1e-5, fast_mode=True)


def test_r1_through_augment_has_second_order_gradients():
    """R1 differentiates D(augment(x)) w.r.t. x and then backpropagates that: needs double backward."""
    torch.manual_seed(0)
    d = build_networks(ModelConfig(size=16, style_dim=16, n_mlp=1, channel_max=16))[1]
    ada = AdaptiveAugment(p=0.9)
    reals = torch.randn(4, 3, 16, 16, requires_grad=True)
    (grad,) = torch.autograd.grad(d(ada(reals)).sum(), reals, create_graph=True)
    grad.square().sum().backward()
    grads = [p.grad for p in d.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0


def test_state_round_trips_through_a_checkpoint(tmp_path):
    ada = AdaptiveAugment(target=0.6, speed_kimg=1.0)
    for _ in range(4):
        ada.observe(torch.ones(8))
    ada.adjust()
    ada.observe(torch.tensor([1.0, -1.0, 1.0]))  # mid-interval statistics must survive too
    config = ModelConfig(size=8, style_dim=8, n_mlp=1, channel_max=8)
    save_checkpoint(tmp_path / "c.pt", config, *build_networks(config), augment=ada.state())

    restored = AdaptiveAugment(target=0.6, speed_kimg=1.0)
    restored.load_state(load_checkpoint(tmp_path / "c.pt").augment)
    assert restored.state() == ada.state()
    assert restored.p == pytest.approx(0.032)
