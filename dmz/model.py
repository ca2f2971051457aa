"""``DMZModel``: a latent prior (with its encoder) and the UNet, one ``nn.Module`` so EMA, AMP and the optimizer
cover both, as released; :func:`build_model` builds it from a config and :func:`build_diffusion` the diffusion beside
it (training, sampling, the applications and evaluation all take both from here)."""

from __future__ import annotations

import torch
from torch import nn

from dmz.backbone import build_unet
from dmz.conditioning import build_conditioning
from dmz.conditioning.cross_attention import ZTokens, use_single_token_cross_attention
from dmz.data import dataset_info
from dmz.diffusion import create_diffusion
from dmz.priors import build_prior


#: state-dict prefixes renamed since checkpoints were first written: the latent type's module (its encoder q(z|x), its
#: prior p(z), how a code becomes the UNet's condition) was ``prior``, the config field's name; it is ``latent`` now
LEGACY_STATE_PREFIXES = {"prior.": "latent."}


def _rename_legacy_keys(module, state_dict, prefix, *_args) -> None:
    """load_state_dict pre-hook: a checkpoint of an older version loads unchanged (its keys are renamed in place)."""
    for key in [k for k in state_dict if k.startswith(prefix)]:
        for old, new in LEGACY_STATE_PREFIXES.items():
            if key.startswith(prefix + old):
                state_dict[prefix + new + key[len(prefix + old):]] = state_dict.pop(key)


class DMZModel(nn.Module):
    """The DMZ model: ``latent`` (the latent type: its encoder ``latent.encoder`` and ``latent.encode(x)`` for q(z|x),
    its prior p(z), ``latent.code_to_cond``), the conditioning ``methods`` and the diffusion ``unet``."""

    def __init__(self, cfg, channels: int, resolution: int):
        """:param cfg: a :class:`dmz.config.ModelConfig`."""
        super().__init__()
        self.cfg = cfg
        self.channels, self.resolution = channels, resolution
        self.latent = build_prior(cfg, channels, resolution)
        self.register_load_state_dict_pre_hook(_rename_legacy_keys)
        self.methods = build_conditioning(cfg.conditioning) if self.latent.cond_dim > 0 else []
        self.unet = build_unet(cfg, channels, resolution, self.latent.cond_dim, self.methods)
        n_tokens = getattr(cfg, "z_tokens", 1)
        self.z_tokens = ZTokens(self.latent.cond_dim, n_tokens) if n_tokens > 1 and self.methods else None

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """The denoiser: ``model(x_t, t, cond=...)`` -> (B, 2C, H, W) (eps and variance interpolation)."""
        kwargs: dict = {"encoder_hidden_states": None}
        if self.methods:
            if cond is None:
                raise ValueError(f"prior {self.latent.name!r} needs a conditioning vector (cond=...)")
            cond = cond.to(x_t.dtype) if torch.is_floating_point(x_t) else cond
            for m in self.methods:
                kwargs.update(m.forward_kwargs(cond))
            if self.z_tokens is not None:  # z as several key/value tokens instead of the released one
                kwargs["encoder_hidden_states"] = self.z_tokens(cond)
        return self.unet(x_t, t, return_dict=False, **kwargs)[0]

    def single_token_cross_attention(self) -> int:
        """Cross-attention to the single z token the exact cheap way (:class:`SingleTokenCrossAttention`) when the
        model has cross-attention and hands z over as one token; returns how many layers changed (0 otherwise)."""
        if self.z_tokens is not None or not any(m.uses_cross_attention for m in self.methods):
            return 0
        return use_single_token_cross_attention(self.unet)

    def param_counts(self) -> dict[str, int]:
        unet = sum(p.numel() for p in self.unet.parameters())
        enc = sum(p.numel() for p in self.latent.parameters())
        tok = sum(p.numel() for p in self.z_tokens.parameters()) if self.z_tokens is not None else 0
        out = {"params_unet": unet, "params_encoder": enc, "params_total": unet + enc + tok}
        if tok:
            out["params_z_tokens"] = tok
        return out


def build_model(cfg) -> DMZModel:
    """Build from a full :class:`dmz.config.Config` (the dataset gives channels and resolution)."""
    info = dataset_info(cfg.data.dataset, resolution=cfg.data.resolution)
    model = DMZModel(cfg.model, info.channels, cfg.data.resolution or info.resolution)
    if cfg.train.cross_attention_shortcut:
        model.single_token_cross_attention()
    return model


def build_diffusion(cfg, timestep_respacing=None):
    """The run's Gaussian diffusion from a full :class:`dmz.config.Config`: its training steps when
    ``timestep_respacing`` is None, else respaced (``"10"``, ``"ddim10"``, ...) for sampling."""
    d = cfg.diffusion
    return create_diffusion(noise_schedule=d.noise_schedule, steps=d.diffusion_steps, learn_sigma=cfg.model.learn_sigma,
                            sigma_small=d.sigma_small, loss=d.loss, input_perturbation=d.input_perturbation,
                            timestep_respacing=timestep_respacing)
