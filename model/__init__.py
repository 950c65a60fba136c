"""StyleGAN2 networks, ops, losses, checkpoints, blending and projection."""
