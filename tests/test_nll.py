"""evaluation.nll / ``evaluation.run --metrics nll`` on tiny digits runs with 4 diffusion steps (seconds on one thread).

The bound is checked against one assembled here from the formulas (cosine schedule, q posterior, learned-range
variance, Gaussian KL, tanh-approximated discretised decoder, prior KL), with the documented per-image noise seeds.
"""

import math

import numpy as np
import pytest
import torch
from conftest import tiny_overrides

import dmz.config
import dmz.trainer
import evaluation.run as ev
from dmz.run import encode_split, load_run
from dmz.runio import read_jsonl
from dmz.zsamplers.pixelsnail import fit_pixelsnail, load_pixelsnail
from evaluation import nll

torch.set_num_threads(1)

STEPS = 4  # diffusion steps of the tiny runs
DIMS = 16 * 16  # digits: 1 x 16 x 16
# ablations/grids.py requested_rows for "nll": these must be answerable by the rows (None matches anything)
GRID_REQUESTS = [{"metric": m, "reference": s, "T": None, "N": None}
                 for m in ("nll_bpd", "nll_bpd_z") for s in ("train", "test")]


def quiet(msg):
    pass


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("nll-runs")
    out = {}
    for name, extra in {"bernoulli": {"latent_dim": 8}, "none": {"prior": "none"},
                        "categorical": {"prior": "categorical", "latent_dim": 3, "categories": 4},
                        "normal": {"prior": "normal"}}.items():
        cfg = dmz.config.resolve("digits", tiny_overrides(diffusion_steps=STEPS, **extra))
        dmz.trainer.train(cfg, root / name, progress=False)
        out[name] = root / name
    return out


# ------------------------------------------------------------------------------------------------------------------
# (a) the bound against one assembled by hand


def _cdf(z):  # I-DDPM's tanh approximation of the standard normal CDF
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (z + 0.044715 * z ** 3)))


def _abar(s):  # the cosine schedule's alpha-bar at s in [0, 1]
    return math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2


def _gauss_kl(m1, lv1, m2, lv2):  # KL(N(m1, e^lv1) || N(m2, e^lv2)), elementwise, nats
    return 0.5 * (-1 + lv2 - lv1 + torch.exp(lv1 - lv2) + (m1 - m2) ** 2 * torch.exp(-lv2))


def _bits_per_dim(a):  # elementwise nats -> bits/dim per image
    return a.flatten(1).mean(1) / math.log(2.0)


def hand_vlb(run, x0, cond, seeds):
    """Per-image bits/dim: L_T + sum_{t>=1} L_{t-1} + L_0, float64, noise drawn at t = T-1 .. 0 from each seed."""
    T = run.cfg.diffusion.diffusion_steps
    betas = np.array([min(1 - _abar((i + 1) / T) / _abar(i / T), 0.999) for i in range(T)])
    ab = np.cumprod(1 - betas)
    ab_prev = np.append(1.0, ab[:-1])
    post_var = betas * (1 - ab_prev) / (1 - ab)
    post_logvar = np.log(np.append(post_var[1], post_var[1:]))  # t=0: the t=1 value (the true one is 0)
    x0 = x0.double()
    B, C = x0.shape[:2]
    m_T, v_T = math.sqrt(ab[-1]) * x0, 1 - ab[-1]
    terms = {"prior": _bits_per_dim(_gauss_kl(m_T, torch.full_like(x0, math.log(v_T)), torch.zeros_like(x0),
                                         torch.zeros_like(x0)))}
    gens = [torch.Generator().manual_seed(s) for s in seeds]
    kl_sum = torch.zeros(B, dtype=torch.float64)
    for t in reversed(range(T)):
        eps = torch.stack([torch.randn(x0.shape[1:], generator=g) for g in gens]).double()
        x_t = math.sqrt(ab[t]) * x0 + math.sqrt(1 - ab[t]) * eps
        with torch.no_grad():
            out = run.model(x_t.float(), torch.full((B,), t, dtype=torch.long), cond=cond).double()
        eps_hat, v = out[:, :C], out[:, C:]
        frac = (v + 1) / 2
        logvar = frac * math.log(betas[t]) + (1 - frac) * post_logvar[t]
        x0_hat = ((x_t - math.sqrt(1 - ab[t]) * eps_hat) / math.sqrt(ab[t])).clamp(-1, 1)
        c1 = betas[t] * math.sqrt(ab_prev[t]) / (1 - ab[t])
        c2 = (1 - ab_prev[t]) * math.sqrt(1 - betas[t]) / (1 - ab[t])
        mu = c1 * x0_hat + c2 * x_t
        if t > 0:
            q_mu = c1 * x0 + c2 * x_t
            kl_sum += _bits_per_dim(_gauss_kl(q_mu, torch.full_like(x0, post_logvar[t]), mu, logvar))
        else:
            inv_sd = torch.exp(-0.5 * logvar)
            plus, minus = _cdf(inv_sd * (x0 - mu + 1 / 255)), _cdf(inv_sd * (x0 - mu - 1 / 255))
            logp = torch.where(x0 < -0.999, torch.log(plus),
                               torch.where(x0 > 0.999, torch.log(1 - minus), torch.log(plus - minus)))
            terms["decoder"] = -_bits_per_dim(logp)
    terms["kl"] = kl_sum
    terms["total"] = terms["prior"] + terms["kl"] + terms["decoder"]
    return {k: v.numpy() for k, v in terms.items()}


