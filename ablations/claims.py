"""The paper's claims as verdicts computed from the grids' result rows (no rendering: see ``paper_report.py``).

A claim is a statement of the paper (or of its reviewers) that one grid's rows can test, e.g. "at T=10, DMZ has a
lower FID than DDPM". It is a :class:`Claim` made of parts (:class:`Part`); each is one comparison of two numbers
(:class:`Num`, read from a ``results.csv`` row with its spread), ``a < b`` (``better="lower"``, e.g. FID) or
``a > b`` (``"higher"``, e.g. probe accuracy). Parts marked ``counted=False`` are information and do not decide.

The rule (:func:`judge`, :data:`RULE`): the unit of evidence is a **training** (a training's FID is the mean over
its sampling seeds). Each part compares the per-training values of ``a`` and ``b`` with Welch's t-test
(``scipy.stats.ttest_ind(equal_var=False)``), two-sided; the counted parts of one claim are corrected together with
Holm's step-down procedure at family-wise alpha = 0.05 (:meth:`Claim.finalize`). A part whose Holm-adjusted p is
below alpha **holds** when the difference lies in the claimed direction and **does not hold** otherwise; else it is
**not resolved at this budget**, and so is every part with fewer than 2 trainings on a side (the spread over
sampling seeds of one training never decides) or FIDs from two feature extractors. Each part carries the 95%
interval of the difference and, when not resolved, the trainings a side that would resolve a difference of the
observed size at the observed spread with 80% power (:func:`trainings_needed`). A claim of several parts holds only
if every counted part holds and does not hold if any counted part does not (:func:`combine`); a grid without rows
gives **no data**.

Reading the rows: :func:`load_all` returns ``{grid: {label: rows}}`` from each grid's
``results/<grid>/<label>/results.csv`` (``label`` = the preset, or ``<preset>-<budget>``); :func:`select`,
:func:`fid_rows` and :func:`_best` pick the rows a comparison reads.

To add a claim: write ``claim_<name>(ctx: Ctx) -> Claim`` beside the others (take the grid's rows with
``df = ctx.rows_for(c, placeholders)``, which marks the claim as having no data and returns None when the grid has
no rows, or ``ctx.frames(grid)`` for every table; build numbers with ``ctx.num`` / :func:`_fid` /
:func:`as_num` and append a
``Part(pid, statement, a, b, better=...)`` per comparison), add its grid to :data:`GRIDS_USED` if it is new, and
append the function to :data:`CLAIMS` (report order); list it in ``ablations/README.md``'s claim table.
``paper_report.py`` renders it (tables, plots, ``verdicts.csv``) with no further change.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ablations.collect import pool_training_seeds, row_seeding, split_seed_label
from ablations.inference import (ALPHA, MAX_TRAININGS, POWER, Test, compare, holm,  # noqa: F401 (re-exported)
                                 trainings_needed)
from ablations.tables import column_label, fmt, metric_label, missing, penalty, penalty_weights, stale_mask
from dmz.runio import REPO

HOLDS, FAILS, UNRESOLVED, NO_DATA = "holds", "does not hold", "not resolved at this budget", "no data"
NO_DIFF = "no practical difference"
VERDICTS = (HOLDS, FAILS, NO_DIFF, UNRESOLVED, NO_DATA)
RULE = ("per training (a training's FID = the mean over its sampling seeds): a paired t-test on the per-seed "
        "differences where both sides were trained with the same seeds under common random numbers (seeding=crn), "
        "Welch's t-test otherwise; FID on the log scale (a ratio); two-sided, Holm-corrected over the claim's counted "
        f"parts at alpha = {ALPHA:g} (at a group-sequential look, the look's nominal alpha): adjusted p < alpha in "
        "the claimed direction -> holds, in the other -> does not hold; two one-sided tests (TOST) inside the "
        "claim's margin -> no practical difference; else not resolved; fewer than 2 trainings on a side -> not "
        "resolved")
GRIDS_USED = ("main", "latent_type", "conditioning", "latent_size", "representation", "ddim")
#: probe metric for the representation claim, in order of preference (CV rows carry an sd over folds)
PROBE_PREFERENCE = ("probe_acc_cv", "probe_auroc_cv", "probe_acc_heldout", "probe_auroc_heldout")
NLL_LABELS = {"nll_bpd": "NLL given z", "nll_bpd_z": "NLL with z's bits"}


# ----------------------------------------------------------------------------------------------------------------
# the rows
# ----------------------------------------------------------------------------------------------------------------
DEFAULTS: dict[str, Any] = {"solver": "ddpm", "sd": math.nan, "se": math.nan,
                            "seeds": math.nan, "N": math.nan, "T": math.nan, "sampler": None, "reference": None,
                            "feature_extractor": None, "latent_dim": math.nan, "dataset": None, "prior": None,
                            "train_steps": math.nan, "checkpoint_step": math.nan}


def read_results(path: Path) -> pd.DataFrame | None:
    """One results.csv, with the columns this report reads filled in where an older file lacks them; None when it
    is absent or has no rows."""
    if not path.exists():
        return None
    try:
        df = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return None
    if df.empty:
        return None
    for col, val in DEFAULTS.items():
        if col not in df.columns:
            df[col] = val
    fid = df["metric"] == "fid"
    df["solver"] = df["solver"].astype(object)
    df.loc[fid, "solver"] = df.loc[fid, "solver"].fillna("ddpm")
    df["source"] = _rel(path)
    return penalty_weights(df)


def pooled(dfs: list[pd.DataFrame]) -> pd.DataFrame:
    """One label's rows over its trainings (:func:`ablations.collect.pool_training_seeds`; sources joined)."""
    df = pool_training_seeds(pd.concat(dfs, ignore_index=True))
    df["source"] = "; ".join(dict.fromkeys(str(d["source"].iloc[0]) for d in dfs))
    return df


class MixedFeatureSpaces(ValueError):
    """A results.csv holds FIDs of one unpinned extractor computed with two weight files."""


def _check_one_space(df: pd.DataFrame, path: Path) -> None:
    fid = df[df["metric"] == "fid"]
    if "feature_extractor_weights_sha256" not in fid:
        return
    for ext, grp in fid.groupby("feature_extractor"):
        shas = sorted(grp["feature_extractor_weights_sha256"].dropna().astype(str).unique())
        if len(shas) > 1:
            raise MixedFeatureSpaces(
                f"{_rel(path)} mixes FIDs of {ext} from {len(shas)} weight files ({', '.join(h[:8] for h in shas)}): "
                "re-evaluate its cells with one weights file (python ablations/run_grid.py --grid "
                f"{df['grid'].iloc[0]} ...) or delete the other rows, then rerun the report")


