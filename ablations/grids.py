"""Named ablation grids: which trainings to run and which evaluations to run on each (PAPER.md 2.2).

A **cell** is one resolved training config (a preset plus overrides) and the evaluations to run on its checkpoint.
Samplers and step counts T are evaluation options, never separate trainings: one checkpoint serves every z-sampler
and every T.

    >>> [c.name for c in expand("latent_size", "digits")]    # the default budget: smallest and largest |z|
    ['z16', 'z128']
    >>> cells = expand("latent_size", "digits", budget="full")  # |z| in {16, 64, 128}, with and without prior matching
    >>> [c.name for c in cells][:2]
    ['z16', 'z64']
    >>> cells[0].config().model.latent_dim, cells[0].evals[0].samplers
    (16, ('prior', 'empirical', 'dataset', 'pixelsnail'))

Sizes. On the paper presets (``cifar10``, ``celeba64``) a cell trains for the preset's own length and is evaluated at
the paper's sizes (T in {10, 20, 50, 100}, the evaluation's default number of samples). On ``digits`` (the CPU
default) every grid has its own :class:`Budget` below, sized so the whole grid, training and evaluation, finishes in
about 15 minutes on 2 CPU cores (one cell measured, the grid projected: ``ablations/README.md``). The budgets live
here, not in the presets, so the presets stay the paper's.

Order in which a cell's config is built: preset -> the grid's budget (``steps=...``) -> the user's ``--set`` ->
the grid axis of that cell (e.g. ``latent_dim=64``). A ``--set`` of a key that a grid axis sets is ignored for that
grid (with a warning), because it would make cells identical.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import json
import sys
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Callable

from dmz.config import Config, ConfigError, PRESETS, _split, resolve, valid_keys
from dmz.runio import REPO, read_jsonl
from evaluation.extractor_names import PINNED_WEIGHTS_SHA256, default_feature_extractor
from evaluation.mi_settings import RELEASE_T, canonical_spec, default_spec, parse_spec
from evaluation.rows import RESULTS_FILE

NLL_METRICS = ("nll_bpd", "nll_bpd_z")  # evaluation.run --metrics nll: VLB given z; the same plus z's coding cost  # evaluation.run appends one row per metric / T / sampler

__all__ = ["Budget", "EvalSpec", "Variant", "Cell", "GridDef", "GRIDS", "GridError", "expand", "get_grid",
           "requested_rows", "row_matches", "missing_rows", "is_done", "default_runs_root", "cell_dir",
           "pixelsnail_width", "add_cell_args", "results_label", "cells_from_args", "cells_by_seed", "check_seeds", "cell_parser", "parse_cells", "LATENT_SIZES",
           "ZSAMPLERS_ALL", "PRIOR_MATCHING_WEIGHT", "PRIOR_MATCHING_SIZES", "CODE_SAMPLERS", "DIGITS_LATENT_SIZES"]

PAPER_T = (10, 20, 50, 100)  # Table 1's step counts (PAPER.md 2.2)
LATENT_SIZES = (16, 32, 64, 128, 256)  # |z| axis of the size ablation
ZSAMPLERS_ALL = ("prior", "empirical", "dataset", "pixelsnail")  # PAPER.md 1.5
CODE_SAMPLERS = ("prior", "empirical", "pixelsnail")  # the z-samplers with a likelihood (bits per held-out code)
PRIOR_MATCHING_WEIGHT = 0.1  # beyond the paper: the aux penalty of dmz.priors.bernoulli.prior_matching_penalty
#: beyond the paper (issue 20): dmz.priors.bernoulli.prior_mmd_penalty, a batch MMD^2 to Bernoulli(0.5) with a
#: characteristic kernel on codes (every order of dependence between bits); weight 1 not tuned (the penalty of a
#: batch collapsed onto 4 codes is ~0.8, of two fair batches ~0 +- 0.01)
PRIOR_MMD_WEIGHT = 1.0
#: a larger MMD weight (cells ``z*-mmd10``, optional: only ``--only`` runs them): weight 1 leaves
#: a dependence the penalty itself detects in every batch of 64 codes (benchmarks/results/mmd_power.md)
PRIOR_MMD_WEIGHT_LARGE = 10.0
PRIOR_MATCHING_SIZES = (16, 64, 128)  # the released CIFAR |z| up to the paper's large |z| (FID 17.23 at 128)
DIGITS_LATENT_SIZES = (16, 64, 128)  # the |z| scaling study on digits (issue 5): with and without prior matching
REPRESENTATION_SIZES = (16, 64, 256)
REPRESENTATION_PRIORS = ("bernoulli", "normal", "categorical")


class GridError(ValueError):
    """An unknown grid, preset or key; the message lists the valid ones (and the closest match)."""


def _suggest(name: str, valid) -> str:
    close = difflib.get_close_matches(name, list(valid), n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


# ----------------------------------------------------------------------------------------------------------------
# what a cell is
# ----------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class EvalSpec:
    """One ``evaluation.run.evaluate`` call on a cell's checkpoint.

    :param metrics: ``fid`` and/or ``probe``. :param steps: denoising steps T (FID only).
    :param samplers: z-samplers (FID only). :param num_samples: generated images per FID (None = evaluation default).
    :param seeds: number of sampling seeds K; FID is reported as mean +- sd over them (None = evaluation default).
    :param solver: the sampling loop of the FID: ``ddpm`` (ancestral, as released) or ``ddim`` (eta=0).
    """

    metrics: tuple[str, ...]
    steps: tuple[int, ...] = PAPER_T
    samplers: tuple[str, ...] = ("prior",)
    num_samples: int | None = None
    seeds: int | None = None
    solver: str = "ddpm"  # FID only: ddpm (ancestral, released) | ddim (eta=0)


@dataclass(frozen=True)
class Budget:
    """How big a grid is on one preset.

    :param train: config overrides applied to every cell before the user's ``--set`` (e.g. ``{"steps": 400}``).
    :param steps: T for FID. :param num_samples: images per FID (None = evaluation default, 10k on paper presets).
    :param seeds: number of FID sampling seeds (None = evaluation default).
    :param pixelsnail: keyword arguments of ``dmz.zsamplers.pixelsnail.fit_pixelsnail`` (``epochs``, ``batch_size``, ``model_kwargs``, ...);
        empty = the released PixelSNAIL and fit_pixelsnail's defaults (<= 500 epochs, early stopping).
    :param metrics: the metric groups this budget evaluates, of those a variant asks for (None = all of them).
    :param variants: the grid's variants this budget runs, by name (None = all of them).
    :param samplers: the z-samplers this budget scores, of those a variant asks for (None = all of them).
    :param nll_images: images per split (train and test) for the NLL in bits/dim (None = the evaluation default).
    """

    train: dict[str, Any] = field(default_factory=dict)
    steps: tuple[int, ...] = PAPER_T
    num_samples: int | None = None
    seeds: int | None = None
    pixelsnail: dict[str, Any] = field(default_factory=dict)
    metrics: tuple[str, ...] | None = None
    variants: tuple[str, ...] | None = None
    samplers: tuple[str, ...] | None = None
    nll_images: int | None = None  # images per split for the NLL (None = the evaluation's default for the dataset)


#: Paper presets: as released (the preset's training length), evaluation at the paper's sizes.
PAPER_BUDGET = Budget()

# Digits budgets: each grid about 15 minutes on 2 free CPU cores, run as 2 cells at a time with 1 thread each (the
# local executor's default there). Measured on the 2-core development machine (ablations/README.md): one thread
# trains the digits model at ~110 images/s (0.58 s per step of 64) and samples ~250-290 image-steps/s; two threads
# per process were 5x slower whenever anything else ran on the machine.
#: Digits' PixelSNAIL: one block, 32 channels and no attention (so a gated causal-conv prior). The released one
#: (64 channels, 2 blocks x 2 res-blocks, attention) costs ~15 s per epoch at |z|=64 and its attention alone ~20 s per
#: epoch and ~25 s per 250 codes at |z|=256 on one core. This one fits 30 epochs in ~20 s at |z|=64 and reaches a
#: held-out NLL below the empirical (independent-bits) sampler's (60.4 vs 60.8 bits at |z|=64, 250 training steps).
DIGITS_PIXELSNAIL = {"epochs": 30, "batch_size": 32,
                     "model_kwargs": {"channel": 32, "res_channel": 32, "n_block": 1, "n_res_block": 1,
                                      "attention": False}}
#: Every digits grid (latent_size's quick budget included) trains its cells as long as latent_size
#: does (1,000 steps of 64), so cells with the same config are one training shared between grids (run_grid copies a
#: finished training of the same run id from another grid's folder instead of training it again), and scores FID on
#: N=300 samples with 3 sampling seeds (result rows with the same T / sampler / N / seeds are shared the same way).
DIGITS_STEPS = 1000
DIGITS_FID = {"num_samples": 300, "seeds": 3}
#: main (Table 1): DDPM and DMZ, FID at all four T, plus NLL in bits/dim (``nll``).
DIGITS_MAIN = Budget(train={"steps": DIGITS_STEPS}, steps=PAPER_T, **DIGITS_FID)
#: latent_type / conditioning: FID at T=10 (small T, the paper's point) and T=100 (its FID@100), plus the probe.
DIGITS_FID_AND_PROBE = Budget(train={"steps": DIGITS_STEPS}, steps=(10, 100), **DIGITS_FID)
#: ddim (Table 10): four trainings (DDPM / DMZ x gamma in {0, released}), ancestral and DDIM at all four T.
DIGITS_DDIM = Budget(train={"steps": DIGITS_STEPS}, steps=PAPER_T, **DIGITS_FID)
#: latent_size's full study on digits (``--budget full``; issue 5's |z| scaling study, issue 20's prior penalties): 9
#: trainings a seed, |z| in {16, 64, 128} with no penalty, prior matching 0.1 and prior MMD 1, each trained 1,000 steps
#: and scored at T=10 and T=100 on N=500 samples (1 sampling seed): the unpenalised cells with all 4 z-samplers, the
#: code diagnostics (bits per held-out code under each code model) and I(z; x_t) at the release's 20 noise levels; the
#: penalty cells with the prior and dataset samplers and the code diagnostics (:func:`_latent_size`). Measured per cell
#: on one thread: ablations/README.md. PixelSNAIL: lr 1e-3, up to 150 epochs with held-out early stopping (the
#: released 1e-4 was far from converged in 30 epochs; 1e-3 for 100 epochs gave 103 instead of 124 bits per held-out
#: code at |z|=128, against 121 for independent bits). No probe: its 12 logistic-regression fits cost more than the
#: 4 FIDs (~115 s at |z|=64); probe vs |z| is the representation grid's.
DIGITS_LATENT_SIZE = Budget(train={"steps": 1000}, steps=(10, 100), num_samples=500, seeds=1,
                            pixelsnail={**DIGITS_PIXELSNAIL, "epochs": 150, "lr": 1e-3}, metrics=("fid", "codes", "mi"),
                            variants=tuple(n for L in DIGITS_LATENT_SIZES
                                           for n in (f"z{L}", f"z{L}-pm{PRIOR_MATCHING_WEIGHT:g}",
                                                     f"z{L}-mmd{PRIOR_MMD_WEIGHT:g}")))
#: latent_size's default on digits (the README's first command): the |z| effect in about a quarter of an hour on 2
#: cores. The smallest and largest |z| of the study (one round of 2 cells, 1 thread each), trained as in the full
#: study (same cells, same run folders: ``--budget full`` reuses them), scored at T=10 with the Bernoulli(0.5) prior
#: and with codes of training images (the decoder's own quality) over 3 sampling seeds, so the table carries the
#: spread the prior's |z| gap is judged against. No PixelSNAIL, no code diagnostics (the full study has both). Eager
#: sampling: its 30k image-steps per cell take ~2 min, less than compiling the denoiser costs on a fresh machine.
DIGITS_LATENT_SIZE_QUICK = Budget(train={"steps": 1000, "sampling_compile": False}, steps=(10,), num_samples=500, seeds=3, metrics=("fid",),
                                  samplers=("prior", "dataset"),
                                  variants=(f"z{DIGITS_LATENT_SIZES[0]}", f"z{DIGITS_LATENT_SIZES[-1]}"))
#: representation: 9 trainings (5 rounds of 2), probe only (no sampling; ~1-2 min per cell), trained as long as the
#: other grids (1,000 steps): at the earlier 150 steps the models were far from trained (Bernoulli |z|=16 probed 0.51
#: there against 0.87 after 1,000 steps in latent_type), so the probe-vs-|z| claim read undertrained encoders. Cells
#: with another grid's config (bernoulli-z16 = main's dmz) are copied, not retrained.
DIGITS_REPRESENTATION = Budget(train={"steps": DIGITS_STEPS})


@dataclass(frozen=True)
class Variant:
    """One row of a grid before it is placed on a preset: the grid-axis overrides and what to evaluate."""

    name: str
    overrides: dict[str, Any]
    metrics: tuple[str, ...] = ("fid",)
    samplers: tuple[str, ...] = ("prior",)
    #: the z-samplers whose bits per held-out code ``codes`` scores (None = those of ``samplers`` with a likelihood);
    #: pixelsnail here fits PixelSNAIL even where no FID samples from it
    code_samplers: tuple[str, ...] | None = None
    #: run only when named by ``--only`` (a follow-up try), never in a grid's or budget's default cells
    optional: bool = False


@dataclass(frozen=True)
class Cell:
    """A variant resolved on a preset: a training config plus its evaluations. ``overrides`` are in order."""

    grid: str
    name: str
    preset: str
    overrides: tuple[tuple[str, Any], ...]
    evals: tuple[EvalSpec, ...]
    gpus: int = 0
    pixelsnail: dict[str, Any] = field(default_factory=dict, hash=False)

    def config(self) -> Config:
        return resolve(self.preset, dict(self.overrides))

    @cached_property
    def run_id(self) -> str:
        return self.config().run_id()

    @property
    def needs_pixelsnail(self) -> bool:
        return any("pixelsnail" in e.samplers and {"fid", "codes"} & set(e.metrics) for e in self.evals)

    @property
    def seed(self) -> int:
        """The training seed (``train.seed``)."""
        return int(self.config().train.seed)

    @property
    def tag(self) -> str:
        """The cell's name in messages: the variant, plus ``@seed<k>`` for a training-seed replicate (k != 0)."""
        return self.name if self.seed == 0 else f"{self.name}@seed{self.seed}"

    @property
    def dirname(self) -> str:
        return f"{self.name}-{self.run_id}"

    def to_dict(self) -> dict[str, Any]:
        """Plain data (what a job receives): no classes of ours, so it unpickles anywhere."""
        return {"grid": self.grid, "name": self.name, "preset": self.preset,
                "overrides": [list(o) for o in self.overrides], "evals": [dataclasses.asdict(e) for e in self.evals],
                "gpus": self.gpus, "pixelsnail": dict(self.pixelsnail), "run_id": self.run_id}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Cell":
        evals = tuple(EvalSpec(metrics=tuple(e["metrics"]), steps=tuple(e["steps"]), samplers=tuple(e["samplers"]),
                               num_samples=e["num_samples"], seeds=e["seeds"], solver=e.get("solver", "ddpm"))
                      for e in d["evals"])
        return cls(grid=d["grid"], name=d["name"], preset=d["preset"],
                   overrides=tuple((k, v) for k, v in d["overrides"]), evals=evals, gpus=d["gpus"],
                   pixelsnail=dict(d["pixelsnail"]))


