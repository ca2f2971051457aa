"""dmz/zsamplers/pixelsnail.py (PixelSNAIL fit / diagnose CLI ``python -m dmz.zsamplers``, the ``pixelsnail`` z-sampler) and the Bernoulli prior-matching
option, on tiny trained digits runs."""

import json
import shutil

import pytest
import torch

import dmz.config
import dmz.trainer
from dmz.diffusion import PerSampleRNG
from dmz.zsamplers.pixelsnail_net import load_network, nll_bits, save_network
from dmz.zsamplers.pixelsnail import (
    DIAGNOSTICS_FILE,
    PIXELSNAIL_FILE,
    PIXELSNAIL_JSON,
    PixelSNAILError,
    PixelSNAILZSampler,
    codes_fingerprint,
    diagnose,
    fit_pixelsnail,
    holdout_split,
    main,
)
from dmz.priors import build_prior
from dmz.priors.bernoulli import prior_matching_penalty
from dmz.run import encode_split, load_run
from dmz.runio import read_jsonl
from dmz.sample import main as sample_main
from dmz.sampling import generate
from dmz.zsamplers import ZSAMPLERS, build_zsampler, check_zsampler, parse_zsampler

torch.set_num_threads(1)

TINY_RUN = {"base_channels": 8, "latent_dim": 8, "attention_head_dim": 2, "batch_size": 16, "steps": 3,
            "log_every": 1}
TINY_PS = dict(channel=16, res_channel=16, n_block=1, n_res_block=1, n_head=2)
FIT = dict(model_kwargs=TINY_PS, epochs=4, patience=1, released_patience=1, device="cpu")


def _train(root, name, **overrides):
    out = root / name
    dmz.trainer.train(dmz.config.resolve("digits", {**TINY_RUN, **overrides}), out, progress=False)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return {"bernoulli": _train(root, "bern")}


@pytest.fixture(scope="module")
def fitted(runs):
    return runs["bernoulli"], fit_pixelsnail(runs["bernoulli"], **FIT)


def _copy_run(src, dst, keep_fit=True):
    shutil.copytree(src, dst)
    if not keep_fit:
        for f in (PIXELSNAIL_FILE, PIXELSNAIL_JSON):
            (dst / f).unlink(missing_ok=True)
    return dst


# ------------------------------------------------------------------------------------------------ fit

def test_fit_writes_checkpoint_and_history_with_both_stop_rules(fitted):
    run_dir, res = fitted
    assert res["refit"] and res["reason"] == "no fit yet"
    model, meta = load_network(run_dir / PIXELSNAIL_FILE)
    assert (model.L, model.n_class, model.width) == (8, 2, 8)
    run = load_run(run_dir, device="cpu")
    codes = encode_split(run, "train")[0]
    assert meta["checkpoint_step"] == run.step == 3
    assert meta["codes_fingerprint"] == codes_fingerprint(codes)
    assert meta["n_fit"] + meta["n_val"] == len(codes) == 1437 and meta["n_val"] == round(0.1 * 1437)

    saved = json.loads((run_dir / PIXELSNAIL_JSON).read_text())
    hist = saved["history"]
    assert saved["meta"] == meta
    n_ep = hist["stopped_epoch"]
    assert len(hist["val_nll_bits"]) == len(hist["train_acc"]) == n_ep <= 4
    # our rule: best held-out NLL epoch, and stop on patience (or the epoch cap)
    vals = hist["val_nll_bits"]
    assert hist["best_epoch"] == 1 + min(range(n_ep), key=vals.__getitem__)
    assert hist["best_val_nll_bits"] == pytest.approx(min(vals))
    assert hist["stop_reason"] in ("val_nll_patience", "max_epochs")
    # the released rule (training-accuracy patience 1): first epoch whose accuracy does not beat the best so far
    acc, expect, best = hist["train_acc"], None, -1.0
    for i, a in enumerate(acc, 1):
        if a > best:
            best = a
        elif expect is None:
            expect = i
    assert hist["released_rule_stop_epoch"] == expect == meta["released_rule_stop_epoch"]
    assert meta["stop_rule"] == "val_nll_patience"
    # the best epoch's weights were restored: held-out NLL of the saved model == the recorded best
    _, val_idx = holdout_split(len(codes), 0.1, 0)
    assert float(nll_bits(model, codes[val_idx]).mean()) == pytest.approx(hist["best_val_nll_bits"], abs=1e-6)