def split_stale(df: pd.DataFrame, path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows in the pinned feature space or without a FID, stale FID rows) of one results.csv; raises
    :class:`MixedFeatureSpaces` when the kept FIDs of one extractor come from two weight files."""
    stale = stale_mask(df)
    kept = df[~stale]
    _check_one_space(kept, path)
    return kept, df[stale]


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def result_folders(grid_dir: Path, label: str) -> list[Path]:
    """A grid's result folders for ``label`` and every label that extends it: ``<label>/`` first, then
    ``<label>-<budget>`` and ``<label>[-<budget>]-seed<k>`` in name order (folders without a results.csv
    included; :func:`read_results` answers None for them)."""
    return [grid_dir / label, *sorted(grid_dir.glob(f"{label}-*"))] if grid_dir.is_dir() else []


def load_all(preset: str, results_dir: str | Path | None = None) -> dict[str, dict[str, pd.DataFrame]]:
    """``{grid: {label: rows}}`` for every grid with rows on ``preset``; the preset's own label (the default
    budget) first, then ``<preset>-<budget>`` labels in name order. Training-seed replicates (``<label>-seed<k>``
    folders, written by ``run_grid --set seed=k``) are pooled into their label's rows
    (:func:`ablations.collect.pool_training_seeds`: one row per entry, ``train_seeds`` = how many trainings it
    holds), so each comparison reads the spread over training seeds where there is one."""
    root = Path(results_dir) if results_dir else REPO / "results"
    out: dict[str, dict[str, pd.DataFrame]] = {}
    for grid in GRIDS_USED:
        frames: dict[str, list[pd.DataFrame]] = {}
        for folder in result_folders(root / grid, preset):
            df = read_results(folder / "results.csv")
            if df is not None:
                df, _ = split_stale(df, folder / "results.csv")
            if df is not None and len(df):
                frames.setdefault(split_seed_label(folder.name)[0], []).append(df)
        frames = {label: pooled(dfs) for label, dfs in frames.items()}
        # the common-random-numbers tables first: a grid's claims read them where they exist (they never pool with
        # v1's trainings, and their arms pair)
        frames = dict(sorted(frames.items(), key=lambda kv: not is_crn_label(kv[0])))
        if frames:
            out[grid] = frames
    return out


def is_crn_label(label: str) -> bool:
    """Is ``label`` a table of trainings under common random numbers (``<preset>[-<budget>]-crn``)?"""
    return label.endswith("-crn")


def stale_rows(preset: str, results_dir: str | Path | None = None) -> pd.DataFrame:
    """One row per results.csv with FIDs outside the pinned feature space (which :func:`load_all` leaves out): the
    file, its cells, how many rows, the weights they were computed with and the command that regenerates them."""
    root = Path(results_dir) if results_dir else REPO / "results"
    out = []
    for grid in GRIDS_USED:
        for folder in result_folders(root / grid, preset):
            df = read_results(folder / "results.csv")
            if df is None:
                continue
            stale = df[stale_mask(df)]
            if stale.empty:
                continue
            label, seed = split_seed_label(folder.name)
            budget = label[len(preset) + 1:] if label != preset else None
            cells = list(dict.fromkeys(stale["variant"].astype(str)))
            shas = stale["feature_extractor_weights_sha256"] if "feature_extractor_weights_sha256" in stale \
                else pd.Series([None] * len(stale))
            out.append({"results": f"`{_rel(folder / 'results.csv')}`", "cells": ", ".join(cells),
                        "stale FID rows": len(stale),
                        "weights": ", ".join(dict.fromkeys("not recorded" if missing(h) else str(h)[:8]
                                                           for h in shas)),
                        "regenerate with": f"`python ablations/run_grid.py --grid {grid} --preset {preset}"
                        + (f" --budget {budget}" if budget else "") + f" --seeds {seed or 0} --only "
                        + ",".join(cells) + "`"})
    return pd.DataFrame(out)


def run_commands(grid: str, preset: str) -> list[str]:
    """The commands that produce a grid's tables on ``preset`` (one per named budget)."""
    try:
        from ablations.grids import get_grid

        budgets = get_grid(grid).budget_names(preset)
    except (ImportError, ValueError):  # a grid the installed grids.py does not define yet (GridError)
        budgets = ["default"]
    return [f"python ablations/run_grid.py --grid {grid} --preset {preset}"
            + ("" if b == "default" else f" --budget {b}") for b in budgets]


def expected_cells(grid: str, preset: str, label: str) -> list[str] | None:
    """The cell names the grid's budget behind ``label`` runs (None if the grid definitions cannot say)."""
    try:
        from ablations.grids import expand

        budget = None if label == preset else label[len(preset) + 1:]
        return [c.name for c in expand(grid, preset, budget=budget)]
    except (ImportError, ValueError):  # GridError, ConfigError
        return None


def _best(rows: pd.DataFrame) -> pd.Series | None:
    """One row of several for the same entry: the most trainings, then the most sampling seeds, then the most
    samples."""
    if rows.empty:
        return None
    k = rows["train_seeds"].fillna(1) if "train_seeds" in rows else pd.Series(1, index=rows.index)
    return rows.assign(_k=k, _s=rows["seeds"].fillna(1), _n=rows["N"].fillna(0)).sort_values(
        ["_k", "_s", "_n"], ascending=False, kind="stable").iloc[0]


def select(df: pd.DataFrame, **where: Any) -> pd.DataFrame:
    """Rows matching every ``column=value`` (a float column compares as float)."""
    keep = pd.Series(True, index=df.index)
    for k, v in where.items():
        col = df[k]
        keep &= (col.astype(float) == float(v)) if isinstance(v, (int, float)) and not isinstance(v, bool) \
            else (col == v)
    return df[keep]


def fid_rows(df: pd.DataFrame, solver: str = "ddpm") -> pd.DataFrame:
    return df[(df["metric"] == "fid") & (df["solver"] == solver) & df["value"].notna()]


# ----------------------------------------------------------------------------------------------------------------
# numbers and the rule
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Num:
    """One number of ours: the mean over its trainings, with the per-training values the rule tests.

    :param sd: the sd (ddof=1) over trainings; None with one training (there is no spread over trainings).
    :param trainings: the per-training values (a training's FID = the mean over its sampling seeds).
    :param sampling_sd: the spread within a training (rms over trainings of the sd over sampling seeds for FID,
        over CV folds for probe CV rows; the standard error over images for NLL); reported, never used to decide.
    :param seeds: sampling seeds per training (FID).
    """

    what: str
    value: float
    sd: float | None
    metric: str
    extractor: str | None = None
    T: float | None = None
    N: float | None = None
    seeds: float | None = None
    spread: str = ""
    paper: float | None = None
    trainings: tuple[float, ...] = ()
    sampling_sd: float | None = None
    source: str = ""
    seed_ids: tuple[int, ...] = ()  # the training seed of each value of ``trainings`` (empty: not known)
    seeding: str = "v1"  # the trainings' seeding protocol (train.seeding): only crn trainings pair
    variant: str | None = None  # the grid cell the number comes from

    def __post_init__(self):
        if not self.trainings:
            self.trainings = (float(self.value),)
        self.trainings = tuple(float(v) for v in self.trainings)
        self.seed_ids = tuple(int(k) for k in self.seed_ids)
        if self.seed_ids and len(self.seed_ids) != len(self.trainings):
            self.seed_ids = ()
        if self.sd is None and len(self.trainings) > 1:
            self.sd = float(statistics.stdev(self.trainings))

    @property
    def n(self) -> int:
        """How many trainings the number holds."""
        return len(self.trainings)

    def text(self) -> str:
        digits = 2 if self.metric == "fid" else 3
        head = fmt(self.value, self.sd if self.n > 1 else None, digits)
        bits = [f"sd over {self.n} trainings" if self.n > 1 else "1 training, no spread over trainings"]
        if self.sampling_sd is not None:
            within = ("sampling sd" + (f" over {int(self.seeds)} seeds" if self.seeds else "")
                      if self.metric == "fid" else self.spread or "within-training sd")
            bits.append(f"{within} {self.sampling_sd:.{digits}f}")
        if self.N is not None:
            bits.append(f"N={int(self.N)}")
        return f"{head} ({'; '.join(bits)})"


