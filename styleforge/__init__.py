"""styleforge: scrape a look, fine-tune StyleGAN2 on it, render blended portraits."""

__version__ = "0.1.0"