def test_holdout_split_is_a_seeded_partition():
    a, b = holdout_split(100, 0.1, 0)
    assert len(b) == 10 and sorted(torch.cat([a, b]).tolist()) == list(range(100))
    assert torch.equal(holdout_split(100, 0.1, 0)[1], b) and not torch.equal(holdout_split(100, 0.1, 1)[1], b)
    assert len(holdout_split(100, 0.0, 0)[1]) == 0
    with pytest.raises(ValueError):
        holdout_split(10, 1.0)


def test_refit_skipped_when_unchanged_redone_with_force_or_new_step(fitted, tmp_path):
    run_dir = _copy_run(fitted[0], tmp_path / "run")
    pt = run_dir / PIXELSNAIL_FILE
    before = pt.read_bytes()
    res = fit_pixelsnail(run_dir, **FIT)
    assert not res["refit"] and res["history"] is None and pt.read_bytes() == before

    res = fit_pixelsnail(run_dir, force=True, **FIT)
    assert res["refit"] and res["reason"] == "--force"
    assert load_network(pt)[1]["created"] and json.loads((run_dir / PIXELSNAIL_JSON).read_text())["history"]

    # a fit made for another checkpoint step is stale: refused by the sampler, refitted by `fit`
    model, meta = load_network(pt)
    save_network(pt, model, {**meta, "checkpoint_step": 2})
    with pytest.raises(PixelSNAILError, match="step 2.*python -m dmz.zsamplers fit"):
        build_zsampler("pixelsnail", load_run(run_dir, device="cpu"))
    res = fit_pixelsnail(run_dir, **FIT)
    assert res["refit"] and "checkpoint step changed (2 -> 3)" in res["reason"]

    res = fit_pixelsnail(run_dir, **{**FIT, "patience": 2})
    assert res["refit"] and "patience" in res["reason"]


def test_cli_fit_skip_and_diagnose(fitted, tmp_path, capsys):
    run_dir = _copy_run(fitted[0], tmp_path / "run", keep_fit=False)
    args = ["fit", "--run", str(run_dir), "--epochs", "1", "--device", "cpu", "--no-progress"]
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out)["refit"] is True
    _, meta = load_network(run_dir / PIXELSNAIL_FILE)
    assert meta["settings"]["model_kwargs"] == {} and meta["width"] == 8  # released architecture
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"refit": False, "reason": "up to date", "path": str(run_dir / PIXELSNAIL_FILE)}

    assert main(["diagnose", "--run", str(run_dir), "--device", "cpu"]) == 0
    text = capsys.readouterr().out
    assert "uniform" in text and "empirical" in text and "pixelsnail" in text
    d = json.loads((run_dir / DIAGNOSTICS_FILE).read_text())
    assert set(d["bits_per_code"]) == {"uniform", "empirical", "pixelsnail"}

    assert main(["fit", "--run", str(run_dir), "--width", "3", "--device", "cpu"]) == 2
    assert "--width" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ z-sampler

