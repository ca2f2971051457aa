"""evaluation.run / evaluation.recon on tiny trained digits runs (seconds on one CPU thread)."""

import json
import math

import numpy as np
import pytest
import torch

import dmz
import dmz.config
import dmz.data
import dmz.trainer
import evaluation.run as ev
from dmz.accel import MicroBatched
from dmz.run import encode_images, encode_split, load_run, representations
from dmz.runio import read_jsonl
from dmz.sampling import generate
from dmz.zsamplers import build_zsampler
from evaluation.features import DIGITS_CLASSIFIER_NAME
from evaluation.recon import derangement, reconstruction_mse

torch.set_num_threads(1)

TINY = {"base_channels": 8, "latent_dim": 4, "attention_head_dim": 2, "batch_size": 16, "steps": 3, "log_every": 1,
        "warmup_steps": 0}
SMALL = dict(steps=(2, 3), num_samples=16, seeds=2)  # a cheap FID request

REQUIRED = ("run_id", "preset", "dataset", "prior", "latent_dim", "conditioning", "estimator", "prior_matching", "seed",
            "train_steps", "checkpoint_step", "metric", "value", "sd", "N", "T", "sampler", "feature_extractor",
            "seeds", "repr", "eval_seconds", "version", "timestamp")


@pytest.fixture(scope="module", autouse=True)
def cache(tmp_path_factory):
    d = tmp_path_factory.mktemp("dmz-cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DMZ_CACHE_DIR", str(d))
        mp.setenv("OMP_NUM_THREADS", "1")
        yield d


def _train(path, **extra):
    cfg = dmz.config.resolve("digits", {**TINY, **extra})
    dmz.trainer.train(cfg, path, progress=False)
    return path


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("runs") / "dmz")


@pytest.fixture(scope="module")
def run(run_dir):
    return load_run(run_dir, device="cpu")


# ------------------------------------------------------------------------------------------------------------------
# batch-size invariance


def test_micro_batched_makes_a_batch_dependent_function_invariant():
    calls = []

    def fn(x, t, cond=None):  # result depends on the call's batch size, like a blocked GEMM's last bits
        calls.append(x.shape[0])
        return x * x.shape[0] + t[:, None] + cond

    x, t, c = torch.randn(10, 3), torch.arange(10.0), torch.randn(10, 3)
    ref = MicroBatched(fn, 4)(x, t, cond=c)
    assert calls == [4, 4, 4]  # the tail of 2 rows is padded to 4
    for b in (1, 3, 7):
        parts = [MicroBatched(fn, 4)(x[i:i + b], t[i:i + b], cond=c[i:i + b]) for i in range(0, 10, b)]
        assert torch.equal(torch.cat(parts), ref)
    assert not torch.equal(fn(x, t, cond=c), ref)  # (without micro-batching the batch size shows)


def test_sample_set_bit_identical_across_batch_sizes(run):
    seeds = list(range(10))
    a = generate(run, steps=4, seeds=seeds, batch_size=10, micro_batch=4)
    b = generate(run, steps=4, seeds=seeds, batch_size=3, micro_batch=4)
    c = generate(run, steps=4, seeds=seeds, batch_size=1, micro_batch=4)
    assert torch.equal(a, b) and torch.equal(a, c)
    # a sample depends on its own seed only: a subset (other positions, other batch companions) gives the same images
    assert torch.equal(generate(run, steps=4, seeds=seeds[3:], batch_size=2, micro_batch=4), a[3:])
    # the default micro-batch too
    assert torch.equal(generate(run, steps=4, seeds=seeds, batch_size=5),
                       generate(run, steps=4, seeds=seeds, batch_size=256))
    assert torch.isfinite(a).all() and a.abs().max() <= 1


def test_same_z_at_every_T(run):
    drawn = {}

    class Spy:
        def __init__(self, T):
            self.inner, self.T = build_zsampler("prior", run), T

        def sample(self, n, rng, device):
            z = self.inner.sample(n, rng, device)
            drawn.setdefault(self.T, []).append(z)
            return z

    for T in (2, 5):
        generate(run, steps=T, seeds=range(6), zsampler=Spy(T), batch_size=256)
    assert torch.equal(torch.cat(drawn[2]), torch.cat(drawn[5]))


# ------------------------------------------------------------------------------------------------------------------
# result rows, skipping, force


@pytest.fixture(scope="module")
def first_rows(run_dir):
    return ev.evaluate(run_dir, metrics=("fid", "probe", "recon"), kid=True, recon_images=4, recon_decodes=2,
                       device="cpu", **SMALL)