def _floats(v: Any) -> tuple[float, ...]:
    if isinstance(v, str) and v.startswith("["):
        return tuple(float(x) for x in json.loads(v))
    return ()


def as_num(row: pd.Series | None, what: str, paper: pd.DataFrame | None = None) -> Num | None:
    """A pooled result row (:func:`ablations.collect.pool_training_seeds`) as a :class:`Num` (None for no row)."""
    if row is None or missing(row["value"]):
        return None
    metric = row["metric"]

    def num(k: str) -> float | None:
        return None if missing(row.get(k)) else float(row[k])

    trainings = _floats(row.get("train_seed_values")) or (float(row["value"]),)
    seeds = tuple(int(k) for k in _floats(row.get("train_seed_list"))) or (
        (int(row["seed"]),) if not missing(row.get("seed")) and len(trainings) == 1 else ())
    seeding = row.get("seeding")
    if metric in NLL_LABELS:
        within, spread = num("se"), "se over images"
    elif str(metric).endswith("_cv"):
        within, spread = num("sampling_sd"), "sd over CV folds"
    else:
        within, spread = num("sampling_sd"), "sampling sd"
    return Num(what=what, value=float(row["value"]), sd=None,  # Num derives the sd over trainings
               metric=metric, extractor=row.get("feature_extractor") if metric == "fid" else None, T=num("T"),
               N=num("N"), seeds=num("seeds"), spread=spread, paper=paper_value(paper, row),
               source=str(row.get("source", "")), trainings=trainings, sampling_sd=within, seed_ids=seeds,
               seeding="v1" if missing(seeding) else str(seeding),
               variant=None if missing(row.get("variant")) else str(row["variant"]))


def paper_value(paper: pd.DataFrame | None, row: pd.Series) -> float | None:
    """The paper's number for this row (same dataset, grid, variant, |z|, sampler, metric, T), if known."""
    if paper is None or paper.empty:
        return None
    hit = paper[(paper["dataset"] == row.get("dataset")) & (paper["grid"] == row.get("grid"))
                & (paper["variant"] == row.get("variant")) & (paper["metric"] == row["metric"])
                & (paper["sampler"] == row.get("sampler"))]
    if not missing(row.get("latent_dim")):
        hit = hit[hit["latent_dim"].astype(float) == float(row["latent_dim"])]
    if not missing(row.get("T")):
        hit = hit[hit["T"].astype(float) == float(row["T"])]
    return float(hit["value"].iloc[0]) if len(hit) else None


def pairs_of(a: Num, b: Num) -> list[tuple[float, float]] | None:
    """The per-seed (a, b) values of the training seeds both sides hold, when both were trained under common random
    numbers (``seeding=crn``) and share at least 2 seeds; None otherwise (v1 trainings are never paired: their arms
    do not share their random draws, and a v1 training never pairs with a crn one)."""
    if not (a.seeding == b.seeding == "crn") or not a.seed_ids or not b.seed_ids:
        return None
    va, vb = dict(zip(a.seed_ids, a.trainings)), dict(zip(b.seed_ids, b.trainings))
    common = sorted(set(va) & set(vb))
    return [(va[s], vb[s]) for s in common] if len(common) >= 2 else None


def log_scale(metric: str | None) -> bool:
    """FID is positive and skewed: its tests, intervals and margins are on the log scale (a ratio a / b)."""
    return metric == "fid"


#: the margins of practical relevance, declared before any data (the equivalence test's bounds): FID as a ratio
#: a / b, probe scores and NLL as a difference a - b
FID_MARGIN = (0.9, 1.1)
PROBE_MARGIN = (-0.01, 0.01)
NLL_MARGIN = (-0.01, 0.01)  # bits/dim
BY_METRIC = object()  # Part.margin's default: the margin of the part's metric (:func:`default_margin`)


def default_margin(metric: str | None) -> tuple[float, float] | None:
    if metric == "fid":
        return FID_MARGIN
    if metric in NLL_LABELS:
        return NLL_MARGIN
    if str(metric).startswith("probe_"):
        return PROBE_MARGIN
    return None


def margin_text(margin: tuple[float, float] | None, log: bool) -> str:
    if margin is None:
        return "none"
    return f"a / b in [{margin[0]:g}, {margin[1]:g}]" if log else f"a - b in [{margin[0]:+g}, {margin[1]:+g}]"


def judge(a: Num | None, b: Num | None, better: str, *, margin: Any = BY_METRIC, alpha: float = ALPHA
          ) -> tuple[str, Test, str]:
    """(verdict, test, why) for the claim a < b (``better="lower"``, e.g. FID) or a > b (``"higher"``), at
    ``alpha`` on the raw p (:meth:`Claim.finalize` redecides the counted parts on Holm-adjusted p). The test is
    paired over the common seeds when :func:`pairs_of` pairs the sides, Welch otherwise
    (:func:`ablations.inference.compare`), on the log scale for FID; ``margin`` (default: the metric's) is the
    equivalence margin."""
    if a is None or b is None:
        return NO_DATA, Test(), "no row for " + " and ".join(x for x, n in (("a", a), ("b", b)) if n is None)
    if a.metric == "fid" and a.extractor != b.extractor:
        return UNRESOLVED, Test(diff=a.value - b.value), f"different feature extractors ({a.extractor} vs " \
            f"{b.extractor})"
    if a.n < 2 or b.n < 2:
        return UNRESOLVED, Test(diff=a.value - b.value), (
            f"fewer than 2 trainings on a side (a: {a.n}, b: {b.n}); the spread over sampling seeds of one training "
            "never decides")
    margin = default_margin(a.metric) if margin is BY_METRIC else margin
    t = compare(a.trainings, b.trainings, pairs=pairs_of(a, b), log=log_scale(a.metric), margin=margin, alpha=alpha)
    return decide(t, t.p, t.p_equiv, better, alpha)


def decide(t: Test, p: float | None, p_equiv: float | None, better: str, alpha: float = ALPHA, what: str = "p"
           ) -> tuple[str, Test, str]:
    """The verdict of one test: the two one-sided tests put the difference inside the margin (``p_equiv`` <
    ``alpha``) -> no practical difference (even where a difference inside the margin is also significant: it is
    smaller than the claim declared relevant); else ``p`` < ``alpha`` -> holds in the claimed direction, does not
    hold in the other; else not resolved."""
    eq = f"TOST {what}"
    if p_equiv is not None and p_equiv < alpha:
        extra = f"; the difference is significant too ({what} = {p:.3g}) but inside the margin" \
            if p is not None and p < alpha else ""
        return NO_DIFF, t, (f"{eq} = {p_equiv:.3g} < {alpha:.3g}: inside the margin "
                            f"({margin_text(_margin0(t), t.scale == 'log')}){extra}")
    if p is None:
        return UNRESOLVED, t, "no spread over trainings on either side: the t-test is undefined"
    if p >= alpha:
        tost = "" if p_equiv is None else f"; {eq} = {p_equiv:.3g}"
        return UNRESOLVED, t, f"{what} = {p:.3g} >= {alpha:.3g}{tost}"
    claimed = t.diff < 0 if better == "lower" else t.diff > 0
    return (HOLDS if claimed else FAILS), t, f"{what} = {p:.3g} < {alpha:.3g}"