def test_pixelsnail_zsampler_codes_valid_and_batch_size_invariant(fitted):
    run = load_run(fitted[0], device="cpu")
    assert "pixelsnail" in ZSAMPLERS
    zs = build_zsampler("pixelsnail", run)
    assert isinstance(zs, PixelSNAILZSampler) and zs.temperature == 1.0
    seeds = list(range(100, 112))
    whole = zs.sample(len(seeds), PerSampleRNG(seeds), "cpu")
    assert whole.shape == (12, 8) and whole.dtype == torch.long and set(whole.unique().tolist()) <= {0, 1}
    parts = torch.cat([zs.sample(len(c), PerSampleRNG(c), "cpu") for c in (seeds[:1], seeds[1:5], seeds[5:])])
    assert torch.equal(whole, parts)
    assert torch.equal(zs.sample(3, PerSampleRNG(seeds[4:7]), "cpu"), whole[4:7])
    assert len({tuple(r) for r in whole.tolist()}) > 1  # different seeds, different codes
    # fixed micro-batches: the model always sees batches of exactly micro_batch codes (padding discarded)
    small = PixelSNAILZSampler(run, micro_batch=5)
    assert torch.equal(small.sample(12, PerSampleRNG(seeds), "cpu"),
                       torch.cat([small.sample(7, PerSampleRNG(seeds[:7]), "cpu"),
                                  small.sample(5, PerSampleRNG(seeds[7:]), "cpu")]))

    # temperature -> 0 is greedy decoding: every seed gives the same (most likely) code
    cold = PixelSNAILZSampler(run, temperature=1e-4).sample(6, PerSampleRNG(range(6)), "cpu")
    assert (cold == cold[0]).all()
    with pytest.raises(ValueError, match="temperature"):
        PixelSNAILZSampler(run, temperature=0.0)

    # through generation: images depend on the seeds only
    a = generate(run, steps=2, seeds=[0, 1, 2], zsampler=zs, batch_size=3)
    b = generate(run, steps=2, seeds=[0, 1, 2], zsampler=zs, batch_size=1)
    assert a.shape == (3, 1, 16, 16) and torch.equal(a, b)


def test_pixelsnail_zsampler_missing_fit_is_a_clear_error(fitted, tmp_path, capsys):
    run_dir = _copy_run(fitted[0], tmp_path / "run", keep_fit=False)
    with pytest.raises(PixelSNAILError, match=r"no fitted PixelSNAIL.*python -m dmz\.zsamplers fit --run"):
        build_zsampler("pixelsnail", load_run(run_dir, device="cpu"))
    rc = sample_main(["--run", str(run_dir), "--z", "pixelsnail", "--steps", "2", "--num", "2",
                      "--out", str(tmp_path / "g.png"), "--device", "cpu"])
    assert rc == 2 and "python -m dmz.zsamplers fit --run" in capsys.readouterr().err


def test_zsampler_spec_options_reach_the_sampler_and_bad_specs_say_how(fitted):
    run = load_run(fitted[0], device="cpu")
    assert parse_zsampler("pixelsnail") == ("pixelsnail", {})
    assert parse_zsampler("pixelsnail:temperature=0.5") == ("pixelsnail", {"temperature": 0.5})
    zs = build_zsampler("pixelsnail:temperature=1e-4", run)
    assert zs.temperature == 1e-4
    cold = zs.sample(4, PerSampleRNG(range(4)), "cpu")
    assert (cold == cold[0]).all()  # the option is used: near-greedy decoding gives one code for every seed
    with pytest.raises(ValueError, match="has no option 'temprature'.*temperature"):
        build_zsampler("pixelsnail:temprature=0.5", run)
    with pytest.raises(ValueError, match="takes no options"):
        check_zsampler("empirical:temperature=0.5")
    with pytest.raises(ValueError, match="NAME:KEY=NUMBER"):
        check_zsampler("pixelsnail:temperature=warm")
    with pytest.raises(ValueError, match="unknown z-sampler 'pixelsnial'"):
        check_zsampler("pixelsnial")


