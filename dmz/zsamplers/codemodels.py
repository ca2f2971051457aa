"""The built-in code models: distributions over a run's codes that both sample and score (:class:`CodeModel`).

* :class:`UniformCodes`: the discrete priors' own distribution, i.i.d. Bernoulli(0.5) bits or uniform categories,
  |z| log2 K bits per code.
* :class:`EmpiricalCodes`: the ``empirical`` z-sampler, an independent per-position fit to the training codes. The
  same object draws the ``empirical`` FID rows' codes and scores the ``empirical`` ``bits_per_code`` rows, so the two
  come from one distribution.

The learned one, the fitted PixelSNAIL, is :class:`dmz.zsamplers.pixelsnail.PixelSNAILZSampler`.
:func:`code_diagnostics` summarises a code set and scores held-out codes under a dict of code models; :func:`as_codes`
validates codes for all of them.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from dmz.run import LoadedRun, encode_split
from dmz.zsamplers.base import CodeModel, per_sample

__all__ = ["as_codes", "UniformCodes", "EmpiricalCodes", "code_diagnostics"]


def as_codes(codes: Any, *, n_class: int | None = None, L: int | None = None, name: str = "codes") -> torch.Tensor:
    """Validate and convert (N, L) codes (LongTensor / bool / 0-1 float / numpy) to a LongTensor on their device."""
    if not isinstance(codes, torch.Tensor):
        codes = torch.as_tensor(np.asarray(codes))
    if codes.dim() != 2:
        raise ValueError(f"{name} must have shape (N, L); got {tuple(codes.shape)}")
    if codes.dtype == torch.bool:
        codes = codes.long()
    elif codes.is_floating_point():
        rounded = codes.round()
        if codes.numel() and not torch.equal(rounded, codes):
            raise ValueError(f"{name} must hold integer token values; got non-integer floats (binarise first)")
        codes = rounded.long()
    else:
        codes = codes.long()
    if L is not None and codes.shape[1] != L:
        raise ValueError(f"{name} have length {codes.shape[1]}, expected L={L}")
    if codes.numel():
        lo, hi = int(codes.min()), int(codes.max())
        if lo < 0 or (n_class is not None and hi >= n_class):
            raise ValueError(f"{name} values must lie in [0, {n_class}); got min {lo}, max {hi}")
    return codes


class UniformCodes(CodeModel):
    """i.i.d. uniform tokens over ``n_class`` K classes at each of L positions: Bernoulli(0.5) bits for K = 2 (DMZ's
    default prior), uniform categories otherwise; exactly L log2 K bits per code.

    ``sample`` draws as the discrete priors do (one standard normal per position, > 0, for K = 2; the argmax of K
    standard normals per position otherwise), sample i from ``rng.generators[i]``."""

    name = "uniform"

    def __init__(self, L: int, n_class: int = 2):
        if int(L) < 1:
            raise ValueError(f"L must be >= 1; got {L}")
        if int(n_class) < 2:
            raise ValueError(f"n_class must be >= 2; got {n_class}")
        self.L, self.n_class = int(L), int(n_class)

    def sample(self, n, rng, device):
        if len(rng) != n:
            raise ValueError(f"rng holds {len(rng)} seeds but {n} samples were asked for")
        if self.n_class == 2:
            return (rng.randn(self.L).to(device) > 0).long()
        return rng.randn(self.L, self.n_class).to(device).argmax(-1)

    def nll_bits(self, codes):
        codes = as_codes(codes, n_class=self.n_class, L=self.L)
        return torch.full((codes.shape[0],), self.L * math.log2(self.n_class), dtype=torch.float64)


class EmpiricalCodes(CodeModel):
    """Independent per-position fit to the training codes: the ``empirical`` z-sampler and code model.

    Discrete codes (``n_class`` = K; Bernoulli codes are K = 2): the category frequencies of each position over the
    training codes, clamped at ``EPS`` = 1e-6. ``sample`` draws position l of sample i by inverse CDF of
    ``probs[l]`` (those frequencies in float32, (L, K)) at one float32 uniform from ``rng.generators[i]`` (the
    ``empirical`` FIDs' codes since the sampler exists; unchanged bit for bit). ``nll_bits`` scores with
    :meth:`distribution`, the same clamped frequencies in float64, renormalised, so the bits are those of the codes
    it draws: the inverse CDF of the unrenormalised frequencies differs from the renormalised distribution by less
    than (K - 1) * EPS in total variation per position (the clamped mass), plus float32 rounding. (Before the two
    were one model, ``bits_per_code`` used its own fit clamped at 1e-4: the ``empirical`` bits differ from those
    where a frequency was below 1e-4.)

    Continuous codes (``n_class=None``, prior=normal): the per-dimension mean and std, drawn Gaussian (the
    release's ``normal`` sampler drew *uniform* noise, PAPER.md 1.5; see the ``normal`` z-sampler); no finite
    coding cost, so ``nll_bits`` refuses."""

    name = "empirical"
    EPS = 1e-6

    def __init__(self, codes: Any, n_class: int | None):
        if n_class is None:
            codes = torch.as_tensor(codes).float()
            if codes.dim() != 2 or codes.shape[0] == 0:
                raise ValueError(f"need codes of shape (N >= 1, L); got {tuple(codes.shape)}")
            self.kind, self.n_class, self.L = "gauss", None, int(codes.shape[1])
            self.mean, self.std = codes.mean(0), codes.std(0)
            return
        k = int(n_class)
        codes = as_codes(codes, n_class=k)
        if codes.shape[0] == 0:
            raise ValueError("cannot fit the empirical code model to zero codes")
        self.kind, self.n_class, self.L = "cat", k, int(codes.shape[1])
        onehot = torch.nn.functional.one_hot(codes, k).float()  # (N, L, K)
        self.probs = onehot.mean(0).clamp_min(self.EPS)  # (L, K), float32: what sample's inverse CDF reads
        del onehot
        counts = torch.zeros(self.L, k, dtype=torch.float64).scatter_add_(
            1, codes.T.cpu(), torch.ones(self.L, codes.shape[0], dtype=torch.float64))
        freq = (counts / codes.shape[0]).clamp_min(self.EPS)  # the same frequencies and clamp, in float64
        self._dist = freq / freq.sum(-1, keepdim=True)  # (L, K), float64: what nll_bits reads
        self._log2_dist = self._dist.log2()

    @classmethod
    def from_run(cls, run: LoadedRun) -> "EmpiricalCodes":
        """The fit to ``run``'s training codes (its EMA encoder's hard codes, :func:`dmz.run.encode_split`): the
        ``empirical`` z-sampler."""
        latent = run.model.latent
        return cls(encode_split(run, "train")[0], int(latent.n_class) if latent.discrete else None)

    def _discrete(self, what: str) -> None:
        if self.kind != "cat":
            raise ValueError(f"the empirical fit of continuous codes is a density, not a probability: it has no "
                             f"{what} (only discrete codes, prior=bernoulli or categorical, have one)")

    def distribution(self) -> torch.Tensor:
        """The per-position category probabilities (L, K), float64, each row summing to 1: what ``nll_bits`` scores
        with (``probs`` renormalised)."""
        self._discrete("probability table")
        return self._dist.clone()

    def entropy_bits(self) -> float:
        """Entropy of :meth:`distribution` in bits per code (the sum over positions): the mean of ``nll_bits`` over
        the model's own samples, in the limit."""
        self._discrete("entropy")
        return float(-(self._dist * self._log2_dist).sum())

    def sample(self, n, rng, device):
        if self.kind == "gauss":
            eps = per_sample(rng, lambda g: torch.randn(self.mean.shape, generator=g))
            return (self.mean + self.std * eps).to(device)
        u = per_sample(rng, lambda g: torch.rand(self.probs.shape[0], generator=g))  # (n, L)
        cdf = self.probs.cumsum(-1)  # (L, K)
        idx = (u[..., None] > cdf[None]).sum(-1).clamp_max(self.probs.shape[1] - 1)
        return idx.long().to(device)

    def nll_bits(self, codes):
        self._discrete("coding cost in bits")
        codes = as_codes(codes, n_class=self.n_class, L=self.L).cpu()
        return -self._log2_dist.gather(1, codes.T).T.sum(1)  # (L, K) at (L, N) -> (N, L) -> (N,)


# ---------------------------------------------------------------------------------------------------------------
# diagnostics
# ---------------------------------------------------------------------------------------------------------------

def _row_keys(codes: torch.Tensor) -> list[bytes]:
    arr = np.ascontiguousarray(codes.cpu().numpy().astype(np.int64))
    return [row.tobytes() for row in arr]


def code_diagnostics(train_codes: Any, heldout_codes: Any, models: dict[str, CodeModel] | None = None,
                     *, usage_range: tuple[float, float] = (0.05, 0.95)) -> dict:
    """Summary of a code set.

    Returns a JSON-friendly dict:
      * ``bits_per_code``: {model name: mean NLL in bits of the held-out codes under that code model's ``nll_bits``}
        (``uniform_bits`` = L is the Bernoulli(0.5) reference);
      * ``bit_mean``: per-bit mean over the training codes (list of L floats);
      * ``n_unbalanced_bits``: how many bits have a training mean outside ``usage_range`` (default [0.05, 0.95]);
      * ``heldout_duplicate_fraction``: fraction of held-out codes that exactly equal some training code;
      * ``n_unique_train`` / ``n_unique_heldout``: distinct codes in each set; ``n_train``, ``n_heldout``, ``L``.
    """
    train = as_codes(train_codes, name="train_codes")
    held = as_codes(heldout_codes, L=train.shape[1], name="heldout_codes")
    lo, hi = usage_range
    bit_mean = train.double().mean(0) if train.shape[0] else torch.full((train.shape[1],), float("nan"))
    train_keys = set(_row_keys(train))
    held_keys = _row_keys(held)
    dup = sum(k in train_keys for k in held_keys) / len(held_keys) if held_keys else float("nan")
    bits = {}
    for name, model in (models or {}).items():
        bits[name] = float(torch.as_tensor(model.nll_bits(held)).double().mean())
    return {
        "bits_per_code": bits,
        "uniform_bits": float(train.shape[1]),
        "bit_mean": [float(v) for v in bit_mean],
        "usage_range": [float(lo), float(hi)],
        "n_unbalanced_bits": int(((bit_mean < lo) | (bit_mean > hi)).sum()),
        "heldout_duplicate_fraction": float(dup),
        "n_unique_train": len(train_keys),
        "n_unique_heldout": len(set(held_keys)),
        "n_train": int(train.shape[0]),
        "n_heldout": int(held.shape[0]),
        "L": int(train.shape[1]),
    }
