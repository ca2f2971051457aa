"""evaluation.mi: the I(z; x_t) estimators on pairs with a known answer, the rows of ``--metrics mi`` on a tiny run,
and what the grids ask of them."""

import math

import numpy as np
import pytest
import torch
from scipy import integrate

import dmz.config
import dmz.trainer
import evaluation.run as ev
from ablations.collect import pool_training_seeds
from ablations.grids import expand, requested_rows, row_matches
from ablations.mi_curve import mi_table, split_mi
from dmz.model import build_diffusion
from dmz.runio import read_jsonl
from evaluation.mi import estimate_mi, forward_noised, noise_index
from evaluation.mi_settings import RELEASE_T, MIConfig, MIError, parse_spec

torch.set_num_threads(1)
FAST = dict(epochs=60, lr=1e-3)  # measured: ~4-8 s per estimate of 1,500 pairs on one thread


def bpsk_bits(sigma: float) -> float:
    """I(b; y) for b uniform on {-1, +1} and y = b + N(0, sigma^2): 1 - E[log2(1 + exp(-2y / sigma^2)) | b = 1]."""
    f = lambda y: (math.exp(-(y - 1) ** 2 / (2 * sigma ** 2)) / math.sqrt(2 * math.pi * sigma ** 2)  # noqa: E731
                   * np.logaddexp(0, -2 * y / sigma ** 2) / math.log(2))
    return 1 - integrate.quad(f, 1 - 12 * sigma, 1 + 12 * sigma, limit=200)[0]


def pairs(n, d, sigma, seed=0):
    g = torch.Generator().manual_seed(seed)
    z = (torch.rand(n, d, generator=g) > 0.5).long()
    return (2 * z - 1).float() + sigma * torch.randn(n, d, generator=g), z


def test_release_t_grid():
    assert RELEASE_T[:10] == tuple(round(0.1 * i, 1) for i in range(10)) and len(RELEASE_T) == 20
    assert RELEASE_T[10:] == (0.91, 0.92, 0.93, 0.94, 0.95, 0.96, 0.97, 0.98, 0.99, 1.0)
    assert noise_index(0, 1000) is None and noise_index(0.1, 1000) == 99 and noise_index(1.0, 1000) == 999


def test_code_against_itself_reads_its_entropy():
    """x = z (4 fair bits, noise 0.01): I(z; x) = H(z) = 4 bits; the bound reads most of it and never more."""
    x, z = pairs(1500, 4, 0.01)
    r = estimate_mi(x, z, MIConfig(**FAST))
    assert abs(r["h_z_bits"] - 4) < 0.02
    assert 3.3 < r["bits"] < 4.1, r


def test_noisy_channel_with_a_known_answer():
    """4 bits through a Gaussian channel of sd 1: 4 x 0.486 = 1.94 bits (numerical integral)."""
    true = 4 * bpsk_bits(1.0)
    assert abs(true - 1.944) < 0.01
    x, z = pairs(1500, 4, 1.0, seed=1)
    r = estimate_mi(x, z, MIConfig(**FAST))
    assert true - 0.6 < r["bits"] < true + 0.2, (true, r)


def test_independent_pairs_read_about_zero():
    g = torch.Generator().manual_seed(2)
    z = (torch.rand(1500, 8, generator=g) > 0.5).long()
    r = estimate_mi(torch.randn(1500, 8, generator=g), z, MIConfig(**FAST))
    assert r["bits"] < 0.15 and r["best_epoch"] <= FAST["epochs"]


def test_infonce_is_capped_by_log_batch():
    x, z = pairs(600, 8, 0.01, seed=3)  # 8 bits of MI, batch 16: InfoNCE can read at most log2 16 = 4 bits
    r = estimate_mi(x, z, MIConfig(estimator="infonce", epochs=30, lr=1e-3, batch_size=16))
    assert 2.0 < r["bits"] <= 4.0 + 1e-6


def test_repeatable():
    x, z = pairs(400, 3, 0.5, seed=4)
    a, b = (estimate_mi(x, z, MIConfig(epochs=3)) for _ in range(2))
    assert a["bits"] == b["bits"] and a["train_bits"] == b["train_bits"]


@pytest.mark.parametrize("spec, msg", [("nope", "unknown MI estimator 'nope'; valid: mine, infonce"),
                                       ("mine:epoch=3", "bad MI estimator option 'epoch=3'"),
                                       ("mine:epochs=x", "epochs='x' must be an integer"),
                                       ("mine:heldout=0.5,val=0.5", "heldout + val < 1")])
def test_bad_estimator_specs_say_what_to_give(spec, msg):
    with pytest.raises(MIError, match=msg.replace("(", r"\(").replace("+", r"\+")):
        parse_spec(spec)


def test_parse_spec_roundtrip():
    c = parse_spec("infonce:epochs=5,lr=0.01,batch_size=32")
    assert (c.estimator, c.epochs, c.lr, c.batch_size) == ("infonce", 5, 0.01, 32)
    assert parse_spec("mine") == MIConfig()