def _margin0(t: Test) -> tuple[float, float] | None:
    """The test's margin on the original scale (a ratio on the log scale)."""
    if t.margin is None:
        return None
    return (math.exp(t.margin[0]), math.exp(t.margin[1])) if t.scale == "log" else t.margin


def combine(verdicts: list[str]) -> str:
    """A multi-part verdict: holds only if every part holds; does not hold if any part does not or shows no
    practical difference (a claimed improvement that is not there); no data if no part has data; else not
    resolved."""
    if not verdicts or all(v == NO_DATA for v in verdicts):
        return NO_DATA
    if all(v == HOLDS for v in verdicts):
        return HOLDS
    if any(v in (FAILS, NO_DIFF) for v in verdicts):
        return FAILS
    return UNRESOLVED


@dataclass
class Part:
    """One comparison: the claim a < b (``better="lower"``) or a > b (``"higher"``), judged by :func:`judge`.
    ``counted`` parts decide the claim (Holm-corrected together); the others are information (raw p)."""

    pid: str
    statement: str
    a: Num | None
    b: Num | None
    better: str = "lower"
    counted: bool = True
    why_missing: str = ""
    margin: Any = BY_METRIC  # the equivalence margin (original scale; None: no equivalence verdict)
    verdict: str = field(init=False)
    test: Test = field(init=False)
    why: str = field(init=False)
    needed: int | None = field(init=False, default=None)  # set by Claim.finalize
    alpha: float = field(init=False, default=ALPHA)  # the level the part was decided at (set by Claim.finalize)

    def __post_init__(self):
        if self.margin is BY_METRIC:
            self.margin = default_margin((self.a or self.b).metric if (self.a or self.b) else None)
        self.verdict, self.test, self.why = judge(self.a, self.b, self.better, margin=self.margin)
        if self.verdict == NO_DATA and self.why_missing:
            self.why = self.why_missing

    def _values(self, n: Num) -> list[float]:
        return [math.log(v) for v in n.trainings] if self.test.scale == "log" else list(n.trainings)

    def _power(self, alpha: float) -> None:
        self.needed = None
        t = self.test
        if self.verdict == UNRESOLVED and t.diff is not None and self.a and self.b:
            sd = [statistics.stdev(v) if len(v) > 1 else None for v in map(self._values, (self.a, self.b))]
            self.needed = trainings_needed(t.diff, *sd, sd_diff=t.sd_diff if t.test == "paired t" else None,
                                           alpha=alpha)

    @property
    def diff(self) -> float | None:
        """a - b of the means (the number's own scale; the test's difference is ``test.diff``)."""
        if self.a is None or self.b is None:
            return self.test.diff
        return self.a.value - self.b.value

    @property
    def ci(self) -> tuple[float, float] | None:
        """The test's interval on its scale (log a / b for FID)."""
        return self.test.ci

    def effect(self, digits: int = 2) -> str:
        """The effect as the test sees it, with its interval: ``a / b = 0.92 [0.71, 1.19]`` on the log scale,
        ``+0.013 [+0.005, +0.021]`` otherwise."""
        t = self.test
        if t.scale == "log" and t.ratio is not None:
            ci = t.ratio_ci()
            return f"a/b {t.ratio:.2f}" + ("" if ci is None else f" [{ci[0]:.2f}, {ci[1]:.2f}]")
        if self.diff is None:
            return "–"
        d = t.diff if t.diff is not None else self.diff
        return f"{d:+.{digits}f}" + ("" if t.ci is None else f" [{t.ci[0]:+.{digits}f}, {t.ci[1]:+.{digits}f}]")

    def test_text(self) -> str:
        """Which test decided, on how many trainings: ``paired t (n=4 pairs, r=0.71)`` / ``Welch (5 vs 5)``."""
        t = self.test
        if t.test == "paired t":
            r = "" if t.corr is None else f", r={t.corr:.2f}"
            return f"paired t ({t.n_pairs} pairs{r})"
        if t.test:
            return f"Welch ({t.n_a} vs {t.n_b})"
        return "–"

    @property
    def rule(self) -> str:
        metric = f" ({(self.a or self.b).metric})" if (self.a or self.b) else ""
        return f"claimed: {self.claimed}{metric}; {RULE}"

    @property
    def claimed(self) -> str:
        return "a < b" if self.better == "lower" else "a > b"

    def needed_text(self) -> str:
        """How many trainings a side would resolve this part (unresolved parts only)."""
        if self.verdict != UNRESOLVED or self.diff is None:
            return ""
        if self.needed is not None:
            have = min(self.a.n, self.b.n)
            size = (f"a ratio of {math.exp(abs(self.test.diff)):.3g}" if self.test.scale == "log"
                    else f"a difference of {abs(self.test.diff):.3g}")
            design = "paired" if self.test.test == "paired t" else "unpaired"
            return (f"~{self.needed} trainings a side ({design}) would resolve {size} at the observed spread with "
                    f"{POWER:.0%} power (have {have})")
        if self.a and self.b and self.a.n < 2 and self.b.n < 2:
            return "no spread over trainings yet: train each side at least twice to size the study"
        return f"more than {MAX_TRAININGS} trainings a side (the difference is small against the spread)"


@dataclass
class Claim:
    cid: str
    title: str
    statement: str
    grid: str
    parts: list[Part] = field(default_factory=list)
    kind: str = "claim"  # claim (the paper's) | beyond (the project's own question) | information
    notes: list[str] = field(default_factory=list)
    tables: list[tuple[str, pd.DataFrame]] = field(default_factory=list)
    plots: list[Path] = field(default_factory=list)
    missing: str = ""  # why there is no data at all

    def finalize(self, alpha: float | Callable[["Part"], float] = ALPHA) -> "Claim":
        """Redecide the counted parts on Holm-adjusted p over the parts that have a test (family-wise ``alpha``; a
        function of the part for a group-sequential design, where each part is decided at its look's nominal
        alpha), the equivalence p Holm-adjusted the same way, and size each unresolved one at the Holm threshold
        its rank would face first (alpha / m)."""
        level = alpha if callable(alpha) else (lambda _p, a=alpha: a)
        counted = [p for p in self.parts if p.counted]
        tested = [p for p in counted if p.test.p is not None]
        for p, adj in zip(tested, holm([p.test.p for p in tested])):
            p.test.p_holm = adj
        eq = [p for p in counted if p.test.p_equiv is not None]
        for p, adj in zip(eq, holm([p.test.p_equiv for p in eq])):
            p.test.p_equiv_holm = adj
        what = f"Holm-adjusted p (over {len(tested)} parts)" if len(tested) > 1 else "p"
        for p in counted:
            p.alpha = level(p)
            if p.test.p is not None or p.test.p_equiv is not None:
                p.verdict, _, p.why = decide(p.test, p.test.p_holm, p.test.p_equiv_holm, p.better, p.alpha,
                                             what=what)
        m = max(1, len(counted))
        for p in self.parts:  # information parts at alpha
            p._power((p.alpha if p.counted else ALPHA) / (m if p.counted else 1))
        return self

    @property
    def verdict(self) -> str:
        return combine([p.verdict for p in self.parts if p.counted])


