"""What every z-sampler is made of: the :class:`ZSampler` interface, the :class:`CodeModel` interface of the
z-samplers that also score codes, the registry :data:`ZSAMPLERS` (filled with :func:`register_zsampler`) and
:func:`per_sample`. The package (:mod:`dmz.zsamplers`), the code models (:mod:`dmz.zsamplers.codemodels`) and each
learned sampler's file (:mod:`dmz.zsamplers.pixelsnail`) import them from here."""

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
        """Codes (n, code_dim) for the prior's ``code_to_cond``; sample i's randomness from ``rng.generators[i]``."""
        raise NotImplementedError


class CodeModel(ZSampler):
    """A distribution over discrete codes that both samples and scores: ``sample(n, rng, device)`` (the z-sampler
    interface) draws codes and ``nll_bits(codes)`` gives each code's coding cost, -log2 of its probability under the
    same distribution. The uniform prior (:class:`dmz.zsamplers.codemodels.UniformCodes`, and the ``prior``
    z-sampler), the ``empirical`` fit (:class:`dmz.zsamplers.codemodels.EmpiricalCodes`) and the fitted PixelSNAIL
    (:class:`dmz.zsamplers.pixelsnail.PixelSNAILZSampler`) implement it; code diagnostics and the NLL's coding cost
    of z take them."""

    def nll_bits(self, codes: torch.Tensor) -> torch.Tensor:
        """Bits of each code (N, L) -> (N,) float64 on the CPU."""
        raise NotImplementedError


def per_sample(rng: PerSampleRNG, draw: Callable[[torch.Generator], torch.Tensor]) -> torch.Tensor:
    """Stack ``draw(generator_i)`` over the samples (the batch-size-independent way to draw anything)."""
    return torch.stack([draw(g) for g in rng.generators])
