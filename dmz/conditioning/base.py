"""The conditioning-method interface: how the vector produced by a latent prior reaches the UNet.

A method contributes constructor arguments to the diffusers ``UNet2DConditionModel`` and forward arguments per
batch. Register a new one with :func:`register_conditioning` in its own file and one import line in
``dmz/conditioning/__init__.py``."""

from __future__ import annotations

from typing import ClassVar

import torch

CONDITIONING: dict[str, type["ConditioningMethod"]] = {}


def register_conditioning(name: str):
    def deco(cls):
        cls.name = name
        CONDITIONING[name] = cls
        return cls

    return deco


class ConditioningMethod:
    name: ClassVar[str] = ""
    uses_cross_attention: ClassVar[bool] = False
    uses_time_embedding: ClassVar[bool] = False  # methods that own the class-embedding path can't be combined

    def unet_kwargs(self, cond_dim: int) -> dict:
        """Entries merged into the ``UNet2DConditionModel`` constructor arguments."""
        return {}

    def forward_kwargs(self, cond: torch.Tensor) -> dict:
        """Entries merged into the UNet's forward arguments for a batch with conditioning vector ``cond``."""
        return {}