# ----------------------------------------------------------------------------------------------------------------
# the claims
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Ctx:
    preset: str
    data: dict[str, dict[str, pd.DataFrame]]
    paper: pd.DataFrame | None = None
    results_dir: Path | None = None  # where the rows were read (for the stale-row listing)
    #: group-sequential designs (``run_grid --until-decided``: :class:`ablations.sequential.Design`) by grid: the
    #: claims of such a grid are decided at each part's look's nominal alpha
    designs: dict[str, Any] = field(default_factory=dict)

    def alpha_for(self, grid: str) -> float | Callable[["Part"], float]:
        """The level a counted part of ``grid`` is decided at: alpha, or under a sequential design the nominal
        alpha of the look its trainings (the fewer side's) stand for."""
        design = self.designs.get(grid)
        if design is None:
            return ALPHA
        return lambda p: (design.alpha_at(min(p.a.n, p.b.n), paired=p.test.test == "paired t") if p.a and p.b
                          else design.alpha)

    def frames(self, grid: str) -> list[tuple[str, pd.DataFrame]]:
        return list(self.data.get(grid, {}).items())

    def frame(self, grid: str) -> tuple[str, pd.DataFrame] | None:
        f = self.frames(grid)
        return f[0] if f else None

    def missing(self, grid: str) -> str:
        return (f"no results for grid {grid} on {self.preset} (results/{grid}/{self.preset}/results.csv); produce "
                f"them with `{run_commands(grid, self.preset)[0]}`")

    def rows_for(self, c: "Claim", placeholders: list[tuple[str, str]] = (), better: str = "lower"
                 ) -> pd.DataFrame | None:
        """The first table of ``c.grid``'s rows; or None after marking ``c`` as having no data, with one
        no-data part ``(pid, statement)`` per placeholder, each saying which command produces the rows."""
        got = self.frame(c.grid)
        if got is not None:
            return got[1]
        c.missing = self.missing(c.grid)
        c.parts = [Part(pid, text, None, None, better=better, why_missing=c.missing) for pid, text in placeholders]
        return None

    def num(self, df: pd.DataFrame | None, what: str, **where) -> Num | None:
        return None if df is None else as_num(_best(select(df, **where)), what, self.paper)


def _fid_what(variant: str, sampler: str | None, T: float, extractor: Any, solver: str = "ddpm") -> str:
    z = f", z~{sampler}" if sampler else ""
    loop = "" if solver == "ddpm" else f", {solver}"
    return f"{variant}{z}{loop}: {column_label('fid', extractor or '?', T)}"


def _fid(ctx: Ctx, df: pd.DataFrame, variant: str, T: float, sampler: str | None = "prior",
         solver: str = "ddpm", **where) -> Num | None:
    rows = select(fid_rows(df, solver), variant=variant, T=T, **where)
    if sampler is not None:
        rows = select(rows, sampler=sampler)
    r = _best(rows)
    ext = r["feature_extractor"] if r is not None else None
    return as_num(r, _fid_what(variant, sampler, T, ext, solver), ctx.paper)


def _pick_T(available, want: float) -> tuple[float | None, str]:
    ts = sorted({float(t) for t in available if not missing(t)})
    if not ts:
        return None, ""
    if want in ts:
        return want, ""
    return ts[-1], f"T={want:g} is not in the rows; the largest T there, T={ts[-1]:g}, is used instead"


def claim_small_T(ctx: Ctx) -> Claim:
    c = Claim("1", "DMZ beats DDPM at small T", "At T=10 and at T=20, DMZ (z ~ Bernoulli(0.5) prior) has a lower "
              "FID than unconditional DDPM at the same T (Table 1; 'clear gains at small numbers of denoising "
              "steps').", "main")
    df = ctx.rows_for(c, [(f"1{s}", f"T={T}") for s, T in (("a", 10), ("b", 20))])
    if df is None:
        return c
    for s, T in (("a", 10), ("b", 20)):
        a, b = _fid(ctx, df, "dmz", T), _fid(ctx, df, "ddpm", T, sampler=None)
        c.parts.append(Part(f"1{s}", f"T={T}: DMZ FID < DDPM FID", a, b,
                            why_missing=f"main has no FID row at T={T} for " + ("dmz" if a is None else "ddpm")))
    return c


def claim_T100(ctx: Ctx) -> Claim:
    c = Claim("2", "DMZ vs DDPM at T=100", "At T=100, DMZ's FID is lower than DDPM's. ICLR reviewers read Table 1 "
              "as the opposite on CIFAR-10 (DMZ worse than DDPM); 'does not hold' here means we reproduce their "
              "reading, 'not resolved' that this budget cannot tell.", "main")
    df = ctx.rows_for(c, [("2", "T=100")])
    if df is None:
        return c
    T, note = _pick_T(fid_rows(df)["T"], 100.0)
    if note:
        c.notes.append(note)
    a, b = (_fid(ctx, df, "dmz", T), _fid(ctx, df, "ddpm", T, sampler=None)) if T else (None, None)
    p = Part("2", f"T={T or 100:g}: DMZ FID < DDPM FID", a, b, why_missing="main has no FID rows at T=100")
    c.parts.append(p)
    if p.diff is not None:
        better = "DMZ" if p.diff < 0 else "DDPM" if p.diff > 0 else "neither"
        resolved = ("resolved" if p.verdict in (HOLDS, FAILS) else "NOT resolved (" + p.why + ")")
        c.notes.append(f"At T={T:g} the lower FID is {better}'s ({a.value:.2f} vs {b.value:.2f}); the difference is "
                       f"{resolved}.")
    return c


def claim_latent_type(ctx: Ctx) -> Claim:
    c = Claim("3", "Bernoulli beats Normal and categorical latents", "At FID@100, the Bernoulli latent (prior "
              "sampler) has a lower FID than a Normal latent (with its N(0, I) prior, and with the release's "
              "`normal` sampler: per-dimension mean/std of training latents) and than categorical latents "
              "(16 groups of K=4 = 32 bits, and the capacity-matched 8 groups of K=4 = 16 bits).", "latent_type")
    rivals = [("a", "normal", "prior", "Normal, z ~ N(0, I)"), ("b", "normal", "normal", "Normal, `normal` sampler"),
              ("c", "categorical", "prior", "categorical 16x4 (32 bits)"),
              ("d", "categorical-16bit", "prior", "categorical 8x4 (16 bits, capacity-matched)")]
    df = ctx.rows_for(c, [(f"3{s}", f"vs {text}") for s, _, _, text in rivals])
    if df is None:
        return c
    fid = fid_rows(df)
    T, note = _pick_T(fid["T"], 100.0)
    if note:
        c.notes.append(note)
    ts = sorted({float(t) for t in fid["T"].dropna()})
    for t in ts:
        counted = t == T
        a = _fid(ctx, df, "bernoulli", t)
        for s, variant, sampler, text in rivals:
            b = _fid(ctx, df, variant, t, sampler=sampler)
            c.parts.append(Part(f"3{s}" + ("" if counted else f"@T={t:g}"), f"T={t:g}: Bernoulli FID < {text} FID",
                                a, b, counted=counted, why_missing=f"no FID row at T={t:g} for "
                                + ("bernoulli/prior" if a is None else f"{variant}/{sampler}")))
        b = _fid(ctx, df, "none", t, sampler=None)
        if b is not None:
            c.parts.append(Part(f"3-none@T={t:g}", f"T={t:g}: Bernoulli FID < no latent (DDPM) FID", a, b,
                                counted=False))
    if not any(p.counted for p in c.parts):
        c.parts = [Part(f"3{s}", f"vs {text}", None, None, why_missing="latent_type has no FID rows")
                   for s, _, _, text in rivals]
    return c


