"""``concat``: the z embedding concatenated with the timestep embedding instead of added (the release's
``--z_with_t --z_concat``)."""

from .add import AddToTimeEmbedding
from .base import register_conditioning


@register_conditioning("concat")
class ConcatWithTimeEmbedding(AddToTimeEmbedding):
    def unet_kwargs(self, cond_dim):
        return {**super().unet_kwargs(cond_dim), "class_embeddings_concat": True}
