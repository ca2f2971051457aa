"""The latent-prior interface. A prior owns how z is produced in training, what the UNet receives, and how z is
sampled at generation. Register a new prior with :func:`register_prior` in its own file and one import line in
``dmz/priors/__init__.py``; nothing else changes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import torch
from torch import nn

if TYPE_CHECKING:
    from dmz.diffusion import PerSampleRNG

PRIORS: dict[str, type["LatentPrior"]] = {}


def register_prior(name: str):
    def deco(cls):
        cls.name = name
        PRIORS[name] = cls
        return cls

    return deco


@dataclass
class PriorOutput:
    cond: torch.Tensor | None  # what the UNet receives, (B, cond_dim), or None for plain DDPM
    aux_loss: torch.Tensor  # scalar added to the diffusion loss (0 for the released DMZ)
    stats: dict[str, torch.Tensor] = field(default_factory=dict)  # scalars logged to metrics.jsonl (kept on the device)


@dataclass(frozen=True)
class NoiseSpec:
    """The random numbers one training example consumes: drawn by the trainer for the global batch, so DDP ranks
    and a single process on the same global batch see the same numbers."""

    shape: tuple[int, ...]
    kind: str  # "uniform" | "normal"

    def draw(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Noise for ``n`` examples, (n, *shape), from ``generator`` (CPU)."""
        fn = torch.rand if self.kind == "uniform" else torch.randn
        return fn(n, *self.shape, generator=generator)


class LatentPrior(nn.Module):
    """Base class. ``codes`` are what z-samplers produce and store: LongTensor (B, code_dim) for discrete latents,
    float (B, code_dim) for continuous ones."""

    name: ClassVar[str] = ""
    discrete: ClassVar[bool] = True
    n_class: ClassVar[int] = 2  # token alphabet of discrete codes (PixelSNAIL's n_class)
    representation_modes: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg, channels: int, resolution: int):
        """:param cfg: the run's ``dmz.config.ModelConfig`` (not imported: the config validates ``prior`` against
        this package's registry, so the package stays below it)."""
        super().__init__()
        self.cfg = cfg
        self.cond_dim = 0
        self.code_dim = 0

    def noise_spec(self) -> NoiseSpec | None:
        return None

    def forward(self, x0: torch.Tensor, noise: torch.Tensor | None = None) -> PriorOutput:  # training path
        raise NotImplementedError

    def encode(self, x0: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Codes of images: a sample from q(z|x) (hard bits for Bernoulli, as the release's sampler takes them)."""
        raise NotImplementedError

    def code_to_cond(self, codes: torch.Tensor) -> torch.Tensor | None:
        raise NotImplementedError

    def sample_prior(self, n: int, rng: "PerSampleRNG | None" = None, device=None) -> torch.Tensor:
        """Codes from the prior itself (Bernoulli(0.5), N(0, I), uniform categories)."""
        raise NotImplementedError

    def representation(self, x0: torch.Tensor, mode: str, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Features for downstream probes."""
        raise NotImplementedError

    def check_mode(self, mode: str) -> None:
        if mode not in self.representation_modes:
            raise ValueError(f"prior {self.name!r} has no representation mode {mode!r}; "
                             f"valid: {', '.join(self.representation_modes) or '(none)'}")

    @staticmethod
    def _draw(rng, n: int, shape: tuple[int, ...], device) -> torch.Tensor:
        """Standard normal numbers: per-sample generators when given (batch-size independent), else global RNG."""
        if rng is not None:
            if len(rng) != n:
                raise ValueError(f"rng holds {len(rng)} seeds but {n} samples were asked for")
            return rng.randn(*shape).to(device)
        return torch.randn(n, *shape, device=device)