def claim_latent_size(ctx: Ctx) -> Claim:
    c = Claim("4", "|z| hurts prior sampling; PixelSNAIL recovers part of it", "(4a) Bernoulli(0.5)-prior FID is "
              "worse at the largest |z| than at the smallest (cells without prior matching, the largest T both "
              "have; the table with the most sampling seeds); (4b) at the largest |z| with a PixelSNAIL row, the "
              "PixelSNAIL z-sampler's FID is below the prior's.", "latent_size")
    frames = ctx.frames("latent_size")
    if not frames:
        c.missing = ctx.missing("latent_size")
        c.parts = [Part("4a", "|z| effect", None, None, better="higher", why_missing=c.missing),
                   Part("4b", "PixelSNAIL", None, None, why_missing=c.missing)]
        return c
    # 4a: smallest vs largest |z| per table, at the largest T both have
    cands = []
    for label, df in frames:
        prior = fid_rows(df)
        prior = prior[(prior["sampler"] == "prior") & (penalty(prior) == "none")]
        sizes = sorted({float(z) for z in prior["latent_dim"].dropna()})
        if len(sizes) < 2:
            continue
        lo, hi = sizes[0], sizes[-1]
        common = (set(select(prior, latent_dim=lo)["T"].astype(float))
                  & set(select(prior, latent_dim=hi)["T"].astype(float)))
        if not common:
            continue
        T = max(common)
        a, b = (as_num(_best(select(prior, latent_dim=z, T=T)), f"|z|={z:g} ({label}), z~prior: "
                       f"{column_label('fid', select(prior, latent_dim=z)['feature_extractor'].iloc[0], T)}",
                       ctx.paper) for z in (hi, lo))
        seeds = min(x.seeds or 1 for x in (a, b))
        cands.append((seeds, hi - lo, label == ctx.preset, label, T, hi, lo, a, b))
    cands.sort(key=lambda t: t[:3], reverse=True)  # most seeds, then the widest |z| range, then the default budget
    for i, (_, _, _, label, T, hi, lo, a, b) in enumerate(cands):
        # "a is worse (higher FID) than b": the claimed direction is a - b > 0
        c.parts.append(Part("4a" if i == 0 else f"4a-{label}", f"{label}, T={T:g}: prior FID at |z|={hi:g} > at "
                            f"|z|={lo:g}", a, b, better="higher", counted=i == 0))
    if not cands:
        c.parts.append(Part("4a", "|z| effect", None, None, better="higher", why_missing="no latent_size table has "
                            "prior-sampler FID at two |z| sharing a T"))
    # 4b: PixelSNAIL vs the prior at the largest |z| that has both, at the largest T they share
    cands = []
    for label, df in frames:
        fid = fid_rows(df)
        fid = fid[penalty(fid) == "none"]
        for z in sorted({float(z) for z in fid.loc[fid["sampler"] == "pixelsnail", "latent_dim"].dropna()},
                        reverse=True):
            both = set(select(fid, latent_dim=z, sampler="pixelsnail")["T"].astype(float)) & set(
                select(fid, latent_dim=z, sampler="prior")["T"].astype(float))
            if both:
                T = max(both)
                ext = select(fid, latent_dim=z, sampler="prior")["feature_extractor"].iloc[0]
                a = as_num(_best(select(fid, latent_dim=z, sampler="pixelsnail", T=T)),
                           f"|z|={z:g} ({label}), z~pixelsnail: {column_label('fid', ext, T)}", ctx.paper)
                b = as_num(_best(select(fid, latent_dim=z, sampler="prior", T=T)),
                           f"|z|={z:g} ({label}), z~prior: {column_label('fid', ext, T)}", ctx.paper)
                cands.append((min(x.seeds or 1 for x in (a, b)), z, label, T, a, b, fid))
                break
    cands.sort(key=lambda t: (t[1], t[0]), reverse=True)
    for i, (_, z, label, T, a, b, fid) in enumerate(cands):
        c.parts.append(Part("4b" if i == 0 else f"4b-{label}", f"{label}, |z|={z:g}, T={T:g}: PixelSNAIL FID < prior "
                            "FID", a, b, counted=i == 0))
        lo_rows = select(fid, sampler="prior", T=T)
        zmin = lo_rows["latent_dim"].astype(float).min()
        lo = _best(select(lo_rows, latent_dim=zmin))
        if lo is not None and zmin < z and b.value > lo["value"]:
            frac = (b.value - a.value) / (b.value - float(lo["value"]))
            c.notes.append(f"{label}, T={T:g}: PixelSNAIL recovers {frac:.0%} of the prior's FID gap between "
                           f"|z|={zmin:g} ({float(lo['value']):.2f}) and |z|={z:g} ({b.value:.2f}) "
                           f"(information, not part of the rule).")
    if not cands:
        cmds = " or ".join(f"`{cmd}`" for cmd in run_commands("latent_size", ctx.preset))
        c.parts.append(Part("4b", "PixelSNAIL", None, None, why_missing=f"no latent_size table on {ctx.preset} has "
                            f"PixelSNAIL z-sampler rows (the budget that scores them: one of {cmds})"))
    return c


def claim_conditioning(ctx: Ctx) -> Claim:
    c = Claim("5", "Cross-attention beats concatenation and addition", "The released cross-attention "
              "conditioning (z as one token) has a lower FID than z concatenated to / added to the time "
              "embedding, at every T the grid scores. cross_attention+add and z as 4 tokens are reported as "
              "information.", "conditioning")
    rivals = [("concat", True), ("add", True)]
    df = ctx.rows_for(c, [(f"5-{v}", f"vs {v}") for v, k in rivals if k])
    if df is None:
        return c
    rivals += [(v, False) for v in dict.fromkeys(df["variant"]) if v not in ("cross_attention", "concat", "add")]
    ts = sorted({float(t) for t in fid_rows(df)["T"].dropna()})
    for t in ts:
        a = _fid(ctx, df, "cross_attention", t)
        for v, counted in rivals:
            b = _fid(ctx, df, v, t)
            if b is None and not counted:
                continue
            c.parts.append(Part(f"5-{v}@T={t:g}", f"T={t:g}: cross_attention FID < {v} FID", a, b, counted=counted,
                                why_missing=f"no FID row at T={t:g} for "
                                + ("cross_attention" if a is None else v)))
    if not ts:
        c.parts = [Part(f"5-{v}", f"vs {v}", None, None, why_missing="conditioning has no FID rows")
                   for v, k in rivals if k]
    return c


