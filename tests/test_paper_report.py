"""ablations.claims and ablations.paper_report on synthetic results.csv files: every verdict is computed from the
numbers and flips with them (no training, no sampling, no plots except one smoke test)."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from ablations.claims import Ctx, build_claims
from ablations.paper_report import paper_report
from ablations.rows import load_all
from ablations.verdicts import FAILS, HOLDS, NO_DATA, UNRESOLVED, Num, combine, judge

EXT = "digits-classifier-v1"
PIN = "9371b7aeccca287bee17f58963fb1a0749ffc420850544189f9b06730402117c"  # the pinned weights' sha256
PRIORS = {"ddpm": "none", "dmz": "bernoulli", "bernoulli": "bernoulli", "normal": "normal",
          "categorical": "categorical", "categorical-16bit": "categorical", "none": "none"}


def fid(variant, T, value, sd=0.5, *, sampler="prior", seeds=3, solver="ddpm", latent_dim=16, **extra):
    return {"variant": variant, "metric": "fid", "T": T, "sampler": sampler, "value": value,
            "sd": sd if seeds > 1 else math.nan, "seeds": seeds, "N": 300, "solver": solver,
            "feature_extractor": EXT, "feature_extractor_weights_sha256": PIN, "latent_dim": latent_dim, **extra}


def probe(variant, prior, latent_dim, acc, sd=0.01):
    return [{"variant": variant, "prior": prior, "latent_dim": latent_dim, "metric": m, "value": v, "sd": s,
             "N": 1797 if m.endswith("cv") else 360}
            for m, v, s in (("probe_acc_cv", acc, sd), ("probe_acc_heldout", acc, math.nan),
                            ("probe_auroc_cv", 0.9, sd))]


def write(root, grid, rows, label="digits", trainings=3):
    """``trainings`` results.csv files as collect.py writes them (``label``, ``label-seed1``, ...), one per training
    seed. Training i's value is the row's value + spread * (-1, 0, +1, ...)[i] scaled so that the sd over trainings
    is the row's ``spread`` (default: its ``sd``, or ``se`` for NLL rows; a row without one has no spread over
    trainings); the mean over trainings stays the row's value."""
    import numpy as np

    offsets = np.linspace(-1, 1, trainings) if trainings > 1 else np.zeros(1)
    if trainings > 1:
        offsets = offsets / np.std(offsets, ddof=1)
    paths = []
    for i, off in enumerate(offsets):
        out = []
        for r in rows:
            r = dict(r)
            spread = r.pop("spread", r.get("se") if str(r["metric"]).startswith("nll") else r.get("sd"))
            if spread is not None and not (isinstance(spread, float) and math.isnan(spread)):
                r["value"] = r["value"] + spread * off
            out.append({**r, "seed": r.get("seed", 0) + i})
        paths.append(_write_one(root, grid, out, label if i == 0 else f"{label}-seed{i}"))
    return paths[0]


def _write_one(root, grid, rows, label):
    df = pd.DataFrame(rows)
    df.insert(0, "grid", grid)
    df.insert(1, "preset", "digits")
    df["dataset"] = "digits"
    if "prior" not in df:
        df["prior"] = df["variant"].map(lambda v: PRIORS.get(v.split("-")[0], "bernoulli"))
    for col, val in (("prior_matching", 0.0), ("train_steps", 1000), ("run_id", "r"), ("reference", "train")):
        if col not in df:
            df[col] = val
    folder = root / grid / label
    folder.mkdir(parents=True, exist_ok=True)
    df.to_csv(folder / "results.csv", index=False)
    return folder / "results.csv"


def claims(root):
    return {c.cid: c for c in build_claims(Ctx("digits", load_all("digits", root)))}


def parts(claim):
    return {p.pid: p.verdict for p in claim.parts}


def main_rows(dmz10, ddpm10, dmz20=5.0, ddpm20=9.0, sd=0.5, seeds=3, dmz100=3.0, ddpm100=3.2):
    return [fid("dmz", 10, dmz10, sd, seeds=seeds), fid("ddpm", 10, ddpm10, sd, seeds=seeds),
            fid("dmz", 20, dmz20, sd, seeds=seeds), fid("ddpm", 20, ddpm20, sd, seeds=seeds),
            fid("dmz", 100, dmz100, sd, seeds=seeds), fid("ddpm", 100, ddpm100, sd, seeds=seeds)]


# ---------------------------------------------------------------------------------------------------- the rule
def num(values, ext=EXT):
    return Num("a", sum(values) / len(values), None, "fid", ext, trainings=tuple(values))


def test_judge_is_welchs_t_test_over_trainings_on_log_fid():
    import numpy as np
    from scipy import stats

    a, b = [5.0, 5.5, 6.0], [7.5, 8.0, 8.5]
    verdict, t, why = judge(num(a), num(b), "lower")
    ref = stats.ttest_ind(np.log(a), np.log(b), equal_var=False)  # FID: on the log scale, a ratio
    assert t.test == "Welch" and t.scale == "log"
    assert verdict == HOLDS and t.p == pytest.approx(ref.pvalue)
    assert t.diff == pytest.approx(np.mean(np.log(a)) - np.mean(np.log(b)))
    assert t.ci[0] < t.diff < t.ci[1] < 0  # the 95% interval of log(a / b) excludes 0
    lo, hi = t.ratio_ci()
    assert 0 < lo < t.ratio < hi < 1  # a ratio interval never reaches below zero
    # a probe score stays on its own scale (a - b)
    acc = lambda v: Num("p", sum(v) / len(v), None, "probe_acc_cv", trainings=tuple(v))  # noqa: E731
    v, t, _ = judge(acc([0.95, 0.96, 0.97]), acc([0.90, 0.91, 0.92]), "higher")
    assert v == HOLDS and t.scale == "linear" and t.diff == pytest.approx(0.05)
    assert judge(num(b), num(a), "lower")[0] == FAILS
    assert judge(num(b), num(a), "higher")[0] == HOLDS  # probe accuracy: higher is better
    assert judge(num([5.0, 6.0, 7.0]), num([6.0, 7.0, 8.0]), "lower")[0] == UNRESOLVED  # p = 0.29
    # one training on a side: never resolved, whatever the gap (the sampling spread never decides)
    v, t, why = judge(num([1.0]), num([50.0, 51.0, 52.0]), "lower")
    assert v == UNRESOLVED and "fewer than 2 trainings" in why and t.p is None
    assert judge(None, num(a), "lower")[0] == NO_DATA
    assert judge(num(a), num(b, "inception-v3-compat"), "lower")[0] == UNRESOLVED  # two extractors: not compared


