"""Negative log-likelihood in bits/dim: the full variational bound of the diffusion model given z (PAPER.md 3.3).

For each image x_0 and its code z, the bound over all ``diffusion.diffusion_steps`` steps (I-DDPM ``calc_bpd_loop``,
reused from :meth:`dmz.diffusion.GaussianDiffusion.calc_bpd_loop`):

    L(x_0 | z) = KL(q(x_T|x_0) || N(0, I)) + sum_{t>=1} KL(q(x_{t-1}|x_t, x_0) || p(x_{t-1}|x_t, z))
                 - log p(x_0 | x_1, z)   (discretised Gaussian, 256 bins on [-1, 1])

in bits per dimension (each term's mean over the C*H*W dimensions, divided by ln 2), with the learned variance and
``clip_denoised=True`` as I-DDPM's ``image_nll.py``; fp32, the run's EMA weights. x_t for term t is a fresh draw of
q(x_t|x_0): image i of split s gets its own noise generator, seed ``NOISE_SEED_OFFSET[s] * SEED_STRIDE + i``, drawn at
t = T-1, ..., 0 in that order, so the bound is repeatable and does not depend on the batch size (the denoiser runs on
fixed micro-batches, :class:`dmz.accel.MicroBatched`). The images are the first N of the split, and identical
image/noise pairs across runs make DDPM-vs-DMZ differences paired.

z is the hard code :func:`dmz.run.encode_split` gives (the ``dataset`` z-sampler's codes), fed through the prior's
``code_to_cond``; the release conditioned on the soft relaxed sample instead (PAPER.md 3.3), so the two bounds differ.
The coding cost of z turns the conditional bound into one on x alone: -log p(x) <= L(x|z) - log2 p(z) for any z, so
``nll_bpd_z = nll_bpd + bits(z) / (C*H*W)`` with bits(z) = |z| (Bernoulli(0.5)), |z| log2 K (uniform categorical), or
the fitted PixelSNAIL's NLL of the code; 0 for prior=none. A continuous z (prior=normal) has no finite coding cost.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from dmz.diffusion import PerSampleRNG
from dmz.model import build_diffusion
from dmz.run import LoadedRun, encode_split
from dmz.accel import MicroBatched, default_micro_batch
from dmz.sampling import SEED_STRIDE

if TYPE_CHECKING:
    from dmz.zsamplers.base import CodeModel

NOISE_SEED_OFFSET = {"train": 0, "test": 1}  # image i of split s: noise seed NOISE_SEED_OFFSET[s] * SEED_STRIDE + i


def noise_seeds(split: str, n: int) -> list[int]:
    """Per-image seeds of the q-sample noise for the first ``n`` images of ``split``."""
    off = NOISE_SEED_OFFSET.get(split, 2 + sum(map(ord, split)))  # other splits: a fixed offset of their own
    return [off * SEED_STRIDE + i for i in range(n)]


class _PinnedRNG(PerSampleRNG):
    """:class:`PerSampleRNG` whose draws reach a CUDA device through pinned memory without a host sync (a plain
    ``.to(cuda)`` of pageable memory waits for the stream, once per timestep). Same numbers as the parent."""

    def randn(self, *shape_per_sample: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        out = torch.stack([torch.randn(shape_per_sample, generator=g, dtype=dtype) for g in self.generators])
        if self.device.type == "cuda":
            return out.pin_memory().to(self.device, non_blocking=True)
        return out.to(self.device)


def first_images(run: LoadedRun, split: str, n: int) -> torch.Tensor:
    """The first ``n`` images (n, C, H, W) of ``split`` in [-1, 1], unflipped."""
    ds = run.dataset(split)
    return torch.stack([ds[i][0] for i in range(min(n, len(ds)))])


def split_codes(run: LoadedRun, split: str, n: int) -> torch.Tensor:
    """Codes of the first ``n`` images of ``split`` (the cached :func:`encode_split` codes; (n, 0) without a latent)."""
    if run.model.latent.code_dim == 0:
        return torch.zeros(n, 0, dtype=torch.long)
    return encode_split(run, split)[0][:n]


@torch.no_grad()
def vlb_bpd(run: LoadedRun, images: torch.Tensor, codes: torch.Tensor, seeds: list[int], *, batch_size: int = 256,
            micro_batch: int | None = None, compile: bool = False, clip_denoised: bool = True,
            progress: bool = False) -> dict[str, np.ndarray]:
    """The full-VLB terms of each image, in bits/dim, as float64 numpy (n,): ``total_bpd``, ``prior_bpd`` (L_T),
    ``decoder_bpd`` (L_0), ``kl_bpd`` (the sum of L_{t-1}, t >= 1); and ``vb_mean_per_t`` (T,), the mean over
    images of each term (index t = L_t). The only host sync is one copy of the results per batch."""
    from dmz.accel import compiled

    model, device = run.model, run.device
    n = images.shape[0]
    if not (len(codes) == len(seeds) == n):
        raise ValueError(f"{n} images but {len(codes)} codes and {len(seeds)} seeds")
    diffusion = build_diffusion(run.cfg)  # every training step (no respacing)
    micro = int(micro_batch or default_micro_batch(device))
    batch_size = max(micro, batch_size // micro * micro)
    denoiser = MicroBatched(compiled(model) if compile else model, micro)
    parts: dict[str, list[torch.Tensor]] = {"total_bpd": [], "prior_bpd": [], "decoder_bpd": [], "kl_bpd": []}
    vb_sum = torch.zeros(diffusion.num_timesteps, dtype=torch.float64, device=device)
    for s in range(0, n, batch_size):
        x0 = images[s:s + batch_size].to(device, torch.float32)
        cond = model.latent.code_to_cond(codes[s:s + batch_size].to(device))
        out = diffusion.calc_bpd_loop(denoiser, x0, model_kwargs={} if cond is None else {"cond": cond},
                                      clip_denoised=clip_denoised, rng=_PinnedRNG(seeds[s:s + batch_size], device),
                                      progress=progress)
        vb = out["vb"].double()
        for k, v in (("total_bpd", out["total_bpd"]), ("prior_bpd", out["prior_bpd"]), ("decoder_bpd", vb[:, 0]),
                     ("kl_bpd", vb[:, 1:].sum(1))):
            parts[k].append(v.double().cpu())
        vb_sum += vb.sum(0)
    res = {k: torch.cat(v).numpy() for k, v in parts.items()}
    res["vb_mean_per_t"] = (vb_sum / n).cpu().numpy()
    return res


def code_models(run: LoadedRun, log: Callable[[str], None] = lambda m: None) -> dict[str, CodeModel] | None:
    """The code models (:class:`dmz.zsamplers.base.CodeModel`) that give z its coding cost, by the z-sampler name of
    the ``nll_bpd_z`` rows: ``prior`` (the ``prior`` z-sampler: |z| bits for Bernoulli(0.5), |z| log2 K for uniform
    categories, 0 without a latent) and ``pixelsnail`` (the ``pixelsnail`` z-sampler) when the run has a PixelSNAIL
    fitted for its checkpoint. Each has ``nll_bits(codes) -> (n,) float64`` bits. None for a continuous z."""
    from dmz.zsamplers import PriorZSampler
    from dmz.zsamplers.pixelsnail import PIXELSNAIL_FILE, PixelSNAILError, PixelSNAILZSampler

    latent = run.model.latent
    if latent.code_dim > 0 and not latent.discrete:
        return None
    out: dict[str, CodeModel] = {"prior": PriorZSampler(run)}
    if latent.code_dim > 0 and (run.path / PIXELSNAIL_FILE).exists():
        try:
            out["pixelsnail"] = PixelSNAILZSampler(run)
        except PixelSNAILError as e:
            log(f"nll: no pixelsnail coding cost ({e})")
    return out


def summarize(values: np.ndarray) -> dict[str, float | None]:
    """``value`` (mean), ``sd`` (over images, ddof=1) and ``se`` (sd / sqrt(n)) of per-image numbers."""
    v = np.asarray(values, dtype=np.float64)
    sd = float(v.std(ddof=1)) if len(v) > 1 else None
    return {"value": float(v.mean()), "sd": sd, "se": None if sd is None else sd / math.sqrt(len(v))}


def nll_for_split(run: LoadedRun, split: str, n: int, **kw) -> dict[str, Any]:
    """:func:`vlb_bpd` of the first ``n`` images of ``split`` with their codes and noise seeds, timed; adds ``n``,
    ``dims`` (C*H*W), ``codes`` and ``seconds``."""
    t0 = time.perf_counter()
    images = first_images(run, split, n)
    n = images.shape[0]
    codes = split_codes(run, split, n)
    res = vlb_bpd(run, images, codes, noise_seeds(split, n), **kw)
    res.update(n=n, dims=int(images[0].numel()), codes=codes, seconds=time.perf_counter() - t0)
    return res
