"""Layer swapping (Pinkney & Adler, "Resolution Dependent GAN Interpolation", the Toonify recipe).

Two generators of one architecture, one fine-tuned from the other, still agree on what each
layer means. Taking the mapping network and the blocks up to `swap_res` from one and the blocks
above from the other keeps the first one's coarse structure (pose, face shape) and the second
one's rendering (texture, lighting, colour).

The rule is per state-dict entry, by the resolution `generator_param_resolution` gives it (0 for
the mapping network and w_avg, which go with the coarse side: a latent means what the coarse
model's mapping network made it mean).
"""

from __future__ import annotations

import copy

import torch

from styleforge.model.networks import Generator, generator_param_resolution


def fine_fraction(res: int, swap_res: int, blend_width: int = 0) -> float:
    """How much of an entry at resolution res comes from the fine model.

    Up to swap_res: none. blend_width = n ramps the next n resolutions linearly, 1/(n+1),
    2/(n+1), ..., n/(n+1); above those: all. So the "up to swap_res" promise holds for any width.
    """
    if res <= swap_res:
        return 0.0
    steps_above = (res // swap_res).bit_length() - 1  # res = swap_res * 2**steps_above
    return min(1.0, steps_above / (blend_width + 1))


def swap_state_dicts(
    coarse: dict[str, torch.Tensor],
    fine: dict[str, torch.Tensor],
    size: int,
    swap_res: int,
    blend_width: int = 0,
) -> tuple[dict[str, torch.Tensor], dict[str, float]]:
    """(blended state dict, fraction of each entry taken from fine).

    Entries at fraction 0 or 1 are exact copies; in between they are linear interpolations.
    """
    if coarse.keys() != fine.keys():
        missing = sorted(coarse.keys() ^ fine.keys())
        raise ValueError(f"the two generators differ in layout: {missing[:5]}...")
    blended, fractions = {}, {}
    for name, coarse_tensor in coarse.items():
        fine_tensor = fine[name]
        if coarse_tensor.shape != fine_tensor.shape:
            raise ValueError(f"{name}: shape {list(coarse_tensor.shape)} vs {list(fine_tensor.shape)}")
        alpha = fine_fraction(generator_param_resolution(name, size), swap_res, blend_width)
        if alpha == 0.0:
            blended[name] = coarse_tensor.clone()
        elif alpha == 1.0:
            blended[name] = fine_tensor.clone()
        else:
            blended[name] = torch.lerp(coarse_tensor, fine_tensor.to(coarse_tensor), alpha)
        fractions[name] = alpha
    return blended, fractions


def check_swap_res(swap_res: int, size: int) -> None:
    if swap_res < 4 or swap_res > size or swap_res & (swap_res - 1):
        raise ValueError(f"swap_res must be a power of two from 4 to the model size {size}, got {swap_res}")


def blend_generators(
    base: Generator, finetuned: Generator, swap_res: int, blend_width: int = 0, reverse: bool = False
) -> tuple[Generator, dict[int, float]]:
    """A new generator: coarse (mapping + blocks <= swap_res) from base, fine from finetuned.

    reverse=True swaps the roles (Toonify: coarse structure from the fine-tuned model). Returns
    the generator and, per resolution (0 = mapping), the fraction that came from finetuned.
    """
    if base.config != finetuned.config:
        raise ValueError(f"base and finetuned configs differ: {base.config} vs {finetuned.config}")
    size = base.config.size
    check_swap_res(swap_res, size)
    coarse, fine = (finetuned, base) if reverse else (base, finetuned)
    state, fractions = swap_state_dicts(coarse.state_dict(), fine.state_dict(), size, swap_res, blend_width)
    blended = copy.deepcopy(coarse)
    blended.load_state_dict(state)

    from_finetuned = {}
    for name, alpha in fractions.items():
        from_finetuned[generator_param_resolution(name, size)] = 1.0 - alpha if reverse else alpha
    return blended, dict(sorted(from_finetuned.items()))
