"""The statistics of a verdict: tests, power, sample sizes and group-sequential bounds for two arms of trainings.

The unit of evidence is one **training**'s value (e.g. a training's FID, the mean over its sampling seeds). Two arms
``a`` and ``b`` each have a few per-training values (2-30); everything here compares those values, never the spread
over sampling seeds within a training. This module imports only numpy, scipy, statsmodels and the standard library,
so every part of the project can import it.

What a reader of the report must know about each rule:

* **Difference, unpaired** (:func:`compare` without ``pairs``): Welch's t-test (``scipy.stats.ttest_ind``,
  ``equal_var=False``), two-sided, with the ``1 - alpha`` interval of ``mean(a) - mean(b)`` from its
  ``confidence_interval``. It does not assume equal spreads on the two arms.
* **Difference, paired** (:func:`compare` with ``pairs``): when both arms trained the same seeds, the per-seed
  differences ``a_i - b_i`` are tested with the paired t-test (``scipy.stats.ttest_rel``); the difference reported is
  the mean per-pair difference. Pairing removes what the two arms of one seed share (``corr`` > 0 shrinks the spread
  of the differences, ``sd_diff``, below the arms' own).
* **Log scale** (``log=True``): every value is replaced by its natural log first, so the difference is a log ratio
  and ``exp`` of it (and of its interval) is the ratio of geometric means, e.g. "DMZ's FID is 0.93x DDPM's
  (95% interval 0.88x-0.98x)". Positive skewed quantities such as FIDs are closer to normal on this scale.
* **Equivalence** (``margin``): two one-sided tests (TOST, Schuirmann 1987; ``statsmodels.stats.weightstats``
  ``ttost_ind(usevar='unequal')`` / ``ttost_paired``) of "the difference lies inside the margin" (a ratio interval
  on the log scale, e.g. (0.9, 1.1); an interval of differences on the linear scale). ``p_equiv < alpha`` means the
  arms are shown to be equivalent within the margin; a large p of the difference test alone never does.
* **Several comparisons**: the caller corrects the p of a family with Holm's step-down procedure (Holm 1979,
  :func:`holm`; ``statsmodels.stats.multitest.multipletests(method="holm")``), family-wise at alpha.
* **Power and trainings needed** (:func:`power`, :func:`trainings_needed`, :func:`equivalence_power`): from the
  noncentral t (``scipy.stats.nct``) at the observed difference and spread, n trainings a side; a part whose power
  at :data:`MAX_TRAININGS` is below :data:`FUTILITY_POWER` for both decisions (difference and equivalence) is
  futile: no affordable study resolves it.
* **Sequential looks** (:func:`spending_bounds`, :func:`look_alphas`, ``simulate("sequential")``): a study that
  looks at the data after each batch of trainings (e.g. 2, 4, 6, 8 a side) and stops at the first decision tests
  look k at the nominal level ``look_alphas(fractions)[k]`` instead of alpha, so that the chance of ever deciding
  "different" when there is no difference stays alpha. The levels come from the Lan & DeMets (1983) alpha-spending
  approach with the O'Brien-Fleming-type spending function in gsDesign's ``sfLDOF`` form (two-sided, symmetric;
  very strict early looks, close to alpha at the last), the z bounds found by the Armitage-McPherson-Rowe
  recursion on Jennison & Turnbull's (2000, ch. 19) grid; :func:`obf_bounds` gives the classical O'Brien-Fleming
  bounds (Jennison & Turnbull 2000, ch. 2: C = 2.004 for K = 3) computed the same way. The t-test p of each look is
  compared with a nominal level per look: the z bound's (:func:`look_alphas`, the "significance level" approach
  for an unknown variance, Jennison & Turnbull 2000) is approximate at a handful of trainings: by :func:`simulate`
  (400k draws) the paired rule at looks 2, 4, 6, 8 then decides "different" under no difference 5.4% of the time
  (5.2% at 4, 8, 12, 16; Welch's at 2, 4, 6, 8 4.9%). :func:`t_look_alphas` (what the project's sequential rule
  uses) calibrates each look's level to the t-test instead: each look spends exactly its share of alpha on
  simulated null experiments.

References: Welch's and the paired t-test as in scipy.stats; D. J. Schuirmann (1987), A comparison of the two
one-sided tests procedure and the power approach for assessing the equivalence of average bioavailability,
J. Pharmacokinet. Biopharm. 15:657-680; S. Holm (1979), A simple sequentially rejective multiple test procedure,
Scand. J. Statist. 6:65-70; K. K. G. Lan and D. L. DeMets (1983), Discrete sequential boundaries for clinical
trials, Biometrika 70:659-663 (the spending function as gsDesign's ``sfLDOF``, K. Anderson, R package gsDesign);
C. Jennison and B. W. Turnbull (2000), Group Sequential Methods with Applications to Clinical Trials, Chapman &
Hall/CRC.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import optimize, stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.weightstats import ttost_ind, ttost_paired

ALPHA = 0.05  # two-sided; family-wise over a claim's counted parts when the caller applies holm()
POWER = 0.8  # the power the trainings needed are computed for
MAX_TRAININGS = 1000  # trainings_needed gives up beyond this (the difference is too small to chase)
#: a part whose decision power at the most trainings allowed is below this for both decisions (difference and
#: equivalence) is futile
FUTILITY_POWER = 0.2
_RULES = ("welch", "paired", "equivalence", "sequential")
_GRID_R = 32  # Jennison & Turnbull's grid parameter (they find r = 16 accurate to ~1e-6 in error probabilities)


# ----------------------------------------------------------------------------------------------------------------
# one comparison
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Test:
    """One comparison of two arms' per-training values (:func:`compare`), on the analysis scale (``scale``).

    :param diff: ``mean(a) - mean(b)`` (log scale: ``mean log a - mean log b``); the mean per-pair difference when
        paired.
    :param ci: the ``1 - alpha`` interval of ``diff`` (None when the test is undefined).
    :param p: two-sided p of "no difference" (None when undefined: fewer than 2 values on a side, or no spread).
    :param df: the t-test's degrees of freedom (Welch's fractional df, or n_pairs - 1).
    :param p_holm: the Holm-adjusted p (set by the caller over a family).
    :param test: ``"paired t"``, ``"Welch"``, or ``""`` when no test was possible.
    :param n_a, n_b: values on each arm; ``n_pairs``: the pairs tested (paired only).
    :param corr: Pearson correlation of the paired per-seed values (None when unpaired or undefined).
    :param margin: the equivalence margin on the analysis scale (log scale: ``(log lo_ratio, log hi_ratio)``).
    :param p_equiv: the TOST p (statsmodels) that ``diff`` lies inside ``margin``; ``p_equiv_holm`` set by the caller.
    :param sd_diff: the sd of the difference of one training of a and one of b: paired, the sd (ddof=1) of the
        per-pair differences; Welch, ``sqrt(var_a + var_b)`` (ddof=1 variances, no covariance). In both cases the
        standard error of ``diff`` at n trainings a side is ``sd_diff / sqrt(n)``; for :func:`power` unpaired pass
        the per-arm sd ``sd_diff / sqrt(2)``.
    """

    diff: float | None = None
    ci: tuple[float, float] | None = None
    p: float | None = None
    df: float | None = None
    p_holm: float | None = None
    test: str = ""
    n_a: int = 0
    n_b: int = 0
    n_pairs: int = 0
    corr: float | None = None
    scale: str = "linear"
    margin: tuple[float, float] | None = None
    p_equiv: float | None = None
    p_equiv_holm: float | None = None
    sd_diff: float | None = None

    def ratio_ci(self) -> tuple[float, float] | None:
        """``exp`` of the interval on the log scale (the interval of the ratio of geometric means); None on the
        linear scale or without an interval."""
        if self.scale != "log" or self.ci is None:
            return None
        return (math.exp(self.ci[0]), math.exp(self.ci[1]))

    @property
    def ratio(self) -> float | None:
        """``exp(diff)`` on the log scale (the ratio of geometric means, a over b); None on the linear scale."""
        if self.scale != "log" or self.diff is None:
            return None
        return math.exp(self.diff)


def _analysis(values: Sequence[float], log: bool, what: str) -> np.ndarray:
    x = np.asarray(list(values), dtype=float).reshape(-1)
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{what} holds a value that is not finite: {x.tolist()}")
    if log:
        if np.any(x <= 0):
            bad = [float(v) for v in x if v <= 0]
            raise ValueError(f"the log scale needs positive values, but {what} holds {bad}: compare them with "
                             "log=False, or drop the non-positive values")
        x = np.log(x)
    return x


def _margin(margin: tuple[float, float] | None, log: bool) -> tuple[float, float] | None:
    if margin is None:
        return None
    lo, hi = (float(margin[0]), float(margin[1]))
    if not lo < hi:
        raise ValueError(f"an equivalence margin needs low < high, got {margin}")
    if log:
        if lo <= 0:
            raise ValueError(f"on the log scale the margin is a ratio interval with positive ends (e.g. (0.9, 1.1)), "
                             f"got {margin}")
        return (math.log(lo), math.log(hi))
    return (lo, hi)


def _finite(v: float) -> float | None:
    v = float(v)
    return v if math.isfinite(v) else None


def compare(a: Sequence[float], b: Sequence[float], *, pairs: list[tuple[float, float]] | None = None,
            log: bool = False, margin: tuple[float, float] | None = None, alpha: float = ALPHA) -> Test:
    """Test a against b on their per-training values.

    With ``pairs`` (the per-seed ``(a_value, b_value)`` of the seeds both arms trained): the paired t-test
    (``scipy.stats.ttest_rel``) with its ``confidence_interval(1 - alpha)``; ``diff`` is the mean per-pair
    difference, ``sd_diff`` the sd (ddof=1) of the differences, ``corr`` the Pearson correlation of the pairs
    (``scipy.stats.pearsonr``; None when either side is constant). Otherwise Welch's t-test
    (``scipy.stats.ttest_ind(equal_var=False)``) of a and b with its interval; ``diff = mean(a) - mean(b)``.

    ``log=True`` replaces every value by its natural log first (values must be > 0, else ValueError) and sets
    ``scale="log"``. ``margin`` is given on the original scale (log: a ratio interval, converted to its logs;
    linear: an interval of differences); with it ``p_equiv`` is the TOST p of statsmodels (``ttost_paired`` for
    pairs, ``ttost_ind(usevar='unequal')`` otherwise).

    Fewer than 2 values on a side (fewer than 2 pairs when paired), or no spread (both sides constant; constant
    per-pair differences when paired), give a Test with ``diff`` set and ``p``, ``ci`` and ``p_equiv`` None.
    """
    xa, xb = _analysis(a, log, "a"), _analysis(b, log, "b")
    m = _margin(margin, log)
    scale = "log" if log else "linear"
    if pairs is not None:
        pa = _analysis([p[0] for p in pairs], log, "the pairs' a values")
        pb = _analysis([p[1] for p in pairs], log, "the pairs' b values")
        d = pa - pb
        diff = float(np.mean(d)) if len(d) else (float(np.mean(xa) - np.mean(xb)) if len(xa) and len(xb)
                                                 else None)
        t = Test(diff=diff, n_a=len(xa), n_b=len(xb), n_pairs=len(d), scale=scale, margin=m)
        if len(d) < 2:
            return t
        t.sd_diff = float(np.std(d, ddof=1))
        if np.ptp(pa) > 0 and np.ptp(pb) > 0:
            t.corr = _finite(stats.pearsonr(pa, pb).statistic)
        if np.ptp(d) == 0:  # constant differences: the t statistic is undefined
            return t
        return _fill(t, "paired t", stats.ttest_rel(pa, pb), alpha,
                     None if m is None else (lambda: ttost_paired(pa, pb, m[0], m[1])[0]))
    diff = float(np.mean(xa) - np.mean(xb)) if len(xa) and len(xb) else None
    t = Test(diff=diff, n_a=len(xa), n_b=len(xb), scale=scale, margin=m)
    if len(xa) < 2 or len(xb) < 2:
        return t
    t.sd_diff = float(math.sqrt(np.var(xa, ddof=1) + np.var(xb, ddof=1)))
    if np.ptp(xa) == 0 and np.ptp(xb) == 0:  # no spread on either side: the t-test is undefined
        return t
    return _fill(t, "Welch", stats.ttest_ind(xa, xb, equal_var=False), alpha,
                 None if m is None else (lambda: ttost_ind(xa, xb, m[0], m[1], usevar="unequal")[0]))


def _fill(t: Test, name: str, r, alpha: float, tost: Callable[[], float] | None) -> Test:
    """``t`` with the scipy result ``r`` (its p, df and ``1 - alpha`` interval) and the TOST p, when p is finite."""
    if not math.isfinite(float(r.pvalue)):
        return t
    ci = r.confidence_interval(1 - alpha)
    t.test, t.p, t.df = name, float(r.pvalue), float(r.df)
    t.ci = (float(ci.low), float(ci.high))
    if tost is not None:
        t.p_equiv = _finite(tost())
    return t


def holm(pvalues: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values, same order as given: the i-th smallest (0-based) times (m - i), made
    monotone, capped at 1 (``statsmodels.stats.multitest.multipletests(method="holm")``)."""
    if not len(pvalues):
        return []
    return [float(p) for p in multipletests(np.asarray(pvalues, dtype=float), method="holm")[1]]


