"""Evaluate a run folder: FID across T, linear probes (accuracy / AUROC), reconstruction MSE, codes, NLL -> rows.

    python -m evaluation.run --run runs/digits-dmz                          # FID at T=10,20,50,100 + probes
    python -m evaluation.run --run runs/digits-dmz --metrics fid probe recon --sampler prior empirical --kid
    python -m evaluation.run --run runs/digits-dmz --metrics fid codes --sampler pixelsnail pixelsnail:temperature=0.8
    python -m evaluation.run --run runs/cifar10-dmz --steps 100 --device cuda --feature-extractor inception-v3-compat
    python -m evaluation.run --run runs/digits-dmz --metrics nll            # NLL bits/dim, 32 train + 32 test
    python -m evaluation.run --run runs/digits-dmz --metrics mi             # I(z; x_t) over the release's t grid

One checkpoint (EMA weights) serves every T. Every image has its own seed: image i of sampling seed k uses sample
seed ``k * 1_000_000 + i`` (its z and x_T come from seeds 2s+1 and 2s, see :mod:`dmz.sample`), so the same z and x_T
are used at every T and a sample set does not depend on the batch size. Rows are appended, one JSON line each, to
``<run>/results.jsonl``; a row whose key (:data:`KEY_FIELDS`) is already there is not recomputed unless ``--force``
(which appends the new row: readers keep the last row per key, :func:`latest_rows`). New rows also go to the run's
TensorBoard folder ``<run>/tb/`` (:func:`dmz.tblog.log_result_rows`) unless the run has ``train.logger=none``.

Defaults (PAPER.md 3.3, 3.4): cifar10 / celeba64 score N=10,000 samples against the whole training split with
Inception (``inception-v3-compat``), one sampling seed; digits scores N=1,000 samples with 3 seeds (the spread is large
at small N) against the whole digits train split with ``digits-classifier-v1`` (not Inception; its FIDs are only
comparable to other digits-FIDs). Probes: released soft features, 5-fold CV over pooled train+test (the released
protocol) and held-out (fit train, score test). Reconstruction: 10 test images x 5 decodes (released), MSE in [-1, 1]
units, plus the same with shuffled codes as a control. LPIPS is not computed (its weights are downloaded at run time).
Codes (discrete latents): ``bits_per_code`` per z-sampler with a likelihood (prior, empirical, pixelsnail once fitted)
on the test split's codes, and ``heldout_dup_frac``, from :func:`dmz.zsamplers.pixelsnail.diagnose`. A z-sampler takes
options after a colon (``pixelsnail:temperature=0.8``); the whole spec is the row's ``sampler``.

NLL (:mod:`evaluation.nll`, PAPER.md 3.3): bits/dim of the first N train and the first N test images under the full
VLB over every training diffusion step (I-DDPM ``calc_bpd_loop``: prior term, KL terms, discretised decoder; learned
variance, ``clip_denoised``, fp32, EMA weights), given the image's hard code z from ``encode_split`` (the release used
the soft z). Each image has its own q-sample noise seed. Rows per split (``reference`` = train | test, ``T`` None,
``N`` images): ``nll_bpd`` (the bound given z; per-image ``values``, ``prior_bpd`` / ``decoder_bpd`` / ``kl_bpd``
means, ``vb_mean_per_t``) and ``nll_bpd_z`` = nll_bpd + bits(z) / (C*H*W), one per code model (``sampler`` ``prior``:
|z| bits for Bernoulli(0.5), |z| log2 K for uniform categories, 0 for prior=none; ``pixelsnail`` when fitted; none for
a continuous z); both carry ``value`` (mean), ``sd`` (over images), ``se``, ``timesteps`` and ``z_bits``. Defaults:
N=1,000 per split on cifar10 / celeba64 (released), 32 on digits (:data:`NLL_DEFAULTS`). Digits pixels are not 8-bit
values (bilinear resampling of 17 grey levels), so their bits/dim under the 256-bin decoder compare only between
digits runs.

MI (:mod:`evaluation.mi`, the release's ``mi_eval.py``): ``mi_bits``, a lower bound on I(z; x_t) in bits between the
training split's hard codes and the same images forward-noised to level t (``noise_t``; the release's grid 0, 0.1,
..., 0.9, 0.91, ..., 1.0), one row per t, keyed by the estimator spec (``mi_estimator``: the release's MINE settings,
``mine:epochs=100,lr=0.001`` on digits); ``h_z_bits`` (the codes' plug-in entropy) is the ceiling.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np

import dmz
from dmz.runio import append_jsonl, read_jsonl
from evaluation.rows import KEY_FIELDS, OPTIONAL_KEY_FIELDS, RESULTS_FILE, latest_rows, row_key  # noqa: F401 (latest_rows: public here)

if TYPE_CHECKING:
    from dmz.run import LoadedRun

# torch, diffusers and the feature extractors are imported where they are used, so `--help` answers at once

METRIC_GROUPS = ("fid", "probe", "recon", "codes", "nll", "mi")
DEFAULT_STEPS = (10, 20, 50, 100)
DATASET_DEFAULTS = {  # (num_samples, seeds): released protocol for the paper datasets, smaller N for digits
    "cifar10": (10_000, 1),
    "celeba64": (10_000, 1),
    "digits": (1_000, 3),
}
FALLBACK_DEFAULTS = (10_000, 1)
# NLL: images per split (first N of train and of test), each costing diffusion_steps (1000) denoiser calls. Released:
# 1,000 (cifar10, celeba64). Digits: 32 = one CPU micro-batch; measured ~2.1 min per split on one CPU thread (4.2 min
# for train + test; se of the mean ~0.02-0.03 bits/dim); 64 doubles that.
NLL_DEFAULTS = {"cifar10": 1_000, "celeba64": 1_000, "digits": 32}
NLL_FALLBACK = 1_000
NLL_SPLITS = ("train", "test")
RECON_DEFAULTS = (10, 5)  # images x decodes, as released
PROBE_TEST_SPLIT = {"celeba64": "valtest"}  # the release pools celeba64_val_test with train; others: "test"

class EvaluationError(ValueError):
    """Bad evaluation request (unknown metric / sampler, bad T, ...); the message lists the valid choices."""


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def dataset_defaults(dataset: str) -> tuple[int, int]:
    """``(num_samples, seeds)`` used when the caller gives none."""
    return DATASET_DEFAULTS.get(dataset, FALLBACK_DEFAULTS)


def nll_defaults(dataset: str) -> int:
    """Images per split scored by ``--metrics nll`` when the caller gives none."""
    return NLL_DEFAULTS.get(dataset, NLL_FALLBACK)


def config_fields(run: LoadedRun) -> dict[str, Any]:
    """The resolved-config fields a result row carries so tables can group by them without reading config.json."""
    cfg = run.cfg
    m, d, t = cfg.model, cfg.diffusion, cfg.train
    return {
        "run_id": cfg.run_id(), "run_dir": str(run.path), "config_digest": cfg.digest(),
        "preset": cfg.preset, "dataset": cfg.data.dataset, "resolution": cfg.data.resolution,
        "prior": m.prior, "latent_dim": m.latent_dim, "categories": m.categories, "conditioning": m.conditioning,
        "estimator": m.estimator, "tau": m.tau, "kl_weight": m.kl_weight, "prior_matching": m.prior_matching,
        "baseline_attention": m.baseline_attention, "input_perturbation": d.input_perturbation,
        "noise_schedule": d.noise_schedule, "seed": t.seed, "lr": t.lr, "batch_size": t.batch_size,
        "train_steps": t.steps, "checkpoint_step": run.step,
    }


def _mean_sd(values: Sequence[float]) -> tuple[float, float | None]:
    v = np.asarray(values, dtype=np.float64)
    return float(v.mean()), (float(v.std(ddof=1)) if len(v) > 1 else None)


def default_repr(run: LoadedRun) -> str | None:
    """Released features are the soft relaxed sample (``soft``); priors without it use their first mode."""
    modes = run.model.latent.representation_modes
    if not modes:
        return None
    return "soft" if "soft" in modes else modes[0]


class _Plan:
    """Collects rows: skips keys already in ``results.jsonl`` (unless ``force``) and appends new ones atomically."""

    def __init__(self, path: Path, base: dict, force: bool):
        self.path, self.base, self.force = path, base, force
        self.existing = {row_key(r): r for r in read_jsonl(path)}
        self.rows: list[dict] = []
        self.new: list[dict] = []  # rows computed by this call (what goes to TensorBoard)
        self.computed = 0

    def key(self, **fields) -> tuple:
        return row_key({**self.base, **fields})

    def done(self, keys: list[tuple]) -> bool:
        """All ``keys`` present (and not forced): collect the stored rows and report True."""
        if self.force or not all(k in self.existing for k in keys):
            return False
        self.rows += [self.existing[k] for k in keys]
        return True

    def add(self, **fields) -> dict:
        row = {**self.base, **fields, "version": dmz.__version__,
               "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        for k in KEY_FIELDS:
            if k not in OPTIONAL_KEY_FIELDS:
                row.setdefault(k, None)
        append_jsonl(self.path, row)
        self.existing[row_key(row)] = row
        self.rows.append(row)
        self.new.append(row)
        self.computed += 1
        return row


def _validate(metrics, samplers, steps, seeds, num_samples, solver, nll_images=None) -> None:
    from dmz.sampling import SEED_STRIDE
    from dmz.zsamplers import check_zsampler

    bad = [m for m in metrics if m not in METRIC_GROUPS]
    if bad:
        raise EvaluationError(f"unknown metric {bad[0]!r}; valid: {', '.join(METRIC_GROUPS)}")
    for s in samplers:
        try:
            check_zsampler(s)
        except ValueError as e:
            raise EvaluationError(str(e)) from None
    if any(int(t) < 1 for t in steps):
        raise EvaluationError(f"--steps (T) must be between 1 and the run's training diffusion steps, "
                              f"got {list(steps)}")
    if seeds is not None and seeds < 1:
        raise EvaluationError("--seeds must be >= 1")
    if num_samples is not None and not 2 <= num_samples <= SEED_STRIDE:
        raise EvaluationError(f"--num-samples must be in [2, {SEED_STRIDE}]")
    if solver not in ("ddpm", "ddim"):
        raise EvaluationError(f"unknown solver {solver!r}; valid: ddpm, ddim")
    if nll_images is not None and not 1 <= nll_images <= SEED_STRIDE:
        raise EvaluationError(f"--nll-images must be in [1, {SEED_STRIDE}]")


@dataclass(frozen=True)
class EvalRequest:
    """What to evaluate on a run, and how: one object that :func:`evaluate`, ``run_grid`` and the CLI share."""

    steps: Sequence[int] = DEFAULT_STEPS  # denoising steps T (respaced); one checkpoint serves all
    num_samples: int | None = None  # N generated images per (T, z-sampler, seed); None = dataset default
    metrics: Sequence[str] = ("fid", "probe")  # any of fid | probe | recon | codes | nll | mi
    samplers: Sequence[str] = ("prior",)  # z-samplers (dmz.zsamplers): prior | dataset | empirical | pixelsnail
    seeds: int | None = None  # K sampling seeds (offsets k * 1_000_000); None = dataset default
    feature_extractor: str | None = None  # None = digits-classifier-v1 for digits, inception-v3-compat otherwise
    reference_split: str = "train"  # FID reference: the whole split, cached statistics
    kid: bool = False  # also KID (kid_mean row; needs reference features, cached)
    prc: bool = False  # also precision / recall / f_score rows
    repr_mode: str | None = None  # probe features: soft (released) | hard | probs | mean | sample; None = default_repr
    recon_images: int = RECON_DEFAULTS[0]  # reconstruction: first N test images
    recon_decodes: int = RECON_DEFAULTS[1]  # reconstruction: K stochastic decodes per image
    nll_images: int | None = None  # NLL: the first N train and the first N test images; None = nll_defaults
    mi: str | None = None  # I(z; x_t) estimator spec, e.g. mine:epochs=100 (evaluation.mi); None = by dataset
    mi_t: Sequence[float] | None = None  # I(z; x_t) noise levels t in [0, 1]; None = the release's grid (20 levels)
    solver: str = "ddpm"  # ddpm (ancestral, released) | ddim (eta=0)
    batch_size: int = 256  # images in flight; results do not depend on it
    micro_batch: int | None = None  # rows per denoiser call (results depend on it); None = device default
    device: str = "auto"
    weights: str = "ema"
    precision: str | None = None  # sampling: fp32 | bf16 | auto; None = the run's train.sampling_precision
    compile: bool | None = None  # sampling: torch.compile the denoiser; None = the run's train.sampling_compile
    keep_samples: bool = False  # write <run>/samples/<solver>-T<T>-<zsampler>-seed<k>-n<N>.npz
    force: bool = False  # recompute rows already in results.jsonl
    progress: bool = False
    cache_dir: Any = None  # reference-statistics cache (default $DMZ_CACHE_DIR or ~/.cache/dmz)
    allow_download: bool = False  # let the Inception weights be downloaded when missing

    def __post_init__(self):
        object.__setattr__(self, "metrics", tuple(self.metrics))
        object.__setattr__(self, "samplers", tuple(self.samplers))
        object.__setattr__(self, "steps", tuple(int(t) for t in self.steps))
        if self.mi_t is not None:
            object.__setattr__(self, "mi_t", tuple(float(t) for t in self.mi_t))


@dataclass(frozen=True)
class _Resolved:
    """A request's sizes resolved on one run (dataset defaults, device micro-batch) and the generation options."""

    n: int
    k_seeds: int
    nll_images: int
    has_latent: bool
    gen_kw: dict


