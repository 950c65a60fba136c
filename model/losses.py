"""StyleGAN2 losses: non-saturating logistic GAN loss, R1 and path-length regularisation.

Numerics follow NVlabs stylegan2-ada-pytorch training/loss.py (StyleGAN2Loss): R1 is the
squared gradient norm of D's real logits w.r.t. the (un-augmented) real images, path length
is |J_w^T y| for y ~ N(0, I)/sqrt(H*W) with an exponential moving mean (decay 0.01). Both
are double-backward penalties: their backward runs through the networks' ops a second time.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """-log sigmoid(D(real)) - log(1 - sigmoid(D(fake))), averaged."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def generator_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating: -log sigmoid(D(G(z)))."""
    return F.softplus(-fake_logits).mean()


def r1_penalty(real_logits: torch.Tensor, real_images: torch.Tensor) -> torch.Tensor:
    """Mean over images of |grad_x D(x)|^2; real_images must require grad and feed real_logits."""
    (grad,) = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True, only_inputs=True)
    return grad.square().sum(dim=[1, 2, 3]).mean()


def path_lengths(images: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
    """Per-image |J_w^T y|, y ~ N(0, I) / sqrt(H*W); latents [N, n_latent, w_dim] fed images."""
    noise = torch.randn_like(images) / math.sqrt(images.shape[2] * images.shape[3])
    (grad,) = torch.autograd.grad((images * noise).sum(), latents, create_graph=True, only_inputs=True)
    return grad.square().sum(dim=2).mean(dim=1).sqrt()


def path_length_penalty(lengths: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """Mean squared deviation of the path lengths from their running mean."""
    return (lengths - mean).square().mean()