# ----------------------------------------------------------------------------------------------------------------
# power and trainings needed
# ----------------------------------------------------------------------------------------------------------------
def _design(sd: float, n: int, paired: bool) -> tuple[float, float]:
    """(df, standard error of the difference) of a t-test with n trainings a side."""
    if n < 2:
        raise ValueError(f"a t-test needs at least 2 trainings a side, got n={n}")
    if paired:
        return n - 1, sd / math.sqrt(n)
    return 2 * n - 2, sd * math.sqrt(2 / n)


def _tail(sf: float, cdf: float) -> float:
    # scipy's nct underflows to nan in a tail far from the noncentrality, where the probability is ~0
    return (0.0 if math.isnan(sf) else sf) + (0.0 if math.isnan(cdf) else cdf)


#: up to this many trainings a side, the power of Welch's test is computed by simulation (:func:`_welch_power`)
WELCH_SIMULATED_UP_TO = 30
WELCH_POWER_DRAWS = 40_000


@functools.lru_cache(maxsize=4096)
def _welch_power(d: float, n: int, alpha: float) -> float:
    """Welch's power at a standardised difference ``d`` (difference / per-arm sd) with n a side, over
    :data:`WELCH_POWER_DRAWS` seeded normal experiments (the same draws for every d at one n). At a few trainings
    a side Welch's data-dependent df makes it clearly less powerful than the pooled t of df 2n - 2 (n = 3, d = 1.5:
    22% against 29%), so the noncentral t would overstate what the report's rule can do."""
    rng = np.random.default_rng([20_261_208, n])
    e = rng.standard_normal((2, WELCH_POWER_DRAWS, n))
    p, _ = _tests(e[0] + d, e[1], False, None)
    return float(np.mean(p < alpha))