def evaluate(run_dir, request: EvalRequest | None = None, *, log: Callable[[str], None] = _say,
             **fields: Any) -> list[dict]:
    """Evaluate ``run_dir`` as ``request`` asks (``fields`` replace the request's, e.g. ``metrics=["fid"]``) and
    append result rows to ``<run_dir>/results.jsonl``.

    Returns the rows for the request: newly computed ones and those found already present (same key).
    """
    from dmz.accel import precision_name
    from dmz.run import load_run
    from dmz.accel import default_micro_batch
    from dmz.sampling import check_steps, sampling_setup

    req = dataclasses.replace(request or EvalRequest(), **fields)
    _validate(req.metrics, req.samplers, req.steps, req.seeds, req.num_samples, req.solver, req.nll_images)
    if "mi" in req.metrics:
        _mi_settings(req, None)  # a bad estimator spec or t fails before the run is loaded
    t_start = time.perf_counter()
    run = load_run(run_dir, device=req.device, weights=req.weights)
    cfg = run.cfg
    dataset = cfg.data.dataset
    for t in req.steps if {"fid", "recon"} & set(req.metrics) else ():  # T matters to sampling only
        try:
            check_steps(t, cfg.diffusion.diffusion_steps, req.solver)
        except ValueError as e:
            raise EvaluationError(str(e)) from None
    d_n, d_k = dataset_defaults(dataset)
    micro = int(req.micro_batch or default_micro_batch(run.device))
    dtype, compiled = sampling_setup(run, precision=req.precision, compile=req.compile)
    base = {**config_fields(run), "weights": req.weights, "solver": req.solver, "device": str(run.device),
            "micro_batch": micro, "amp": dtype is not None, "precision": precision_name(dtype), "compile": compiled}
    plan = _Plan(run.path / RESULTS_FILE, base, req.force)
    res = _Resolved(n=int(req.num_samples or d_n), k_seeds=int(req.seeds or d_k),
                    nll_images=int(req.nll_images or nll_defaults(dataset)), has_latent=run.model.latent.code_dim > 0,
                    gen_kw=dict(batch_size=req.batch_size, solver=req.solver, precision=precision_name(dtype),
                                compile=compiled, micro_batch=micro, progress=req.progress))
    try:
        _run_metrics(run, plan, log, req, res)
    finally:  # rows computed before a failure are in results.jsonl: show them in TensorBoard too
        if plan.new and cfg.train.logger != "none":
            from dmz.tblog import log_result_rows

            log_result_rows(run.path, plan.new, log=log)
    log(f"{plan.computed} new row(s), {len(plan.rows) - plan.computed} already present, "
        f"{time.perf_counter() - t_start:.1f}s -> {plan.path}")
    return plan.rows


