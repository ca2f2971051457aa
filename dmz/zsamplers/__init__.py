"""z-samplers: where the codes come from at generation time (PAPER.md 1.5), and the code models that score them.

``prior`` (the latent's own prior: Bernoulli(0.5), N(0, I), uniform categories), ``dataset`` (codes of random
training images), ``empirical`` (independent per-dimension fit to the training codes,
:class:`~dmz.zsamplers.codemodels.EmpiricalCodes`), ``normal`` (the release's per-dimension Gaussian for continuous
latents, drawn Gaussian rather than the release's uniform) and ``const`` (one fixed code) are registered here;
learned samplers, fitted to a run's codes after training, have a file each in this package and register in the same
registry (:data:`ZSAMPLERS`, with the :class:`ZSampler` interface, in :mod:`dmz.zsamplers.base`):
:mod:`dmz.zsamplers.pixelsnail` (fit, the ``pixelsnail`` sampler, code diagnostics; CLI ``python -m dmz.zsamplers
fit|diagnose``). Not to be confused with :mod:`dmz.priors`, the latent *types*
(bernoulli, normal, ...) a model is trained with. Every sampler draws sample i's randomness from its own generator, so a
sample set does not depend on batch size.

The z-samplers with a likelihood are also code models (:class:`CodeModel`: ``sample(n, rng, device)`` and
``nll_bits(codes)`` from one distribution): ``prior`` for discrete latents (and 0 bits without one), ``empirical`` for
discrete codes, and ``pixelsnail``. The code diagnostics (``bits_per_code``) and the NLL's coding cost of z
(``nll_bpd_z``) score with them (:mod:`dmz.zsamplers.codemodels`).
"""

from __future__ import annotations

import torch

from dmz.run import LoadedRun, encode_split
from dmz.zsamplers import pixelsnail as _pixelsnail  # noqa: F401  (registers ``pixelsnail``; it imports .base and .codemodels only)
from dmz.zsamplers.base import ZSAMPLERS, CodeModel, ZSampler, per_sample, register_zsampler
from dmz.zsamplers.codemodels import EmpiricalCodes, UniformCodes, code_diagnostics

__all__ = ["ZSAMPLERS", "ZSampler", "CodeModel", "register_zsampler", "per_sample", "PriorZSampler",
           "DatasetZSampler", "EmpiricalCodes", "UniformCodes", "NormalZSampler", "ConstZSampler",
           "code_diagnostics", "parse_zsampler", "check_zsampler", "build_zsampler"]


class PriorZSampler(CodeModel):
    """The latent's own prior (:meth:`dmz.priors.base.LatentPrior.sample_prior`). Its bits: those of
    :class:`~dmz.zsamplers.codemodels.UniformCodes` (|z| for Bernoulli(0.5), |z| log2 K for uniform categories), 0
    without a latent (prior=none); a continuous prior has no finite coding cost (ValueError)."""

    name = "prior"

    def __init__(self, run: LoadedRun):
        self.latent = run.model.latent
        self.uniform = (UniformCodes(self.latent.code_dim, int(self.latent.n_class))
                        if self.latent.discrete and self.latent.code_dim > 0 else None)

    def sample(self, n, rng, device):
        return self.latent.sample_prior(n, rng=rng, device=device)

    def nll_bits(self, codes):
        if self.latent.code_dim == 0:
            return torch.zeros(codes.shape[0], dtype=torch.float64)
        if self.uniform is None:
            raise ValueError(f"prior={self.latent.name} has a continuous z: a density, not a probability, so its "
                             "codes have no finite coding cost in bits")
        return self.uniform.nll_bits(codes)


class DatasetZSampler(ZSampler):
    """Codes of random training images (the release's ``dataset`` sampler); ``limit`` = its ``datasetN``."""

    name = "dataset"

    def __init__(self, run: LoadedRun, limit: int | None = None):
        self.codes = encode_split(run, "train")[0]
        if limit:
            self.codes = self.codes[:limit]

    def sample(self, n, rng, device):
        idx = per_sample(rng, lambda g: torch.randint(len(self.codes), (), generator=g))
        return self.codes[idx].to(device)