def test_rule_under_the_null_declares_a_difference_in_about_5_percent_of_draws():
    """Both arms from one distribution (3 trainings each, FID 4.2 with a training sd of 27% as measured on digits,
    log-normal: FID is positive and skewed): the rule must declare a difference in about alpha of the draws or
    fewer (the 2-sigma rule on sampling sds did in 44%)."""
    import numpy as np

    rng = np.random.default_rng(0)
    draws = 3000
    fids = lambda: list(np.exp(rng.normal(math.log(4.2), 0.27, 3)))  # noqa: E731
    hits = sum(judge(num(fids()), num(fids()), "lower")[0] in (HOLDS, FAILS) for _ in range(draws))
    # Welch with n=3 a side is slightly conservative; 3 standard errors of a 5% rate above it would be 0.062
    assert hits / draws <= 0.062


def test_rule_resolves_a_true_difference_of_3_training_sds_with_5_trainings_a_side():
    import numpy as np

    rng = np.random.default_rng(1)
    draws = 1000
    sd = 0.27  # on the log scale, where FID is tested
    verdicts = [judge(num(list(np.exp(rng.normal(math.log(4.2), sd, 5)))),
                      num(list(np.exp(rng.normal(math.log(4.2) + 3 * sd, sd, 5)))), "lower")[0] for _ in range(draws)]
    assert verdicts.count(HOLDS) / draws > 0.9 and verdicts.count(FAILS) == 0


def test_holm_adjusts_the_counted_parts_of_a_claim_together():
    from ablations.inference import holm
    from ablations.verdicts import Claim, Part

    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.2]) == [0.2]
    # alone, p = 0.03 holds; beside two other counted parts it must clear 0.05 / 3 first
    alone = Claim("x", "t", "s", "main", parts=[Part("x1", "s", num([5.0, 5.4, 5.9]), num([6.1, 6.6, 7.2]))])
    assert alone.finalize().parts[0].test.p < 0.05 and alone.verdict == HOLDS
    three = Claim("x", "t", "s", "main", parts=[
        Part("x1", "s", num([5.0, 5.4, 5.9]), num([6.1, 6.6, 7.2])),
        Part("x2", "s", num([5.0, 6.0, 7.0]), num([5.5, 6.5, 7.5])),
        Part("x3", "s", num([5.0, 6.0, 7.0]), num([5.5, 6.5, 7.5]))]).finalize()
    first = three.parts[0]
    assert first.test.p_holm == pytest.approx(3 * first.test.p) and first.verdict == UNRESOLVED
    assert "Holm-adjusted p (over 3 parts)" in first.why


def test_trainings_needed_matches_the_noncentral_t_power():
    from scipy import stats

    from ablations.inference import trainings_needed

    n = trainings_needed(1.0, 1.0, 1.0)  # d = 1: the textbook answer is 17 a side
    assert n == 17

    def power(k):
        df, nc = 2 * k - 2, 1.0 / math.sqrt(2 / k)
        crit = stats.t.ppf(0.975, df)
        return stats.nct.sf(crit, df, nc) + stats.nct.cdf(-crit, df, nc)

    assert power(n) >= 0.8 > power(n - 1)
    assert trainings_needed(1.0, None, 1.0) == 17  # a side without a spread borrows the other's
    assert trainings_needed(1.0, None, None) is None
    assert trainings_needed(1e-4, 1.0, 1.0) is None  # beyond MAX_TRAININGS
    # scipy's nct.cdf answers nan for the far lower tail at a large noncentrality; that must not read as
    # "not enough": a huge effect needs the fewest trainings, and more spread never needs fewer
    assert trainings_needed(20.7, 1.89, None) == 2
    assert trainings_needed(0.89, 1.34, 0.45, alpha=0.025) == 26  # claim 1b: a counted part of 2, at alpha / 2
    needs = [trainings_needed(1.0, sd, sd) for sd in (0.05, 0.2, 0.5, 1.0, 2.0)]
    assert needs == sorted(needs) and needs[0] == 2


def test_multi_part_logic():
    assert combine([HOLDS, HOLDS]) == HOLDS
    assert combine([HOLDS, FAILS, UNRESOLVED]) == FAILS
    assert combine([HOLDS, UNRESOLVED]) == UNRESOLVED
    assert combine([HOLDS, NO_DATA]) == UNRESOLVED  # a part without data keeps the claim from holding
    assert combine([NO_DATA, NO_DATA]) == combine([]) == NO_DATA


# ---------------------------------------------------------------------------------------------------- claims 1, 2
def test_small_T_verdicts_flip_with_the_numbers(tmp_path):
    write(tmp_path, "main", main_rows(dmz10=5.0, ddpm10=9.0))
    c = claims(tmp_path)
    assert parts(c["1"]) == {"1a": HOLDS, "1b": HOLDS} and c["1"].verdict == HOLDS
    write(tmp_path, "main", main_rows(dmz10=12.0, ddpm10=9.0))  # DMZ worse at T=10
    c = claims(tmp_path)
    assert parts(c["1"]) == {"1a": FAILS, "1b": HOLDS} and c["1"].verdict == FAILS
    write(tmp_path, "main", main_rows(dmz10=9.5, ddpm10=9.0))  # within 2 * sqrt(0.5^2 + 0.5^2) = 1.41
    c = claims(tmp_path)
    assert parts(c["1"])["1a"] == UNRESOLVED and c["1"].verdict == UNRESOLVED
    for d in tmp_path.glob("main/digits-seed*"):  # one training a side: never resolved, whatever the gap
        (d / "results.csv").unlink()
    c = claims(tmp_path)
    assert parts(c["1"]) == {"1a": UNRESOLVED, "1b": UNRESOLVED}
    assert "fewer than 2 trainings" in c["1"].parts[0].why
    assert "train each side at least twice" in c["1"].parts[0].needed_text()