def test_evaluation_rows_are_named_by_the_whole_zsampler_spec(fitted, tmp_path):
    import evaluation.run as ev

    run_dir = _copy_run(fitted[0], tmp_path / "run")
    specs = ("pixelsnail", "pixelsnail:temperature=0.5")
    rows = ev.evaluate(run_dir, metrics=("fid",), samplers=specs, steps=(2,), num_samples=8, seeds=1, device="cpu",
                       log=lambda m: None)
    assert [r["sampler"] for r in rows] == list(specs)  # one row per temperature, never merged
    assert rows[0]["value"] != rows[1]["value"]
    with pytest.raises(ev.EvaluationError, match="has no option 'temp'"):
        ev.evaluate(run_dir, metrics=("fid",), samplers=("pixelsnail:temp=0.5",), device="cpu")


def test_evaluation_codes_rows_match_diagnose_and_are_not_recomputed(fitted, tmp_path):
    import evaluation.run as ev

    run_dir = _copy_run(fitted[0], tmp_path / "run")
    rows = ev.evaluate(run_dir, metrics=("codes",), device="cpu", log=lambda m: None)
    d = json.loads((run_dir / DIAGNOSTICS_FILE).read_text())
    bits = {r["sampler"]: r["value"] for r in rows if r["metric"] == "bits_per_code"}
    assert bits == {"prior": d["bits_per_code"]["uniform"], "empirical": d["bits_per_code"]["empirical"],
                    "pixelsnail": d["bits_per_code"]["pixelsnail"]}
    assert bits["prior"] == 8.0  # Bernoulli(0.5) over |z| = 8 bits
    dup = [r for r in rows if r["metric"] == "heldout_dup_frac"]
    assert len(dup) == 1 and dup[0]["value"] == d["heldout_duplicate_fraction"] and dup[0]["N"] == 360
    again = ev.evaluate(run_dir, metrics=("codes",), device="cpu", log=lambda m: None)
    assert len(read_jsonl(run_dir / "results.jsonl")) == len(rows) == len(again) == 4  # second call: all present


# ------------------------------------------------------------------------------------------------ diagnose

def test_diagnose_bits_usage_and_duplicates(fitted):
    run_dir = fitted[0]
    d = diagnose(run_dir, device="cpu")
    assert json.loads((run_dir / DIAGNOSTICS_FILE).read_text()) == json.loads(json.dumps(d))
    bits = d["bits_per_code"]
    assert bits["uniform"] == 8.0 == d["uniform_bits"]  # Bernoulli(0.5): exactly |z| bits
    assert bits["empirical"] <= bits["uniform"]
    assert 0 < bits["pixelsnail"] < 2 * 8 and d["pixelsnail"]["best_epoch"] >= 1
    assert d["gap_bits"]["uniform"] == 0.0
    run = load_run(run_dir, device="cpu")
    train, test = encode_split(run, "train")[0], encode_split(run, "test")[0]
    assert d["bit_mean"] == pytest.approx(train.double().mean(0).tolist())
    seen = {tuple(r) for r in train.tolist()}
    assert d["heldout_duplicate_fraction"] == pytest.approx(sum(tuple(r) in seen for r in test.tolist()) / len(test))
    assert (d["n_train"], d["n_heldout"], d["L"]) == (1437, 360, 8)
    assert d["notes"] == []
    # each bits_per_code entry is the mean nll_bits of the z-sampler of that name (one code model per sampler)
    assert bits["pixelsnail"] == float(build_zsampler("pixelsnail", run).nll_bits(test).mean())
    assert bits["empirical"] == float(build_zsampler("empirical", run).nll_bits(test).mean())
    assert bits["uniform"] == float(build_zsampler("prior", run).nll_bits(test).mean())