class NormalZSampler(ZSampler):
    """The release's ``normal`` sampler for continuous latents: per-dimension mean and std of the training latents.

    The release drew ``mean + std * torch.rand(...)``, uniform noise on [0, 1) (PAPER.md 1.5, probably a bug: it
    never goes below the mean); we draw Gaussian noise, ``mean + std * N(0, 1)``. ``release_uniform=1`` reproduces
    the release's draw instead."""

    name = "normal"

    def __init__(self, run: LoadedRun, release_uniform: float = 0.0):
        if run.model.latent.discrete:
            raise ValueError(f"z-sampler 'normal' needs a continuous latent (prior=normal); run {run.path} has "
                             f"prior={run.model.latent.name}: use 'empirical' for per-dimension frequencies")
        codes = encode_split(run, "train")[0].float()
        self.mean, self.std = codes.mean(0), codes.std(0)
        self.uniform = bool(release_uniform)

    def sample(self, n, rng, device):
        draw = (lambda g: torch.rand(self.mean.shape, generator=g)) if self.uniform else \
            (lambda g: torch.randn(self.mean.shape, generator=g))
        return (self.mean + self.std * per_sample(rng, draw)).to(device)


class ConstZSampler(ZSampler):
    """The release's ``const`` sampler: one fixed code for every sample. Ours is the code of training image ``index``
    (default 0, in the dataset's fixed order), so all the diversity comes from x_T and the denoising noise."""

    name = "const"

    def __init__(self, run: LoadedRun, index: float = 0):
        codes = encode_split(run, "train")[0]
        i = int(index)
        if not 0 <= i < len(codes):
            raise ValueError(f"z-sampler const: index {i} outside the {len(codes)} training images")
        self.code = codes[i]

    def sample(self, n, rng, device):
        return self.code.expand(n, *self.code.shape).clone().to(device)


register_zsampler("prior")(PriorZSampler)
register_zsampler("dataset")(DatasetZSampler)
register_zsampler("empirical")(EmpiricalCodes.from_run)  # a classmethod: the spec takes no options
register_zsampler("normal")(NormalZSampler)
register_zsampler("const")(ConstZSampler)


def parse_zsampler(spec: str) -> tuple[str, dict[str, float]]:
    """``"pixelsnail:temperature=0.8"`` -> ``("pixelsnail", {"temperature": 0.8})``; a bare name has no options.

    The whole spec string is the sampler's name in result rows, so each temperature is its own row."""
    name, _, opts = str(spec).partition(":")
    kwargs: dict[str, float] = {}
    for item in filter(None, (o.strip() for o in opts.split(","))):
        key, eq, value = item.partition("=")
        try:
            kwargs[key.strip()] = float(value)
        except ValueError:
            eq = ""
        if not eq or not key.strip():
            raise ValueError(f"bad z-sampler option {item!r} in {spec!r}; write NAME:KEY=NUMBER[,KEY=NUMBER], "
                             "e.g. pixelsnail:temperature=0.8")
    return name.strip(), kwargs


def check_zsampler(spec: str) -> tuple[str, dict[str, float]]:
    """``(name, options)`` of ``spec``; ValueError for an unknown sampler name, malformed options or options the
    sampler does not take."""
    import inspect

    name, kwargs = parse_zsampler(spec)
    if name not in ZSAMPLERS:
        raise ValueError(f"unknown z-sampler {name!r}; valid: {', '.join(sorted(ZSAMPLERS))}")
    params = inspect.signature(ZSAMPLERS[name]).parameters
    takes = [p for p in list(params)[1:] if params[p].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
    bad = [k for k in kwargs if k not in takes]
    if bad:
        raise ValueError(f"z-sampler {name!r} has no option {bad[0]!r}; "
                         + (f"its options: {', '.join(takes)}" if takes else "it takes no options"))
    return name, kwargs


def build_zsampler(spec: str, run: LoadedRun) -> ZSampler:
    """The z-sampler named by ``spec`` (``NAME`` or ``NAME:KEY=VALUE,...``, see :func:`parse_zsampler`)."""
    name, kwargs = check_zsampler(spec)
    if name != "prior" and run.model.latent.code_dim == 0:
        raise ValueError(f"run {run.path} has no latent (prior=none): only --z prior applies")
    return ZSAMPLERS[name](run, **kwargs)
