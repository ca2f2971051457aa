"""``cross_attention`` (DMZ, as released): z is a single key/value token of dimension cond_dim, attended to by the
transformer blocks at every attention resolution and the mid block (PAPER.md 1.7).

With a single token the softmax over keys is identically 1, so the block adds the same affine function of z at every
position: functionally an additive embedding. ``model.z_tokens = n > 1`` (beyond the release, off in every preset)
hands z over as n tokens instead (:class:`ZTokens`), so the queries can attend to parts of the code."""

import torch
from torch import nn

from .base import ConditioningMethod, register_conditioning


class ZTokens(nn.Module):
    """The conditioning vector as ``n`` key/value tokens: split into n contiguous chunks (each holds latent_dim / n
    of z's dimensions in every prior's layout: Bernoulli (1-b, b) pairs, one-hot categorical groups, Normal values),
    each chunk projected by one shared Linear(cond_dim / n -> cond_dim) plus a learned position embedding per token.
    The UNet's ``cross_attention_dim`` stays cond_dim."""

    def __init__(self, cond_dim: int, n: int):
        super().__init__()
        if n < 2 or cond_dim % n:
            raise ValueError(f"z_tokens={n} must be >= 2 and divide the conditioning size {cond_dim}")
        self.n = n
        self.proj = nn.Linear(cond_dim // n, cond_dim)
        self.pos = nn.Parameter(torch.randn(n, cond_dim) * 0.02)

    def forward(self, cond: torch.Tensor) -> torch.Tensor:
        """(B, cond_dim) -> (B, n, cond_dim)."""
        return self.proj(cond.unflatten(1, (self.n, -1))) + self.pos


@register_conditioning("cross_attention")
class CrossAttention(ConditioningMethod):
    uses_cross_attention = True

    def unet_kwargs(self, cond_dim):
        return {"cross_attention_dim": cond_dim}

    def forward_kwargs(self, cond):
        return {"encoder_hidden_states": cond[:, None, :]}  # a sequence of length 1
