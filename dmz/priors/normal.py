"""``normal``: a Gaussian latent with the reparameterisation trick and an optional KL weight; generation samples
N(0, I). Not released: the paper's latent-type ablation compares it with Bernoulli (PAPER.md 1.4, 5.9)."""

from __future__ import annotations

import torch

from dmz.encoder import ConvEncoder

from .base import LatentPrior, NoiseSpec, PriorOutput, register_prior


@register_prior("normal")
class NormalLatent(LatentPrior):
    discrete = False
    representation_modes = ("mean", "sample")

    def __init__(self, cfg, channels, resolution):
        super().__init__(cfg, channels, resolution)
        self.code_dim = self.cond_dim = cfg.latent_dim
        self.encoder = ConvEncoder(channels, resolution, 2 * cfg.latent_dim, cfg.encoder_channels)

    def noise_spec(self):
        return NoiseSpec((self.code_dim,), "normal")

    def params(self, x0):
        mu, logvar = self.encoder(x0).float().chunk(2, dim=1)
        return mu, logvar.clamp(-30.0, 20.0)

    def _sample(self, mu, logvar, noise):
        eps = torch.randn_like(mu) if noise is None else noise
        return mu + (0.5 * logvar).exp() * eps

    def forward(self, x0, noise=None):
        mu, logvar = self.params(x0)
        z = self._sample(mu, logvar, noise)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(1).mean()
        aux = self.cfg.kl_weight * kl if self.cfg.kl_weight > 0 else kl.new_zeros(())
        return PriorOutput(cond=z, aux_loss=aux, stats={"kl": kl.detach()})

    def encode(self, x0, noise=None):
        return self._sample(*self.params(x0), noise)

    def code_to_cond(self, codes):
        return codes.float()

    def sample_prior(self, n, rng=None, device=None):
        return self._draw(rng, n, (self.code_dim,), device)

    def representation(self, x0, mode, noise=None):
        self.check_mode(mode)
        return self.params(x0)[0] if mode == "mean" else self.encode(x0, noise)
