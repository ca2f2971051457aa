"""What every z-sampler is made of: the :class:`ZSampler` interface, the registry :data:`ZSAMPLERS` (filled with
:func:`register_zsampler`) and :func:`per_sample`. The package (:mod:`dmz.zsamplers`) and each learned sampler's
file (:mod:`dmz.zsamplers.pixelsnail`) import them from here."""

from __future__ import annotations

from typing import Callable

import torch

from dmz.diffusion import PerSampleRNG
from dmz.run import LoadedRun

ZSAMPLERS: dict[str, Callable[[LoadedRun], "ZSampler"]] = {}


def register_zsampler(name: str):
    def deco(factory):
        ZSAMPLERS[name] = factory
        return factory

    return deco


class ZSampler:
    name = ""

    def sample(self, n: int, rng: PerSampleRNG, device) -> torch.Tensor:
        """Codes (n, code_dim) for the prior's ``code_to_cond``."""
        raise NotImplementedError


def per_sample(rng: PerSampleRNG, draw: Callable[[torch.Generator], torch.Tensor]) -> torch.Tensor:
    """Stack ``draw(generator_i)`` over the samples (the batch-size-independent way to draw anything)."""
    return torch.stack([draw(g) for g in rng.generators])