def _run_metrics(run, plan: _Plan, log, req: EvalRequest, res: _Resolved) -> None:
    cfg = run.cfg
    if "fid" in req.metrics:
        _fid(run, plan, log, req, res)
    if "probe" in req.metrics:
        if res.has_latent:
            _probe(run, plan, log, repr_mode=req.repr_mode or default_repr(run))
        else:
            log(f"probe: skipped, run {run.path.name} has no latent (prior={cfg.model.prior})")
    if "codes" in req.metrics:
        if res.has_latent and run.model.latent.discrete:
            _codes(run, plan, log)
        else:
            log(f"codes: skipped, run {run.path.name} has no discrete latent (prior={cfg.model.prior})")
    if "recon" in req.metrics:
        if res.has_latent:
            _recon(run, plan, log, steps=req.steps, images=req.recon_images, decodes=req.recon_decodes,
                   gen_kw=res.gen_kw)
        else:
            log(f"recon: skipped, run {run.path.name} has no latent (prior={cfg.model.prior})")
    if "nll" in req.metrics:
        _nll(run, plan, log, n=res.nll_images, gen_kw=res.gen_kw)
    if "mi" in req.metrics:
        if res.has_latent and run.model.latent.discrete:
            _mi(run, plan, log, req)
        else:
            log(f"mi: skipped, run {run.path.name} has no discrete latent (prior={cfg.model.prior})")