@pytest.mark.parametrize("prior", ["bernoulli", "none"])
def test_vlb_matches_the_bound_assembled_by_hand(runs, prior):
    run = load_run(runs[prior], device="cpu")
    n = 5
    got = nll.nll_for_split(run, "test", n, micro_batch=4)
    x0 = torch.stack([run.dataset("test")[i][0] for i in range(n)])
    assert (x0 < -0.999).any() and ((x0 > -0.999) & (x0 < 0.999)).any()  # both decoder branches are exercised
    codes = encode_split(run, "test")[0][:n] if prior != "none" else torch.zeros(n, 0, dtype=torch.long)
    assert torch.equal(got["codes"], codes)
    seeds = [1_000_000 + i for i in range(n)]  # the documented protocol: test split, image i
    want = hand_vlb(run, x0, run.model.latent.code_to_cond(codes), seeds)
    for mine, theirs in (("total_bpd", "total"), ("prior_bpd", "prior"), ("decoder_bpd", "decoder"),
                         ("kl_bpd", "kl")):
        np.testing.assert_allclose(got[mine], want[theirs], rtol=1e-4, atol=1e-7, err_msg=mine)
    assert got["dims"] == DIMS and got["n"] == n
    assert got["vb_mean_per_t"].shape == (STEPS,)
    np.testing.assert_allclose(got["vb_mean_per_t"][0], got["decoder_bpd"].mean(), rtol=1e-12)
    np.testing.assert_allclose(got["vb_mean_per_t"][1:].sum(), got["kl_bpd"].mean(), rtol=1e-12)
    # another image's noise (seeds off by one) gives another bound: the seeds are part of what is checked
    other = hand_vlb(run, x0, run.model.latent.code_to_cond(codes), [s + 1 for s in seeds])
    assert np.abs(other["total"] - want["total"]).max() > 1e-4


def test_bound_does_not_depend_on_batch_size(runs):
    run = load_run(runs["bernoulli"], device="cpu")
    x0 = torch.stack([run.dataset("train")[i][0] for i in range(5)])
    codes, seeds = encode_split(run, "train")[0][:5], nll.noise_seeds("train", 5)
    a = nll.vlb_bpd(run, x0, codes, seeds, batch_size=2, micro_batch=2)
    b = nll.vlb_bpd(run, x0, codes, seeds, batch_size=6, micro_batch=2)
    assert np.array_equal(a["total_bpd"], b["total_bpd"])
    c = nll.vlb_bpd(run, x0, codes, nll.noise_seeds("test", 5), batch_size=6, micro_batch=2)
    assert not np.array_equal(a["total_bpd"], c["total_bpd"])


# ------------------------------------------------------------------------------------------------------------------
# (b) coding cost of z, (c) rows, keys and re-running


def _by(rows, metric, split, sampler="any"):
    out = [r for r in rows if r["metric"] == metric and r["reference"] == split
           and (sampler == "any" or r["sampler"] == sampler)]
    assert len(out) == 1, (metric, split, sampler, out)
    return out[0]


@pytest.mark.parametrize("prior,bits", [("bernoulli", 8.0), ("none", 0.0), ("categorical", 3 * 2.0)])
def test_coding_cost_rows(runs, prior, bits):
    rows = ev.evaluate(runs[prior], metrics=["nll"], nll_images=3, device="cpu", log=quiet)
    assert len(rows) == 4
    for split in ("train", "test"):
        v, z = _by(rows, "nll_bpd", split), _by(rows, "nll_bpd_z", split)
        assert v["sampler"] is None and z["sampler"] == "prior"
        assert z["z_bits"] == bits and v["z_bits"] is None
        assert z["value"] - v["value"] == pytest.approx(bits / DIMS, abs=1e-12)  # |z| (log2 K) bits over C*H*W dims
        assert z["sd"] == pytest.approx(v["sd"], abs=1e-12)  # a constant cost moves every image alike
        if prior == "none":
            assert z["value"] == v["value"]


def test_continuous_z_has_no_coding_cost_row(runs):
    msgs = []
    rows = ev.evaluate(runs["normal"], metrics=["nll"], nll_images=2, device="cpu", log=msgs.append)
    assert sorted((r["metric"], r["reference"]) for r in rows) == [("nll_bpd", "test"), ("nll_bpd", "train")]
    assert all(r["repr"] == "sample" for r in rows)
    assert any("continuous z" in m for m in msgs)


