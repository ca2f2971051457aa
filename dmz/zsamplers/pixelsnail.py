"""The learned ``pixelsnail`` z-sampler: fit PixelSNAIL to a trained run's discrete codes, sample from it and score
codes with it (:class:`PixelSNAILZSampler`, a :class:`~dmz.zsamplers.base.CodeModel`), and diagnose the code
distribution (PAPER.md 1.5). The network itself is :mod:`dmz.zsamplers.pixelsnail_net`; the uniform and empirical
code models are :mod:`dmz.zsamplers.codemodels`.

    python -m dmz.zsamplers fit --run runs/digits-dmz        # -> <run>/pixelsnail.pt + pixelsnail.json
    python -m dmz.zsamplers diagnose --run runs/digits-dmz   # -> <run>/code_diagnostics.json
    python -m dmz.sample --run runs/digits-dmz --z pixelsnail --num 64 --out grid.png

``fit`` encodes the training split once with the run's EMA encoder (hard codes, cached by ``dmz.run.encode_split``),
holds out ``val_fraction`` of those codes (a seeded random subset) and fits a PixelSNAIL with the released defaults
(grid width 8, channel 64, 2 blocks x 2 res-blocks, Adam lr 1e-4 / wd 1e-5, batch 64, <= 500 epochs). Stopping
(ours): ``patience`` epochs without held-out NLL improvement, best weights restored. The released rule (10 epochs
without *training* token-accuracy improvement) is evaluated alongside and its epoch recorded in the history
(``released_rule_stop_epoch``; None if it had not fired when ours stopped). ``--val-fraction 0`` fits on all codes
and stops by the released rule instead. A fit is redone only when the run's checkpoint step, its codes or the fit
settings changed, or with ``--force``.

``diagnose`` reports, on the *test* split's codes (never seen by any fit): bits per code under each code model
(``uniform`` = |z| bits for Bernoulli(0.5), |z| log2 K for uniform categories; ``empirical`` = the ``empirical``
z-sampler's own distribution, independent per-position frequencies of the training codes clamped at 1e-6 and
renormalised; ``pixelsnail`` when fitted for the current checkpoint), per-bit usage of the training codes, and the
fraction of test codes that duplicate a training code exactly.

Only discrete priors (``bernoulli``; ``categorical`` with n_class = K) have codes a PixelSNAIL can model.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

# the network: net.fit_network fits flat codes and net.load_network reads a file; this module's
# fit_pixelsnail / load_pixelsnail of the same names take a run
import dmz.zsamplers.pixelsnail_net as net
from dmz.zsamplers.pixelsnail_net import PixelSNAILCheckpointError, grid_shape, sample, save_network
from dmz.run import LoadedRun, encode_split, load_run
from dmz.runio import CheckpointError, atomic_write_json
from dmz.zsamplers.base import CodeModel, per_sample, register_zsampler
from dmz.zsamplers.codemodels import EmpiricalCodes, UniformCodes, code_diagnostics

__all__ = [
    "PIXELSNAIL_FILE", "PIXELSNAIL_JSON", "DIAGNOSTICS_FILE", "PixelSNAILError", "require_discrete",
    "codes_fingerprint", "holdout_split", "fit_pixelsnail", "load_pixelsnail", "diagnose", "PixelSNAILZSampler",
    "main",
]

PIXELSNAIL_FILE = "pixelsnail.pt"
PIXELSNAIL_JSON = "pixelsnail.json"
DIAGNOSTICS_FILE = "code_diagnostics.json"
RELEASED_LR = 1e-4  # PixelSNAIL's Adam learning rate as released
FIT_HINT = "run `python -m dmz.zsamplers fit --run {run}`"


class PixelSNAILError(ValueError):
    """The run has no discrete codes, or its PixelSNAIL is missing / stale / incompatible; the message says why."""


def _run(run: LoadedRun | str | os.PathLike, device: str = "auto") -> LoadedRun:
    return run if isinstance(run, LoadedRun) else load_run(run, device=device)


def require_discrete(run: LoadedRun) -> int:
    """The token alphabet size K of the run's codes; PixelSNAILError for ``none`` and ``normal`` priors."""
    latent = run.model.latent
    if latent.code_dim == 0:
        raise PixelSNAILError(f"run {run.path} has prior={latent.name!r}: it has no latent codes, so there is "
                              "nothing for a learned prior to model (PixelSNAIL / code diagnostics need "
                              "prior=bernoulli or categorical)")
    if not latent.discrete:
        raise PixelSNAILError(f"run {run.path} has prior={latent.name!r}, a continuous latent: PixelSNAIL and the "
                              "code diagnostics need discrete codes (prior=bernoulli or categorical); use --z "
                              "empirical or --z dataset for this run")
    return int(latent.n_class)