# ----------------------------------------------------------------------------------------------------------------
# FID / KID / precision-recall across T


def _fid(run, plan: _Plan, log, req: EvalRequest, res: _Resolved) -> None:
    from dmz.data import to_uint8
    from dmz.sampling import SEED_STRIDE, generate, save_samples
    from dmz.zsamplers import build_zsampler
    from evaluation.features import default_feature_extractor, get_feature_extractor
    from evaluation.fid import metrics_against_reference, reference_stats

    steps, n, k_seeds, samplers, reference_split = req.steps, res.n, res.k_seeds, req.samplers, req.reference_split
    kid, prc, keep_samples, cache_dir, has_latent, gen_kw = (req.kid, req.prc, req.keep_samples, req.cache_dir,
                                                             res.has_latent, res.gen_kw)
    allow_download = req.allow_download
    cfg = run.cfg
    d = cfg.data
    name = req.feature_extractor or default_feature_extractor(d.dataset)
    ext = get_feature_extractor(name, dataset=d.dataset, device=str(run.device), allow_download=allow_download)
    names = ["fid"] + (["kid_mean"] if kid else []) + (["precision", "recall", "f_score"] if prc else [])
    common = {"N": n, "seeds": k_seeds, "feature_extractor": ext.name,
              "feature_extractor_weights_sha256": ext.weights_sha256, "reference": reference_split, "repr": None}
    ref = None
    for zsampler in samplers:
        if not has_latent and zsampler != "prior":
            log(f"fid: sampler {zsampler!r} skipped, run has no latent (prior=none): only 'prior' applies")
            continue
        zs = None
        for T in steps:
            keys = [plan.key(metric=m, T=T, sampler=zsampler, **common) for m in names]
            if plan.done(keys):
                log(f"fid T={T} sampler={zsampler}: present, skipped")
                continue
            if ref is None:
                ref = reference_stats(d.dataset, reference_split, extractor=ext, root=d.data_root,
                                      resolution=d.resolution, center_crop=d.center_crop, cache_dir=cache_dir,
                                      device=str(run.device), keep_features=kid or prc)
            if zs is None:
                zs = build_zsampler(zsampler, run)
            t0 = time.perf_counter()
            per_seed: list[dict] = []
            gen_s = 0.0
            for k in range(k_seeds):
                tg = time.perf_counter()
                imgs = generate(run, steps=T, seeds=[k * SEED_STRIDE + i for i in range(n)], zsampler=zs, **gen_kw)
                gen_s += time.perf_counter() - tg
                u8 = to_uint8(imgs)
                if keep_samples:
                    save_samples(imgs, run.path / "samples" / f"{gen_kw['solver']}-T{T}-{zsampler}-seed{k}-n{n}.npz")
                per_seed.append(metrics_against_reference(u8, ref, ext, kid=kid, prc=prc))
                log(f"fid T={T} sampler={zsampler} seed {k + 1}/{k_seeds}: {per_seed[-1]['fid']:.4g}")
            secs = time.perf_counter() - t0
            for m in names:
                vals = [r[m] for r in per_seed]
                mean, sd = _mean_sd(vals)
                extra = {}
                if m == "kid_mean":
                    extra = {"kid_std_within": [r["kid_std"] for r in per_seed],
                             "kid_subset_size": per_seed[0]["kid_subset_size"]}
                plan.add(metric=m, T=T, sampler=zsampler, value=mean, sd=sd, values=vals, **common,
                         n_ref=per_seed[0]["n_ref"], seed_offsets=[k * SEED_STRIDE for k in range(k_seeds)],
                         eval_seconds=secs, gen_seconds=gen_s, **extra)