def power(diff: float, sd: float, n: int, *, paired: bool, alpha: float = ALPHA) -> float:
    """Probability that the report's two-sided t-test at ``alpha`` rejects "no difference" when the true difference
    is ``diff``, with n trainings a side. ``paired=True``: the paired t-test; ``sd`` is the sd of the per-pair
    differences, df = n - 1, from the noncentral t (``scipy.stats.nct``: upper plus lower tail beyond the critical
    value) at noncentrality ``diff / (sd / sqrt n)``. ``paired=False``: Welch's test with ``sd`` the per-arm sd
    (equal on both arms): by simulation up to :data:`WELCH_SIMULATED_UP_TO` a side (:func:`_welch_power`, Monte-Carlo
    se below 0.0025), beyond that the noncentral t of df 2n - 2 at ``diff / (sd * sqrt(2 / n))`` (Welch's df is then
    close to it). With ``sd == 0`` the power is 1 for any ``diff != 0``."""
    dof, se = _design(sd, n, paired)
    if diff == 0:
        return float(alpha)
    if se == 0:
        return 1.0
    if not paired and n <= WELCH_SIMULATED_UP_TO:
        return _welch_power(round(abs(diff) / sd, 9), int(n), float(alpha))
    nc = diff / se
    crit = float(stats.t.ppf(1 - alpha / 2, dof))
    return min(1.0, _tail(float(stats.nct.sf(crit, dof, nc)), float(stats.nct.cdf(-crit, dof, nc))))