def test_T100_says_which_is_better_and_whether_resolved(tmp_path):
    write(tmp_path, "main", main_rows(5.0, 9.0, dmz100=4.0, ddpm100=2.0))
    c = claims(tmp_path)["2"]
    assert c.verdict == FAILS and "lower FID is DDPM's (4.00 vs 2.00)" in " ".join(c.notes)
    write(tmp_path, "main", main_rows(5.0, 9.0, dmz100=2.0, ddpm100=4.0))
    c = claims(tmp_path)["2"]
    assert c.verdict == HOLDS and "lower FID is DMZ's" in " ".join(c.notes)
    write(tmp_path, "main", main_rows(5.0, 9.0, dmz100=3.0, ddpm100=3.2))
    c = claims(tmp_path)["2"]
    assert c.verdict == UNRESOLVED and "NOT resolved" in " ".join(c.notes)


# ---------------------------------------------------------------------------------------------------- claim 3
def latent_type_rows(normal_prior=20.0, normal_sampler=15.0, cat=12.0, cat16=11.0, bern=5.0):
    rows = []
    for T in (10, 100):
        rows += [fid("bernoulli", T, bern), fid("bernoulli", T, 30.0, sampler="const"),
                 fid("normal", T, normal_prior), fid("normal", T, normal_sampler, sampler="normal"),
                 fid("categorical", T, cat), fid("categorical-16bit", T, cat16, latent_dim=8),
                 fid("none", T, 8.0)]
    return rows + probe("bernoulli", "bernoulli", 16, 0.8)


def test_latent_type_sub_verdicts_and_the_combined_one(tmp_path):
    write(tmp_path, "latent_type", latent_type_rows())
    c = claims(tmp_path)["3"]
    counted = {p.pid: p.verdict for p in c.parts if p.counted}
    assert counted == {"3a": HOLDS, "3b": HOLDS, "3c": HOLDS, "3d": HOLDS} and c.verdict == HOLDS
    assert all("T=100" in p.a.what for p in c.parts if p.counted)  # FID@100 decides; T=10 is information
    write(tmp_path, "latent_type", latent_type_rows(normal_sampler=2.0))  # the normal sampler beats Bernoulli
    c = claims(tmp_path)["3"]
    assert parts(c)["3b"] == FAILS and parts(c)["3a"] == HOLDS and c.verdict == FAILS
    write(tmp_path, "latent_type", latent_type_rows(cat16=5.5))  # capacity-matched categorical: too close to tell
    c = claims(tmp_path)["3"]
    assert parts(c)["3d"] == UNRESOLVED and c.verdict == UNRESOLVED


# ---------------------------------------------------------------------------------------------------- claim 4
def size_rows(z128_prior=21.0, sd=1.4, seeds=3):
    return [fid("z16", 10, 3.3, 0.1, latent_dim=16, seeds=seeds), fid("z16", 10, 2.8, sampler="dataset", seeds=seeds),
            fid("z128", 10, z128_prior, sd, latent_dim=128, seeds=seeds),
            fid("z128", 10, 2.4, sampler="dataset", latent_dim=128, seeds=seeds)]


def full_rows(pixelsnail=13.0):
    out = []
    for z, prior in ((16, 2.4), (64, 8.8), (128, 16.1)):
        for T in (10, 100):
            out += [fid(f"z{z}", T, prior + (5 if T == 10 else 0), latent_dim=z, seeds=1),
                    fid(f"z{z}", T, pixelsnail if z == 128 else prior, sampler="pixelsnail", latent_dim=z, seeds=1)]
    # prior matching cells are not part of the claim, even with the largest |z|
    out.append(fid("z256-pm0.1", 100, 1.0, latent_dim=256, seeds=1, prior_matching=0.1))
    return out


def test_latent_size_prefers_the_table_with_seeds_and_checks_pixelsnail(tmp_path):
    write(tmp_path, "latent_size", size_rows())
    write(tmp_path, "latent_size", full_rows(), label="digits-full")
    c = claims(tmp_path)["4"]
    a = next(p for p in c.parts if p.pid == "4a")
    assert a.verdict == HOLDS and a.a.value == pytest.approx(21.0) and a.b.value == pytest.approx(3.3)
    assert "digits, T=10" in a.statement and a.a.n == a.b.n == 3
    info = next(p for p in c.parts if p.pid == "4a-digits-full")  # the one-seed table at its largest T: information
    assert not info.counted and "T=100" in info.statement and info.verdict == UNRESOLVED
    b = next(p for p in c.parts if p.pid == "4b")
    assert "|z|=128, T=100" in b.statement and b.verdict == UNRESOLVED  # one seed: not resolved
    assert c.verdict == UNRESOLVED
    assert any("recovers" in n for n in c.notes)
    md = paper_report("digits", results_dir=tmp_path, plots=False)["markdown_text"]
    assert "latent_size/digits/results.csv" in md and "latent_size/digits-full/results.csv" in md  # both tables

    write(tmp_path, "latent_size", size_rows(z128_prior=1.0, sd=0.3))  # larger |z|, better prior samples
    assert parts(claims(tmp_path)["4"])["4a"] == FAILS
    write(tmp_path, "latent_size", size_rows(z128_prior=4.5))  # +1.2 against a threshold of 2.81
    assert parts(claims(tmp_path)["4"])["4a"] == UNRESOLVED