# ----------------------------------------------------------------------------------------------------------------
# linear probes


def _probe(run, plan: _Plan, log, *, repr_mode: str) -> None:
    from dmz.data import dataset_info
    from dmz.run import representations
    from evaluation.probe import probe_cv_all, probe_heldout_all

    d = run.cfg.data
    run.model.latent.check_mode(repr_mode)
    info = dataset_info(d.dataset, resolution=d.resolution, center_crop=d.center_crop)
    test_split = PROBE_TEST_SPLIT.get(d.dataset, "test")
    n_train, n_test = len(run.dataset("train")), len(run.dataset(test_split))
    score = ["accuracy", "auroc"] if info.label_kind == "class" else ["auroc"]
    short = {"accuracy": "acc", "auroc": "auroc"}
    common = {"T": None, "sampler": None, "solver": None, "seeds": None, "feature_extractor": None,
              "feature_extractor_weights_sha256": None, "reference": None, "repr": repr_mode}
    keys = [plan.key(metric=f"probe_{short[s]}_{p}", N=(n_train + n_test if p == "cv" else n_test), **common)
            for s in score for p in ("cv", "heldout")]
    if plan.done(keys):
        log(f"probe ({repr_mode}): present, skipped")
        return
    t0 = time.perf_counter()
    xtr, ytr = representations(run, "train", repr_mode)
    xte, yte = representations(run, test_split, repr_mode)
    xtr, ytr, xte, yte = (a.numpy() for a in (xtr, ytr, xte, yte))
    feats_s = time.perf_counter() - t0
    x_all, y_all = np.concatenate([xtr, xte]), np.concatenate([ytr, yte])
    extra = {"label_kind": info.label_kind, "test_split": test_split, "features_dim": int(xtr.shape[1])}
    tc = time.perf_counter()
    cvs = probe_cv_all(x_all, y_all, metrics=score)  # accuracy and AUROC from the same fitted classifiers
    cv_s = time.perf_counter() - tc
    tc = time.perf_counter()
    hos = probe_heldout_all(xtr, ytr, xte, yte, metrics=score)
    ho_s = time.perf_counter() - tc
    for s in score:
        cv, ho = cvs[s], hos[s]
        plan.add(metric=f"probe_{short[s]}_cv", N=len(x_all), value=cv["mean"], sd=cv["std"], values=cv["per_fold"],
                 folds=cv["folds"], n_skipped=cv["n_skipped"], per_attribute=cv["per_attribute"],
                 classifier=cv["classifier"], eval_seconds=feats_s + cv_s, **common, **extra)
        plan.add(metric=f"probe_{short[s]}_heldout", N=ho["n_test"], n_train=ho["n_train"], value=ho["value"],
                 sd=None, values=None, n_skipped=ho["n_skipped"], per_attribute=ho["per_attribute"],
                 classifier=ho["classifier"], eval_seconds=feats_s + ho_s, **common, **extra)
        log(f"probe {s} ({repr_mode}): cv {cv['mean']:.4f} +- {cv['std']:.4f}, held-out {ho['value']}")


# ----------------------------------------------------------------------------------------------------------------
# code diagnostics (dmz.zsamplers.pixelsnail.diagnose) as rows

#: diagnose()'s sampler names -> z-sampler names (``uniform`` is the latent's own prior, Bernoulli(0.5) / uniform)
CODE_SAMPLERS = {"uniform": "prior", "empirical": "empirical", "pixelsnail": "pixelsnail"}