def trainings_needed(diff: float, sd_a: float | None, sd_b: float | None, *, sd_diff: float | None = None,
                     alpha: float = ALPHA, power: float = POWER) -> int | None:
    """The smallest number of trainings a side with which a two-sided t-test at ``alpha`` detects a true difference
    ``|diff|`` with probability ``power`` (:func:`power`). Paired when ``sd_diff`` (the sd of the per-pair
    differences) is given and finite; otherwise unpaired with the rms of the finite per-arm sds (a side without one
    borrows the other's). 2 when the spread is 0; None when ``diff`` is 0, no spread is known, or more than
    :data:`MAX_TRAININGS` would be needed. Power grows with n, so the answer is bisected."""
    paired = sd_diff is not None and math.isfinite(sd_diff)
    if paired:
        sd = float(sd_diff)
    else:
        sds = [s for s in (sd_a, sd_b) if s is not None and math.isfinite(s)]
        if not sds:
            return None
        sd = math.sqrt(sum(s * s for s in sds) / len(sds))
    if diff == 0 or not math.isfinite(diff):
        return None
    if sd == 0:
        return 2
    def enough(n: int) -> bool:  # ``power`` is the target here: _power_at calls the module's power()
        return _power_at(abs(diff), sd, n, paired, alpha) >= power

    if not enough(MAX_TRAININGS):
        return None
    lo, hi = 1, MAX_TRAININGS  # enough(hi) holds; every n probed is >= 2
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if enough(mid) else (mid, hi)
    return hi


def _power_at(diff: float, sd: float, n: int, paired: bool, alpha: float) -> float:
    return power(diff, sd, n, paired=paired, alpha=alpha)