def test_rows_carry_required_fields(first_rows, run_dir):
    stored = read_jsonl(run_dir / ev.RESULTS_FILE)
    assert len(stored) == len(first_rows) > 0
    metrics = {r["metric"] for r in stored}
    assert {"fid", "kid_mean", "probe_acc_cv", "probe_acc_heldout", "probe_auroc_cv", "probe_auroc_heldout",
            "recon_mse", "recon_mse_shuffled"} <= metrics
    cfg = load_run(run_dir, device="cpu").cfg
    for r in stored:
        missing = [k for k in REQUIRED if k not in r]
        assert not missing, (r["metric"], missing)
        assert r["run_id"] == cfg.run_id() and r["prior"] == "bernoulli" and r["latent_dim"] == 4
        assert r["checkpoint_step"] == 3 and r["train_steps"] == 3 and r["version"] == dmz.__version__
        assert r["value"] is not None and math.isfinite(r["value"])
    fid = [r for r in stored if r["metric"] in ("fid", "kid_mean")]
    assert sorted({r["T"] for r in fid}) == [2, 3]
    for r in fid:
        assert r["feature_extractor"] == DIGITS_CLASSIFIER_NAME and "inception" not in r["feature_extractor"]
        assert r["feature_extractor_weights_sha256"] and r["N"] == 16 and r["seeds"] == 2 and r["sampler"] == "prior"
        assert len(r["values"]) == 2 and r["value"] == pytest.approx(np.mean(r["values"]))
        assert r["sd"] == pytest.approx(np.std(r["values"], ddof=1))
        assert r["seed_offsets"] == [0, 1_000_000] and r["n_ref"] == 1437
    probe = [r for r in stored if r["metric"].startswith("probe_")]
    assert all(r["repr"] == "soft" and r["T"] is None and r["feature_extractor"] is None for r in probe)
    assert {r["N"] for r in probe} == {1797, 360}
    acc = [r for r in probe if "_acc_" in r["metric"]]
    assert all(0 <= r["value"] <= 1 for r in probe) and all(len(r["values"]) == 5 for r in acc if "cv" in r["metric"])
    recon = [r for r in stored if r["metric"].startswith("recon")]
    assert all(r["units"] == "[-1,1]" and r["N"] == 4 and r["seeds"] == 2 for r in recon)
    # every line is a complete JSON object
    for line in (run_dir / ev.RESULTS_FILE).read_text().splitlines():
        json.loads(line)