def test_categorical_codes_fit_and_diagnose(runs, tmp_path):
    run_dir = _train(tmp_path, "cat", prior="categorical", categories=4, latent_dim=4)
    res = fit_pixelsnail(run_dir, **{**FIT, "epochs": 1, "width": 4})
    assert res["meta"]["n_class"] == 4
    d = diagnose(run_dir, device="cpu")
    assert d["uniform_bits"] == d["bits_per_code"]["uniform"] == 8.0  # 4 positions x log2(4)
    assert d["bits_per_code"]["empirical"] <= d["bits_per_code"]["uniform"]
    assert "pixelsnail" in d["bits_per_code"] and len(d["category_freq"]) == 4
    cat_run = load_run(run_dir, device="cpu")
    test = encode_split(cat_run, "test")[0]
    assert d["bits_per_code"]["empirical"] == float(build_zsampler("empirical", cat_run).nll_bits(test).mean())
    codes = build_zsampler("pixelsnail", load_run(run_dir, device="cpu")).sample(5, PerSampleRNG(range(5)), "cpu")
    assert codes.shape == (5, 4) and int(codes.max()) < 4


@pytest.mark.parametrize("prior,match", [("none", "no latent codes"), ("normal", "continuous latent")])
def test_errors_for_priors_without_discrete_codes(tmp_path, capsys, prior, match):
    run_dir = _train(tmp_path, prior, prior=prior)
    with pytest.raises(PixelSNAILError, match=match):
        fit_pixelsnail(run_dir, **FIT)
    with pytest.raises(PixelSNAILError, match=match):
        diagnose(run_dir, device="cpu")
    for cmd in ("fit", "diagnose"):
        assert main([cmd, "--run", str(run_dir), "--device", "cpu"]) == 2
        assert match in capsys.readouterr().err
    assert not (run_dir / PIXELSNAIL_FILE).exists() and not (run_dir / DIAGNOSTICS_FILE).exists()
    with pytest.raises(ValueError):
        build_zsampler("pixelsnail", load_run(run_dir, device="cpu"))


# ------------------------------------------------------------------------------------------------ prior matching

def _factorial(d):
    return torch.tensor([[(i >> j) & 1 for j in range(d)] for i in range(2 ** d)], dtype=torch.float32)


def test_prior_matching_penalty_zero_for_independent_balanced_bits():
    bits = _factorial(5)  # every combination once: marginals exactly 0.5, correlations exactly 0
    assert float(prior_matching_penalty(torch.full_like(bits, 0.5), bits)) == pytest.approx(0.0, abs=1e-6)
    g = torch.Generator().manual_seed(0)
    rand = (torch.rand(8192, 6, generator=g) < 0.5).float()
    assert float(prior_matching_penalty(torch.full_like(rand, 0.5), rand)) < 5e-3


def test_prior_matching_penalty_large_for_constant_or_copied_bits():
    n, d = 256, 6
    const = torch.ones(n, d)
    assert float(prior_matching_penalty(const, const)) == pytest.approx(1.0, abs=1e-4)  # 4 * 0.5^2 per bit
    g = torch.Generator().manual_seed(0)
    col = (torch.rand(n, 1, generator=g) < 0.5).float()
    copied = col.repeat(1, d)  # balanced but every bit a copy of the first
    pen = float(prior_matching_penalty(torch.full((n, d), 0.5), copied))
    assert pen == pytest.approx(1.0, abs=1e-3)
    half = torch.cat([col.repeat(1, 3), (torch.rand(n, 3, generator=g) < 0.5).float()], 1)
    assert 0.05 < float(prior_matching_penalty(torch.full((n, d), 0.5), half)) < pen


def test_prior_matching_gradient_pushes_marginals_to_half():
    g = torch.Generator().manual_seed(0)
    n, d = 512, 4
    target = torch.tensor([2.0, -2.0, 1.0, 0.0])  # marginals ~0.88, 0.12, 0.73, 0.5
    logits = (target + 0.5 * torch.randn(n, d, generator=g)).requires_grad_(True)
    noise = torch.rand(n, d, generator=g).clamp(1e-6, 1 - 1e-6)
    logistic = (noise / (1 - noise)).log()
    opt = torch.optim.Adam([logits], lr=0.05)
    devs = []
    for _ in range(60):
        probs = logits.sigmoid()
        soft = (logits + logistic).sigmoid()  # relaxed Bernoulli sample at tau = 1
        devs.append((probs.mean(0) - 0.5).abs().detach())
        opt.zero_grad()
        prior_matching_penalty(probs, soft).backward()
        if len(devs) == 1:
            grad = logits.grad.mean(0)
            assert grad[0] > 0 and grad[1] < 0 and grad[2] > 0  # descent lowers P(1) above 0.5, raises below
        opt.step()
    assert (devs[-1][:3] < 0.5 * devs[0][:3]).all()
    assert devs[-1].max() < 0.1


