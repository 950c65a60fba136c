"""FreezeD / FreezeG: which parameters a fine-tune leaves exactly as the base model had them.

Discriminator, `freeze_d: N` (counted from the image input)
    Our D is rosinality's: convs.0 = fromRGB (1x1 conv at full resolution), convs.j (j >= 1) =
    ResBlock j taking size/2**(j-1) down to half that (conv1 3x3, conv2 3x3 down, skip 1x1 down),
    then the epilogue (minibatch stddev, final_conv at 4x4, final_linear) which always trains.
    Block 0 is fromRGB + ResBlock 1; block k (k >= 1) is ResBlock k+1. `freeze_d: N` freezes
    blocks 0..N-1, i.e. convs.0 .. convs.N. 0 freezes nothing; at most log2(size) - 2.

    NVIDIA stylegan2-ada `--freezed L` counts layers from the input: its first block has 4
    (fromrgb, conv0, conv1, skip), later blocks 3 (conv0, conv1, skip) -- the same convolutions
    as our ResBlocks. So `freeze_d: N` == `--freezed 3N+1` (N >= 1); `--freezed L` freezes
    floor((L-1)/3) of our blocks plus (L-1) mod 3 layers of the next, which we do not split.

    FreezeD's code (Mo et al., StyleGAN1 `--freeze_D --feature_loc K`) instead counts the blocks
    that keep training from the output end: the K last progression blocks (its 4x4 final block
    included) plus the linear layer; fromRGB never trains. Its 4x4 final block is our epilogue,
    so `feature_loc K` == `freeze_d: log2(size) - 1 - K`. At 256x256 its default K=3 is
    `freeze_d: 4`, NVIDIA's usual `--freezed 10` is `freeze_d: 3`.

Generator, `freeze_g: N` (counted from the lowest resolution) and `freeze_mapping`
    Block 0 is the 4x4 block (input, conv1, to_rgb1); block k (k >= 1) is resolution 4*2**k
    (convs.2k-2, convs.2k-1, to_rgbs.k-1). `freeze_g: N` freezes blocks 0..N-1, i.e. every
    synthesis parameter working at resolution <= 2**(N+1); at most log2(size) - 1.
    `freeze_mapping` freezes the mapping network (style.*). FreezeG (Lee, `--finetune_loc L`)
    trains only the L highest-resolution blocks and freezes the mapping too:
    `freeze_g: log2(size) - 1 - L` with `freeze_mapping: true`.
    `freeze_noise` freezes every layer's noise strength (*.noise.weight): fine-tuned toward a
    flat or posterised look, the finest layer's strength grew 200x in 4 kimg and G drew the look's
    texture as per-pixel speckle; the look belongs in the styles and weights.

Frozen parameters get requires_grad=False and are left out of the optimiser, so they have no
Adam state and stay bit-identical; gradients still flow *through* them (to D's input for R1,
to the latents for path length).
"""

from __future__ import annotations

import re

from torch import nn

from styleforge.model.networks import ModelConfig, generator_param_resolution

_D_CONV = re.compile(r"convs\.(\d+)\..+")


def max_freeze_d(config: ModelConfig) -> int:
    return config.log_size - 2


def max_freeze_g(config: ModelConfig) -> int:
    return config.log_size - 1


def frozen_discriminator_names(d: nn.Module, config: ModelConfig, blocks: int) -> set[str]:
    if not 0 <= blocks <= max_freeze_d(config):
        raise ValueError(f"freeze_d must be 0..{max_freeze_d(config)} for a {config.size}x{config.size} "
                         f"discriminator (blocks from the input), got {blocks}")
    return {name for name, _ in d.named_parameters()
            if (m := _D_CONV.fullmatch(name)) and int(m.group(1)) <= blocks}


def frozen_generator_names(g: nn.Module, config: ModelConfig, blocks: int, mapping: bool,
                           noise: bool = False) -> set[str]:
    if not 0 <= blocks <= max_freeze_g(config):
        raise ValueError(f"freeze_g must be 0..{max_freeze_g(config)} for a {config.size}x{config.size} "
                         f"generator (blocks from 4x4 up), got {blocks}")
    top = 2 ** (blocks + 1) if blocks else 0
    frozen = set()
    for name, _ in g.named_parameters():
        res = generator_param_resolution(name)
        if (res == 0 and mapping) or 0 < res <= top or (noise and name.endswith(".noise.weight")):
            frozen.add(name)
    return frozen


def freeze(module: nn.Module, names: set[str]) -> list[nn.Parameter]:
    """Turn off requires_grad for `names`; return the parameters that still train, in order."""
    trainable = []
    for name, param in module.named_parameters():
        param.requires_grad_(name not in names)
        if name not in names:
            trainable.append(param)
    return trainable