def test_latent_size_largest_common_T_and_no_pixelsnail(tmp_path):
    rows = [fid("z16", 10, 3.0, latent_dim=16), fid("z16", 50, 2.0, latent_dim=16),
            fid("z256", 10, 20.0, latent_dim=256), fid("z256", 50, 15.0, latent_dim=256),
            fid("z256", 100, 1.0, latent_dim=256)]  # T=100 only at one |z|: not shared
    write(tmp_path, "latent_size", rows)
    c = claims(tmp_path)["4"]
    assert "T=50" in c.parts[0].statement and parts(c)["4a"] == HOLDS
    assert parts(c)["4b"] == NO_DATA and "PixelSNAIL" in c.parts[-1].why
    assert c.verdict == UNRESOLVED  # 4a holds, 4b has no data: not every part holds


# ---------------------------------------------------------------------------------------------------- claims 5-7
def test_conditioning_counts_concat_and_add_only(tmp_path):
    rows = []
    for T in (10, 100):
        rows += [fid("cross_attention", T, 5.0), fid("concat", T, 9.0), fid("add", T, 10.0),
                 fid("cross_attention_add", T, 2.0), fid("cross_attention_tokens4", T, 5.1)]
    write(tmp_path, "conditioning", rows)
    c = claims(tmp_path)["5"]
    assert c.verdict == HOLDS  # cross_attention_add beating it is information, not a counter-example
    assert parts(c)["5-cross_attention_add@T=10"] == FAILS
    assert not next(p for p in c.parts if p.pid == "5-cross_attention_add@T=10").counted
    rows[-4] = fid("concat", 100, 3.0)  # concat wins at T=100
    write(tmp_path, "conditioning", rows)
    assert claims(tmp_path)["5"].verdict == FAILS


def test_representation_per_prior_with_the_fold_spread(tmp_path):
    def rows(normal_big):
        out = []
        for prior, accs in (("bernoulli", (0.6, 0.7, 0.8)), ("normal", (0.6, 0.65, normal_big)),
                            ("categorical", (0.5, 0.6, 0.7))):
            for L, acc in zip((16, 64, 256), accs):
                out += probe(f"{prior}-z{L}", prior, L, acc)
        return out

    write(tmp_path, "representation", rows(0.7))
    c = claims(tmp_path)["6"]
    assert parts(c) == {"6-bernoulli": HOLDS, "6-normal": HOLDS, "6-categorical": HOLDS} and c.verdict == HOLDS
    assert "probe_acc_cv" in c.notes[0] and "CV folds" in c.notes[0]
    write(tmp_path, "representation", rows(0.5))
    c = claims(tmp_path)["6"]
    assert parts(c)["6-normal"] == FAILS and c.verdict == FAILS
    write(tmp_path, "representation", rows(0.61))  # +0.01 against 2 * sqrt(2) * 0.01
    assert claims(tmp_path)["6"].verdict == UNRESOLVED


def test_ddim_needs_gamma0_at_the_smallest_T(tmp_path):
    def rows(dmz_gamma0_10):
        out = []
        for T in (10, 20, 50, 100):
            for m, sampler in (("ddpm", "prior"), ("dmz", "prior")):
                g0 = dmz_gamma0_10 if (m, T) == ("dmz", 10) else 6.0
                out += [fid(f"{m}-gamma0", T, g0, solver="ddim", sampler=sampler, input_perturbation=0.0),
                        fid(f"{m}-released", T, 12.0, solver="ddim", sampler=sampler, input_perturbation=0.1),
                        fid(f"{m}-gamma0", T, 4.0, sampler=sampler, input_perturbation=0.0),  # ancestral: unused
                        fid(f"{m}-released", T, 3.0, sampler=sampler, input_perturbation=0.1)]
        return out

    write(tmp_path, "ddim", rows(6.0))
    c = claims(tmp_path)["7"]
    assert {p.pid: p.verdict for p in c.parts if p.counted} == {"7-ddpm": HOLDS, "7-dmz": HOLDS}
    assert len(c.parts) == 8 and c.verdict == HOLDS and "dmz-released=0.1" in c.notes[0]
    write(tmp_path, "ddim", rows(20.0))
    assert parts(claims(tmp_path)["7"])["7-dmz"] == FAILS
    write(tmp_path, "ddim", rows(11.5))
    assert claims(tmp_path)["7"].verdict == UNRESOLVED


def test_nll_compares_nll_bpd_z_with_the_standard_error(tmp_path):
    def rows(dmz_z):
        out = main_rows(5.0, 9.0)
        for v, bpd, bpd_z in (("dmz", 1.00, dmz_z), ("ddpm", 1.30, 1.30)):
            for split in ("train", "test"):
                out += [{"variant": v, "metric": m, "reference": split, "value": x, "sd": 0.5, "se": 0.01, "N": 2500,
                         "sampler": z} for m, x, z in (("nll_bpd", bpd, None), ("nll_bpd_z", bpd_z, "prior"))]
                if v == "dmz":  # a second code model: information beside the prior's
                    out.append({"variant": v, "metric": "nll_bpd_z", "reference": split, "value": 1.05, "sd": 0.5,
                                "se": 0.01, "N": 2500, "sampler": "pixelsnail"})
        return out

    write(tmp_path, "main", rows(1.10))
    c = claims(tmp_path)["N"]
    assert c.kind == "information" and c.verdict == HOLDS
    assert parts(c) == {"N-test": HOLDS, "N-test-pixelsnail": HOLDS, "N-train": HOLDS, "N-train-pixelsnail": HOLDS}
    p = c.parts[0]
    assert p.a.value == pytest.approx(1.10) and p.b.value == pytest.approx(1.30) and p.ci[1] < 0  # CI of a - b
    write(tmp_path, "main", rows(1.50))  # z's bits cost more than the bound gains: DDPM lower
    c = claims(tmp_path)["N"]
    assert parts(c)["N-test"] == FAILS and c.verdict == FAILS and "lower NLL is DDPM's" in c.notes[0]
    assert parts(c)["N-test-pixelsnail"] == HOLDS  # information only