@dataclass(frozen=True)
class GridDef:
    """:param variants: the grid's rows. :param budgets: per preset (missing = :data:`PAPER_BUDGET`).
    :param index: the columns that identify a table row (besides metric/T). :param table: what the paper's table is."""

    name: str
    description: str
    table: str
    variants: Callable[[], list[Variant]]
    budgets: dict[str, Budget]  # by preset ("digits"); other named budgets of a preset as "digits:full"
    index: tuple[str, ...] = ("variant", "sampler")

    def budget(self, preset: str, name: str | None = None) -> Budget:
        """The preset's budget, or its budget called ``name`` (``--budget``)."""
        if name is None:
            return self.budgets.get(preset, PAPER_BUDGET)
        valid = self.budget_names(preset)
        if name not in valid:
            raise GridError(f"unknown budget {name!r} for grid {self.name} on {preset}; valid: {', '.join(valid)}")
        return self.budgets.get(f"{preset}:{name}", self.budget(preset))

    def budget_names(self, preset: str) -> list[str]:
        return ["default"] + [k.split(":", 1)[1] for k in self.budgets if k.startswith(f"{preset}:")]


# ----------------------------------------------------------------------------------------------------------------
# the grids
# ----------------------------------------------------------------------------------------------------------------
def _main() -> list[Variant]:
    return [Variant("ddpm", {"prior": "none"}, metrics=("fid", "nll")),
            Variant("dmz", {"prior": "bernoulli"}, metrics=("fid", "nll"))]