def claim_representation(ctx: Ctx) -> Claim:
    c = Claim("6", "Probe accuracy rises with |z|", "For each prior (Bernoulli, Normal, categorical), the "
              "linear-probe score at the largest |z| is above the one at the smallest |z| (reviewer 4: "
              "'representation learning ... benefits from more informative, higher-dimensional latents').",
              "representation")
    priors = ("bernoulli", "normal", "categorical")
    df = ctx.rows_for(c, [(f"6-{p}", p) for p in priors])
    if df is None:
        return c
    metric = next((m for m in PROBE_PREFERENCE if (df["metric"] == m).any()), None)
    if metric is None:
        c.parts = [Part(f"6-{p}", p, None, None, why_missing="representation has no probe rows") for p in priors]
        return c
    c.notes.append(f"Score: {metric_label(metric)} (`{metric}`)" + (
        "; its sd is the spread (numpy std, ddof=0) of the per-fold score over the 5 CV folds: it is not a spread "
        "over training or sampling seeds." if metric.endswith("_cv") else "; held-out rows have no sd, so no "
        "difference can be resolved."))
    rows = df[df["metric"] == metric]
    for p in [*priors, *sorted(set(rows["prior"].dropna()) - set(priors))]:
        part = rows[rows["prior"] == p]
        sizes = sorted({float(z) for z in part["latent_dim"].dropna()})
        if len(sizes) < 2:
            c.parts.append(Part(f"6-{p}", f"{p}: score at largest |z| > at smallest", None, None,
                                better="higher", counted=p in priors,
                                why_missing=f"{p}: fewer than two |z| with `{metric}` rows"))
            continue
        a = as_num(_best(select(part, latent_dim=sizes[-1])), f"{p}, |z|={sizes[-1]:g}: {metric}", ctx.paper)
        b = as_num(_best(select(part, latent_dim=sizes[0])), f"{p}, |z|={sizes[0]:g}: {metric}", ctx.paper)
        c.parts.append(Part(f"6-{p}", f"{p}: score at |z|={sizes[-1]:g} > at |z|={sizes[0]:g}", a, b,
                            better="higher", counted=p in priors))
    return c


def claim_ddim(ctx: Ctx) -> Claim:
    c = Claim("7", "DDIM needs gamma=0", "With the DDIM (eta=0) loop, a model trained without input perturbation "
              "(gamma=0) has a lower FID than the same model trained with the released gamma, for DDPM and for "
              "DMZ, at the smallest T the grid scores (the other T are information; reviewer 4: 'limited "
              "compatibility with DDIM in Table 10').", "ddim")
    df = ctx.rows_for(c, [(f"7-{m}", m) for m in ("ddpm", "dmz")])
    if df is None:
        return c
    ddim = fid_rows(df, "ddim")
    ts = sorted({float(t) for t in ddim["T"].dropna()})
    if not ts:
        c.parts = [Part(f"7-{m}", m, None, None, why_missing="ddim has no FID rows with solver ddim")
                   for m in ("ddpm", "dmz")]
        return c
    for t in ts:
        for m in ("ddpm", "dmz"):
            sampler = None if m == "ddpm" else "prior"
            a = _fid(ctx, df, f"{m}-gamma0", t, sampler=sampler, solver="ddim")
            b = _fid(ctx, df, f"{m}-released", t, sampler=sampler, solver="ddim")
            c.parts.append(Part(f"7-{m}" + ("" if t == ts[0] else f"@T={t:g}"),
                                f"{m}, DDIM T={t:g}: gamma=0 FID < released-gamma FID", a, b, counted=t == ts[0],
                                why_missing=f"no DDIM FID row at T={t:g} for {m}-"
                                + ("gamma0" if a is None else "released")))
    gam = df.drop_duplicates("variant").set_index("variant")["input_perturbation"] \
        if "input_perturbation" in df.columns else pd.Series(dtype=float)
    if len(gam):
        c.notes.append("gamma (input_perturbation) per cell: " + ", ".join(f"{v}={g:g}" for v, g in gam.items()
                                                                            if not missing(g)))
    return c


def nll_section(ctx: Ctx) -> Claim:
    c = Claim("N", "NLL: DMZ (with z's bits) below DDPM", "Information (we know of no NLL claim in the paper). "
              "Bits/dim per split (evaluation/nll.py): `nll_bpd` is the diffusion bound given z, `nll_bpd_z` adds "
              "z's coding cost under a code model (`sampler`: `prior` = |z| bits for Bernoulli(0.5), `pixelsnail` = "
              "the fitted PixelSNAIL's bits; 0 for DDPM), so `nll_bpd_z` with the prior is the fair comparison with "
              "DDPM. Like every part, it is tested over trainings (a training's NLL = its mean over images; the "
              "standard error over images is shown beside it).", "main", kind="information")
    df = ctx.rows_for(c)
    if df is None:
        return c
    nll = df[df["metric"].isin(list(NLL_LABELS)) & df["value"].notna()]
    if nll.empty:
        c.missing = f"main on {ctx.preset} has no NLL rows (`nll_bpd`, `nll_bpd_z`)"
        return c
    for split in [s for s in ("test", "train") if (nll["reference"] == s).any()]:
        b = ctx.num(nll, f"ddpm: nll_bpd_z ({split})", variant="ddpm", metric="nll_bpd_z", reference=split)
        if b is None:  # DDPM has no z: its NLL with z's bits is its bound
            b = ctx.num(nll, f"ddpm: nll_bpd ({split}, no z)", variant="ddpm", metric="nll_bpd", reference=split)
        dmz = nll[(nll["variant"] == "dmz") & (nll["metric"] == "nll_bpd_z") & (nll["reference"] == split)]
        models = ["prior"] + sorted(set(dmz["sampler"].dropna()) - {"prior"})
        for m in models:
            a = ctx.num(dmz, f"dmz: nll_bpd_z, z coded by {m} ({split})", sampler=m)
            p = Part(f"N-{split}" + ("" if m == "prior" else f"-{m}"), f"{split}: DMZ nll_bpd_z (z~{m}) < DDPM's",
                     a, b, counted=m == "prior",
                     why_missing=f"no NLL row for {'dmz (z coded by ' + m + ')' if a is None else 'ddpm'} on {split}")
            c.parts.append(p)
    c.finalize()
    for p in c.parts:
        if p.diff is not None:
            c.notes.append(f"{p.statement.split(':')[0]}, {p.a.what.split(', ', 1)[1]}: the lower NLL is "
                           f"{'DMZ' if p.diff < 0 else 'DDPM'}'s ({p.a.value:.3f} vs {p.b.value:.3f} bits/dim); "
                           + ("resolved." if p.verdict in (HOLDS, FAILS) else f"not resolved ({p.why})."))
    return c


#: the project's open question 1 (beyond the paper): the largest |z|'s prior FID within this factor of the smallest's
Q1_RATIO = 1.5


def _scaled(n: Num, k: float, what: str) -> Num:
    return dataclasses.replace(n, what=what, value=k * n.value, sd=None if n.sd is None else k * n.sd,
                               trainings=tuple(k * v for v in n.trainings),
                               sampling_sd=None if n.sampling_sd is None else k * n.sampling_sd, paper=None)