def _codes(run, plan: _Plan, log, split: str = "test") -> None:
    """``bits_per_code`` per z-sampler (NLL of held-out codes, bits, under that z-sampler's own code model:
    :class:`dmz.zsamplers.base.CodeModel`) and ``heldout_dup_frac`` (share of held-out
    codes equal to some training code: what the ``dataset`` sampler can reproduce). Also writes
    ``<run>/code_diagnostics.json``. The PixelSNAIL row is there only once ``pixelsnail.pt`` is fitted; rows are keyed
    by the checkpoint step, so a PixelSNAIL refit needs ``--force`` to be re-scored."""
    from dmz.zsamplers.pixelsnail import PIXELSNAIL_FILE, diagnose

    common = {"T": None, "solver": None, "seeds": None, "feature_extractor": None,
              "feature_extractor_weights_sha256": None, "reference": None, "repr": "hard"}
    n_held = len(run.dataset(split))
    has_ps = (run.path / PIXELSNAIL_FILE).exists()
    names = [v for k, v in CODE_SAMPLERS.items() if k != "pixelsnail" or has_ps]
    keys = [plan.key(metric="bits_per_code", sampler=s, N=n_held, **common) for s in names]
    keys.append(plan.key(metric="heldout_dup_frac", sampler=None, N=n_held, **common))
    if plan.done(keys):
        log("codes: present, skipped")
        return
    t0 = time.perf_counter()
    d = diagnose(run, split=split)
    secs = time.perf_counter() - t0
    extra = {"split": split, "uniform_bits": d["uniform_bits"], "n_train": d["n_train"], "eval_seconds": secs}
    for k, v in d["bits_per_code"].items():
        plan.add(metric="bits_per_code", sampler=CODE_SAMPLERS.get(k, k), N=d["n_heldout"], value=v, sd=None,
                 gap_bits=d["gap_bits"][k], pixelsnail=d["pixelsnail"] if k == "pixelsnail" else None,
                 **common, **extra)
    plan.add(metric="heldout_dup_frac", sampler=None, N=d["n_heldout"], value=d["heldout_duplicate_fraction"],
             sd=None, n_unique_heldout=d["n_unique_heldout"], n_unique_train=d["n_unique_train"],
             n_unbalanced_bits=d.get("n_unbalanced_bits"), **common, **extra)
    log("codes: bits per held-out code " + ", ".join(f"{CODE_SAMPLERS.get(k, k)} {v:.2f}"
                                                        for k, v in d["bits_per_code"].items())
        + f" (|z| code: {d['uniform_bits']:g} bits); held-out duplicates {d['heldout_duplicate_fraction']:.3f}")


# ----------------------------------------------------------------------------------------------------------------
# mutual information I(z; x_t) over the noise level t (evaluation.mi; the release's mi_eval.py)


def _mi_settings(req: EvalRequest, dataset: str | None):
    """The request's estimator and t grid, checked (``EvaluationError`` names what is wrong)."""
    from evaluation.mi_settings import RELEASE_T, MIError, check_noise_levels, default_spec, parse_spec

    try:
        cfg = parse_spec(req.mi or default_spec(dataset or ""))
        ts = check_noise_levels(req.mi_t or RELEASE_T)
    except MIError as e:
        raise EvaluationError(str(e)) from None
    return cfg, ts


def _mi(run, plan: _Plan, log, req: EvalRequest, split: str = "train") -> None:
    """``mi_bits`` per noise level t: a lower bound on I(z; x_t) in bits between the run's hard codes of ``split``
    (``encode_split``, as every z-sampler uses them) and the same images forward-noised to t, on the held-out fifth
    of the pairs (:func:`evaluation.mi.estimate_mi`); ``h_z_bits`` (the codes' plug-in entropy) is the ceiling."""
    from dmz.model import build_diffusion
    from dmz.run import encode_split, split_images
    from evaluation.mi import mi_curve
    from evaluation.mi_settings import canonical_spec

    cfg, ts = _mi_settings(req, run.cfg.data.dataset)
    spec = canonical_spec(cfg)
    ds = run.dataset(split)
    common = {"T": None, "sampler": None, "solver": None, "seeds": None, "feature_extractor": None,
              "feature_extractor_weights_sha256": None, "reference": split, "repr": "hard", "N": len(ds),
              "mi_estimator": spec}
    todo = [t for t in ts if not plan.done([plan.key(metric="mi_bits", noise_t=t, **common)])]
    if not todo:
        log(f"mi ({spec}): present, skipped")
        return
    codes = encode_split(run, split)[0]
    x0 = split_images(run, split)[0].float()
    diffusion = build_diffusion(run.cfg)
    for r in mi_curve(x0, codes, diffusion, cfg, todo, log=lambda m: log(f"{m} [{spec}]")):
        plan.add(metric="mi_bits", noise_t=r["noise_t"], value=r["bits"], sd=None, values=None,
                 train_bits=r["train_bits"], h_z_bits=r["h_z_bits"], noise_step=r["noise_step"],
                 n_heldout=r["n_heldout"], n_val=r["n_val"], best_epoch=r["best_epoch"], val_bits=r["val_bits"],
                 mi_steps=r["steps"], mi_settings=r["settings"],
                 eval_seconds=r["seconds"], **common)


# ----------------------------------------------------------------------------------------------------------------
# reconstruction