def equivalence_power(diff: float, sd: float, n: int, margin: tuple[float, float], *, paired: bool,
                      alpha: float = ALPHA) -> float:
    """Power of the TOST at ``alpha`` (both one-sided t-tests reject) for the margin ``(lo, hi)`` on the analysis
    scale when the true difference is ``diff``, with n trainings a side (df and standard error as in :func:`power`).
    The standard noncentral-t approximation: ``P(T1 > t_crit) + P(T2 < -t_crit) - 1``, floored at 0, with
    ``T1 ~ nct(df, (diff - lo) / se)``, ``T2 ~ nct(df, (diff - hi) / se)`` and ``t_crit`` the one-sided
    ``1 - alpha`` quantile of t(df)."""
    lo, hi = float(margin[0]), float(margin[1])
    if not lo < hi:
        raise ValueError(f"an equivalence margin needs low < high, got {margin}")
    dof, se = _design(sd, n, paired)
    if se == 0:
        return 1.0 if lo < diff < hi else 0.0
    crit = float(stats.t.ppf(1 - alpha, dof))
    up = float(stats.nct.sf(crit, dof, (diff - lo) / se))
    down = float(stats.nct.cdf(-crit, dof, (diff - hi) / se))
    up, down = (0.0 if math.isnan(up) else up), (0.0 if math.isnan(down) else down)
    return float(min(1.0, max(0.0, up + down - 1.0)))


# ----------------------------------------------------------------------------------------------------------------
# group-sequential bounds
# ----------------------------------------------------------------------------------------------------------------
def ldof_spending(t: float, alpha: float = ALPHA) -> float:
    """The Lan-DeMets O'Brien-Fleming-type spending function as gsDesign's ``sfLDOF`` uses it for a two-sided
    symmetric design with total two-sided ``alpha``: per side ``2 - 2 Phi(Phi^-1(1 - alpha / 4) / sqrt(t))`` (the
    one-sided total being alpha / 2); returned is the two-sided cumulative spend, twice that (``ldof_spending(1) ==
    alpha``). 0 for t <= 0; t > 1 counts as 1."""
    if t <= 0:
        return 0.0
    t = min(float(t), 1.0)
    side = 2 * float(stats.norm.sf(float(stats.norm.isf(alpha / 4)) / math.sqrt(t)))
    return 2 * side


def _grid(c: float) -> tuple[np.ndarray, np.ndarray]:
    """Jennison & Turnbull's (2000, ch. 19) grid for a standardised statistic under the null, cut to the
    continuation region (-c, c), with Simpson's rule weights: (points, weights)."""
    r = _GRID_R
    i = np.arange(1, 6 * r, dtype=float)
    x = np.where(i < r, -3 - 4 * np.log(r / i),
                 np.where(i <= 5 * r, -3 + 3 * (i - r) / (2 * r), 3 + 4 * np.log(r / np.maximum(6 * r - i, 1))))
    if math.isfinite(c) and c < x[-1]:
        x = np.concatenate([[-c], x[(x > -c) & (x < c)], [c]])
    z = np.empty(2 * len(x) - 1)
    z[0::2], z[1::2] = x, (x[:-1] + x[1:]) / 2
    d = np.diff(x)
    w = np.zeros_like(z)
    w[0::2][:-1] += d / 6
    w[0::2][1:] += d / 6
    w[1::2] = 4 * d / 6
    return z, w


class _Recursion:
    """The Armitage-McPherson-Rowe recursion for the canonical joint normal (Z_1..Z_K), Corr(Z_i, Z_j) =
    sqrt(t_i / t_j), under the null: after each look it holds the sub-density of Z_k on the paths that have not
    crossed any bound so far, on a grid (points z, Simpson weights w, density values h)."""

    def __init__(self) -> None:
        self.t: float | None = None
        self.z = self.wh = np.empty(0)

    def cross(self, t: float, c: float) -> float:
        """P(no crossing before, |Z| >= c at a look at fraction t)."""
        if not math.isfinite(c):
            return 0.0
        if self.t is None:
            return 2 * float(stats.norm.sf(c))
        u, s, dl = self.z * math.sqrt(self.t), math.sqrt(t), math.sqrt(t - self.t)
        return float(np.sum(self.wh * (stats.norm.cdf((u - c * s) / dl) + stats.norm.cdf((-u - c * s) / dl))))

    def advance(self, t: float, c: float) -> None:
        """Move to the look at fraction t with bound c (the density of the paths that continue past it)."""
        z, w = _grid(c)
        if self.t is None:
            h = stats.norm.pdf(z)
        else:
            u, s, dl = self.z * math.sqrt(self.t), math.sqrt(t), math.sqrt(t - self.t)
            h = stats.norm.pdf((z[:, None] * s - u[None, :]) / dl) @ self.wh * (s / dl)
        self.t, self.z, self.wh = t, z, w * h


def _fractions(fractions: Sequence[float]) -> list[float]:
    t = [float(f) for f in fractions]
    if not t:
        raise ValueError("a sequential design needs at least one look")
    if t[0] <= 0 or any(b <= a for a, b in zip(t, t[1:])) or t[-1] > 1:
        raise ValueError(f"information fractions must rise strictly within (0, 1], got {t}")
    return t