def question_large_z(ctx: Ctx) -> Claim:
    """Open question 1: can Bernoulli(0.5) sampling stay good as |z| grows without an auxiliary sampler? Per prior
    penalty (none, prior matching, prior MMD): prior FID at the largest |z| < 1.5 x the FID at the smallest, tested
    as a - 1.5 b < 0 with Welch on the per-training values (b's trainings scaled by 1.5), Holm over the penalties at
    the largest T; the other T as information. Each penalty is read from the table holding it with the most
    trainings."""
    c = Claim("Q1", f"Bernoulli(0.5)-prior FID at the largest |z| within {Q1_RATIO:g}x of the smallest",
              f"(beyond the paper: open question 1) For each prior penalty, the prior-sampler FID at the largest |z| "
              f"is below {Q1_RATIO:g} times the one at the smallest |z| (each penalty from the latent_size table with the "
              "most trainings; the penalties are in --budget full).", "latent_size", kind="beyond")
    frames = ctx.frames("latent_size")
    if not frames:
        c.missing = ctx.missing("latent_size")
        return c
    found: dict[str, tuple] = {}  # penalty -> (rank, label, its rows, smallest |z|, largest |z|): its best table
    for label, df in frames:
        prior = fid_rows(df)
        prior = prior[prior["sampler"] == "prior"]
        prior = prior.assign(_pen=penalty(prior))
        for pen, part in prior.groupby("_pen"):
            sizes = sorted({float(z) for z in part["latent_dim"].dropna()})
            if len(sizes) < 2:
                continue
            n = int(part["train_seeds"].min()) if "train_seeds" in part and part["train_seeds"].notna().any() else 1
            rank = (n, sizes[-1] - sizes[0], part["T"].astype(float).max())
            if pen not in found or rank > found[pen][0]:
                found[pen] = (rank, label, part, sizes[0], sizes[-1])
    for pen in sorted(found, key=lambda x: (x != "none", x)):
        _, label, part, lo, hi = found[pen]
        common = sorted(set(select(part, latent_dim=lo)["T"].astype(float))
                        & set(select(part, latent_dim=hi)["T"].astype(float)))
        for T in common:
            a = as_num(_best(select(part, latent_dim=hi, T=T)), f"|z|={hi:g} ({pen}, {label}), z~prior: FID T={T:g}")
            b = as_num(_best(select(part, latent_dim=lo, T=T)), f"|z|={lo:g} ({pen}, {label}), z~prior: FID T={T:g}")
            if a is None or b is None:
                continue
            b = _scaled(b, Q1_RATIO, f"{Q1_RATIO:g} x " + b.what)
            counted = T == max(common)
            c.parts.append(Part(f"Q1-{pen}" + ("" if counted else f"@T={T:g}"),
                                f"{label}, T={T:g}, penalty {pen}: FID(|z|={hi:g}) < {Q1_RATIO:g} x FID(|z|={lo:g})",
                                a, b, counted=counted, margin=None))  # a threshold, not a rival: no margin
    if not c.parts:
        c.missing = (f"no latent_size table on {ctx.preset} has prior-sampler FID at two sizes of z sharing a T; "
                     f"`{run_commands('latent_size', ctx.preset)[-1]}` scores it")
    return c


#: the claims in report order; each a function of the loaded rows
CLAIMS: tuple[Callable[[Ctx], Claim], ...] = (claim_small_T, claim_T100, claim_latent_type, claim_latent_size,
                                               claim_conditioning, claim_representation, claim_ddim, nll_section,
                                               question_large_z)


# ----------------------------------------------------------------------------------------------------------------
# all claims and their verdicts
# ----------------------------------------------------------------------------------------------------------------
def build_claims(ctx: Ctx) -> list[Claim]:
    """Every claim of :data:`CLAIMS`, judged on ``ctx``'s rows (their ``tables`` are left empty: the report fills
    them)."""
    out = []
    for f in CLAIMS:
        c = f(ctx)
        out.append(c.finalize(ctx.alpha_for(c.grid)))
    return out


def verdict_rows(claims: list[Claim], preset: str) -> pd.DataFrame:
    def num(n: Num | None, k: str) -> Any:
        return getattr(n, k) if n is not None else None

    rows = []
    for c in claims:
        rows.append({"preset": preset, "claim_id": c.cid, "part_id": "", "kind": c.kind, "grid": c.grid,
                     "statement": c.statement, "verdict": c.verdict,
                     "numbers": "; ".join(f"{p.pid}: {p.verdict}" for p in c.parts if p.counted) or c.missing,
                     "rule": "multi-part: counted parts Holm-corrected together; holds only if every counted part "
                     "holds; does not hold if any does not; else not resolved (no data if no part has data)"})
        for p in c.parts:
            t = p.test
            rows.append({"preset": preset, "claim_id": c.cid, "part_id": p.pid,
                         "kind": "part" if p.counted and c.kind != "information" else "information", "grid": c.grid,
                         "statement": p.statement, "verdict": p.verdict,
                         "numbers": (f"a = {p.a.text() if p.a else '–'}; b = {p.b.text() if p.b else '–'}; "
                                     f"a - b = {'–' if p.diff is None else f'{p.diff:+.4g}'}"
                                     + ("" if t.ci is None else f" [95% CI {t.ci[0]:+.4g}, {t.ci[1]:+.4g}]")
                                     + f"; {p.why}" + (f"; {p.needed_text()}" if p.needed_text() else "")),
                         "rule": p.rule, "a": num(p.a, "what"), "a_value": num(p.a, "value"), "a_sd": num(p.a, "sd"),
                         "a_trainings": num(p.a, "n"), "a_training_values": json.dumps(list(p.a.trainings))
                         if p.a else None, "a_sampling_sd": num(p.a, "sampling_sd"), "a_N": num(p.a, "N"),
                         "a_seeds": num(p.a, "seeds"), "b": num(p.b, "what"), "b_value": num(p.b, "value"),
                         "b_sd": num(p.b, "sd"), "b_trainings": num(p.b, "n"),
                         "b_training_values": json.dumps(list(p.b.trainings)) if p.b else None,
                         "b_sampling_sd": num(p.b, "sampling_sd"), "b_N": num(p.b, "N"), "b_seeds": num(p.b, "seeds"),
                         "difference": p.diff, "test": t.test or None, "scale": t.scale,
                         "test_difference": t.diff, "ci_low": t.ci[0] if t.ci else None,
                         "ci_high": t.ci[1] if t.ci else None, "ratio": t.ratio,
                         "ratio_ci_low": t.ratio_ci()[0] if t.ratio_ci() else None,
                         "ratio_ci_high": t.ratio_ci()[1] if t.ratio_ci() else None, "df": t.df,
                         "n_pairs": t.n_pairs or None, "pair_corr": t.corr, "p": t.p, "p_holm": t.p_holm,
                         "alpha": p.alpha, "margin": margin_text(p.margin, t.scale == "log"),
                         "p_equiv": t.p_equiv, "p_equiv_holm": t.p_equiv_holm,
                         "seeding": num(p.a or p.b, "seeding"),
                         "trainings_needed": p.needed, "claimed": p.claimed,
                         "feature_extractor": num(p.a or p.b, "extractor"),
                         "paper_a": num(p.a, "paper"), "paper_b": num(p.b, "paper"),
                         "source": num(p.a or p.b, "source")})
    return pd.DataFrame(rows)
