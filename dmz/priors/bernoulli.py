"""``bernoulli``: DMZ's binary latent (PAPER.md 1.4).

Training feeds the UNet the relaxed Gumbel-softmax sample at tau=1 (released; ``estimator=straight_through`` is the
named alternative); codes at evaluation are hard bits sampled from q(z|x); generation samples Bernoulli(0.5). The
UNet receives each bit b as the pair (1-b, b), interleaved: a 2|z|-dimensional vector.
"""

from __future__ import annotations

import torch

from dmz.encoder import ConvEncoder, gumbel_softmax

from .base import LatentPrior, NoiseSpec, PriorOutput, register_prior


@register_prior("bernoulli")
class BernoulliLatent(LatentPrior):
    representation_modes = ("soft", "hard", "probs")

    def __init__(self, cfg, channels, resolution):
        super().__init__(cfg, channels, resolution)
        self.code_dim = cfg.latent_dim
        self.cond_dim = 2 * cfg.latent_dim
        self.encoder = ConvEncoder(channels, resolution, 2 * cfg.latent_dim, cfg.encoder_channels)

    def noise_spec(self):
        return NoiseSpec((self.code_dim, 2), "uniform")

    def logits(self, x0: torch.Tensor) -> torch.Tensor:
        return self.encoder(x0).float().view(x0.shape[0], self.code_dim, 2)

    def forward(self, x0, noise=None):
        logits = self.logits(x0)
        y = gumbel_softmax(logits, self.cfg.tau, hard=self.cfg.estimator == "straight_through", uniform=noise)
        probs = logits.softmax(-1)[..., 1]
        aux = x0.new_zeros((), dtype=torch.float32)
        if self.cfg.prior_matching > 0:
            aux = self.cfg.prior_matching * prior_matching_penalty(probs, y[..., 1])
        if self.cfg.prior_confidence > 0:
            aux = aux + self.cfg.prior_confidence * _entropy_bits(probs).mean()
        if self.cfg.prior_mmd > 0:
            u = noise if noise is not None else torch.rand(logits.shape, device=logits.device)
            aux = aux + self.cfg.prior_mmd * prior_mmd_penalty(y[..., 1], (u[..., 0] < 0.5).to(y.dtype))
        with torch.no_grad():
            marg = probs.mean(0)
            stats = {"bit_marginal_dev": (marg - 0.5).abs().mean(), "bit_entropy": _entropy_bits(probs).mean()}
        return PriorOutput(cond=y.flatten(1), aux_loss=aux, stats=stats)

    def encode(self, x0, noise=None):
        y = gumbel_softmax(self.logits(x0), self.cfg.tau, hard=True, uniform=noise)
        return y[..., 1].round().long()

    def code_to_cond(self, codes):
        b = codes.float()
        return torch.stack([1.0 - b, b], dim=-1).flatten(1)

    def sample_prior(self, n, rng=None, device=None):
        return (self._draw(rng, n, (self.code_dim,), device) > 0).long()

    def representation(self, x0, mode, noise=None):
        self.check_mode(mode)
        logits = self.logits(x0)
        if mode == "probs":
            return logits.softmax(-1)[..., 1]
        if mode == "hard":
            return self.code_to_cond(self.encode(x0, noise))[:, 1::2]
        # released features: the soft relaxed sample (with Gumbel noise), both halves of each pair
        return gumbel_softmax(logits, self.cfg.tau, hard=False, uniform=noise).flatten(1)


def _entropy_bits(p: torch.Tensor) -> torch.Tensor:
    p = p.clamp(1e-6, 1 - 1e-6)
    return -(p * p.log2() + (1 - p) * (1 - p).log2())


# ``prior_confidence`` (beyond the paper): weight x the mean per-bit entropy H(q(b|x)) in bits, in [0, 1]. With
# ``prior_matching`` the pair approximates maximising I(x; z) = H(aggregate) - E_x H(q(z|x)): the matching term
# alone is also met by an encoder that outputs P(b=1|x) = 0.5 for every image (fair coins, no information); the
# confidence term makes that cost the most.


def prior_matching_penalty(probs: torch.Tensor, soft_bits: torch.Tensor) -> torch.Tensor:
    """Beyond the paper: pull the aggregate posterior towards Bernoulli(0.5)^|z|.

    Two terms on the batch: squared deviation of each bit's marginal P(b=1) from 0.5 (scaled by 4 so a constant bit
    costs 1), and the mean squared off-diagonal correlation of the relaxed bits (independence).
    """
    marg = probs.mean(0)
    marginal = 4.0 * ((marg - 0.5) ** 2).mean()
    if soft_bits.shape[0] < 2 or soft_bits.shape[1] < 2:
        return marginal
    c = soft_bits - soft_bits.mean(0, keepdim=True)
    cov = c.T @ c / (soft_bits.shape[0] - 1)
    std = cov.diagonal().clamp_min(1e-6).sqrt()
    corr = cov / (std[:, None] * std[None, :])
    off = corr - torch.diag(corr.diagonal())
    d = corr.shape[0]
    return marginal + (off ** 2).sum() / (d * (d - 1))


#: bandwidths of the code kernel, as fractions of |z| (several scales: a few bits apart up to half the code)
MMD_BANDWIDTHS = (0.05, 0.1, 0.25, 0.5)


def code_kernel(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """k(a, b) = sum over bandwidths h of exp(-|a - b|_1 / (h |z|)) for codes in [0, 1]^|z| (on hard codes the L1
    distance is the Hamming distance). Each term is a product over bits of a positive-definite kernel on {0, 1} with a
    full-rank Gram matrix, so on hard codes the kernel is characteristic: MMD = 0 only when the two code
    distributions are equal, in every order of dependence between bits, not only in marginals and pairs."""
    d = torch.cdist(a.float(), b.float(), p=1) / a.shape[1]
    return sum(torch.exp(-d / h) for h in MMD_BANDWIDTHS)


def prior_mmd_penalty(soft_bits: torch.Tensor, prior_bits: torch.Tensor) -> torch.Tensor:
    """Beyond the paper (``model.prior_mmd``): MMD^2 between the batch's relaxed codes and as many Bernoulli(0.5)
    codes, with :func:`code_kernel`. ``prior_bits[j]`` come from example j's own Gumbel noise (its first uniform
    per bit, < 0.5), so they are fresh fair coins and DDP ranks share them; the cross term leaves out i = j, where a
    code and its reference share noise, so the estimate is the unbiased one over independent pairs."""
    n = soft_bits.shape[0]
    if n < 2:
        return soft_bits.new_zeros(())
    off = ~torch.eye(n, dtype=torch.bool, device=soft_bits.device)
    kxx = code_kernel(soft_bits, soft_bits)[off].mean()
    kyy = code_kernel(prior_bits, prior_bits)[off].mean()
    kxy = code_kernel(soft_bits, prior_bits)[off].mean()
    return kxx + kyy - 2 * kxy