# ---------------------------------------------------------------------------------------------------- the files
def test_missing_grids_give_no_data_and_the_report_is_still_written(tmp_path):
    write(tmp_path, "main", main_rows(5.0, 9.0))
    out = paper_report("digits", results_dir=tmp_path, plots=False, today="2026-01-01")
    by = {c.cid: c.verdict for c in out["claims"]}
    assert by["1"] == HOLDS and by["3"] == by["5"] == by["6"] == by["7"] == NO_DATA and by["4"] == NO_DATA
    assert set(out["missing"]) == {"latent_type", "conditioning", "latent_size", "representation", "ddim"}
    md = out["report"].read_text()
    assert "python ablations/run_grid.py --grid ddim --preset digits" in md
    assert "python ablations/run_grid.py --grid latent_size --preset digits --budget full" in md
    v = pd.read_csv(out["verdicts"])
    assert v.loc[(v["claim_id"] == "3") & v["part_id"].isna(), "verdict"].item() == NO_DATA
    empty = paper_report("digits", results_dir=tmp_path / "none", plots=False)  # nothing at all: still a report
    assert all(c.verdict == NO_DATA for c in empty["claims"]) and empty["report"].exists()


def test_report_files_carry_the_numbers_and_the_plots_exist(tmp_path):
    write(tmp_path, "main", main_rows(5.0, 9.0))
    write(tmp_path, "latent_size", size_rows())
    out = paper_report("digits", results_dir=tmp_path, today="2026-01-01 00:00 UTC")
    folder = tmp_path / "paper" / "digits"
    md = (folder / "REPORT.md").read_text()
    assert md == out["markdown_text"] and "preset `digits`" in md and "Generated 2026-01-01 00:00 UTC" in md
    assert "| 1. DMZ beats DDPM at small T" in md and "**holds**" in md  # the summary table
    assert "5.00 ± 0.50" in md and "9.00 ± 0.50" in md and "21.00 ± 1.40" in md  # the tables' numbers
    assert "FID [digits-classifier-v1] T=10" in md and "sd over 3 trainings; sampling sd over 3 seeds 0.50; N=300" in md
    assert "Welch's t-test" in md and "Holm" in md and "never comparable with the paper's Inception" in md
    assert "17.23" in md and "another dataset: not comparable" in md  # the paper's CIFAR-10 number, labelled
    assert "| latent_size | `" in md and "| main        | `" in md  # the protocol table
    v = pd.read_csv(folder / "verdicts.csv")
    row = v[v["part_id"] == "1a"].iloc[0]
    assert row["verdict"] == HOLDS and row["a_value"] == 5.0 and row["b_value"] == 9.0
    assert row["ci_low"] < row["test_difference"] < row["ci_high"] < 0 and row["p"] < 0.05 and "Welch" in row["rule"]
    assert row["test"] == "Welch" and row["scale"] == "log" and 0 < row["ratio_ci_low"] < row["ratio"] < 1
    assert row["a_trainings"] == 3 and row["a_sampling_sd"] == pytest.approx(0.5)
    assert set(v["verdict"]) <= {HOLDS, FAILS, UNRESOLVED, NO_DATA}
    names = {p.name for p in out["plots"]}
    assert names == {"verdicts.png", "claim1_digits_fid_vs_T.png", "claim4_digits_fid_vs_z.png"}
    assert all((folder / n).stat().st_size > 1000 and f"({n})" in md for n in names)


def test_report_command_line_paper_flag(tmp_path, capsys):
    from ablations import paper_report as paper_cli
    from ablations import report as report_cli

    write(tmp_path, "main", main_rows(5.0, 9.0))
    assert report_cli.main(["--paper", "--preset", "digits", "--results-dir", str(tmp_path), "--no-plots"]) == 0
    assert "claim 1 (DMZ beats DDPM at small T): holds" in capsys.readouterr().out
    assert (tmp_path / "paper" / "digits" / "REPORT.md").exists()
    assert paper_cli.main(["--preset", "digits", "--results-dir", str(tmp_path), "--no-plots"]) == 0
    with pytest.raises(SystemExit) as e:
        report_cli.main(["--paper", "--grid", "main", "--preset", "digits"])
    assert e.value.code == 2 and "--grid" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        report_cli.main(["--preset", "digits"])  # neither --grid nor --paper
    assert e.value.code == 2


def test_other_presets_pick_T_from_their_rows_and_join_the_papers_numbers(tmp_path):
    inception = "inception-v3-compat"
    rows = [fid(f"z{z}", T, v + (10 if T == 10 else 0), 0.2, latent_dim=z, feature_extractor=inception)
            for z, v in ((16, 5.0), (64, 9.0), (128, 18.0)) for T in (10, 20, 50, 100)]
    for k, off in enumerate((-0.2, 0.0, 0.2)):  # three trainings
        df = pd.DataFrame(rows).assign(grid="latent_size", preset="cifar10", dataset="cifar10", prior="bernoulli",
                                       seed=k, feature_extractor_weights_sha256="c" * 64)
        df["value"] += off
        folder = tmp_path / "latent_size" / ("cifar10" if k == 0 else f"cifar10-seed{k}")
        folder.mkdir(parents=True)
        df.to_csv(folder / "results.csv", index=False)
    out = paper_report("cifar10", results_dir=tmp_path, plots=False)
    c = {c.cid: c for c in out["claims"]}["4"]
    a = c.parts[0]
    assert a.verdict == HOLDS and "T=100" in a.statement and a.a.extractor == inception
    assert (a.a.paper, a.b.paper) == (17.23, 4.79)  # results/paper_numbers.csv, CIFAR-10 |z|=128 and |z|=16
    assert "17.23 / 4.79" in out["markdown_text"] and "paper FID [Inception] T=100" in out["markdown_text"]
    assert (tmp_path / "paper" / "cifar10" / "REPORT.md").exists()