#: capacity-matched categorical: as many bits as the Bernoulli code (latent_dim groups of K categories = latent_dim
#: * log2 K bits); on the Bernoulli default |z|=16, 8 groups of K=4
CATEGORICAL_MATCHED = {"prior": "categorical", "latent_dim": 8, "categories": 4}


def _latent_type() -> list[Variant]:
    return [Variant("bernoulli", {"prior": "bernoulli"}, metrics=("fid", "probe")),
            # N(0, I) (the prior), the release's `normal` sampler (per-dimension mean / std of the training latents,
            # drawn Gaussian: the release drew uniform noise, PAPER.md 1.5) and its `const` sampler
            Variant("normal", {"prior": "normal"}, metrics=("fid", "probe"), samplers=("prior", "normal", "const")),
            Variant("categorical", {"prior": "categorical"}, metrics=("fid", "probe")),  # 16 groups of K=4: 32 bits
            Variant("categorical-16bit", dict(CATEGORICAL_MATCHED), metrics=("fid", "probe")),
            Variant("none", {"prior": "none"}, metrics=("fid",))]  # no latent: nothing to probe


#: the tokenised cross-attention variant: z as this many tokens (|z|=16: one per 4 bits) instead of the released one
Z_TOKENS = 4


def _conditioning() -> list[Variant]:
    methods = ("cross_attention", "concat", "add", "cross_attention+add")
    out = [Variant(m.replace("+", "_"), {"prior": "bernoulli", "conditioning": m}, metrics=("fid", "probe"))
           for m in methods]
    return out + [Variant(f"cross_attention_tokens{Z_TOKENS}",
                          {"prior": "bernoulli", "conditioning": "cross_attention", "z_tokens": Z_TOKENS},
                          metrics=("fid", "probe"))]


