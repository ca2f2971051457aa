"""``add``: a Linear(cond_dim -> 4*C0) embedding of z added to the timestep embedding, so z modulates every ResBlock
through scale-shift GroupNorm (AdaGN, as DiffAE/InfoDiffusion; the release's ``--z_with_t``)."""

from .base import ConditioningMethod, register_conditioning


@register_conditioning("add")
class AddToTimeEmbedding(ConditioningMethod):
    uses_time_embedding = True

    def unet_kwargs(self, cond_dim):
        return {"class_embed_type": "simple_projection", "projection_class_embeddings_input_dim": cond_dim}

    def forward_kwargs(self, cond):
        return {"class_labels": cond}
