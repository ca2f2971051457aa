"""The verdict rule applied to the report's numbers: :class:`Num` (one number over its trainings), :class:`Part` (one
comparison a < b or a > b, judged by :func:`judge`) and :class:`Claim` (parts Holm-corrected together, combined by
:func:`combine`); the statistics themselves are :mod:`ablations.inference`'s.

The rule (:func:`judge`, :data:`RULE`): the unit of evidence is a **training** (a training's FID is the mean over its
sampling seeds). A part compares the per-training values of ``a`` and ``b``: paired over the common seeds where both
sides were trained under common random numbers (:func:`pairs_of`), Welch otherwise; FID on the log scale (a ratio);
two-sided; the counted parts of one claim are Holm-corrected together at family-wise alpha = 0.05
(:meth:`Claim.finalize`; under a group-sequential design at each part's look's level). Holm-adjusted p below alpha:
**holds** in the claimed direction, **does not hold** in the other; the two one-sided tests inside the part's margin
(:func:`default_margin`, declared before any data): **no practical difference**; else **not resolved at this
budget**, as is every part with fewer than 2 trainings on a side (the spread over sampling seeds of one training
never decides) or FIDs from two feature extractors. An unresolved part carries the trainings a side that would
resolve its observed effect at its observed spread with 80% power. A claim holds only if every counted part holds
and does not hold if any counted part does not or shows no practical difference (:func:`combine`).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ablations.inference import ALPHA, MAX_TRAININGS, POWER, Test, compare, holm, trainings_needed
from ablations.tables import fmt, missing

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
NLL_LABELS = {"nll_bpd": "NLL given z", "nll_bpd_z": "NLL with z's bits"}


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
            r = "" if t.corr is None or t.n_pairs < 3 else f", r={t.corr:.2f}"  # 2 points always give r = +-1
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


