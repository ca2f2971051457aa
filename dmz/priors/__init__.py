"""Latent priors, by name. One file each; adding one = a new file + one import line here."""

from .base import PRIORS, LatentPrior, NoiseSpec, PriorOutput, register_prior
from . import none, bernoulli, normal, categorical  # noqa: E401,F401  (registration)


def build_prior(cfg, channels: int, resolution: int) -> LatentPrior:
    if cfg.prior not in PRIORS:
        raise ValueError(f"unknown prior {cfg.prior!r}; valid: {', '.join(sorted(PRIORS))}")
    return PRIORS[cfg.prior](cfg, channels, resolution)


__all__ = ["PRIORS", "LatentPrior", "NoiseSpec", "PriorOutput", "register_prior", "build_prior"]