#: the released DDPM-IP gamma of a preset is its own diffusion.input_perturbation; 0 = plain DDPM (what DDIM needs)
def _ddim() -> list[Variant]:
    out = []
    for name, prior in (("ddpm", "none"), ("dmz", "bernoulli")):
        for gname, gamma in (("gamma0", {"input_perturbation": 0.0}), ("released", {})):
            out.append(Variant(f"{name}-{gname}", {"prior": prior, **gamma}, metrics=("fid", "fid_ddim")))
    return out


def _latent_size() -> list[Variant]:
    out = [Variant(f"z{L}", {"prior": "bernoulli", "latent_dim": L, "prior_matching": 0.0},
                   metrics=("fid", "probe", "codes", "mi"), samplers=ZSAMPLERS_ALL) for L in LATENT_SIZES]
    # The penalty cells answer open question 1 (is the Bernoulli(0.5) prior good at large |z|?): FID with the prior and
    # with encoded codes (what the penalty costs the decoder), and bits per held-out code under every code model (how
    # far from independent fair bits the codes still are). Not the learned samplers' FIDs nor I(z; x_t): those are
    # the unpenalised cells' questions (claim 4b, issue 19), and they would double each penalty cell's cost.
    penalised = dict(metrics=("fid", "probe", "codes"), samplers=("prior", "dataset"), code_samplers=CODE_SAMPLERS)
    out += [Variant(f"z{L}-pm{PRIOR_MATCHING_WEIGHT:g}",
                    {"prior": "bernoulli", "latent_dim": L, "prior_matching": PRIOR_MATCHING_WEIGHT}, **penalised)
            for L in PRIOR_MATCHING_SIZES]
    out += [Variant(f"z{L}-mmd{w:g}", {"prior": "bernoulli", "latent_dim": L, "prior_matching": 0.0, "prior_mmd": w},
                    **penalised, optional=w != PRIOR_MMD_WEIGHT)
            for w in (PRIOR_MMD_WEIGHT, PRIOR_MMD_WEIGHT_LARGE) for L in PRIOR_MATCHING_SIZES]
    return out