def test_paper_report_adds_the_tables_to_the_judged_claims(tmp_path):
    import ablations.claims as claims_mod
    import ablations.paper_report as paper_mod

    write(tmp_path, "main", main_rows(5.0, 9.0))
    ctx = Ctx("digits", load_all("digits", tmp_path))
    bare, rendered = claims_mod.build_claims(ctx), paper_mod.build_claims(ctx)
    assert [(c.cid, c.verdict) for c in bare] == [(c.cid, c.verdict) for c in rendered]
    assert not bare[0].tables and rendered[0].tables  # the report's build_claims adds claim 1's table of main's rows


# ---------------------------------------------------------------------------------------------------- training seeds
def seeded(rows, seed):
    """Rows of one training seed: FID rows carry their per-sampling-seed values (as collect.py writes them)."""
    return [{**r, "seed": seed, "run_id": f"r-s{seed}"} for r in rows]


def fid_values(variant, T, values):
    import statistics

    return fid(variant, T, statistics.fmean(values), statistics.stdev(values), seeds=len(values),
               values=str(list(values)))


def test_pool_training_seeds_keeps_one_value_per_training_and_the_sampling_spread_apart():
    import statistics

    from ablations.collect import pool_training_seeds

    rows = (seeded([fid_values("dmz", 10, [4.0, 5.0, 6.0]),
                    {"variant": "dmz", "metric": "nll_bpd", "reference": "test", "value": 1.0, "se": 0.03},
                    fid_values("ddpm", 10, [7.0, 8.0, 9.0])], 0)
            + seeded([fid_values("dmz", 10, [5.0, 5.0, 5.5]),
                      {"variant": "dmz", "metric": "nll_bpd", "reference": "test", "value": 1.2, "se": 0.04}], 1))
    df = pd.DataFrame(rows)
    df.insert(0, "grid", "main")
    out = pool_training_seeds(df)
    assert len(out) == 3  # dmz FID and NLL pooled; ddpm: one training
    d = out[(out["variant"] == "dmz") & (out["metric"] == "fid")].iloc[0]
    per_training = [5.0, statistics.fmean([5.0, 5.0, 5.5])]  # a training's FID: the mean over its sampling seeds
    assert d["train_seeds"] == 2 and d["seeds"] == 3 and d["train_seed_list"] == "[0, 1]"
    assert d["value"] == pytest.approx(statistics.fmean(per_training))
    assert d["sd"] == d["train_sd"] == pytest.approx(statistics.stdev(per_training))  # the sd over trainings
    within = [statistics.stdev([4.0, 5.0, 6.0]), statistics.stdev([5.0, 5.0, 5.5])]
    assert d["sampling_sd"] == pytest.approx(math.sqrt(statistics.fmean(w * w for w in within)))
    n = out[out["metric"] == "nll_bpd"].iloc[0]
    assert n["value"] == pytest.approx(1.1) and n["train_sd"] == pytest.approx(statistics.stdev([1.0, 1.2]))
    assert n["se"] == pytest.approx(math.sqrt((0.03 ** 2 + 0.04 ** 2) / 2))
    p = out[out["variant"] == "ddpm"].iloc[0]
    assert p["train_seeds"] == 1 and p["value"] == pytest.approx(8.0) and math.isnan(p["sd"])
    assert p["sampling_sd"] == pytest.approx(1.0)  # one training: its sampling sd, apart, never the "±"


def test_replicate_folders_are_pooled_and_decide_over_trainings(tmp_path):
    base = [fid_values("dmz", 10, [4.0, 5.0, 6.0]), fid_values("ddpm", 10, [7.0, 9.0, 11.0]),
            fid("dmz", 20, 5.0), fid("ddpm", 20, 9.0), fid("dmz", 100, 3.0), fid("ddpm", 100, 3.2)]
    write(tmp_path, "main", seeded(base, 0), trainings=1)
    c = claims(tmp_path)
    assert parts(c["1"])["1a"] == UNRESOLVED  # one training: not resolved, however tight its sampling seeds
    # two more trainings of both (run_grid --seeds 1 2 writes main/digits-seed1, -seed2)
    for k, (dmz, ddpm) in enumerate(((5.2, 9.1), (4.9, 8.8)), start=1):
        write(tmp_path, "main", seeded([fid_values("dmz", 10, [dmz] * 3), fid_values("ddpm", 10, [ddpm] * 3)], k),
              label=f"digits-seed{k}", trainings=1)
    frames = load_all("digits", tmp_path)["main"]
    assert list(frames) == ["digits"]  # pooled into the preset's label, not a table of its own
    p = next(p for p in claims(tmp_path)["1"].parts if p.pid == "1a")
    assert p.verdict == HOLDS and p.a.n == 3 and p.a.trainings == pytest.approx((5.0, 5.2, 4.9))
    assert p.b.trainings == pytest.approx((9.0, 9.1, 8.8)) and "sd over 3 trainings" in p.a.text()
    from ablations.paper_report import grid_table

    table = grid_table(frames["digits"], ["variant", "sampler"])
    assert table.loc[table["variant"] == "dmz"].iloc[0].str.contains(r"5\.03 ± 0\.15 \(n=3\) \[0\.58\]").any()
    # the replicates pull the other way: DDPM as good as DMZ in the other two trainings -> not resolved
    for k in (1, 2):
        write(tmp_path, "main", seeded([fid_values("dmz", 10, [5.0] * 3), fid_values("ddpm", 10, [5.0] * 3)], k),
              label=f"digits-seed{k}", trainings=1)
    assert parts(claims(tmp_path)["1"])["1a"] == UNRESOLVED


def test_results_label_names_a_training_seed_replicate():
    from ablations.grids import expand, results_label

    assert results_label("digits", None, expand("main", "digits")) == "digits"
    assert results_label("digits", None, expand("main", "digits", ["seed=1"])) == "digits-seed1"
    assert results_label("digits", "full", expand("latent_size", "digits", ["seed=2"], budget="full")) \
        == "digits-full-seed2"