def test_prior_confidence_adds_mean_bit_entropy_and_its_gradient_sharpens_bits():
    cfg = dmz.config.resolve("digits", {**TINY_RUN, "prior_confidence": 0.5})
    torch.manual_seed(0)
    prior = build_prior(cfg.model, 1, 16)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(32, 1, 16, 16, generator=g) * 2 - 1
    out = prior(x, torch.rand(32, 8, 2, generator=g))
    def bit_entropy(prior):
        with torch.no_grad():
            p = prior.logits(x).softmax(-1)[..., 1]
        return p, -(p * p.log2() + (1 - p) * (1 - p).log2())

    p, ent = bit_entropy(prior)
    assert float(out.aux_loss.detach()) == pytest.approx(0.5 * float(ent.mean()), rel=1e-5)  # no matching term
    out.aux_loss.backward()  # then one descent step on the encoder's weights
    enc = [q for q in prior.parameters() if q.grad is not None]
    assert enc
    with torch.no_grad():
        for q in enc:
            q -= 0.05 * q.grad
    p2, ent2 = bit_entropy(prior)
    assert float(ent2.mean()) < float(ent.mean())  # bits move away from 0.5 (a negated penalty fails here)
    assert float((p2 - 0.5).abs().mean()) > float((p - 0.5).abs().mean())


def test_prior_matching_default_weight_leaves_released_loss_unchanged(runs):
    cfg0 = dmz.config.resolve("digits", TINY_RUN)
    assert cfg0.model.prior_matching == 0.0
    cfg1 = dmz.config.resolve("digits", {**TINY_RUN, "prior_matching": 0.5})
    torch.manual_seed(0)
    p0 = build_prior(cfg0.model, 1, 16)
    p1 = build_prior(cfg1.model, 1, 16)
    p1.load_state_dict(p0.state_dict())
    g = torch.Generator().manual_seed(1)
    x = torch.rand(32, 1, 16, 16, generator=g) * 2 - 1
    noise = torch.rand(32, 8, 2, generator=g)
    o0, o1 = p0(x, noise), p1(x, noise)
    assert torch.equal(o0.cond, o1.cond)  # the UNet sees the same z
    assert float(o0.aux_loss) == 0.0 and not o0.aux_loss.requires_grad
    y = o1.cond.view(32, 8, 2)[..., 1]
    probs = p1.logits(x).softmax(-1)[..., 1]
    aux = float(o1.aux_loss.detach())
    assert aux == pytest.approx(0.5 * float(prior_matching_penalty(probs, y).detach()), rel=1e-5)
    assert aux > 0 and o1.aux_loss.requires_grad
    # and the trained tiny run (default config) added nothing to the diffusion loss
    rows = read_jsonl(runs["bernoulli"] / "metrics.jsonl")
    assert rows and all(r["aux"] == 0.0 for r in rows)


# ------------------------------------------------------------------------------------------------ module name

def test_learned_zsampler_lives_in_zsamplers():
    import importlib.util
    import subprocess
    import sys

    import dmz.zsamplers.pixelsnail as ps

    assert ZSAMPLERS["pixelsnail"] is ps.PixelSNAILZSampler
    assert importlib.util.find_spec("dmz.prior") is None  # the old alias module is gone
    out = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-m", "dmz.zsamplers", "--help"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "usage: python -m dmz.zsamplers" in out.stdout, out.stderr