def _crossing_probabilities(fractions: Sequence[float], bounds: Sequence[float]) -> list[float]:
    """P(|Z_1| < c_1, ..., |Z_{k-1}| < c_{k-1}, |Z_k| >= c_k) under the null for each look k (numerical
    integration, :class:`_Recursion`); their sum is the chance of ever crossing."""
    t = _fractions(fractions)
    if len(bounds) != len(t):
        raise ValueError(f"{len(t)} looks but {len(bounds)} bounds")
    rec, out = _Recursion(), []
    for tk, ck in zip(t, bounds):
        out.append(rec.cross(tk, float(ck)))
        rec.advance(tk, float(ck))
    return out


def spending_bounds(fractions: list[float], alpha: float = ALPHA,
                    spending: Callable[[float, float], float] = ldof_spending) -> list[float]:
    """Two-sided symmetric z bounds c_1..c_K for looks at information fractions 0 < t_1 < ... < t_K <= 1: c_k is
    such that P(|Z_1| < c_1, ..., |Z_{k-1}| < c_{k-1}, |Z_k| >= c_k) = spending(t_k) - spending(t_{k-1}) under the
    null (Lan & DeMets 1983), the crossing probabilities computed by the Armitage-McPherson-Rowe recursion on
    Jennison & Turnbull's grid with Simpson's rule, each c_k found with ``scipy.optimize.brentq``. A look that
    spends nothing gets an infinite bound. ``t_K < 1`` (a design that stopped early) spends only ``spending(t_K)``."""
    t = _fractions(fractions)
    rec, bounds, spent = _Recursion(), [], 0.0
    for tk in t:
        total = float(spending(tk, alpha))
        inc = total - spent
        spent = max(spent, total)
        if inc <= 0:
            c = math.inf
        elif rec.t is None:
            c = float(stats.norm.isf(inc / 2))
        else:
            lo, hi = 0.0, float(stats.norm.isf(inc / 2)) + 1.0
            if rec.cross(tk, lo) <= inc:  # the paths still going hold less than this look should spend
                c = 0.0
            else:
                c = optimize.brentq(lambda x: rec.cross(tk, x) - inc, lo, hi, xtol=1e-10, rtol=1e-12)
        bounds.append(float(c))
        rec.advance(tk, c)
    return bounds


def obf_bounds(K: int, alpha: float = ALPHA) -> list[float]:
    """The classical O'Brien-Fleming two-sided bounds for K equally spaced looks: c_k = C sqrt(K / k), with C
    (``scipy.optimize.brentq``) such that the null chance of ever crossing is ``alpha`` (the recursion of
    :func:`spending_bounds`). K=3, alpha=0.05: C = 2.004 (Jennison & Turnbull 2000, ch. 2)."""
    if K < 1:
        raise ValueError(f"K must be at least 1, got {K}")
    t = [k / K for k in range(1, K + 1)]
    shape = [math.sqrt(K / k) for k in range(1, K + 1)]
    if K == 1:
        return [float(stats.norm.isf(alpha / 2))]

    def excess(C: float) -> float:
        return sum(_crossing_probabilities(t, [C * s for s in shape])) - alpha

    C = optimize.brentq(excess, float(stats.norm.isf(alpha / 2)), float(stats.norm.isf(alpha / (2 * K))),
                        xtol=1e-10, rtol=1e-12)
    return [float(C * s) for s in shape]


def nominal_alpha(c: float) -> float:
    """``2 (1 - Phi(c))``: the two-sided nominal p a look's z bound stands for (0 for an infinite bound)."""
    return 2 * float(stats.norm.sf(c))


def look_alphas(fractions: list[float], alpha: float = ALPHA) -> list[float]:
    """The nominal two-sided level each look tests at: :func:`nominal_alpha` of each of :func:`spending_bounds`."""
    return [nominal_alpha(c) for c in spending_bounds(fractions, alpha)]


#: draws of the null experiments that calibrate the t-test levels of a sequential design (:func:`t_look_alphas`)
T_CALIBRATION_DRAWS = 200_000


@functools.lru_cache(maxsize=256)
def _t_look_alphas(looks: tuple[int, ...], max_n: int, alpha: float, paired: bool, draws: int,
                   seed: int) -> tuple[float, ...]:
    spend = [ldof_spending(min(1.0, k / max_n), alpha) for k in looks]
    # training j of every experiment from its own stream: a design's first looks see the same draws whatever
    # looks follow them, so a look's level does not move when the plan grows
    e = np.stack([np.random.default_rng([seed, j]).standard_normal((2, draws)) for j in range(looks[-1])], axis=-1)
    going = np.ones(draws, bool)
    levels, before = [], 0.0
    for nk, cum in zip(looks, spend):
        p, _ = _tests(e[0][:, :nk], e[1][:, :nk], paired, None)
        k = int(round((cum - before) * draws))  # the draws this look may stop: its share of alpha
        before = cum
        live = np.sort(p[going & np.isfinite(p)])
        level = 0.0 if k <= 0 or not len(live) else float(live[min(k, len(live)) - 1])
        level = min(level, nominal_alpha(0.0))
        levels.append(level)
        going &= ~(p <= level)
    return tuple(levels)