def test_too_few_pairs_is_one_line():
    with pytest.raises(MIError, match="too few pairs"):
        estimate_mi(torch.zeros(50, 2), torch.zeros(50, 2), MIConfig())


# ------------------------------------------------------------------------------------------------------------------
# --metrics mi on a tiny trained run


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("runs") / "dmz"
    cfg = dmz.config.resolve("digits", {"base_channels": 8, "latent_dim": 4, "attention_head_dim": 2, "batch_size": 16,
                                        "steps": 3, "log_every": 1, "warmup_steps": 0, "logger": "none",
                                        "sampling_compile": False})
    dmz.trainer.train(cfg, path, progress=False)
    return path


def test_forward_noised_ends():
    cfg = dmz.config.resolve("digits", {})
    d = build_diffusion(cfg)
    x0 = torch.rand(4, 1, 8, 8) * 2 - 1
    assert torch.equal(forward_noised(d, x0, 0.0, 0), x0)
    assert torch.equal(forward_noised(d, x0, 0.5, 7), forward_noised(d, x0, 0.5, 7))
    far = forward_noised(d, x0, 1.0, 0)
    assert abs(float(far.std()) - 1) < 0.3 and float((far - x0).abs().mean()) > 0.5


def test_mi_rows_one_per_noise_level(run_dir, capsys):
    rows = ev.evaluate(run_dir, metrics=["mi"], mi="mine:epochs=2", mi_t=[0.0, 1.0])
    mi = [r for r in rows if r["metric"] == "mi_bits"]
    assert [r["noise_t"] for r in mi] == [0.0, 1.0]
    assert {r["mi_estimator"] for r in mi} == {"mine:epochs=2"} and {r["N"] for r in mi} == {1437}  # digits train
    assert all(0 <= r["h_z_bits"] <= 4 + 1e-9 and r["mi_settings"]["epochs"] == 2 for r in mi)
    again = ev.evaluate(run_dir, metrics=["mi"], mi="mine:epochs=2", mi_t=[0.0, 1.0])
    assert len(read_jsonl(run_dir / "results.jsonl")) == 2 and [r["value"] for r in again] == [r["value"] for r in mi]
    probe = ev.evaluate(run_dir, metrics=["probe"])  # other metrics' rows do not grow the MI key columns
    assert probe and not any("noise_t" in r or "mi_estimator" in r for r in probe)
    assert ev.main(["--run", str(run_dir), "--metrics", "mi", "--mi", "mine:epoch=2"]) == 2
    assert "bad MI estimator option 'epoch=2'" in capsys.readouterr().err
    assert ev.main(["--run", str(run_dir), "--metrics", "mi", "--mi-t", "1.5"]) == 2
    assert "t must be in [0, 1], got 1.5" in capsys.readouterr().err


def test_latent_size_full_asks_for_the_release_grid():
    cell = expand("latent_size", "digits", budget="full", only=["z16"])[0]
    wants = [w for w in requested_rows(cell) if w["metric"] == "mi_bits"]
    assert [w["noise_t"] for w in wants] == list(RELEASE_T)
    assert {w["mi_estimator"] for w in wants} == {"mine:epochs=100,lr=0.001"}
    assert row_matches(wants[11], {"metric": "mi_bits", "noise_t": 0.92, "mi_estimator": "mine:epochs=100,lr=0.001",
                                   "T": None})
    assert not row_matches(wants[11], {"metric": "mi_bits", "noise_t": 0.93, "mi_estimator": "mine:epochs=100,lr=0.001"})
    assert not any(w["metric"] == "mi_bits" for w in requested_rows(expand("latent_size", "digits", only=["z16"])[0]))


def test_pooled_over_trainings_per_noise_level():
    import pandas as pd

    rows = [{"grid": "latent_size", "variant": "z16", "latent_dim": 16, "prior_matching": 0.0, "metric": "mi_bits",
             "noise_t": t, "mi_estimator": "mine", "value": v + s, "sd": None, "seed": s, "h_z_bits": 9.0}
            for s in (0, 1) for t, v in ((0.0, 5.0), (0.5, 2.0))]
    rows.append({"grid": "latent_size", "variant": "z16", "latent_dim": 16, "prior_matching": 0.0, "metric": "fid",
                 "T": 10, "value": 3.0, "sd": 0.1, "seed": 0})
    pooled = pool_training_seeds(pd.DataFrame(rows))
    rest, mi = split_mi(pooled)
    assert list(rest["metric"]) == ["fid"] and len(mi) == 2  # one entry per noise level, not one for all
    assert list(mi["value"]) == [5.5, 2.5] and list(mi["train_seeds"]) == [2, 2]
    table = mi_table(mi)
    assert list(table["t"]) == ["0", "0.5", "H(z), the ceiling"]
    assert table.iloc[0, 1] == "5.50 ± 0.71 (n=2)"