def _recon(run, plan: _Plan, log, *, steps, images: int, decodes: int, gen_kw) -> None:
    from evaluation.recon import reconstruction_mse

    common = {"sampler": None, "N": images, "seeds": decodes, "feature_extractor": None,
              "feature_extractor_weights_sha256": None, "reference": None, "repr": None}
    for T in steps:
        for metric, shuffle in (("recon_mse", False), ("recon_mse_shuffled", True)):
            if plan.done([plan.key(metric=metric, T=T, **common)]):
                log(f"{metric} T={T}: present, skipped")
                continue
            r = reconstruction_mse(run, steps=T, images=images, decodes=decodes, shuffle=shuffle, **gen_kw)
            plan.add(metric=metric, T=T, value=r["mse"], sd=r["sd"], values=r["per_decode"], units="[-1,1]",
                     value_01=r["mse_01"], per_image=r["per_image"], split=r["split"], eval_seconds=r["seconds"],
                     **common)
            log(f"{metric} T={T}: {r['mse']:.5f} ([-1,1] units; {r['mse_01']:.5f} in [0,1])")


# ----------------------------------------------------------------------------------------------------------------
# NLL in bits/dim (full VLB) and with the coding cost of z


def _nll(run, plan: _Plan, log, *, n: int, gen_kw) -> None:
    """``nll_bpd`` and ``nll_bpd_z`` rows per split (module docstring; :mod:`evaluation.nll`). A ``nll_bpd`` row
    keeps its per-image ``values``, so a missing ``nll_bpd_z`` row (e.g. PixelSNAIL fitted later) is added without
    recomputing the bound. Like the ``codes`` rows, a PixelSNAIL refit needs ``--force`` to be re-scored."""
    from evaluation import nll as nll_eval

    latent = run.model.latent
    models = nll_eval.code_models(run, log)
    if models is None:
        log(f"nll: no nll_bpd_z rows, prior={latent.name} has a continuous z: its coding cost is not finite "
            f"(a density, not a probability; only nll_bpd, the bound given z, is written)")
    steps = run.cfg.diffusion.diffusion_steps
    common = {"T": None, "solver": None, "seeds": None, "feature_extractor": None,
              "feature_extractor_weights_sha256": None,
              "repr": None if latent.code_dim == 0 else ("hard" if latent.discrete else "sample")}
    fixed = {"timesteps": steps, "clip_denoised": True, "precision": "fp32", "amp": False}  # NLL is always fp32
    for split in NLL_SPLITS:
        n_s = min(n, len(run.dataset(split)))
        where = {"N": n_s, "reference": split, **common}
        key_v = plan.key(metric="nll_bpd", sampler=None, **where)
        keys_z = {s: plan.key(metric="nll_bpd_z", sampler=s, **where) for s in (models or {})}
        if plan.done([key_v, *keys_z.values()]):
            log(f"nll {split} N={n_s}: present, skipped")
            continue
        old = None if plan.force else plan.existing.get(key_v)
        if old is not None and len(old.get("values") or ()) == n_s and old.get("dims"):
            plan.rows.append(old)  # the bound is there: only z rows are missing
            per_image, dims, vlb = np.asarray(old["values"], dtype=np.float64), int(old["dims"]), old
            codes = nll_eval.split_codes(run, split, n_s)
        else:
            log(f"nll {split}: full VLB over {steps} steps, {n_s} images")
            r = nll_eval.nll_for_split(run, split, n_s, batch_size=gen_kw["batch_size"],
                                       micro_batch=gen_kw["micro_batch"], compile=gen_kw["compile"],
                                       progress=gen_kw["progress"])
            per_image, dims, codes = r["total_bpd"], r["dims"], r["codes"]
            vlb = plan.add(metric="nll_bpd", sampler=None, **where, **nll_eval.summarize(per_image), z_bits=None,
                           **fixed, prior_bpd=float(r["prior_bpd"].mean()),
                           decoder_bpd=float(r["decoder_bpd"].mean()), kl_bpd=float(r["kl_bpd"].mean()), dims=dims,
                           values=per_image.tolist(), vb_mean_per_t=[float(f"{v:.7g}") for v in r["vb_mean_per_t"]],
                           noise_seed_offset=nll_eval.noise_seeds(split, 1)[0], eval_seconds=r["seconds"])
            log(f"nll_bpd {split}: {vlb['value']:.4f} +- {vlb['se'] or 0:.4f} (se) bits/dim over {n_s} images "
                f"({r['seconds']:.0f}s)")
        for s, model in (models or {}).items():
            if not plan.force and keys_z[s] in plan.existing:
                plan.rows.append(plan.existing[keys_z[s]])
                continue
            t0 = time.perf_counter()
            bits = model.nll_bits(codes).double().cpu().numpy()
            row = plan.add(metric="nll_bpd_z", sampler=s, **where, **nll_eval.summarize(per_image + bits / dims),
                           z_bits=float(bits.mean()), z_bits_sd=float(bits.std(ddof=1)) if n_s > 1 else None,
                           z_bpd=float(bits.mean() / dims), nll_bpd=vlb["value"], **fixed, dims=dims,
                           eval_seconds=time.perf_counter() - t0)
            log(f"nll_bpd_z {split} ({s}): {row['value']:.4f} bits/dim (z: {row['z_bits']:.2f} bits per image)")


# ----------------------------------------------------------------------------------------------------------------
# table + CLI


