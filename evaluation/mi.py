"""Mutual information I(z; x_t) between a run's codes and its forward-noised images (the release's ``mi_eval.py``).

The release estimates I(z; x_t) with MINE (the ``mine`` package's ``MutualInformationEstimator``, loss "mine", 10
epochs, lr 1e-4, batch 64) at t in {0, 0.1, ..., 0.9, 0.91, ..., 1.0} on forward-noised CIFAR-10 (PAPER.md 1.6). It is
the evidence for where in the denoising process the latent carries information.

Estimators (one critic network T(x, z) on the concatenation of an image embedding and z, trained with Adam):

* ``mine`` (released): the Donsker-Varadhan bound I >= E_p(x,z)[T] - log E_p(x)p(z)[e^T], with MINE's bias-corrected
  gradient (the denominator of the log term's gradient is a moving average of E[e^T], rate ``ema``; Belghazi et al.
  2018), marginal pairs by shuffling z within a batch.
* ``infonce``: the InfoNCE bound over a batch of B (log B + mean_i [T(x_i, z_i) - logsumexp_j T(x_i, z_j)]); lower
  variance, but it can never exceed log B nats (log2 64 = 6 bits at the release's batch).

Why our own few lines rather than a package: the release's ``mine`` package (gtegner/mine-pytorch) is not maintained
or on PyPI; ``torch-mist`` (the maintained toolkit) pins ``numpy<2`` and pulls pyro-ppl, hydra-core and mpld3, which
this harness (numpy 2, pandas 3) cannot take. Both bounds are the textbook ones; tests check them on pairs with a known
answer (``tests/test_mi.py``).

The pairs are split three ways: the critic trains on 60%, the epoch with the best bound on 20% (validation) is kept,
and the value reported is that critic's bound on the last 20% (held out from training and selection), so it is not
inflated by the critic memorising pairs (on digits' 1,437 images a critic trained for 100 epochs without early
stopping read 3.6 bits on its training pairs at t=1, pure noise, and -3.3 on held-out ones). Both are in bits. Every
bound here is a lower bound with a downward bias that grows with the true MI (any such estimator is limited to about
log N nats for N pairs, McAllester & Stratos 2020): with z binary, I(z; x_t) <= H(z) <= |z| bits, and for N images
H(z) <= log2 N; the plug-in entropy of the codes (``h_z_bits``) is in each row as the ceiling.
"""

from __future__ import annotations

import math
import time
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from evaluation.mi_settings import RELEASE_T, MIConfig, MIError, check_noise_levels

LN2 = math.log(2.0)