def t_look_alphas(looks: list[int], max_n: int | None = None, alpha: float = ALPHA, *, paired: bool,
                  draws: int = T_CALIBRATION_DRAWS, seed: int = 20_260_000) -> list[float]:
    """The nominal two-sided level each look of a sequential **t-test** design tests its p at, so that, with
    normal per-training values and no difference, the share of experiments that ever decide "different" is
    ``alpha`` and each look spends what the Lan-DeMets O'Brien-Fleming-type function assigns it
    (:func:`ldof_spending` at ``n_k / max_n``). The z-scale levels of :func:`look_alphas` assume a known spread;
    with 2-8 trainings a side the t statistics of successive looks are less correlated than the z statistics, and
    their levels let about 5.4% through (paired, looks 2, 4, 6, 8). Here each level is instead the quantile of
    the look's null p over the experiments still going, from ``draws`` null experiments (seeded; the null
    distribution of the t-test's p depends on nothing but n, so one calibration serves every spread and
    difference): a first-crossing probability equal to the look's spend, up to Monte-Carlo error
    (``sqrt(alpha / draws)``, 0.0005 at the default draws). Cached per design."""
    looks = [int(k) for k in looks]
    if not looks or looks[0] < 2 or any(b <= a for a, b in zip(looks, looks[1:])):
        raise ValueError(f"looks must be trainings a side >= 2, rising strictly, got {looks}")
    return list(_t_look_alphas(tuple(looks), int(max_n or looks[-1]), float(alpha), bool(paired), int(draws),
                               int(seed)))


# ----------------------------------------------------------------------------------------------------------------
# simulation of a rule
# ----------------------------------------------------------------------------------------------------------------
def _looks(rule: str, n: int | list[int]) -> list[int]:
    if rule not in _RULES:
        raise ValueError(f"unknown rule {rule!r}: one of {', '.join(_RULES)}")
    looks = [int(x) for x in n] if isinstance(n, (list, tuple)) else [int(n)]
    if rule != "sequential" and len(looks) != 1:
        raise ValueError(f"rule {rule!r} takes one n (trainings a side), got {n}; only 'sequential' takes looks")
    if looks[0] < 2 or any(b <= a for a, b in zip(looks, looks[1:])):
        raise ValueError(f"trainings a side must be >= 2 (and rise strictly from look to look), got {n}")
    return looks