def test_fid_rows_of_two_extractor_weights_are_never_pooled():
    """FIDs of two weight files are two feature spaces: kept apart, while their NLL rows still pool."""
    from ablations.collect import pool_training_seeds

    def weights(rows, sha):
        return [{**r, "feature_extractor_weights_sha256": sha} if r["metric"] == "fid" else r for r in rows]

    rows = (weights(seeded([fid_values("dmz", 10, [4.0, 5.0, 6.0]),
                            {"variant": "dmz", "metric": "nll_bpd", "reference": "test", "value": 1.0, "se": 0.03}],
                           0), "a" * 64)
            + weights(seeded([fid_values("dmz", 10, [9.0, 9.0, 9.5]),
                              {"variant": "dmz", "metric": "nll_bpd", "reference": "test", "value": 1.2, "se": 0.04}],
                             1), "b" * 64))
    df = pd.DataFrame(rows)
    df.insert(0, "grid", "main")
    out = pool_training_seeds(df)
    f = out[out["metric"] == "fid"]
    assert len(f) == 2 and set(f["train_seeds"]) == {1}
    n = out[out["metric"] == "nll_bpd"]
    assert len(n) == 1 and n.iloc[0]["train_seeds"] == 2
    same = pool_training_seeds(df.assign(feature_extractor_weights_sha256="a" * 64))
    assert same[same["metric"] == "fid"].iloc[0]["train_seeds"] == 2


def test_stale_rows_are_left_out_and_listed_with_the_command_that_regenerates_them(tmp_path):
    from ablations.paper_report import build_claims, render

    def report():
        ctx = Ctx("digits", load_all("digits", tmp_path), results_dir=tmp_path)
        return ctx, render(ctx, build_claims(ctx), {}, tmp_path, "2026-12-02")

    write(tmp_path, "main", main_rows(5.0, 9.0))
    other = [{**r, "feature_extractor_weights_sha256": "b" * 64} for r in seeded(main_rows(50.0, 9.0), 2)]
    other += [{"variant": "dmz", "metric": "nll_bpd", "reference": "test", "value": 1.0, "se": 0.03, "seed": 2}]
    _write_one(tmp_path, "main", other, "digits-seed2")  # training 2 re-evaluated on another machine's extractor
    ctx, md = report()
    df = ctx.data["main"]["digits"]
    fid10 = df[(df["metric"] == "fid") & (df["T"] == 10) & (df["variant"] == "dmz")]
    assert len(fid10) == 1 and fid10.iloc[0]["train_seeds"] == 2  # its stale FID is not pooled (50 would count)
    assert (df["metric"] == "nll_bpd").any()  # its NLL row, which needs no extractor, is used
    assert "Stale rows" in md and "bbbbbbbb" in md
    assert "python ablations/run_grid.py --grid main --preset digits --seeds 2 --only dmz,ddpm" in md
    # one unpinned extractor with two weight files in one folder: one clear error that says what to do
    from ablations.rows import MixedFeatureSpaces

    inc = [fid("dmz", 10, 5.0, feature_extractor="inception-v3-compat", feature_extractor_weights_sha256=h)
           for h in ("c" * 64, "d" * 64)]
    _write_one(tmp_path, "main", inc, "digits-seed3")
    with pytest.raises(MixedFeatureSpaces, match="mixes FIDs of inception-v3-compat from 2 weight files.*re-evaluate"):
        load_all("digits", tmp_path)


def test_protocol_names_the_pinned_extractor_weights(tmp_path):
    from ablations.paper_report import build_claims, render

    write(tmp_path, "main", main_rows(5.0, 9.0))
    ctx = Ctx("digits", load_all("digits", tmp_path), results_dir=tmp_path)
    md = render(ctx, build_claims(ctx), {}, tmp_path, "2026-12-02")
    assert f"{EXT} (weights {PIN[:8]})" in md and "Stale rows" not in md


def test_the_readme_claims_table_is_the_one_the_checked_in_rows_give():
    # the README's numbers are never typed by hand: its table is claims_brief over the checked-in rows
    from dmz.runio import REPO
    from ablations.paper_report import BRIEF_BEGIN, BRIEF_END, claims_brief, judge_claims

    readme = (REPO / "README.md").read_text()
    assert readme.count(BRIEF_BEGIN) == 1 and readme.count(BRIEF_END) == 1
    block = readme.split(BRIEF_BEGIN + "\n", 1)[1].split(BRIEF_END, 1)[0]
    _, claims = judge_claims("digits")
    brief = claims_brief(claims)
    assert block == brief, "README's claims table is not the checked-in rows' one: run `python ablations/report.py " \
        "--paper --preset digits` and copy results/paper/digits/CLAIMS.md into the README"
    assert brief == (REPO / "results" / "paper" / "digits" / "CLAIMS.md").read_text()
    assert "| 2. DMZ vs DDPM at T=100 | **does not hold** |" in brief  # a verdict line, computed


def test_mi_rows_get_their_own_section_and_stay_out_of_the_claim_tables(tmp_path):
    """I(z; x_t) rows (20 noise levels per cell) are pooled per level over trainings and reported in a section of
    their own, never folded into the |z| table as one column."""
    mi = [{"variant": f"z{z}", "metric": "mi_bits", "noise_t": t, "mi_estimator": "mine:epochs=100,lr=0.001",
           "value": v, "sd": None, "spread": 0.2, "latent_dim": z, "h_z_bits": 9.0, "T": None, "sampler": None}
          for z, top in ((16, 5.0), (128, 7.0)) for t, v in ((0.0, top), (0.5, top / 2), (1.0, 0.0))]
    write(tmp_path, "latent_size", size_rows())
    write(tmp_path, "latent_size", full_rows() + mi, label="digits-full")
    md = paper_report("digits", results_dir=tmp_path, plots=False)["markdown_text"]
    section = md.split("## Beyond the paper's tables: where z's information lives, I(z; x_t)")[1]
    assert "results/latent_size/digits-full" in section and "`mine:epochs=100,lr=0.001`" in section
    assert "0.5 | 2.50 ± 0.20 (n=3) |" in section and "3.50 ± 0.20 (n=3)" in section
    claim4 = md.split("## 4.")[1].split("## 5.")[0]
    assert "mi_bits" not in claim4 and "I(z" not in claim4
    assert claims(tmp_path)["4"].verdict  # the claim is still judged on its FID rows