def test_rows_carry_the_contract_and_rerunning_skips(runs, monkeypatch, capsys):
    run_dir = runs["bernoulli"]
    rows = ev.evaluate(run_dir, metrics=["nll"], nll_images=3, device="cpu", log=quiet)
    n_test = len(load_run(run_dir, device="cpu").dataset("test"))
    for r in rows:
        assert r["T"] is None and r["N"] == 3 and r["reference"] in ("train", "test") and r["timesteps"] == STEPS
        assert r["se"] == pytest.approx(r["sd"] / math.sqrt(3))
        assert r["precision"] == "fp32" and r["repr"] == "hard" and r["checkpoint_step"] == 3
    v = _by(rows, "nll_bpd", "test")
    assert len(v["values"]) == 3 and v["value"] == pytest.approx(np.mean(v["values"]))
    assert v["sd"] == pytest.approx(np.std(v["values"], ddof=1))
    assert v["value"] == pytest.approx(v["prior_bpd"] + v["kl_bpd"] + v["decoder_bpd"])
    for want in GRID_REQUESTS:  # what ablations/grids.py requested_rows asks of a finished cell
        assert any(all(w is None or r.get(k) == w for k, w in want.items()) for r in rows), want
    # N is in the key: another N is another row
    four = ev.evaluate(run_dir, metrics=["nll"], nll_images=4, device="cpu", log=quiet)
    assert {r["N"] for r in four} == {4} and len(four) == 4
    assert nll.first_images(load_run(run_dir, device="cpu"), "test", 10 ** 5).shape[0] == n_test  # N <= split size

    def boom(*a, **k):
        raise AssertionError("the bound was recomputed")

    monkeypatch.setattr(nll, "vlb_bpd", boom)
    again = ev.evaluate(run_dir, metrics=["nll"], nll_images=3, device="cpu", log=quiet)
    assert [r["timestamp"] for r in again] == [r["timestamp"] for r in rows]
    n_file = len(read_jsonl(run_dir / ev.RESULTS_FILE))

    # a PixelSNAIL fitted later adds its nll_bpd_z rows from the stored per-image bound, without recomputing it
    fit_pixelsnail(run_dir, width=8, epochs=1, patience=1, released_patience=1, device="cpu",
                   model_kwargs={"channel": 16, "res_channel": 16, "n_block": 1, "n_res_block": 1, "n_head": 2})
    rows2 = ev.evaluate(run_dir, metrics=["nll"], nll_images=3, device="cpu", log=quiet)
    assert len(read_jsonl(run_dir / ev.RESULTS_FILE)) == n_file + 2
    run = load_run(run_dir, device="cpu")
    model = load_pixelsnail(run)[0]
    from dmz.zsamplers.pixelsnail_net import nll_bits

    for split in ("train", "test"):
        v, ps = _by(rows2, "nll_bpd", split), _by(rows2, "nll_bpd_z", split, "pixelsnail")
        bits = nll_bits(model, encode_split(run, split)[0][:3]).numpy()
        assert ps["z_bits"] == pytest.approx(bits.mean())
        assert ps["value"] == pytest.approx(np.mean(np.asarray(v["values"]) + bits / DIMS), abs=1e-12)
        assert ps["sd"] == pytest.approx(np.std(np.asarray(v["values"]) + bits / DIMS, ddof=1), abs=1e-12)

    # the CLI: --metrics nll --nll-images, a table with the split column
    assert ev.main(["--run", str(run_dir), "--metrics", "nll", "--nll-images", "3", "--device", "cpu",
                    "--no-progress"]) == 0
    table = capsys.readouterr().out
    assert "reference" in table and "nll_bpd_z" in table and "pixelsnail" in table
    assert len(read_jsonl(run_dir / ev.RESULTS_FILE)) == n_file + 2  # nothing recomputed


def test_nll_images_is_validated(runs):
    with pytest.raises(ev.EvaluationError, match="nll-images"):
        ev.evaluate(runs["none"], metrics=["nll"], nll_images=0, device="cpu", log=quiet)


def test_code_models_are_the_zsamplers_that_score(runs):
    """``code_models`` gives the ``prior`` z-sampler (and ``pixelsnail`` once fitted), each a CodeModel: the coding
    cost of z is the bits of the distribution that z-sampler draws from."""
    from dmz.zsamplers import CodeModel, PriorZSampler
    from dmz.zsamplers.pixelsnail import PIXELSNAIL_FILE, PixelSNAILZSampler

    for name, bits in (("none", 0.0), ("bernoulli", 8.0), ("categorical", 3 * math.log2(4))):
        run = load_run(runs[name], device="cpu")
        models = nll.code_models(run, quiet)
        fitted = (run.path / PIXELSNAIL_FILE).exists()  # another test of this module fits the bernoulli run
        assert set(models) == ({"prior", "pixelsnail"} if fitted else {"prior"})
        assert isinstance(models["prior"], PriorZSampler) and all(isinstance(m, CodeModel) for m in models.values())
        codes = nll.split_codes(run, "test", 3)
        got = models["prior"].nll_bits(codes)
        assert got.dtype == torch.float64 and got.tolist() == [bits] * 3
        if fitted:
            from dmz.zsamplers.pixelsnail_net import nll_bits

            assert isinstance(models["pixelsnail"], PixelSNAILZSampler)
            assert torch.equal(models["pixelsnail"].nll_bits(codes), nll_bits(load_pixelsnail(run)[0], codes))
    assert nll.code_models(load_run(runs["normal"], device="cpu"), quiet) is None
