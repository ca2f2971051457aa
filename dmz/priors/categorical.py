"""``categorical``: ``latent_dim`` groups of K-way one-hot codes through Gumbel-softmax; generation samples uniform
codes. Not released (the eval code has remnants of a VQ/categorical latent, PAPER.md 1.4)."""

from __future__ import annotations

import math

from torch.nn import functional as F

from dmz.encoder import ConvEncoder, gumbel_softmax

from .base import LatentPrior, NoiseSpec, PriorOutput, register_prior


@register_prior("categorical")
class CategoricalLatent(LatentPrior):
    representation_modes = ("soft", "hard", "probs")

    def __init__(self, cfg, channels, resolution):
        super().__init__(cfg, channels, resolution)
        if cfg.categories < 2:
            raise ValueError("model.categories must be >= 2 for the categorical prior")
        self.k = cfg.categories
        self.code_dim = cfg.latent_dim
        self.cond_dim = cfg.latent_dim * self.k
        self.encoder = ConvEncoder(channels, resolution, self.cond_dim, cfg.encoder_channels)

    @property
    def n_class(self) -> int:  # type: ignore[override]
        return self.k

    def noise_spec(self):
        return NoiseSpec((self.code_dim, self.k), "uniform")

    def logits(self, x0):
        return self.encoder(x0).float().view(x0.shape[0], self.code_dim, self.k)

    def forward(self, x0, noise=None):
        logits = self.logits(x0)
        y = gumbel_softmax(logits, self.cfg.tau, hard=self.cfg.estimator == "straight_through", uniform=noise)
        p = logits.softmax(-1)
        kl = (p * (p.clamp_min(1e-12).log() + math.log(self.k))).sum(-1).sum(-1).mean()
        aux = self.cfg.kl_weight * kl if self.cfg.kl_weight > 0 else kl.new_zeros(())
        return PriorOutput(cond=y.flatten(1), aux_loss=aux, stats={"kl_uniform": kl.detach()})

    def encode(self, x0, noise=None):
        return gumbel_softmax(self.logits(x0), self.cfg.tau, hard=True, uniform=noise).argmax(-1)

    def code_to_cond(self, codes):
        return F.one_hot(codes.long(), self.k).float().flatten(1)

    def sample_prior(self, n, rng=None, device=None):
        # argmax of i.i.d. normals is a uniform category
        return self._draw(rng, n, (self.code_dim, self.k), device).argmax(-1)

    def representation(self, x0, mode, noise=None):
        self.check_mode(mode)
        logits = self.logits(x0)
        if mode == "probs":
            return logits.softmax(-1).flatten(1)
        if mode == "hard":
            return self.code_to_cond(self.encode(x0, noise))
        return gumbel_softmax(logits, self.cfg.tau, hard=False, uniform=noise).flatten(1)
