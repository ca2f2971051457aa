"""The UNet: diffusers ``UNet2DConditionModel`` configured like the release (PAPER.md 1.6-1.8).

Attention levels get ``CrossAttn*Block2D`` (transformer blocks: self-attention, cross-attention to z, GEGLU FF) when a
conditioning method uses cross-attention and the level is in ``cross_attention_levels``; other attention levels get
plain ``Attn*Block2D`` self-attention. diffusers runs attention through ``scaled_dot_product_attention``.
"""

from __future__ import annotations

from typing import Sequence

from diffusers import UNet2DConditionModel

from dmz.conditioning import ConditioningMethod


def unet_kwargs(cfg, channels: int, resolution: int, cond_dim: int,
                methods: Sequence[ConditioningMethod]) -> dict:
    """Constructor arguments of the diffusers UNet for a model config (pure; handy for inspection and tests)."""
    cross = any(m.uses_cross_attention for m in methods)
    ca_levels = set(cfg.attention_levels if cfg.cross_attention_levels is None else cfg.cross_attention_levels)
    levels = range(len(cfg.channel_mult))

    def block(level: int, kind: str) -> str:
        if level in cfg.attention_levels:
            return f"CrossAttn{kind}Block2D" if cross and level in ca_levels else f"Attn{kind}Block2D"
        return f"{kind}Block2D"

    kw = dict(
        sample_size=resolution,
        in_channels=channels,
        out_channels=2 * channels if cfg.learn_sigma else channels,
        down_block_types=tuple(block(i, "Down") for i in levels),
        up_block_types=tuple(block(i, "Up") for i in reversed(levels)),
        block_out_channels=tuple(cfg.base_channels * m for m in cfg.channel_mult),
        layers_per_block=cfg.layers_per_block,
        attention_head_dim=cfg.attention_head_dim,
        resnet_time_scale_shift=cfg.time_scale_shift,
        dropout=cfg.dropout,
        norm_num_groups=min(cfg.norm_groups, cfg.base_channels),
        mid_block_type="UNetMidBlock2DCrossAttn" if cross else "UNetMidBlock2D",
    )
    if cross:
        kw["cross_attention_dim"] = cond_dim
    for m in methods:
        kw.update(m.unet_kwargs(cond_dim))
    return kw


def build_unet(cfg, channels: int, resolution: int, cond_dim: int,
               methods: Sequence[ConditioningMethod]) -> UNet2DConditionModel:
    return UNet2DConditionModel(**unet_kwargs(cfg, channels, resolution, cond_dim, methods))