def codes_fingerprint(codes: torch.Tensor) -> str:
    """sha256 of the codes' shape and int64 bytes (identifies the exact code set a prior was fitted to)."""
    arr = np.ascontiguousarray(codes.cpu().numpy().astype(np.int64))
    h = hashlib.sha256(f"{arr.shape}".encode())
    h.update(arr.tobytes())
    return h.hexdigest()


def holdout_split(n: int, val_fraction: float, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(fit indices, held-out indices): a seeded random subset of round(val_fraction * n) codes (at least 1 when
    val_fraction > 0) is held out for early stopping; both index sets are sorted."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in [0, 1); got {val_fraction}")
    n_val = 0 if val_fraction == 0 else max(1, int(round(val_fraction * n)))
    if n - n_val < 1:
        raise ValueError(f"{n} codes are too few to hold out {n_val} of them")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[n_val:].sort().values, perm[:n_val].sort().values


# ---------------------------------------------------------------------------------------------------------------
# fit
# ---------------------------------------------------------------------------------------------------------------

def _settings(*, width, epochs, patience, released_patience, val_fraction, batch_size, seed, model_kwargs,
              lr=RELEASED_LR) -> dict:
    out = dict(width=int(width), epochs=int(epochs), patience=int(patience),
                released_patience=int(released_patience), val_fraction=float(val_fraction),
                batch_size=int(batch_size), seed=int(seed), model_kwargs=dict(sorted((model_kwargs or {}).items())))
    if float(lr) != RELEASED_LR:  # only a non-released lr enters the settings: fits made before the option stay valid
        out["lr"] = float(lr)
    return out


def _read_meta(path: Path) -> dict | None:
    try:
        return net.load_network(path)[1]
    except (FileNotFoundError, PixelSNAILCheckpointError):
        return None


