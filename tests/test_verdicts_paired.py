"""Paired tests under common random numbers, equivalence verdicts and the log scale of FID (ablations.claims with
ablations.inference), on synthetic rows."""

from __future__ import annotations

import math

import pandas as pd
import pytest
from scipy import stats

from ablations.collect import pool_training_seeds
from ablations.rows import is_crn_label, load_all
from ablations.verdicts import FAILS, HOLDS, NO_DIFF, UNRESOLVED, Claim, Num, Part, combine, judge, pairs_of

EXT = "digits-classifier-v1"


def fid(values, seeds=None, seeding="crn"):
    return Num("x", sum(values) / len(values), None, "fid", EXT, trainings=tuple(values),
               seed_ids=tuple(seeds if seeds is not None else range(len(values))), seeding=seeding)


# a per-seed effect both arms share (the init, data order and noise of the seed), and a 26% gap (log 0.3)
SEED = [0.0, 0.35, -0.3, 0.2, -0.15]
WOBBLE = [0.02, -0.01, 0.0, -0.02, 0.01]
A = [math.exp(1.2 + s + w) for s, w in zip(SEED, WOBBLE)]
B = [math.exp(1.5 + s - w) for s, w in zip(SEED, WOBBLE)]


def test_crn_trainings_of_the_same_seeds_are_paired_and_the_pairing_pays():
    v, t, _ = judge(fid(A), fid(B), "lower")
    ref = stats.ttest_rel(pd.Series(A).map(math.log), pd.Series(B).map(math.log))
    assert t.test == "paired t" and t.n_pairs == 5 and t.p == pytest.approx(ref.pvalue) and v == HOLDS
    assert t.corr > 0.99 and t.ratio == pytest.approx(math.exp(-0.3), rel=0.01)
    # the same numbers as v1 trainings (arms that share no draws) are never paired: Welch, and not resolved
    v1, t1, _ = judge(fid(A, seeding="v1"), fid(B, seeding="v1"), "lower")
    assert t1.test == "Welch" and v1 == UNRESOLVED and t1.p > 0.05
    # a v1 side never pairs with a crn side
    assert pairs_of(fid(A), fid(B, seeding="v1")) is None


def test_pairs_are_the_seeds_both_sides_hold():
    a, b = fid(A, seeds=[0, 1, 2, 3, 4]), fid(B[:3] + [9.0], seeds=[0, 1, 2, 7])
    assert pairs_of(a, b) == [(A[0], B[0]), (A[1], B[1]), (A[2], B[2])]
    assert pairs_of(fid(A[:1], seeds=[0]), fid(B[:1], seeds=[0])) is None  # one shared seed: nothing to pair
    t = judge(a, b, "lower")[1]
    assert t.test == "paired t" and t.n_pairs == 3


def test_inside_the_margin_is_no_practical_difference_and_the_claim_does_not_hold():
    close = [v * (1.01 + 0.003 * (-1) ** i) for i, v in enumerate(B)]  # ~1% apart, per seed nearly identical
    v, t, why = judge(fid(close), fid(B), "lower")
    assert v == NO_DIFF and t.p_equiv < 0.05 and "inside the margin (a / b in [0.9, 1.1])" in why
    assert combine([HOLDS, NO_DIFF]) == FAILS  # a claimed improvement that is not there
    c = Claim("x", "t", "s", "main", parts=[Part("x1", "s", fid(close), fid(B)), Part("x2", "s", fid(A), fid(B))])
    c.finalize()
    assert [p.verdict for p in c.parts] == [NO_DIFF, HOLDS] and c.verdict == FAILS
    assert c.parts[0].test.p_equiv_holm >= c.parts[0].test.p_equiv  # Holm over the parts' TOST p too
    # 30% apart is outside the margin: never equivalent
    assert judge(fid([x * 1.3 for x in B]), fid(B), "lower")[0] == FAILS
    # a part without a margin (Q1's threshold) has no equivalence verdict
    p = Part("q", "s", fid(close), fid(B), margin=None)
    assert p.test.p_equiv is None and p.verdict != NO_DIFF


def test_fid_intervals_are_ratios_that_never_reach_below_zero():
    wide = [1.0, 6.0, 2.0]  # a spread that would give a linear interval reaching below zero
    t = judge(fid(wide, seeding="v1"), fid([3.0, 3.5, 2.5], seeding="v1"), "lower")[1]
    lo, hi = t.ratio_ci()
    assert 0 < lo < t.ratio < hi


def test_log_prediction_interval_stays_positive():
    from ablations.reproduce import prediction_interval

    values = [2.83, 4.39, 5.32]  # checked in z16 prior FIDs: the linear interval reached -2.69
    lo, hi = prediction_interval(4.18, 1.38, 3)
    assert lo < 0
    lo, hi = prediction_interval(4.18, 1.38, 3, values=values, log=True)
    assert 0 < lo < min(values) and hi > max(values)


def test_trainings_of_two_seeding_protocols_never_pool():
    rows = pd.DataFrame([{"grid": "main", "variant": "dmz", "metric": "fid", "T": 10, "value": v, "seed": s,
                          "seeding": sd} for v, s, sd in ((4.0, 0, None), (5.0, 1, None), (3.0, 0, "crn"))])
    pooled = pool_training_seeds(rows)
    assert sorted(zip(pooled["seeding"], pooled["train_seeds"])) == [("crn", 1), ("v1", 2)]


def test_crn_tables_are_read_first(tmp_path):
    for label, value in (("digits", 4.0), ("digits-crn", 3.0)):
        folder = tmp_path / "main" / label
        folder.mkdir(parents=True)
        pd.DataFrame([{"grid": "main", "preset": "digits", "variant": "dmz", "metric": "fid", "T": 10,
                       "value": value, "seed": 0, "seeding": "crn" if "crn" in label else None}]).to_csv(
            folder / "results.csv", index=False)
    frames = load_all("digits", tmp_path)["main"]
    assert list(frames) == ["digits-crn", "digits"] and is_crn_label("digits-crn") and not is_crn_label("digits")
