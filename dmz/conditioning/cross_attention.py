"""``cross_attention`` (DMZ, as released): z is a single key/value token of dimension cond_dim, attended to by the
transformer blocks at every attention resolution and the mid block (PAPER.md 1.7)."""

from .base import ConditioningMethod, register_conditioning


@register_conditioning("cross_attention")
class CrossAttention(ConditioningMethod):
    uses_cross_attention = True

    def unet_kwargs(self, cond_dim):
        return {"cross_attention_dim": cond_dim}

    def forward_kwargs(self, cond):
        return {"encoder_hidden_states": cond[:, None, :]}  # a sequence of length 1