class Critic(nn.Module):
    """T(x, z): an image embedding (stride-2 convolutions down to at most 8x8, then flattened; a vector input is
    used as it is) concatenated with z mapped to {-1, +1}, then a two-layer MLP to a scalar."""

    def __init__(self, x_shape: tuple[int, ...], z_dim: int, hidden: int = 256):
        super().__init__()
        layers: list[nn.Module] = []
        if len(x_shape) == 3:
            c, h, _ = x_shape
            while h > 8:
                layers += [nn.Conv2d(c, 32, 3, stride=2, padding=1), nn.ELU()]
                c, h = 32, (h + 1) // 2
        layers.append(nn.Flatten())
        self.embed = nn.Sequential(*layers)
        with torch.no_grad():
            e = self.embed(torch.zeros(1, *x_shape)).shape[1]
        self.head = nn.Sequential(nn.Linear(e + z_dim, hidden), nn.ELU(), nn.Linear(hidden, hidden), nn.ELU(),
                                  nn.Linear(hidden, 1))

    def forward_embedded(self, ex: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([ex, z], dim=1)).squeeze(1)

    def forward(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.forward_embedded(self.embed(x), z)


def _log_mean_exp(v: torch.Tensor) -> torch.Tensor:
    return torch.logsumexp(v, dim=0) - math.log(v.numel())


def _all_pairs(critic: Critic, ex: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """S[i, j] = T(x_i, z_j) for a batch."""
    b = ex.shape[0]
    return critic.forward_embedded(ex.repeat_interleave(b, 0), z.repeat(b, 1)).view(b, b)


def _infonce(scores: torch.Tensor) -> torch.Tensor:
    return (scores.diagonal() - torch.logsumexp(scores, dim=1)).mean() + math.log(scores.shape[0])


def _dv(critic: Critic, ex: torch.Tensor, z: torch.Tensor, perms: list[torch.Tensor]) -> float:
    joint = critic.forward_embedded(ex, z).mean()
    marg = torch.cat([critic.forward_embedded(ex, z[p]) for p in perms])
    return float(joint - _log_mean_exp(marg))


def codes_entropy_bits(z: torch.Tensor) -> float:
    """Plug-in entropy of the empirical distribution of the (binary) codes, in bits."""
    _, counts = torch.unique(z, dim=0, return_counts=True)
    p = counts.double() / counts.sum()
    return float(-(p * torch.log2(p)).sum())


def _bound_nats(critic: Critic, x: torch.Tensor, z: torch.Tensor, cfg: MIConfig, g: torch.Generator) -> float:
    """The estimator's bound on pairs the critic did not train on (DV over 10 shuffles; InfoNCE over batches)."""
    with torch.no_grad():
        ex = critic.embed(x)
        if cfg.estimator == "infonce":
            b = min(cfg.batch_size, len(x))
            return float(np.mean([float(_infonce(_all_pairs(critic, ex[i:i + b], z[i:i + b])))
                                  for i in range(0, len(x) - b + 1, b)]))
        return _dv(critic, ex, z, [torch.randperm(len(x), generator=g) for _ in range(10)])


def estimate_mi(x: torch.Tensor, z: torch.Tensor, cfg: MIConfig | None = None) -> dict[str, Any]:
    """A lower bound on I(x; z) in bits from paired samples (x: (N, ...) images or vectors; z: (N, d) codes).

    The pairs are split three ways (train / ``val`` / ``heldout``): the critic trains on the first, the epoch whose
    bound is highest on the second is kept (a critic that memorises a few thousand pairs reads several bits where
    there are none: early stopping is what makes small datasets usable), and ``bits`` is that critic's bound on the
    third, which took no part in training or selection. Also ``train_bits`` (mean over the kept epoch's batches),
    ``best_epoch``, ``h_z_bits`` (plug-in entropy of z: the ceiling for a discrete z), the sizes, settings and seconds.
    Repeatable: the split, the batches and the critic's initialisation come from ``cfg.seed``."""
    cfg = cfg or MIConfig()
    t0 = time.perf_counter()
    x = x.detach().float().cpu()
    z = z.detach().float().cpu().reshape(len(z), -1)
    if len(x) != len(z):
        raise MIError(f"x and z must pair up: {len(x)} images vs {len(z)} codes")
    n = len(x)
    g = torch.Generator().manual_seed(cfg.seed)
    order = torch.randperm(n, generator=g)
    n_held = max(2, int(round(cfg.heldout * n)))
    n_val = max(2, int(round(cfg.val * n))) if cfg.val > 0 else 0
    if n - n_held - n_val < cfg.batch_size:
        raise MIError(f"too few pairs for the MI estimator: {n} pairs, {n_held} held out, {n_val} for validation, "
                      f"batch {cfg.batch_size}")
    held, val, train = order[:n_held], order[n_held:n_held + n_val], order[n_held + n_val:]
    zs = z * 2 - 1 if bool(((z == 0) | (z == 1)).all()) else z  # binary codes as -1/+1
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        critic = Critic(tuple(x.shape[1:]), zs.shape[1], cfg.hidden)
    opt = torch.optim.Adam(critic.parameters(), lr=cfg.lr)
    log_ema: torch.Tensor | None = None
    best = (-math.inf, 0, 0.0, None)  # (val bound, epoch, train bound, critic state)
    for epoch in range(1, cfg.epochs + 1):
        epoch_bounds: list[float] = []
        perm = train[torch.randperm(len(train), generator=g)]
        for i in range(0, len(perm) - cfg.batch_size + 1, cfg.batch_size):  # whole batches only
            idx = perm[i:i + cfg.batch_size]
            ex, zb = critic.embed(x[idx]), zs[idx]
            if cfg.estimator == "infonce":
                bound = _infonce(_all_pairs(critic, ex, zb))
                loss = -bound
            else:
                joint = critic.forward_embedded(ex, zb).mean()
                marg = critic.forward_embedded(ex, zb[torch.randperm(len(idx), generator=g)])
                lme = _log_mean_exp(marg)
                lme_d = lme.detach()
                log_ema = lme_d if log_ema is None else torch.logaddexp(
                    math.log(1 - cfg.ema) + log_ema, math.log(cfg.ema) + lme_d) if cfg.ema < 1 else lme_d
                # value: the DV bound; gradient of the log term: grad E[e^T] / (moving average of E[e^T])
                surrogate = torch.exp(marg - log_ema).mean()
                bound = joint - lme
                loss = -(joint - (lme_d + surrogate - surrogate.detach()))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            epoch_bounds.append(float(bound.detach()))
        train_nats = float(np.mean(epoch_bounds))
        if n_val:
            v = _bound_nats(critic, x[val], zs[val], cfg, g)
            if v > best[0]:
                best = (v, epoch, train_nats, {k: t.clone() for k, t in critic.state_dict().items()})
        else:
            best = (math.nan, epoch, train_nats, None)
    val_nats, best_epoch, train_nats, state = best
    if state is not None:
        critic.load_state_dict(state)
    held_nats = _bound_nats(critic, x[held], zs[held], cfg, g)
    return {"bits": held_nats / LN2, "train_bits": train_nats / LN2, "val_bits": val_nats / LN2,
            "best_epoch": best_epoch, "h_z_bits": codes_entropy_bits(z), "n_pairs": n, "n_heldout": n_held,
            "n_val": n_val, "steps": best_epoch * (len(train) // cfg.batch_size), "settings": cfg.settings(),
            "seconds": time.perf_counter() - t0}


def noise_index(t: float, diffusion_steps: int) -> int | None:
    """The forward-process step of noise level ``t`` in [0, 1]: None (x_0 itself) at t=0, else step
    ceil(t * S) - 1 of S (t=1 is the last step)."""
    (t,) = check_noise_levels([t])
    return None if t == 0 else max(0, math.ceil(round(t * diffusion_steps, 6)) - 1)


def forward_noised(diffusion, x0: torch.Tensor, t: float, seed: int) -> torch.Tensor:
    """x_t ~ q(x_t | x_0) at noise level ``t`` (x_0 at t=0), noise from a generator seeded by ``seed``."""
    idx = noise_index(t, diffusion.num_timesteps)
    if idx is None:
        return x0.clone()
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    return diffusion.q_sample(x0, torch.full((len(x0),), idx, dtype=torch.long), noise=noise)


def mi_curve(x0: torch.Tensor, z: torch.Tensor, diffusion, cfg: MIConfig, ts: Sequence[float] = RELEASE_T, *,
             noise_seed: int = 0, log=None) -> list[dict[str, Any]]:
    """I(z; x_t) for each noise level t: x_t forward-noised from ``x0`` (t's noise from a generator seeded
    ``noise_seed`` + the level's index, so every t has its own draw), the estimator restarted at each t."""
    out = []
    for i, t in enumerate(ts):
        xt = forward_noised(diffusion, x0, float(t), noise_seed + i)
        r = estimate_mi(xt, z, cfg)
        r["noise_t"] = float(t)
        r["noise_step"] = noise_index(float(t), diffusion.num_timesteps)
        out.append(r)
        if log:
            log(f"mi t={t:g}: {r['bits']:.3f} bits (held-out; train {r['train_bits']:.3f}, H(z) {r['h_z_bits']:.2f})")
    return out