def _representation() -> list[Variant]:
    return [Variant(f"{p}-z{L}", {"prior": p, "latent_dim": L}, metrics=("probe",), samplers=())
            for p in REPRESENTATION_PRIORS for L in REPRESENTATION_SIZES]


GRIDS: dict[str, GridDef] = {g.name: g for g in [
    GridDef("main", "unconditional DDPM (prior=none) vs DMZ, FID at T = 10, 20, 50, 100",
            "Table 1: unconditional generation vs steps", _main, {"digits": DIGITS_MAIN}),
    GridDef("latent_type", "latent type: Bernoulli (DMZ) / Normal / categorical / none; FID and probe",
            "ablation: latent type", _latent_type, {"digits": DIGITS_FID_AND_PROBE}),
    GridDef("conditioning", "how z enters the UNet: cross_attention / concat / add / cross_attention+add",
            "ablation: conditioning", _conditioning, {"digits": DIGITS_FID_AND_PROBE}),
    GridDef("latent_size", "|z| in {16..256} (digits: 16, 64, 128) x z-sampler {prior, empirical, dataset, "
            "pixelsnail}, plus the prior penalties at |z| 16, 64, 128 (prior matching 0.1, prior MMD 1: prior and "
            "dataset FID); bits per held-out code per code model",
            "ablation: |z| size x z-sampler", _latent_size, {"digits": DIGITS_LATENT_SIZE_QUICK, "digits:full": DIGITS_LATENT_SIZE},
            index=("variant", "latent_dim", "prior_matching", "prior_mmd", "sampler")),
    GridDef("ddim", "DDPM and DMZ trained with input perturbation gamma=0 and with the preset's (released) gamma; "
            "FID of DDIM (eta=0) and ancestral sampling at T = 10, 20, 50, 100 on the same checkpoints",
            "Table 10: DDIM", _ddim, {"digits": DIGITS_DDIM}, index=("variant", "solver", "sampler")),
    GridDef("representation", "linear-probe accuracy / AUROC across priors and |z|",
            "Table 2 (guess): representation quality", _representation, {"digits": DIGITS_REPRESENTATION},
            index=("variant", "prior", "latent_dim")),
]}


def get_grid(name: str) -> GridDef:
    if name not in GRIDS:
        raise GridError(f"unknown grid {name!r}{_suggest(name, GRIDS)}; valid grids: {', '.join(GRIDS)}")
    return GRIDS[name]


def pixelsnail_width(latent_dim: int) -> int:
    """PixelSNAIL's grid width: the released 8 where it divides |z|, else the largest divisor below 8."""
    return max(w for w in range(1, 9) if latent_dim % w == 0)


# ----------------------------------------------------------------------------------------------------------------
# expansion
# ----------------------------------------------------------------------------------------------------------------
def _parse_sets(sets: list[str] | dict[str, Any] | None) -> list[tuple[str, Any]]:
    if not sets:
        return []
    items = list(sets.items()) if isinstance(sets, dict) else [_split(s) for s in sets]
    known = set(valid_keys()) | {k.split(".", 1)[1] for k in valid_keys()}
    for key, _ in items:
        if key not in known:
            bare = sorted(known)
            raise GridError(f"unknown config key {key!r}{_suggest(key, bare)}; valid keys: {', '.join(valid_keys())}")
    return items


def _canonical(key: str) -> str:
    return key.split(".", 1)[1] if "." in key else key


