"""dmz.apps bits: what each bit moves, its MI with labels and other bits, and bits matched across trainings."""

import json

import numpy as np
import pytest
import torch

import dmz.apps.bits as bits_mod
import dmz.config
import dmz.trainer
from dmz.apps.__main__ import main as apps_main
from dmz.apps.bits import consistency, label_and_bit_mi, match_bits

torch.set_num_threads(1)
TINY = {"base_channels": 8, "latent_dim": 4, "attention_head_dim": 2, "batch_size": 8, "steps": 3, "log_every": 1,
        "warmup_steps": 0, "logger": "none", "sampling_compile": False}


def test_label_and_bit_mi_known_answers():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, 4000)
    codes = np.stack([labels % 2, labels // 2, rng.integers(0, 2, 4000), labels % 2], axis=1)
    label_mi, pair = label_and_bit_mi(codes, labels)
    assert label_mi[0] == pytest.approx(1.0, abs=0.01) and label_mi[1] == pytest.approx(1.0, abs=0.01)
    assert label_mi[2] < 0.01  # an independent coin says nothing about the label
    assert pair[0, 3] == pytest.approx(1.0, abs=0.01) and pair[0, 1] < 0.01 and pair[2, 2] == 0


def test_permuted_bits_are_matched_back_and_beat_the_null():
    rng = np.random.default_rng(1)
    ref = rng.normal(size=(16, 10))
    perm = rng.permutation(16)
    other = -ref[perm] + 0.05 * rng.normal(size=(16, 10))  # another training: bits reordered, some polarity flipped
    match, r = match_bits(ref, other)
    assert (perm[match] == np.arange(16)).all() and r.min() > 0.95
    c = consistency([ref, other])
    assert c["mean_abs_r"] > 0.95 and c["null_mean_abs_r"] < 0.8 and c["pairs"][0]["bits_above_null_q95"] == 16
    unrelated = consistency([ref, rng.normal(size=(16, 10))])
    assert unrelated["mean_abs_r"] < c["mean_abs_r"]
    assert abs(unrelated["mean_abs_r"] - unrelated["null_mean_abs_r"]) < 0.15  # unrelated bits look like the null


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    out = []
    for seed in (0, 1):
        dmz.trainer.train(dmz.config.resolve("digits", {**TINY, "seed": seed}), root / f"s{seed}", progress=False)
        out.append(root / f"s{seed}")
    dmz.trainer.train(dmz.config.resolve("digits", {**TINY, "prior": "none"}), root / "ddpm", progress=False)
    return out, root / "ddpm"


def test_bits_on_two_trainings(runs, tmp_path, capsys):
    (a, b), _ = runs
    assert apps_main(["bits", "--run", str(a), "--run", str(b), "--num", "4", "--T", "2", "--out", str(tmp_path)]) == 0
    scores = json.loads((tmp_path / "scores.json").read_text())
    r0 = scores["runs"][0]
    assert np.asarray(r0["effect_profiles"]).shape == (4, 10) and len(r0["feature_distance"]) == 4
    # a profile is a difference of two class distributions: each row sums to zero
    assert np.allclose(np.asarray(r0["effect_profiles"]).sum(1), 0, atol=1e-5)
    assert set(r0["classes_without_bit"]) <= set(map(str, range(10))) and len(r0["label_mi_bits"]) == 4
    c = scores["consistency"]
    assert sorted(c["pairs"][0]["match"]) == [0, 1, 2, 3] and 0 <= c["mean_abs_r"] <= 1
    assert (tmp_path / "bits_by_class_run0.png").exists() and (tmp_path / "strongest_bits_run1.png").exists()


def test_bits_bad_input_is_one_line(runs, tmp_path, capsys, monkeypatch):
    (a, _), ddpm = runs
    assert apps_main(["bits", "--run", str(ddpm), "--out", str(tmp_path)]) == 2
    assert "need a prior=bernoulli run" in capsys.readouterr().err
    assert apps_main(["bits", "--run", str(a), "--num", "0", "--out", str(tmp_path)]) == 2
    assert "--num must be in 1..360" in capsys.readouterr().err
    real = bits_mod.dataset_info
    monkeypatch.setattr(bits_mod, "dataset_info",
                        lambda *a, **k: real(*a, **k).__class__(**{**real(*a, **k).__dict__, "label_kind": "none"}))
    assert apps_main(["bits", "--run", str(a), "--out", str(tmp_path)]) == 2
    assert "has no labels" in capsys.readouterr().err