def test_rerun_skips_existing_rows_and_force_recomputes(first_rows, run_dir, monkeypatch, capsys):
    n_before = len(read_jsonl(run_dir / ev.RESULTS_FILE))
    gen_calls, repr_calls = [], []
    import dmz.run
    import dmz.sampling

    # evaluation.run imports these where it uses them (fast --help): patch them where they live
    real_generate, real_repr = dmz.sampling.generate, dmz.run.representations
    monkeypatch.setattr(dmz.sampling, "generate", lambda *a, **k: gen_calls.append(k["steps"]) or real_generate(*a, **k))
    monkeypatch.setattr(dmz.run, "representations", lambda *a, **k: repr_calls.append(a[1]) or real_repr(*a, **k))

    again = ev.evaluate(run_dir, metrics=("fid", "probe"), kid=True, device="cpu", **SMALL)
    assert gen_calls == [] and repr_calls == []
    assert len(read_jsonl(run_dir / ev.RESULTS_FILE)) == n_before
    assert {(r["metric"], r["T"]) for r in again} <= {(r["metric"], r["T"]) for r in first_rows}

    # the CLI with the same request: nothing new, a table on stdout
    rc = ev.main(["--run", str(run_dir), "--steps", "2", "3", "--num-samples", "16", "--seeds", "2", "--kid",
                  "--device", "cpu", "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0 and gen_calls == [] and "fid" in out and DIGITS_CLASSIFIER_NAME in out
    assert len(read_jsonl(run_dir / ev.RESULTS_FILE)) == n_before

    # a new T is computed alone (2 seeds); a different N is a different key
    ev.evaluate(run_dir, metrics=("fid",), steps=(2, 3, 4), num_samples=16, seeds=2, device="cpu")
    assert gen_calls == [4, 4]
    # --force recomputes every requested row
    gen_calls.clear()
    forced = ev.evaluate(run_dir, metrics=("fid", "probe"), device="cpu", force=True, **SMALL)
    assert sorted(gen_calls) == [2, 2, 3, 3] and repr_calls == ["train", "test"]
    assert len(read_jsonl(run_dir / ev.RESULTS_FILE)) == n_before + 1 + len(forced)  # forced rows are appended
    # deterministic: recomputed FIDs equal the first ones
    old = {r["T"]: r["values"] for r in first_rows if r["metric"] == "fid"}
    assert {r["T"]: r["values"] for r in forced if r["metric"] == "fid"} == old


def test_keep_samples_writes_the_scored_images(run_dir, run):
    rows = ev.evaluate(run_dir, metrics=("fid",), steps=(2,), num_samples=16, seeds=1, keep_samples=True,
                       device="cpu")
    assert [r["seeds"] for r in rows] == [1]
    with np.load(run_dir / "samples" / "ddpm-T2-prior-seed0-n16.npz") as z:
        u8 = z["arr_0"]
    assert u8.shape == (16, 16, 16, 1) and u8.dtype == np.uint8
    again = generate(run, steps=2, seeds=range(16))  # seed 0's images: sample seeds 0..15
    assert np.array_equal(u8, dmz.data.to_uint8(again).permute(0, 2, 3, 1).numpy())


# ------------------------------------------------------------------------------------------------------------------
# prior=none, reconstruction


def test_prior_none_skips_probe_and_recon(tmp_path):
    d = _train(tmp_path / "ddpm", prior="none")
    msgs = []
    rows = ev.evaluate(d, metrics=("probe", "recon"), steps=(2,), device="cpu", log=msgs.append)
    assert rows == [] and any("probe: skipped" in m for m in msgs) and any("recon: skipped" in m for m in msgs)
    rows = ev.evaluate(d, metrics=("fid",), samplers=("prior", "empirical"), steps=(2,), num_samples=16, seeds=1,
                       device="cpu", log=msgs.append)
    assert [(r["metric"], r["sampler"], r["prior"]) for r in rows] == [("fid", "prior", "none")]
    assert any("'empirical' skipped" in m for m in msgs)


def test_reconstruction_mse(run):
    r = reconstruction_mse(run, steps=3, images=4, decodes=3)
    assert 0.0 <= r["mse"] <= 4.0 and math.isfinite(r["mse"])  # [-1, 1] units: at most (1 - (-1))^2
    assert r["mse_01"] == pytest.approx(r["mse"] / 4)
    assert r["mse"] == pytest.approx(np.mean(r["per_decode"])) == pytest.approx(np.mean(r["per_image"]))
    assert len(r["per_decode"]) == 3 and len(r["per_image"]) == 4 and r["sd"] > 0
    # per-image seeds: image j's decodes do not depend on how many images are reconstructed, nor on the batch size
    r2 = reconstruction_mse(run, steps=3, images=2, decodes=3, batch_size=1)
    assert r2["per_image"] == r["per_image"][:2]
    # shuffled codes: every image decoded from another image's code
    perm = derangement(6)
    assert (perm != torch.arange(6)).all() and sorted(perm.tolist()) == list(range(6))
    s = reconstruction_mse(run, steps=3, images=4, decodes=3, shuffle=True)
    assert 0.0 <= s["mse"] <= 4.0 and s["shuffled"]


def test_one_encoding_one_seeding_rule(run):
    """encode_images: image i's noise is row i of one stream, so codes do not depend on the batching; encode_split
    and the representations are that function over the split, and its seed is the only thing that moves them."""
    x = run.dataset("test").images[:9]
    a = encode_images(run, [x], seed=0, micro_batch=4)
    b = encode_images(run, list(x.split(2)), seed=0, micro_batch=4)
    assert torch.equal(a, b) and a.dtype == torch.long and set(a.unique().tolist()) <= {0, 1}
    codes, labels = encode_split(run, "test", batch_size=5, cache=False)
    again, _ = encode_split(run, "test", batch_size=512, cache=False)
    assert torch.equal(codes, again) and len(codes) == len(labels) == len(run.dataset("test"))
    assert torch.equal(codes[:9], encode_images(run, [x], seed=0))
    other = encode_split(run, "test", seed=1, cache=False)[0]
    assert not torch.equal(codes, other)  # the Gumbel noise matters: another seed flips some bits
    feats, _ = representations(run, "test", "hard", batch_size=7)
    assert torch.equal(feats, codes.float())


# ------------------------------------------------------------------------------------------------------------------
# CLI errors


def test_cli_errors(tmp_path, run_dir, capsys):
    assert ev.main(["--run", str(tmp_path / "missing")]) != 0
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert ev.main(["--run", str(tmp_path / "empty")]) != 0
    assert "not a run folder" in capsys.readouterr().err
    assert ev.main(["--run", str(run_dir), "--sampler", "bogus"]) != 0
    err = capsys.readouterr().err
    assert "unknown z-sampler 'bogus'" in err and "prior" in err and "empirical" in err
    assert ev.main(["--run", str(run_dir), "--metrics", "lpips"]) != 0
    assert "unknown metric 'lpips'" in capsys.readouterr().err


def test_latest_rows_keeps_the_last_row_per_key():
    a = {"run_dir": "r", "metric": "fid", "T": 10, "value": 1.0}
    b = {**a, "value": 2.0}
    c = {**a, "T": 20}
    assert ev.latest_rows([a, c, b]) == [b, c]
