"""``none``: plain DDPM, no encoder (the baseline of every table)."""

from __future__ import annotations

import torch

from .base import LatentPrior, PriorOutput, register_prior


@register_prior("none")
class NoLatent(LatentPrior):
    """No latent. With ``baseline_attention=dummy_token`` the UNet keeps DMZ's cross-attention blocks and attends
    to a constant token (the release's ``--z_via_cross_att False``; same parameter count as DMZ), otherwise it has
    plain self-attention blocks (50.84 M on CIFAR-10)."""

    def __init__(self, cfg, channels, resolution):
        super().__init__(cfg, channels, resolution)
        self.dummy = cfg.baseline_attention == "dummy_token"
        self.cond_dim = 1 if self.dummy else 0

    def _cond(self, n: int, device) -> torch.Tensor | None:
        return torch.ones(n, 1, device=device) if self.dummy else None

    def forward(self, x0, noise=None):
        return PriorOutput(cond=self._cond(x0.shape[0], x0.device), aux_loss=x0.new_zeros(()))

    def encode(self, x0, noise=None):
        return torch.zeros(x0.shape[0], 0, dtype=torch.long, device=x0.device)

    def code_to_cond(self, codes):
        return self._cond(codes.shape[0], codes.device)

    def sample_prior(self, n, rng=None, device=None):
        return torch.zeros(n, 0, dtype=torch.long, device=device)
