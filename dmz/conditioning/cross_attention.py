"""``cross_attention`` (DMZ, as released): z is a single key/value token of dimension cond_dim, attended to by the
transformer blocks at every attention resolution and the mid block (PAPER.md 1.7).

With a single token the softmax over keys is identically 1, so the block adds the same affine function of z at every
position: functionally an additive embedding (``train.cross_attention_shortcut``, on by default, computes it that way:
:class:`SingleTokenCrossAttention`). ``model.z_tokens = n > 1`` (beyond the release, off in every preset)
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

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Re-draw this module's own parameter (the position embedding) as built; ``proj`` resets itself
        (``train.seeding=crn`` re-draws each module from its own generator: :func:`dmz.seeding.init_by_name`)."""
        self.pos.copy_(torch.randn(self.pos.shape) * 0.02)

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


class SingleTokenCrossAttention:
    """A diffusers attention processor for cross-attention to a **single** key/value token, exact and cheaper.

    With one key the softmax weight is exactly 1, so scaled-dot-product attention returns the value projection of
    the token at every query position: the query and key projections and the attention kernel do no work that
    reaches the output. This processor computes ``to_out(to_v(token))`` broadcast over the positions, with the
    output projection applied to the same (B, positions, C) tensor diffusers' processor gives it, so the forward
    pass is bit-identical to ``AttnProcessor2_0`` (tested in fp32 on CPU). In training only the gradients of the
    dead parameters differ (``to_q``, ``to_k`` and the block's ``norm2``, which only feeds the queries): diffusers
    gives them float noise (~1e-6, PAPER.md 1.7) that Adam amplifies into a random walk with no effect on any
    output; :func:`use_single_token_cross_attention` freezes them instead.
    A layer it does not cover (a mask, group/spatial norm, a residual connection, 4-D input) runs diffusers' own
    processor; more than one token is an error, since the frozen projections would then matter."""

    def __init__(self):
        from diffusers.models.attention_processor import AttnProcessor2_0

        self.fallback = AttnProcessor2_0()

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None,
                 *args, **kwargs):
        if (attention_mask is not None or attn.spatial_norm is not None or attn.group_norm is not None
                or attn.residual_connection or hidden_states.ndim != 3 or args or kwargs):
            return self.fallback(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        if encoder_hidden_states is None or encoder_hidden_states.shape[1] != 1:
            got = "no" if encoder_hidden_states is None else f"{encoder_hidden_states.shape[1]}"
            raise RuntimeError(f"single-token cross-attention got {got} key/value tokens; build the model with "
                               "train.cross_attention_shortcut=false for several tokens")
        if attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        b, n, _ = hidden_states.shape
        value = attn.to_v(encoder_hidden_states)  # (B, 1, C): the attention output at every position
        out = value.expand(b, n, value.shape[-1]).contiguous()
        out = attn.to_out[1](attn.to_out[0](out))
        return out / attn.rescale_output_factor


def use_single_token_cross_attention(unet: nn.Module) -> int:
    """Give the cross-attention layer (``attn2``) of every diffusers transformer block of ``unet``
    :class:`SingleTokenCrossAttention` and freeze what then no longer reaches the output: its ``to_q``/``to_k`` and
    the block's ``norm2`` (the LayerNorm whose output only makes the queries); returns how many layers. Only for
    models whose cross-attention always sees one token (the released single z token, or the DDPM baseline's
    constant dummy token)."""
    n = 0
    for block in unet.modules():
        attn = getattr(block, "attn2", None)
        if attn is None or not hasattr(attn, "set_processor"):
            continue
        attn.set_processor(SingleTokenCrossAttention())
        for dead in (attn.to_q, attn.to_k, getattr(block, "norm2", None)):
            if dead is not None:
                dead.requires_grad_(False)
        n += 1
    return n
