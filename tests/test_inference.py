"""ablations.inference: tests against scipy/statsmodels, published bounds, and seeded Monte Carlo calibration."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats.weightstats import ttost_ind, ttost_paired

from ablations import inference as I

A = [31.2, 29.8, 33.1, 30.4, 32.6]
B = [34.0, 35.5, 33.2, 36.1]


# ----------------------------------------------------------------------------------------------------------------
# group-sequential bounds
# ----------------------------------------------------------------------------------------------------------------
def test_obf_bounds_match_jennison_turnbull():
    assert I.obf_bounds(3) == pytest.approx([3.471, 2.454, 2.004], abs=5e-3)
    # Jennison & Turnbull (2000) Table 2.3, two-sided alpha = 0.05: C = 1.977 (K=2), 2.040 (K=5)
    assert I.obf_bounds(2)[-1] == pytest.approx(1.977, abs=2e-3)
    assert I.obf_bounds(5)[-1] == pytest.approx(2.040, abs=2e-3)
    assert I.obf_bounds(1) == pytest.approx([1.95996], abs=1e-4)


def test_spending_bounds_match_gsdesign_sfldof():
    assert I.spending_bounds([1 / 3, 2 / 3, 1]) == pytest.approx([3.7103, 2.5114, 1.9930], abs=1e-4)
    assert I.spending_bounds([0.5, 1]) == pytest.approx([2.9626, 1.9686], abs=1e-4)
    assert I.ldof_spending(1.0) == pytest.approx(I.ALPHA, rel=1e-12)
    assert I.ldof_spending(0.0) == 0.0
    # one-sided sfLDOF at t = 0.5 with alpha 0.025 is 2 (1 - Phi(2.2414 / sqrt 0.5)) = 0.001525; two-sided twice that
    assert I.ldof_spending(0.5) == pytest.approx(2 * 0.0015249, rel=1e-3)


def test_each_look_spends_its_increment_and_stopping_early_spends_less():
    f = [0.2, 0.45, 0.7, 1.0]
    c = I.spending_bounds(f)
    cross = I._crossing_probabilities(f, c)
    spend = [I.ldof_spending(t) for t in f]
    assert cross == pytest.approx(np.diff([0.0, *spend]).tolist(), abs=1e-7)
    early = I.spending_bounds([0.2, 0.45, 0.7])
    assert early == pytest.approx(c[:3], abs=1e-8)
    assert sum(I._crossing_probabilities([0.2, 0.45, 0.7], early)) == pytest.approx(I.ldof_spending(0.7), abs=1e-7)
    with pytest.raises(ValueError, match="fractions"):
        I.spending_bounds([0.5, 0.4, 1.0])
    assert I.look_alphas(f) == pytest.approx([2 * stats.norm.sf(x) for x in c], rel=1e-12)
    assert I.nominal_alpha(1.959963985) == pytest.approx(0.05, rel=1e-8)


def _null_paths(fractions, draws, seed):
    t = np.asarray(fractions)
    steps = np.diff(np.concatenate([[0.0], t]))
    s = np.cumsum(np.random.default_rng(seed).standard_normal((draws, len(t))) * np.sqrt(steps), axis=1)
    return s / np.sqrt(t)  # Z_k = S_k / sqrt(t_k): Corr(Z_i, Z_j) = sqrt(t_i / t_j)


def test_bounds_cross_with_alpha_by_monte_carlo():
    draws = 200_000
    se = math.sqrt(I.ALPHA * (1 - I.ALPHA) / draws)
    for f, c in (([1 / 3, 2 / 3, 1], I.spending_bounds([1 / 3, 2 / 3, 1])),
                 ([0.25, 0.5, 0.75, 1], I.spending_bounds([0.25, 0.5, 0.75, 1])),
                 ([1 / 3, 2 / 3, 1], I.obf_bounds(3)),
                 ([k / 20 for k in range(1, 21)], I.spending_bounds([k / 20 for k in range(1, 21)]))):
        z = _null_paths(f, draws, seed=7)
        crossed = (np.abs(z) >= np.asarray(c)).any(axis=1).mean()
        assert abs(crossed - I.ALPHA) < 3 * se, (f, c, crossed)
    # the unadjusted 1.96 at every look would cross far more often: the check can tell
    z = _null_paths([1 / 3, 2 / 3, 1], draws, seed=7)
    assert (np.abs(z) >= 1.96).any(axis=1).mean() > I.ALPHA + 10 * se


def test_cumulative_crossing_equals_alpha_by_scipy_multivariate_normal():
    f = [1 / 3, 2 / 3, 1]
    c = np.asarray(I.spending_bounds(f))
    cov = np.sqrt(np.minimum.outer(f, f) / np.maximum.outer(f, f))
    inside = stats.multivariate_normal(cov=cov).cdf(c, lower_limit=-c, rng=np.random.default_rng(0))
    assert 1 - inside == pytest.approx(I.ALPHA, abs=1e-4)
    assert sum(I._crossing_probabilities(f, c.tolist())) == pytest.approx(I.ALPHA, abs=1e-6)


def test_twenty_looks_are_fast_and_spend_alpha():
    f = [k / 20 for k in range(1, 21)]
    start = time.perf_counter()
    c = I.spending_bounds(f)
    assert time.perf_counter() - start < 1.0
    assert all(x > y for x, y in zip(c, c[1:]))  # O'Brien-Fleming-type: strict early, relaxing
    assert sum(I._crossing_probabilities(f, c)) == pytest.approx(I.ALPHA, abs=1e-6)
    assert c == I.spending_bounds(f)  # deterministic


# ----------------------------------------------------------------------------------------------------------------
# compare
# ----------------------------------------------------------------------------------------------------------------
def test_welch_agrees_with_scipy():
    r = stats.ttest_ind(A, B, equal_var=False)
    for alpha in (0.05, 0.1):
        t = I.compare(A, B, alpha=alpha)
        ci = r.confidence_interval(1 - alpha)
        assert t.test == "Welch" and (t.n_a, t.n_b, t.n_pairs) == (5, 4, 0)
        assert t.p == pytest.approx(r.pvalue, rel=1e-12) and t.df == pytest.approx(r.df, rel=1e-12)
        assert t.ci == pytest.approx((ci.low, ci.high), rel=1e-12)
        assert t.diff == pytest.approx(np.mean(A) - np.mean(B), rel=1e-12)
        assert t.sd_diff == pytest.approx(math.sqrt(np.var(A, ddof=1) + np.var(B, ddof=1)), rel=1e-12)
        assert t.corr is None and t.scale == "linear" and t.ratio is None and t.ratio_ci() is None


def test_paired_agrees_with_scipy():
    pairs = [(31.2, 34.0), (29.8, 35.5), (33.1, 33.2), (30.4, 36.1)]
    pa, pb = np.array(pairs).T
    t = I.compare(A, B, pairs=pairs)  # A has a fifth, unpaired training: the pairs decide
    r = stats.ttest_rel(pa, pb)
    ci = r.confidence_interval(0.95)
    assert t.test == "paired t" and (t.n_a, t.n_b, t.n_pairs) == (5, 4, 4)
    assert t.p == pytest.approx(r.pvalue, rel=1e-12) and t.df == 3
    assert t.ci == pytest.approx((ci.low, ci.high), rel=1e-12)
    assert t.diff == pytest.approx(np.mean(pa - pb), rel=1e-12)
    assert t.diff != pytest.approx(np.mean(A) - np.mean(B))
    assert t.sd_diff == pytest.approx(np.std(pa - pb, ddof=1), rel=1e-12)
    assert t.corr == pytest.approx(np.corrcoef(pa, pb)[0, 1], rel=1e-12)


def test_log_scale_margin_and_ratio():
    t = I.compare(A, B, log=True, margin=(0.9, 1.1))
    la, lb = np.log(A), np.log(B)
    r = stats.ttest_ind(la, lb, equal_var=False)
    assert t.scale == "log" and t.margin == pytest.approx((math.log(0.9), math.log(1.1)), rel=1e-12)
    assert t.diff == pytest.approx(la.mean() - lb.mean(), rel=1e-12)
    assert t.p == pytest.approx(r.pvalue, rel=1e-12)
    assert t.ratio == pytest.approx(math.exp(t.diff), rel=1e-12)
    assert t.ratio_ci() == pytest.approx((math.exp(t.ci[0]), math.exp(t.ci[1])), rel=1e-12)
    assert t.ratio_ci()[0] < t.ratio < t.ratio_ci()[1] < 1  # a lower FID than b's
    lin = I.compare(A, B, margin=(-0.5, 0.5))
    assert lin.margin == (-0.5, 0.5) and lin.ratio_ci() is None


def test_tost_p_equals_statsmodels_and_the_one_sided_t_tests():
    a = [1.00, 1.03, 0.98, 1.01, 1.02, 0.99]
    b = [1.01, 1.00, 0.99, 1.02, 1.00, 1.01]
    t = I.compare(a, b, log=True, margin=(0.95, 1.05))
    la, lb = np.log(a), np.log(b)
    lo, hi = math.log(0.95), math.log(1.05)
    assert t.p_equiv == pytest.approx(ttost_ind(la, lb, lo, hi, usevar="unequal")[0], rel=1e-10)
    # the same p from scipy's one-sided Welch tests, shifted by the margin's ends
    p1 = stats.ttest_ind(la - lo, lb, equal_var=False, alternative="greater").pvalue
    p2 = stats.ttest_ind(la - hi, lb, equal_var=False, alternative="less").pvalue
    assert t.p_equiv == pytest.approx(max(p1, p2), rel=1e-8)
    assert t.p_equiv < 0.05 < t.p  # equivalent within 5%, and no difference shown

    pairs = list(zip(a, b))
    tp = I.compare(a, b, pairs=pairs, margin=(-0.03, 0.03))
    assert tp.p_equiv == pytest.approx(ttost_paired(np.array(a), np.array(b), -0.03, 0.03)[0], rel=1e-10)
    assert tp.p_equiv != pytest.approx(I.compare(a, b, margin=(-0.03, 0.03)).p_equiv, rel=1e-3)


def test_undefined_tests_give_none_not_nan():
    one = I.compare([1.0], [2.0, 3.0])
    assert one.diff == pytest.approx(-1.5) and one.p is None and one.ci is None and one.test == ""
    flat = I.compare([2.0, 2.0], [3.0, 3.0], margin=(-1, 1))
    assert flat.diff == pytest.approx(-1.0) and flat.p is None and flat.p_equiv is None and flat.test == ""
    one_flat = I.compare([2.0, 2.0], [3.0, 3.5])  # spread on one side is enough for Welch
    assert one_flat.p is not None and math.isfinite(one_flat.p)
    pair = I.compare([1.0, 2.0], [1.5, 2.5], pairs=[(1.0, 1.5)])
    assert pair.p is None and pair.diff == pytest.approx(-0.5) and pair.n_pairs == 1
    shift = I.compare([1.0, 2.0, 4.0], [1.5, 2.5, 4.5], pairs=[(1.0, 1.5), (2.0, 2.5), (4.0, 4.5)])
    assert shift.p is None and shift.diff == pytest.approx(-0.5) and shift.sd_diff == pytest.approx(0.0)
    assert shift.corr == pytest.approx(1.0)
    const = I.compare([1.0, 1.0, 1.0], [1.0, 2.0, 3.0], pairs=[(1.0, 1.0), (1.0, 2.0), (1.0, 3.0)])
    assert const.corr is None and const.p is not None


def test_log_scale_rejects_non_positive_values():
    with pytest.raises(ValueError, match="positive"):
        I.compare([1.0, 0.0, 2.0], [1.0, 2.0], log=True)
    with pytest.raises(ValueError, match="positive"):
        I.compare([1.0, 2.0], [1.0, -2.0], log=True)
    with pytest.raises(ValueError, match="positive"):
        I.compare([1.0, 2.0], [1.0, 2.0], pairs=[(1.0, 1.0), (-1.0, 2.0)], log=True)
    with pytest.raises(ValueError, match="ratio interval"):
        I.compare([1.0, 2.0], [1.0, 2.0], log=True, margin=(-0.1, 0.1))
    with pytest.raises(ValueError, match="low < high"):
        I.compare([1.0, 2.0], [1.0, 2.0], margin=(0.1, -0.1))
    assert I.compare([1.0, 0.0, 2.0], [1.0, 2.0]).p is not None  # fine on the linear scale


def test_holm():
    assert I.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02], rel=1e-12)
    assert I.holm([0.5, 0.6]) == [1.0, 1.0]
    assert I.holm([0.02]) == pytest.approx([0.02])
    assert I.holm([]) == []


# ----------------------------------------------------------------------------------------------------------------
# power and trainings needed
# ----------------------------------------------------------------------------------------------------------------
def test_power_matches_monte_carlo_t_tests():
    rng = np.random.default_rng(11)
    draws = 4000
    diff, sd, n = 1.5, 1.0, 5
    a, b = diff + sd * rng.standard_normal((draws, n)), sd * rng.standard_normal((draws, n))
    mc = float(np.mean(stats.ttest_ind(a, b, axis=1, equal_var=False).pvalue < 0.05))  # Welch, the report's test
    assert abs(mc - I.power(diff, sd, n, paired=False)) < 3 * math.sqrt(mc * (1 - mc) / draws)
    # at 3 a side Welch is clearly weaker than the pooled t the noncentral t describes: power() states Welch's
    a, b = diff + rng.standard_normal((draws, 3)), rng.standard_normal((draws, 3))
    welch = float(np.mean(stats.ttest_ind(a, b, axis=1, equal_var=False).pvalue < 0.05))
    pooled = float(np.mean(stats.ttest_ind(a, b, axis=1).pvalue < 0.05))
    assert pooled - welch > 0.04 and abs(welch - I.power(diff, 1.0, 3, paired=False)) < 3 * math.sqrt(
        welch * (1 - welch) / draws)
    diff, sd, n = 0.5, 0.6, 6
    d = diff + sd * rng.standard_normal((draws, n))
    mc = float(np.mean(stats.ttest_1samp(d, 0.0, axis=1).pvalue < 0.05))
    assert abs(mc - I.power(diff, sd, n, paired=True)) < 3 * math.sqrt(mc * (1 - mc) / draws)
    assert I.power(0.0, 1.0, 8, paired=True) == pytest.approx(0.05, rel=1e-12)
    assert I.power(50.0, 1.0, 10, paired=False) == 1.0  # scipy's far tail is nan there: counted as 0
    assert I.power(-1.0, 1.0, 7, paired=False) == pytest.approx(I.power(1.0, 1.0, 7, paired=False), rel=1e-9)
    with pytest.raises(ValueError):
        I.power(1.0, 1.0, 1, paired=True)


def test_equivalence_power_matches_monte_carlo_tost():
    rng = np.random.default_rng(5)
    draws = 4000
    diff, sd, n, m = 0.2, 0.5, 8, (-0.5, 0.5)
    d = diff + sd * rng.standard_normal((draws, n))
    p1 = stats.ttest_1samp(d, m[0], axis=1, alternative="greater").pvalue
    p2 = stats.ttest_1samp(d, m[1], axis=1, alternative="less").pvalue
    mc = float(np.mean(np.maximum(p1, p2) < 0.05))
    assert abs(mc - I.equivalence_power(diff, sd, n, m, paired=True)) < 3 * math.sqrt(mc * (1 - mc) / draws)
    assert I.equivalence_power(0.0, 1.0, 3, (-0.1, 0.1), paired=False) == 0.0  # floored
    assert I.equivalence_power(0.0, 0.1, 30, (-1.0, 1.0), paired=False) == pytest.approx(1.0, abs=1e-9)


def test_trainings_needed():
    assert I.trainings_needed(1.0, 1.0, 1.0) == 17  # the textbook n for d = 1, alpha 0.05, 80% power
    assert I.trainings_needed(1.0, None, None, sd_diff=1.0) == 10  # one-sample / paired t, d = 1
    n = I.trainings_needed(0.7, 0.9, 1.3)
    sd = math.sqrt((0.9 ** 2 + 1.3 ** 2) / 2)
    assert I.power(0.7, sd, n, paired=False) >= 0.8 > I.power(0.7, sd, n - 1, paired=False)
    assert I.trainings_needed(-0.7, 0.9, 1.3) == n
    assert I.trainings_needed(1.0, 1.0, None) == I.trainings_needed(1.0, None, 1.0) == 17  # borrows the other sd
    assert I.trainings_needed(1.0, None, None) is None
    assert I.trainings_needed(1.0, 0.0, 0.0) == 2
    assert I.trainings_needed(0.0, 1.0, 1.0) is None
    assert I.trainings_needed(0.01, 1.0, 1.0) is None  # more than MAX_TRAININGS
    unpaired = I.trainings_needed(0.5, 1.0, 1.0)
    paired = I.trainings_needed(0.5, 1.0, 1.0, sd_diff=0.3)  # per-seed differences far tighter than the arms
    assert unpaired == 64  # the textbook n for d = 0.5
    assert paired < unpaired and I.power(0.5, 0.3, paired, paired=True) >= 0.8 > I.power(0.5, 0.3, paired - 1,
                                                                                         paired=True)


# ----------------------------------------------------------------------------------------------------------------
# simulate: the vectorised statistics are compare()'s, and the rules are calibrated
# ----------------------------------------------------------------------------------------------------------------
CASES = [
    dict(rule="welch", n=5, diff=1.4, margin=(-3.0, 3.0)),
    dict(rule="paired", n=5, diff=0.05, corr=0.8, log=True, sd=0.1, mean=30.0, margin=(0.9, 1.1)),
    dict(rule="equivalence", n=6, diff=0.03, sd=0.05, log=True, mean=20.0, margin=(0.93, 1.07), paired=True,
         corr=0.5),
    dict(rule="sequential", n=[2, 4, 6, 8], diff=0.6, corr=0.7, paired=True, margin=(-1.0, 1.0)),
    dict(rule="sequential", n=[3, 6, 9], diff=1.5, margin=(-3.0, 3.0)),
]


@pytest.mark.parametrize("case", CASES, ids=[f"{c['rule']}-{i}" for i, c in enumerate(CASES)])
def test_simulate_decides_as_compare_would(case):
    case = dict(case)
    rule, n, paired = case.pop("rule"), case.pop("n"), case.pop("paired", False)
    looks = n if isinstance(n, list) else [n]
    draws = 16
    a, b = I._experiments(n=looks[-1], draws=draws, seed=3, **{k: case.get(k, d) for k, d in
                                                                (("sd", 1.0), ("diff", 0.0), ("corr", 0.0),
                                                                 ("log", False), ("mean", 1.0))})
    got = I._decisions(rule, a, b, looks, log=case.get("log", False), margin=case["margin"], alpha=0.05,
                       paired=paired)
    pair = rule == "paired" or paired
    levels = I.t_look_alphas(looks, paired=pair) if rule == "sequential" else [0.05]
    for i in range(draws):
        decided = equivalent = False
        for nk, level in zip(looks, levels):
            t = I.compare(a[i, :nk], b[i, :nk], pairs=list(zip(a[i, :nk], b[i, :nk])) if pair else None,
                          log=case.get("log", False), margin=case["margin"])
            decided, equivalent = t.p < level, t.p_equiv < level
            if decided or equivalent:
                break
        assert got["decided"][i] == decided and got["equivalent"][i] == equivalent and got["trainings"][i] == nk
        assert got["p"][i] == pytest.approx(t.p, rel=1e-9) and got["p_equiv"][i] == pytest.approx(t.p_equiv, rel=1e-9)
    # the draws hold both outcomes, so a wrong decision would show
    assert 0 < got["decided"].sum() < draws and 0 < got["equivalent"].sum() < draws
    summary = I.simulate(rule, n=n, paired=paired, draws=draws, seed=3, **case)
    assert summary["decided"] == pytest.approx(got["decided"].mean())
    assert summary["equivalent"] == pytest.approx(got["equivalent"].mean())
    assert summary["mean_trainings"] == pytest.approx(got["trainings"].mean())


@pytest.mark.parametrize("kw", [dict(rule="welch", n=5), dict(rule="paired", n=5, corr=0.7),
                                dict(rule="sequential", n=[2, 4, 6, 8], corr=0.7, paired=True),
                                dict(rule="sequential", n=[2, 4, 6, 8])],
                         ids=["welch", "paired", "sequential-paired", "sequential-unpaired"])
def test_no_difference_is_decided_at_most_alpha(kw):
    r = I.simulate(**kw, diff=0.0, draws=4000, seed=1)
    assert r["draws"] == 4000 and r["equivalent"] == 0.0
    assert r["decided"] <= I.ALPHA + 3 * r["mc_se"]
    assert r["decided"] > 0.02  # and the rule is not blind either (a rule that never decides would pass above)


def test_equivalence_at_the_margin_edge_is_decided_at_most_alpha():
    r = I.simulate("equivalence", n=10, sd=0.05, diff=math.log(1.1), log=True, mean=25.0, margin=(0.9, 1.1),
                   draws=4000, seed=2)
    se = math.sqrt(I.ALPHA * (1 - I.ALPHA) / r["draws"])
    assert r["equivalent"] <= I.ALPHA + 3 * se
    inside = I.simulate("equivalence", n=10, sd=0.05, diff=0.0, log=True, mean=25.0, margin=(0.9, 1.1),
                        draws=2000, seed=2)
    assert inside["equivalent"] > 0.9  # inside the margin the same rule decides equivalence
    with pytest.raises(ValueError, match="margin"):
        I.simulate("equivalence", n=10)


def test_simulated_power_matches_power():
    r = I.simulate("welch", n=5, sd=2.0, diff=3.0, draws=4000, seed=4)  # 1.5 sd
    assert abs(r["decided"] - I.power(3.0, 2.0, 5, paired=False)) < 0.04
    corr, sd = 0.8, 1.0
    r = I.simulate("paired", n=6, sd=sd, diff=0.5, corr=corr, draws=4000, seed=4)
    assert abs(r["decided"] - I.power(0.5, sd * math.sqrt(2 * (1 - corr)), 6, paired=True)) < 0.04
    assert r["mean_trainings"] == 6.0


def test_sequential_stops_early_on_a_large_difference_and_is_fast():
    start = time.perf_counter()
    r = I.simulate("sequential", n=[2, 4, 6, 8], diff=2.0, corr=0.7, paired=True, draws=2000, seed=0)
    assert time.perf_counter() - start < 5.0
    assert r["decided"] > 0.9 and r["mean_trainings"] < 7.0
    with pytest.raises(ValueError, match="unknown rule"):
        I.simulate("bayes", n=5)
    with pytest.raises(ValueError, match="looks"):
        I.simulate("welch", n=[2, 4])