def fit_pixelsnail(run: LoadedRun | str | os.PathLike, *, width: int = 8, epochs: int = 500, patience: int = 10,
                   released_patience: int = 10, val_fraction: float = 0.1, batch_size: int = 64, seed: int = 0,
                   lr: float = RELEASED_LR, force: bool = False, device: str = "auto", progress: bool = False,
                   model_kwargs: dict | None = None, log=None) -> dict:
    """Fit (or keep) ``<run>/pixelsnail.pt`` for the run's training codes.

    Returns ``{"refit": bool, "reason": str, "path": str, "meta": dict, "history": dict | None}`` (history is
    None when the existing fit was kept). ``model_kwargs`` override PixelSNAIL's released architecture (tests,
    studies); ``log``: a callable taking a message (default: silent).
    """
    say = log or (lambda msg: None)
    run = _run(run, device)
    n_class = require_discrete(run)
    L = run.model.latent.code_dim
    try:
        grid_shape(L, width)
    except ValueError as e:
        raise PixelSNAILError(f"{e} (|z| = {L}; pass --width W with W dividing {L})") from None
    settings = _settings(width=width, epochs=epochs, patience=patience, released_patience=released_patience,
                         val_fraction=val_fraction, batch_size=batch_size, seed=seed, model_kwargs=model_kwargs, lr=lr)
    path = run.path / PIXELSNAIL_FILE
    codes = encode_split(run, "train")[0]
    fp = codes_fingerprint(codes)

    old = None if force else _read_meta(path)
    if force:
        reason = "--force"
    elif old is None:
        reason = "no fit yet" if not path.exists() else "existing pixelsnail.pt is unreadable"
    elif old.get("checkpoint_step") != run.step:
        reason = f"checkpoint step changed ({old.get('checkpoint_step')} -> {run.step})"
    elif old.get("codes_fingerprint") != fp:
        reason = "training codes changed"
    elif old.get("settings") != settings:
        diff = sorted(k for k in settings if (old.get("settings") or {}).get(k) != settings[k])
        reason = f"fit settings changed ({', '.join(diff)})"
    else:
        say(f"{path} is up to date (checkpoint step {run.step}); use --force to refit")
        return {"refit": False, "reason": "up to date", "path": str(path), "meta": old, "history": None}

    fit_idx, val_idx = holdout_split(codes.shape[0], val_fraction, seed)
    say(f"fitting PixelSNAIL ({reason}): {len(fit_idx)} codes, {len(val_idx)} held out, |z|={L}, "
        f"n_class={n_class}, grid {L // width}x{width}, device {run.device}")
    t0 = time.time()
    model, hist = net.fit_network(
        codes[fit_idx], codes[val_idx] if len(val_idx) else None, width=width, epochs=epochs,
        batch_size=batch_size, patience=patience, released_patience=released_patience, seed=seed, lr=lr,
        device=run.device, progress=progress, n_class=n_class, **(model_kwargs or {}))
    meta = {
        "run": str(run.path), "checkpoint_step": run.step, "prior": run.model.latent.name, "L": L,
        "n_class": n_class, "width": int(width), "codes_fingerprint": fp, "codes_split": "train",
        "codes_seed": 0, "n_codes": int(codes.shape[0]), "n_fit": len(fit_idx), "n_val": len(val_idx),
        "settings": settings, "stop_rule": "val_nll_patience" if len(val_idx) else "released_rule",
        "stop_reason": hist["stop_reason"], "best_epoch": hist["best_epoch"],
        "stopped_epoch": hist["stopped_epoch"], "released_rule_stop_epoch": hist["released_rule_stop_epoch"],
        "best_val_nll_bits": hist["best_val_nll_bits"], "n_params": hist["n_params"],
        "fit_seconds": round(time.time() - t0, 3), "device": str(run.device), "torch": torch.__version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    save_network(path, model, meta)
    atomic_write_json(run.path / PIXELSNAIL_JSON, {"meta": meta, "history": hist})
    say(f"wrote {path}: stopped at epoch {hist['stopped_epoch']} ({hist['stop_reason']}), best epoch "
        f"{hist['best_epoch']}, held-out {_fmt(hist['best_val_nll_bits'])} bits/code (uniform {L * math.log2(n_class):g}); "
        + (f"the released rule would have stopped at epoch {hist['released_rule_stop_epoch']}"
           if hist["released_rule_stop_epoch"] is not None else "the released rule had not fired yet"))
    return {"refit": True, "reason": reason, "path": str(path), "meta": meta, "history": hist}


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def load_pixelsnail(run: LoadedRun, *, device=None):
    """(PixelSNAIL on ``device`` (default: the run's), meta) for the run's current checkpoint.

    PixelSNAILError when absent, unreadable, fitted for another checkpoint step, or not matching the codes' shape."""
    require_discrete(run)
    path = run.path / PIXELSNAIL_FILE
    hint = FIT_HINT.format(run=run.path)
    if not path.exists():
        raise PixelSNAILError(f"run {run.path} has no fitted PixelSNAIL ({path} is missing); {hint}")
    try:
        model, meta = net.load_network(path, map_location=device or run.device)
    except PixelSNAILCheckpointError as e:
        raise PixelSNAILError(f"{e}") from None
    if meta.get("checkpoint_step") != run.step:
        raise PixelSNAILError(f"{path} was fitted to the codes of checkpoint step {meta.get('checkpoint_step')}, "
                              f"but the run is now at step {run.step}; {hint}")
    latent = run.model.latent
    if model.L != latent.code_dim or model.n_class != int(latent.n_class):
        raise PixelSNAILError(f"{path} models codes of length {model.L} over {model.n_class} classes, but the run's "
                              f"codes have length {latent.code_dim} over {latent.n_class}; {hint} --force")
    return model, meta


# ---------------------------------------------------------------------------------------------------------------
# the z-sampler
# ---------------------------------------------------------------------------------------------------------------

class PixelSNAILZSampler(CodeModel):
    """The fitted PixelSNAIL as z-sampler and code model: codes from the run's ``<run>/pixelsnail.pt`` with logits
    divided by ``temperature``, and their bits under the same distribution.

    ``sample``: sample i's L uniforms come from its own generator (``rng.generators[i]``) and tokens are drawn by
    inverse CDF. The model runs on its device (the run's), always on micro-batches of exactly ``micro_batch`` codes
    (the last one padded): kernels choose their arithmetic by batch size, and a last-bit change of a logit can flip a
    token whose uniform lies next to the CDF, so fixing the batch shape makes the codes a function of (seeds,
    micro_batch, device, fit) only, never of how many samples are asked for at once.

    ``nll_bits``: the exact bits of each code (:func:`dmz.zsamplers.pixelsnail_net.nll_bits`) at ``temperature``
    (1, the default: the fitted model's own likelihood, what ``bits_per_code`` and ``nll_bpd_z`` report).

    ``PixelSNAILZSampler(run, ...)`` loads the run's fit (the registered ``pixelsnail`` z-sampler; PixelSNAILError
    when it is missing or stale); :meth:`from_model` wraps a network in hand."""

    name = "pixelsnail"

    def __init__(self, run: LoadedRun, temperature: float = 1.0, micro_batch: int = 64):
        self._check(temperature, micro_batch)
        model, meta = load_pixelsnail(run)
        self._setup(model, meta, temperature, micro_batch)

    @classmethod
    def from_model(cls, model: net.PixelSNAIL, meta: dict | None = None, *, temperature: float = 1.0,
                   micro_batch: int = 64) -> "PixelSNAILZSampler":
        """The wrapper of a PixelSNAIL network in hand (e.g. from :func:`~dmz.zsamplers.pixelsnail_net.fit_network`
        or :func:`load_pixelsnail`); ``meta`` as :func:`load_pixelsnail` returns it (default: empty)."""
        cls._check(temperature, micro_batch)
        self = cls.__new__(cls)
        self._setup(model, dict(meta or {}), temperature, micro_batch)
        return self

    @staticmethod
    def _check(temperature, micro_batch) -> None:
        if not (math.isfinite(temperature) and temperature > 0):
            raise ValueError(f"temperature must be a finite number > 0; got {temperature!r}")
        if micro_batch < 1:
            raise ValueError(f"micro_batch must be >= 1; got {micro_batch}")

    def _setup(self, model, meta, temperature, micro_batch) -> None:
        self.model, self.meta = model, meta
        self.L, self.n_class = model.L, model.n_class
        self.temperature, self.micro_batch = float(temperature), int(micro_batch)

    def sample(self, n, rng, device):
        L, m = self.model.L, self.micro_batch
        u = per_sample(rng, lambda g: torch.rand(L, generator=g, dtype=torch.float64))  # (n, L)
        pad = (-n) % m
        if pad:
            u = torch.cat([u, u[-1:].expand(pad, L)])
        codes = sample(self.model, n + pad, temperature=self.temperature, uniforms=u, batch_size=m)[:n]
        return codes.to(device)

    def nll_bits(self, codes):
        return net.nll_bits(self.model, codes, temperature=self.temperature)


register_zsampler("pixelsnail")(PixelSNAILZSampler)


# ---------------------------------------------------------------------------------------------------------------
# diagnostics
# ---------------------------------------------------------------------------------------------------------------

def diagnose(run: LoadedRun | str | os.PathLike, *, split: str = "test", write: bool = True,
             device: str = "auto") -> dict:
    """Bits per held-out code under each code model (:class:`~dmz.zsamplers.base.CodeModel`: ``uniform``,
    ``empirical`` and, once fitted, ``pixelsnail``), per-bit usage and duplicates; written to
    ``<run>/code_diagnostics.json`` when ``write``. See the module docstring."""
    run = _run(run, device)
    n_class = require_discrete(run)
    L = run.model.latent.code_dim
    train = encode_split(run, "train")[0]
    held = encode_split(run, split)[0]
    models: dict[str, CodeModel] = {"uniform": UniformCodes(L, n_class), "empirical": EmpiricalCodes(train, n_class)}
    notes, ps_meta = [], None
    try:
        models["pixelsnail"] = PixelSNAILZSampler(run)
        ps_meta = models["pixelsnail"].meta
    except PixelSNAILError as e:
        notes.append(f"pixelsnail not evaluated: {e}")
    d = code_diagnostics(train, held, models)
    d["uniform_bits"] = L * math.log2(n_class)
    d["gap_bits"] = {k: d["uniform_bits"] - v for k, v in d["bits_per_code"].items()}
    if n_class > 2:  # bit_mean of category indices means little: give per-position frequencies instead
        freq = torch.nn.functional.one_hot(train.long(), n_class).double().mean(0)
        d["category_freq"] = freq.tolist()
        d["position_entropy_bits"] = (-(freq * freq.clamp_min(1e-12).log2()).sum(1)).tolist()
        del d["bit_mean"], d["n_unbalanced_bits"], d["usage_range"]
    d.update(run=str(run.path), checkpoint_step=run.step, prior=run.model.latent.name, n_class=n_class,
             heldout_split=split, notes=notes,
             pixelsnail=None if ps_meta is None else {k: ps_meta.get(k) for k in (
                 "width", "n_fit", "n_val", "best_epoch", "stopped_epoch", "stop_reason",
                 "released_rule_stop_epoch", "best_val_nll_bits")})
    if write:
        atomic_write_json(run.path / DIAGNOSTICS_FILE, d)
    return d


def format_diagnostics(d: dict) -> str:
    lines = [f"{d['run']} (step {d['checkpoint_step']}, prior {d['prior']}, |z|={d['L']}, K={d['n_class']}): "
             f"{d['n_train']} train / {d['n_heldout']} {d['heldout_split']} codes",
             f"  {'sampler':<12}{'bits/code':>10}{'gap':>9}"]
    for k, v in d["bits_per_code"].items():
        lines.append(f"  {k:<12}{v:>10.3f}{d['gap_bits'][k]:>9.3f}")
    if "n_unbalanced_bits" in d:
        lo, hi = d["usage_range"]
        lines.append(f"  bits with training mean outside [{lo}, {hi}]: {d['n_unbalanced_bits']} of {d['L']}")
    lines.append(f"  {d['heldout_split']} codes duplicating a training code: {d['heldout_duplicate_fraction']:.3f} "
                 f"(distinct: {d['n_unique_heldout']} of {d['n_heldout']} held out, "
                 f"{d['n_unique_train']} of {d['n_train']} train)")
    lines += [f"  note: {n}" for n in d["notes"]]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dmz.zsamplers", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fit", help="fit PixelSNAIL to the run's training codes -> <run>/pixelsnail.pt")
    f.add_argument("--run", required=True)
    f.add_argument("--width", type=int, default=8, help="grid width; codes are laid out as (|z|/W) x W (released: 8)")
    f.add_argument("--epochs", type=int, default=500)
    f.add_argument("--patience", type=int, default=10, help="epochs without held-out NLL improvement before stopping")
    f.add_argument("--released-patience", type=int, default=10,
                   help="patience of the released rule (training accuracy); recorded, or used with --val-fraction 0")
    f.add_argument("--val-fraction", type=float, default=0.1, help="share of training codes held out (0: released rule)")
    f.add_argument("--batch-size", type=int, default=64)
    f.add_argument("--lr", type=float, default=RELEASED_LR, help="Adam learning rate (released: 1e-4)")
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--device", default="auto")
    f.add_argument("--force", action="store_true", help="refit even if pixelsnail.pt is up to date")
    f.add_argument("--no-progress", action="store_true")
    d = sub.add_parser("diagnose", help="bits per code of each sampler on test codes -> <run>/code_diagnostics.json")
    d.add_argument("--run", required=True)
    d.add_argument("--split", default="test", help="held-out split whose codes are scored")
    d.add_argument("--device", default="auto")
    args = p.parse_args(argv)
    err = lambda msg: print(f"[dmz.zsamplers] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    try:
        if args.cmd == "fit":
            res = fit_pixelsnail(args.run, width=args.width, epochs=args.epochs, patience=args.patience,
                                 released_patience=args.released_patience, val_fraction=args.val_fraction,
                                 batch_size=args.batch_size, seed=args.seed, lr=args.lr, force=args.force,
                                 device=args.device, progress=not args.no_progress, log=err)
            print(json.dumps({k: res[k] for k in ("refit", "reason", "path")}))
        else:
            out = diagnose(args.run, split=args.split, device=args.device)
            print(format_diagnostics(out))
            print(f"wrote {Path(args.run) / DIAGNOSTICS_FILE}")
    except (PixelSNAILError, CheckpointError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