def _experiments(*, n: int, sd: float, diff: float, corr: float, log: bool, mean: float, draws: int,
                 seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(a, b) on the original scale, each (draws, n): b ~ Normal(mean, sd), a ~ Normal(mean + diff, sd), seed i of
    a correlated ``corr`` with seed i of b; with ``log`` the normals are the logs (log b ~ Normal(log mean, sd))."""
    if not -1 <= corr <= 1:
        raise ValueError(f"corr must lie in [-1, 1], got {corr}")
    if log and mean <= 0:
        raise ValueError(f"the log scale needs a positive mean, got {mean}")
    rng = np.random.default_rng(seed)
    e = rng.standard_normal((2, draws, n))
    loc = math.log(mean) if log else mean
    xb = loc + sd * e[0]
    xa = loc + diff + sd * (corr * e[0] + math.sqrt(1 - corr * corr) * e[1])
    return (np.exp(xa), np.exp(xb)) if log else (xa, xb)


def _tests(xa: np.ndarray, xb: np.ndarray, paired: bool,
           margin: tuple[float, float] | None) -> tuple[np.ndarray, np.ndarray]:
    """Vectorised p and TOST p (nan where undefined or without a margin) of each row, on the analysis scale: the
    same statistics as :func:`compare` (paired t / Welch, statsmodels' TOST) without a scipy call per row."""
    n = xa.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        if paired:
            d = xa - xb
            est = d.mean(axis=1)
            se = d.std(axis=1, ddof=1) / math.sqrt(n)
            dof = np.full(len(d), n - 1.0)
        else:
            va, vb = xa.var(axis=1, ddof=1) / n, xb.var(axis=1, ddof=1) / n
            est = xa.mean(axis=1) - xb.mean(axis=1)
            se = np.sqrt(va + vb)
            dof = (va + vb) ** 2 / (va ** 2 / (n - 1) + vb ** 2 / (n - 1))
        ok = se > 0
        se = np.where(ok, se, np.nan)
        p = np.where(ok, 2 * stats.t.sf(np.abs(est / se), dof), np.nan)
        if margin is None:
            return p, np.full(len(p), np.nan)
        p_lo = stats.t.sf((est - margin[0]) / se, dof)
        p_hi = stats.t.cdf((est - margin[1]) / se, dof)
        return p, np.where(ok, np.maximum(p_lo, p_hi), np.nan)


def _decisions(rule: str, a: np.ndarray, b: np.ndarray, looks: list[int], *, log: bool,
               margin: tuple[float, float] | None, alpha: float, paired: bool,
               t_levels: bool = True) -> dict[str, np.ndarray]:
    """Per draw: ``decided`` (a difference), ``equivalent``, ``trainings`` a side used, and the ``p`` / ``p_equiv``
    of the look it stopped at (the last look when it never stopped)."""
    pair = rule == "paired" or (rule in ("equivalence", "sequential") and paired)
    m = _margin(margin, log)
    xa, xb = (np.log(a), np.log(b)) if log else (a, b)
    levels = ((t_look_alphas(looks, alpha=alpha, paired=pair) if t_levels else
               look_alphas([k / looks[-1] for k in looks], alpha)) if rule == "sequential" else [alpha])
    draws = len(a)
    decided, equivalent = np.zeros(draws, bool), np.zeros(draws, bool)
    trainings = np.full(draws, looks[-1])
    p_at, pe_at = np.full(draws, np.nan), np.full(draws, np.nan)
    going = np.ones(draws, bool)
    for nk, level in zip(looks, levels):
        p, pe = _tests(xa[:, :nk], xb[:, :nk], pair, m)
        dk, ek = going & (p < level), going & (pe < level)
        p_at[going], pe_at[going] = p[going], pe[going]
        decided |= dk
        equivalent |= ek
        stop = dk | ek
        trainings[stop] = nk
        going &= ~stop
    return {"decided": decided, "equivalent": equivalent, "trainings": trainings, "p": p_at, "p_equiv": pe_at}


def simulate(rule: str, *, n: int | list[int], sd: float = 1.0, diff: float = 0.0, corr: float = 0.0,
             log: bool = False, mean: float = 1.0, margin: tuple[float, float] | None = None, draws: int = 2000,
             seed: int = 0, alpha: float = ALPHA, paired: bool = False, t_levels: bool = True) -> dict:
    """The error rates of a rule on ``draws`` synthetic experiments (numpy Generator seeded by ``seed``).

    Each experiment has two arms of n trainings a side: b ~ Normal(mean, sd), a ~ Normal(mean + diff, sd), the
    trainings of one seed correlated ``corr`` across the arms; with ``log=True`` the normals are the logs
    (log b ~ Normal(log mean, sd), log a ~ Normal(log mean + diff, sd): a skewed positive quantity such as a FID)
    and the rule compares with ``log=True``. ``margin`` is on the original scale, as :func:`compare` takes it.

    Rules: ``"welch"`` (:func:`compare` without pairs), ``"paired"`` (with pairs), ``"equivalence"`` (needs
    ``margin``; paired when ``paired``), each deciding "different" when p < alpha and "equivalent" when the TOST
    p < alpha; ``"sequential"``: ``n`` lists the cumulative trainings a side at each look (e.g. [2, 4, 6, 8]); look
    k tests the first n_k trainings (paired when ``paired``) at the level ``t_look_alphas(n)[k]`` (``t_levels=False``:
    the z-scale ``look_alphas(n_k / n_K)[k]``, slightly permissive at a few trainings) for both
    decisions and the experiment stops at the first look that decides either (at a look that decides both, both
    count). The statistics are vectorised over the draws (the same as :func:`compare`'s: the tests check it).

    Returns ``{"decided": share deciding a difference, "equivalent": share deciding equivalence (0.0 without a
    margin), "mean_trainings": mean trainings a side used, "draws": draws, "mc_se": sqrt(p (1 - p) / draws) of
    decided}``.
    """
    looks = _looks(rule, n)
    if rule == "equivalence" and margin is None:
        raise ValueError("the equivalence rule needs a margin (a ratio interval with log=True, else differences)")
    if draws < 1:
        raise ValueError(f"draws must be at least 1, got {draws}")
    a, b = _experiments(n=looks[-1], sd=sd, diff=diff, corr=corr, log=log, mean=mean, draws=draws, seed=seed)
    out = _decisions(rule, a, b, looks, log=log, margin=margin, alpha=alpha, paired=paired, t_levels=t_levels)
    share = float(out["decided"].mean())
    return {"decided": share, "equivalent": float(out["equivalent"].mean()) if margin is not None else 0.0,
            "mean_trainings": float(out["trainings"].mean()), "draws": draws,
            "mc_se": math.sqrt(share * (1 - share) / draws)}