def test_open_question_1_per_penalty(tmp_path):
    """Q1 (beyond the paper): per prior penalty, prior FID at the largest |z| < 1.5 x at the smallest, Welch on
    a - 1.5 b over trainings, Holm over the penalties at the largest T; it is marked as the project's question."""
    def cells(pen, extra, big, small):
        return [fid(f"z{z}{pen}", 100, v, 0.2, latent_dim=z, **extra) for z, v in ((16, small), (128, big))]

    rows = (cells("", {}, 21.0, 4.0) + cells("-pm0.1", {"prior_matching": 0.1}, 4.5, 4.0)
            + cells("-mmd1", {"prior_mmd": 1.0}, 6.1, 4.0))
    write(tmp_path, "latent_size", rows, label="digits-full")
    c = claims(tmp_path)["Q1"]
    parts = {p.pid: p for p in c.parts}
    assert set(parts) == {"Q1-none", "Q1-pm0.1", "Q1-mmd1"} and c.kind == "beyond"
    assert parts["Q1-none"].verdict == FAILS and parts["Q1-pm0.1"].verdict == HOLDS
    assert parts["Q1-mmd1"].verdict == UNRESOLVED  # 6.1 against 1.5 x 4.0 = 6.0: too close to tell
    assert parts["Q1-pm0.1"].b.value == pytest.approx(6.0) and parts["Q1-pm0.1"].test.p_holm is not None
    md = paper_report("digits", results_dir=tmp_path, plots=False)["markdown_text"]
    assert "within 1.5x of the smallest (beyond the paper)" in md and "## Q1. " in md


def test_sync_readme_replaces_only_the_marked_block(tmp_path):
    from ablations.paper_report import BRIEF_BEGIN, BRIEF_END, sync_readme

    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{BRIEF_BEGIN}\n| old |\n{BRIEF_END}\nafter\n")
    assert sync_readme(readme, "| new |\n")
    assert readme.read_text() == f"intro\n{BRIEF_BEGIN}\n| new |\n{BRIEF_END}\nafter\n"
    assert not sync_readme(readme, "| new |\n")  # already current: nothing written
    readme.write_text("no markers here\n")
    assert not sync_readme(readme, "| new |\n") and readme.read_text() == "no markers here\n"
    assert not sync_readme(tmp_path / "absent.md", "| new |\n")


def test_penalties_table_pools_trainings_and_computes_the_ratio_from_the_rows(tmp_path):
    """The README's penalties table (ablations.penalties): one row per penalty x |z|, each entry the mean ± sd over
    trainings, the ratio to the smallest |z|'s prior FID at the largest T computed, released first."""
    from ablations.penalties import penalty_frame, penalty_table

    def cells(pen, extra, small, big):
        out = []
        for z, v in ((16, small), (128, big)):
            out += [fid(f"z{z}{pen}", T, v * (1.5 if T == 10 else 1.0), latent_dim=z, seeds=1, spread=0.3, **extra)
                    for T in (10, 100)]
            out.append(fid(f"z{z}{pen}", 100, v / 2, sampler="dataset", latent_dim=z, seeds=1, spread=0.1, **extra))
            out.append({"variant": f"z{z}{pen}", "metric": "bits_per_code", "sampler": "pixelsnail", "value": 0.8 * z,
                        "sd": math.nan, "spread": 0.5, "latent_dim": z, "N": 360, **extra})
        return out

    rows = cells("-pm0.1", {"prior_matching": 0.1}, 1.0, 5.0) + cells("", {}, 3.0, 18.0)
    write(tmp_path, "latent_size", [fid("z16", 10, 4.0, latent_dim=16)], label="digits")  # no penalty: not chosen
    write(tmp_path, "latent_size", rows, label="digits-full")
    label, df = penalty_frame(list(load_all("digits", tmp_path)["latent_size"].items()))
    assert label == "digits-full"
    t = penalty_table(df).set_index(["penalty", "|z|"])
    assert list(t.index) == [("none (as released)", 16), ("none (as released)", 128), ("prior matching 0.1", 16),
                             ("prior matching 0.1", 128)]
    row = t.loc[("prior matching 0.1", 128)]
    assert row["trainings"] == 3 and row["prior FID T=100"] == "5.00 ± 0.30" and row["prior FID T=10"] == "7.50 ± 0.30"
    assert row["÷ |z|=16 at T=100"] == "5.0" and t.loc[("none (as released)", 128), "÷ |z|=16 at T=100"] == "6.0"
    assert row["dataset FID T=100"] == "2.50 ± 0.10" and row["PixelSNAIL bits per held-out code"] == "102.4 ± 0.5"
    assert penalty_frame([("digits", df[df["prior_matching"].astype(float) == 0])]) is None  # no penalty, no table


def test_the_readme_penalties_table_is_the_one_the_checked_in_rows_give():
    from dmz.runio import REPO
    from ablations.paper_report import judge_claims, penalties_md
    from ablations.penalties import BEGIN, END

    readme = (REPO / "README.md").read_text()
    assert readme.count(BEGIN) == 1 and readme.count(END) == 1
    block = readme.split(BEGIN + "\n", 1)[1].split(END, 1)[0]
    ctx, _ = judge_claims("digits")
    assert block == penalties_md(ctx), "README's penalties table is stale: run `python ablations/report.py --paper`"
    assert "| prior matching 0.1 |" in block