def _evals(variant: Variant, budget: Budget) -> tuple[EvalSpec, ...]:
    metrics = [m for m in variant.metrics if budget.metrics is None or m in budget.metrics]
    samplers = tuple(s for s in variant.samplers if budget.samplers is None or s in budget.samplers)
    out = []
    if "fid" in metrics:
        out.append(EvalSpec(("fid",), tuple(budget.steps), samplers, budget.num_samples, budget.seeds))
    if "fid_ddim" in metrics:  # the same FID with the DDIM (eta=0) loop: solver "ddim" in the rows
        out.append(EvalSpec(("fid",), tuple(budget.steps), samplers, budget.num_samples, budget.seeds, solver="ddim"))
    if "nll" in metrics:
        out.append(EvalSpec(("nll",), (), (), budget.nll_images, None))
    if "probe" in metrics:
        out.append(EvalSpec(("probe",), (), (), None, None))
    if "codes" in metrics:  # bits per held-out code under each learned/prior sampler the cell scores
        wanted = variant.code_samplers if variant.code_samplers is not None else samplers
        code = tuple(s for s in wanted if s in CODE_SAMPLERS and (budget.samplers is None or s in budget.samplers))
        out.append(EvalSpec(("codes",), (), code, None, None))
    if "mi" in metrics:  # I(z; x_t) over the release's t grid, the dataset's default estimator
        out.append(EvalSpec(("mi",), (), (), None, None))
    return tuple(out)


EVAL_SIZE_KEYS = ("steps", "num_samples", "seeds", "pixelsnail_epochs", "nll_images")


def expand(grid: str, preset: str = "digits", sets: list[str] | dict[str, Any] | None = None, *,
           eval_sizes: dict[str, Any] | None = None, gpus: int = 0, only: list[str] | None = None,
           warn: Callable[[str], None] | None = None, budget: str | None = None) -> list[Cell]:
    """The cells of ``grid`` on ``preset``; ``sets`` (``key=value`` strings or a dict) apply to every cell.

    :param eval_sizes: replace the budget's evaluation sizes (keys :data:`EVAL_SIZE_KEYS`; T is ``steps``); they
        change what is evaluated, not what is trained (the cell folders stay the same).
    :param gpus: GPUs per cell (DDP tasks); 0 on CPU.
    :param only: cell names to keep, chosen from all the grid's variants (also those a budget leaves out, e.g.
        ``z32`` of ``latent_size`` on digits); None = the budget's cells.
    :param budget: another named budget of the grid on ``preset`` (``GridDef.budget_names``), e.g. ``full``.

    Raises :class:`GridError` for an unknown grid, preset, key or cell and :class:`dmz.config.ConfigError` for a bad
    value.
    """
    g = get_grid(grid)
    if preset not in PRESETS:
        raise GridError(f"unknown preset {preset!r}{_suggest(preset, PRESETS)}; valid presets: {', '.join(PRESETS)}")
    user = _parse_sets(sets)
    budget = g.budget(preset, None if budget in (None, "default") else budget)
    if eval_sizes:
        bad = sorted(set(eval_sizes) - set(EVAL_SIZE_KEYS))
        if bad:
            raise GridError(f"unknown evaluation size {bad[0]!r}; valid: {', '.join(EVAL_SIZE_KEYS)}")
        sizes = {k: (tuple(v) if k == "steps" else v) for k, v in eval_sizes.items() if k != "pixelsnail_epochs"}
        if "pixelsnail_epochs" in eval_sizes:
            sizes["pixelsnail"] = {**budget.pixelsnail, "epochs": eval_sizes["pixelsnail_epochs"]}
        budget = dataclasses.replace(budget, **sizes)
    cells, seen = [], {}
    ignored: set[str] = set()
    variants = g.variants()
    if only:
        names = [v.name for v in variants]
        unknown = [n for n in only if n not in names]
        if unknown:
            raise GridError(f"unknown cell {unknown[0]!r}{_suggest(unknown[0], names)} in grid {grid}; cells: "
                            f"{', '.join(names)}")
        variants = [v for v in variants if v.name in only]
    else:
        variants = [v for v in variants if not v.optional
                    and (budget.variants is None or v.name in budget.variants)]
    for v in variants:
        axis = {_canonical(k) for k in v.overrides}
        kept = [(k, val) for k, val in user if _canonical(k) not in axis]
        ignored |= {k for k, _ in user if _canonical(k) in axis}
        overrides = tuple({**budget.train, **dict(kept), **v.overrides}.items())
        cell = Cell(grid=g.name, name=v.name, preset=preset, overrides=overrides, evals=_evals(v, budget),
                    gpus=gpus, pixelsnail=dict(budget.pixelsnail))
        try:
            rid = cell.run_id
        except ConfigError as e:
            raise ConfigError(f"grid {grid} cell {v.name}: {e}") from None
        if rid in seen:
            raise GridError(f"cells {seen[rid]!r} and {v.name!r} of grid {grid} resolve to the same config ({rid}); "
                            "a --set overrides what tells them apart")
        seen[rid] = v.name
        cells.append(cell)
    if ignored and warn is not None:
        warn(f"--set {', '.join(sorted(ignored))}: set by the {grid} grid's axis, ignored for the cells that set it")
    return cells