def results_table(rows: list[dict]):
    """A pandas DataFrame of the rows' headline columns (metric, T, sampler, value, sd, N, seeds, ...)."""
    import pandas as pd

    cols = ["metric", "T", "sampler", "value", "sd", "N", "seeds", "feature_extractor", "repr", "checkpoint_step"]
    if any(str(r.get("metric", "")).startswith("nll") for r in rows):  # NLL rows differ by split only
        cols.insert(3, "reference")
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=cols)
    for c in cols:
        if c not in df:
            df[c] = None
    df = df[cols].copy()
    for c in ("T", "N", "seeds", "checkpoint_step"):
        df[c] = df[c].map(lambda v: "-" if v is None or (isinstance(v, float) and np.isnan(v)) else int(v))
    return df


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m evaluation.run", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", required=True, help="run folder written by dmz.train")
    p.add_argument("--steps", type=int, nargs="+", default=list(DEFAULT_STEPS), help="denoising steps T")
    p.add_argument("--num-samples", type=int, default=None,
                   help="generated images per (T, sampler, seed); default 10000 (cifar10, celeba64), 1000 (digits)")
    p.add_argument("--metrics", nargs="+", default=["fid", "probe"], help=f"any of {', '.join(METRIC_GROUPS)}")
    p.add_argument("--sampler", nargs="+", default=["prior"], dest="samplers",
                   help="z-samplers: prior | empirical | dataset | normal | const | pixelsnail; options after a colon, e.g. "
                        "pixelsnail:temperature=0.8 (the whole spec names the result row)")
    p.add_argument("--seeds", type=int, default=None, help="sampling seeds K (mean +- sd); default 3 digits, else 1")
    p.add_argument("--feature-extractor", default=None,
                   help="inception-v3-compat | digits-classifier-v1 (default: by dataset)")
    p.add_argument("--reference-split", default="train", help="FID reference: this whole split")
    p.add_argument("--kid", action="store_true", help="also KID")
    p.add_argument("--prc", action="store_true", help="also precision / recall")
    p.add_argument("--repr", default=None, dest="repr_mode",
                   help="probe features: soft (released) | hard | probs (bernoulli); mean | sample (normal)")
    p.add_argument("--recon-images", type=int, default=RECON_DEFAULTS[0])
    p.add_argument("--recon-decodes", type=int, default=RECON_DEFAULTS[1])
    p.add_argument("--nll-images", type=int, default=None,
                   help="NLL: the first N train and the first N test images; default 1000 (cifar10, celeba64), "
                        f"{NLL_DEFAULTS['digits']} (digits)")
    p.add_argument("--mi", default=None,
                   help="I(z; x_t) estimator for --metrics mi: mine | infonce, options after a colon, e.g. "
                        "mine:epochs=100,lr=0.001 (default: the release's mine settings; digits: mine:epochs=100,lr=0.001)")
    p.add_argument("--mi-t", type=float, nargs="+", default=None,
                   help="noise levels t in [0, 1] for --metrics mi (default: the release's 0, 0.1, ..., 0.9, 0.91, ..., 1)")
    p.add_argument("--solver", default="ddpm", choices=["ddpm", "ddim"])
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--micro-batch", type=int, default=None, help="rows per denoiser call (default 32 CPU, 256 CUDA)")
    p.add_argument("--device", default="auto")
    p.add_argument("--weights", default="ema", choices=["ema", "model"])
    p.add_argument("--precision", default=None, choices=["fp32", "bf16", "auto"],
                   help="sampling arithmetic (default: the run's train.sampling_precision)")
    p.add_argument("--amp", action="store_true", help="the same as --precision bf16")
    p.add_argument("--compile", default=None, action=argparse.BooleanOptionalAction,
                   help="torch.compile the denoiser (default: the run's train.sampling_compile)")
    p.add_argument("--keep-samples", action="store_true", help="write an npz per T / sampler / seed")
    p.add_argument("--force", action="store_true", help="recompute rows already in results.jsonl")
    p.add_argument("--allow-download", action="store_true", help="download the Inception weights if missing")
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    if not Path(args.run).is_dir():
        print(f"error: run folder {args.run} does not exist", file=sys.stderr)
        return 2
    from dmz.data import DatasetNotFoundError
    from dmz.runio import CheckpointError
    from evaluation.features import FeatureExtractorUnavailable

    if args.amp:  # the CLI's alias: --amp is --precision bf16
        if args.precision not in (None, "bf16"):
            print(f"error: --amp means --precision bf16; drop one of --amp and --precision {args.precision}",
                  file=sys.stderr)
            return 2
        args.precision = "bf16"
    try:
        request = EvalRequest(**{f.name: getattr(args, f.name) for f in dataclasses.fields(EvalRequest)
                                 if f.name not in ("progress", "cache_dir")}, progress=not args.no_progress)
        rows = evaluate(args.run, request)
    except (EvaluationError, CheckpointError, FeatureExtractorUnavailable, DatasetNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    table = results_table(rows)
    if len(table):
        print(table.to_string(index=False, na_rep="-", float_format=lambda v: f"{v:.4g}"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