# ----------------------------------------------------------------------------------------------------------------
# what a finished cell has
# ----------------------------------------------------------------------------------------------------------------
def probe_metrics(dataset: str) -> list[str]:
    """The rows ``evaluation.run`` writes for ``probe``: AUROC (and accuracy for class labels), 5-fold CV and
    held-out."""
    from dmz.data import dataset_info

    scores = ["acc", "auroc"] if dataset_info(dataset).label_kind == "class" else ["auroc"]
    return [f"probe_{s}_{p}" for s in scores for p in ("cv", "heldout")]


def requested_rows(cell: Cell) -> list[dict[str, Any]]:
    """The result rows a finished cell must have: one per (FID, T, sampler) and the probe rows."""
    out = []
    for e in cell.evals:
        for metric in e.metrics:
            if metric == "fid":  # in the pinned feature space where there is one (a stale row is recomputed)
                pin = PINNED_WEIGHTS_SHA256.get(default_feature_extractor(cell.config().data.dataset))
                out += [{"metric": "fid", "T": t, "sampler": s, "N": e.num_samples, "seeds": e.seeds,
                         "solver": e.solver, **({"feature_extractor_weights_sha256": pin} if pin else {})}
                        for s in e.samplers for t in e.steps]
            elif metric == "probe":
                out += [{"metric": m, "T": None, "sampler": None, "N": None, "seeds": None}
                        for m in probe_metrics(cell.config().data.dataset)]
            elif metric == "codes":
                out += [{"metric": "bits_per_code", "T": None, "sampler": s, "N": None, "seeds": None}
                        for s in e.samplers]
                out.append({"metric": "heldout_dup_frac", "T": None, "sampler": None, "N": None, "seeds": None})
            elif metric == "mi":  # one row per noise level t, named by the dataset's default estimator
                spec = canonical_spec(parse_spec(default_spec(cell.config().data.dataset)))
                out += [{"metric": "mi_bits", "noise_t": t, "mi_estimator": spec, "T": None} for t in RELEASE_T]
            elif metric == "nll":  # bits/dim given the code, and with the cost of coding it, per split
                out += [{"metric": m, "reference": split, "T": None, "N": e.num_samples}
                        for m in NLL_METRICS for split in ("train", "test")]
            else:
                out.append({"metric": metric, "T": None, "sampler": None, "N": None, "seeds": None})
    return out


def row_matches(want: dict[str, Any], row: dict[str, Any]) -> bool:
    """Does result row ``row`` answer request ``want``? ``None`` in ``want`` matches anything."""
    return all(v is None or row.get(k) == v for k, v in want.items())


def missing_rows(cell: Cell, run_dir: Path) -> list[dict[str, Any]]:
    rows = read_jsonl(run_dir / RESULTS_FILE)
    return [w for w in requested_rows(cell) if not any(row_matches(w, r) for r in rows)]


def train_finished(run_dir: Path) -> bool:
    try:
        return bool(json.loads((run_dir / "train_summary.json").read_text()).get("finished"))
    except (FileNotFoundError, json.JSONDecodeError):
        return False


def is_done(cell: Cell, run_dir: Path) -> bool:
    return train_finished(run_dir) and not missing_rows(cell, run_dir)


def default_runs_root() -> Path:
    return REPO / "results" / "runs"


def cell_dir(cell: Cell, root: str | Path | None = None) -> Path:
    """``<root>/<grid>/<preset>/<cell-name>-<run_id>`` (root default: ``results/runs``)."""
    return Path(root or default_runs_root()) / cell.grid / cell.preset / cell.dirname


# ----------------------------------------------------------------------------------------------------------------
# the command-line arguments that pick cells (shared by run_grid, collect and report)
# ----------------------------------------------------------------------------------------------------------------
def add_cell_args(p) -> None:
    """``--grid --preset --set --T --num-samples --eval-seeds --pixelsnail-epochs --nll-images --only --out`` on an argparse
    parser."""
    p.add_argument("--grid", required=True, help=f"one of: {', '.join(GRIDS)}")
    p.add_argument("--preset", help="digits (default without GPUs) | cifar10 (default with GPUs) | celeba64")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="config override applied to every cell (repeatable); changes the cells' run ids")
    p.add_argument("--T", dest="eval_T", type=int, nargs="+", metavar="T",
                   help="denoising steps for FID instead of the grid's (evaluation only: same cell folders)")
    p.add_argument("--num-samples", type=int, help="images per FID instead of the grid's")
    p.add_argument("--eval-seeds", type=int, help="FID sampling seeds instead of the grid's")
    p.add_argument("--pixelsnail-epochs", type=int, help="cap on PixelSNAIL epochs instead of the grid's")
    p.add_argument("--nll-images", type=int, help="images per split for the NLL (bits/dim) instead of the grid's")
    p.add_argument("--only", help="comma-separated cell names (default: the grid's cells for this preset; --only can "
                   "also pick cells a digits budget leaves out, e.g. z32)")
    p.add_argument("--budget", default=None, help="a grid's other named budget on the preset, e.g. full for "
                   "latent_size on digits (default: the grid's default budget)")
    p.add_argument("--out", type=Path, default=None, help="root of the cell folders (default results/runs)")
    p.add_argument("--seeds", type=int, nargs="+", metavar="K", default=None,
                   help="training seeds: every cell is trained once per seed, all in one job array; rows stay per "
                   "training (results/<grid>/<preset>[-seed<k>]/), tables pool them (e.g. --seeds 0 1 2 3 4)")


def results_label(preset: str, budget: str | None = None, cells: list[Cell] | None = None) -> str:
    """The folder name of a grid's tables under ``results/<grid>/``: the preset, plus the budget's name when it is
    not the default one (``digits-full``), so the two budgets' tables never overwrite each other, plus
    ``-seed<k>`` when every cell trains with the same seed k other than 0 (``--set seed=1``: a training-seed
    replicate, ``digits-seed1``; ``ablations/claims.py`` pools it with the seed-0 table). Cells trained with
    ``train.seeding=crn`` get ``-crn`` before the seed (``digits-crn-seed1``)."""
    label = preset if budget in (None, "default") else f"{preset}-{budget}"
    if cells and all(c.config().train.seeding == "crn" for c in cells):
        label += "-crn"  # another seeding protocol: its own tables, never written over (or pooled with) v1's
    seeds = {c.config().train.seed for c in cells or []}
    if len(seeds) == 1 and (seed := seeds.pop()) != 0:
        label += f"-seed{seed}"
    return label


def cell_parser(prog: str, description: str, *, results_help: str = "default results/"):
    """An argparse parser with :func:`add_cell_args` and ``--results-dir`` (collect.py and report.py)."""
    p = argparse.ArgumentParser(prog=prog, description=description)
    add_cell_args(p)
    p.add_argument("--results-dir", type=Path, default=None, help=results_help)
    return p


def parse_cells(parser, argv: list[str] | None = None):
    """``(args, preset, cells)`` from the command line, or ``None`` after printing ``error: ...`` for an unknown
    grid, preset, key or cell (the caller exits with 2)."""
    args = parser.parse_args(argv)
    try:
        preset, _, cells = cells_from_args(args)
    except (GridError, ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return None
    return args, preset, cells


def default_preset(gpus_per_node: int = 0) -> tuple[str, str]:
    """(preset, why): ``cifar10`` when the cluster profile or this machine has GPUs, else ``digits``."""
    if gpus_per_node > 0:
        return "cifar10", "the cluster profile has GPUs"
    import torch

    if torch.cuda.is_available():
        return "cifar10", "a GPU is visible"
    return "digits", "no GPU here or in the cluster profile"


def cells_from_args(args, *, gpus_per_node: int = 0,
                    warn: Callable[[str], None] | None = None) -> tuple[str, str, list[Cell]]:
    """(preset, why that preset, cells) from :func:`add_cell_args`'s arguments."""
    get_grid(args.grid)
    preset, why = (args.preset, "--preset") if args.preset else default_preset(gpus_per_node)
    sizes = {"steps": args.eval_T, "num_samples": args.num_samples, "seeds": args.eval_seeds,
             "pixelsnail_epochs": args.pixelsnail_epochs, "nll_images": getattr(args, "nll_images", None)}
    gpus = gpus_per_node if preset != "digits" else min(1, gpus_per_node)
    only = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else None
    seeds = check_seeds(getattr(args, "seeds", None), args.sets)
    cells = [c for k in seeds for c in expand(
        args.grid, preset, args.sets + ([] if k is None else [f"seed={k}"]),
        eval_sizes={k: v for k, v in sizes.items() if v is not None}, gpus=gpus, only=only, warn=warn,
        budget=getattr(args, "budget", None))]
    return preset, why, cells


def check_seeds(seeds: list[int] | None, sets: list[str]) -> list[int | None]:
    """``--seeds`` as the list to expand (``[None]``: no seed option, the config's own seed). Raises
    :class:`GridError` for duplicates, negative seeds, or ``--seeds`` with ``--set seed=...``."""
    if seeds is None:
        return [None]
    if any(_canonical(_split(s)[0]) == "seed" for s in sets):
        raise GridError("--seeds and --set seed=... both set the training seed; use one (--seeds 0 1 2)")
    bad = [k for k in seeds if k < 0]
    if bad:
        raise GridError(f"--seeds: training seeds are non-negative integers, got {bad[0]}; e.g. --seeds 0 1 2")
    dup = sorted({k for k in seeds if seeds.count(k) > 1})
    if dup:
        raise GridError(f"--seeds: seed {dup[0]} is listed twice; list each training seed once, e.g. --seeds "
                        + " ".join(map(str, dict.fromkeys(seeds))))
    return list(seeds)


def cells_by_seed(cells: list[Cell]) -> dict[int, list[Cell]]:
    """The cells grouped by training seed (each seed's rows go to their own results folder, see
    :func:`results_label`), seeds in the order given."""
    out: dict[int, list[Cell]] = {}
    for c in cells:
        out.setdefault(c.seed, []).append(c)
    return out
