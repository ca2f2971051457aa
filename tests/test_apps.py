"""dmz/apps: interpolation, attribute manipulation and translation on tiny trained digits / digits_edges runs."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import dmz.config
import dmz.trainer
from dmz.apps.__main__ import main
from dmz.apps.common import AppError, decode, load_binary_run
from dmz.apps.interpolate import choose_pairs, flip_path, frames_for, smooth_order, smoothness
from dmz.apps.manipulate import move, resolve_attributes
from dmz.apps.summary import write_summary
from dmz.apps.translate import fit_mapper
from dmz.run import encode_split

from conftest import tiny_overrides

torch.set_num_threads(1)


def _train(root, name, **extra):
    out = root / name
    dmz.trainer.train(dmz.config.resolve("digits", tiny_overrides(latent_dim=6, steps=2, **extra)), out, progress=False)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("apps")
    return {"digits": _train(root, "digits"), "edges": _train(root, "edges", dataset="digits_edges"),
            "normal": _train(root, "normal", prior="normal")}


def _err(capsys):
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


# ------------------------------------------------------------------------------------------------ interpolation

def test_flip_orders_walk_from_z1_to_z2_one_bit_at_a_time():
    z1 = torch.tensor([0, 1, 1, 0, 0, 1])
    z2 = torch.tensor([1, 1, 0, 0, 1, 0])
    p1, p2 = z1.float() * 0.8 + 0.1, z2.float() * 0.8 + 0.1
    orders = {}
    for method in ("index", "random", "smooth"):
        f = frames_for(method, z1, z2, p1, p2, seed=3)
        assert len(f) == 5 and torch.equal(f[0], z1) and torch.equal(f[-1], z2)
        assert ((f[1:] != f[:-1]).sum(1) == 1).all()
        orders[method] = (f[1:] != f[:-1]).float().argmax(1).tolist()
    assert orders["index"] == [0, 2, 4, 5]
    assert sorted(orders["random"]) == sorted(orders["smooth"]) == [0, 2, 4, 5]
    relaxed = frames_for("relaxed", z1, z2, p1, p2, seed=0)
    assert torch.allclose(relaxed[0], p1) and torch.allclose(relaxed[-1], p2) and len(relaxed) == 5


def test_smooth_order_follows_the_blend_of_the_two_posteriors():
    """Greedy BCE under (1 - k/d) p1 + (k/d) p2: the cheapest flip first; past the middle, the bit whose blended
    probability has swung furthest towards 1."""
    z1, z2 = torch.zeros(3, dtype=torch.long), torch.ones(3, dtype=torch.long)
    p1 = torch.tensor([0.01, 0.45, 0.2])
    p2 = torch.tensor([0.99, 0.55, 0.8])
    # k=1: blend [0.337, 0.483, 0.4], flip cost log((1-t)/t) lowest for bit 1; k=2: blend [0.663, 0.517, 0.6],
    # bit 0 now gains most (log(0.337/0.663) < log(0.4/0.6)); then bit 2
    assert smooth_order(z1, z2, p1, p2) == [1, 0, 2]
    assert flip_path(z1, [2]).tolist() == [[0, 0, 0], [0, 0, 1]]


def test_smoothness_numbers():
    feats = np.array([[0.0, 0], [1, 0], [1, 1], [4, 1]])
    s = smoothness(feats)
    assert s["mean_step"] == pytest.approx(5 / 3) and s["max_step"] == 3
    assert s["max_over_mean"] == pytest.approx(1.8)
    assert s["endpoint_dist"] == pytest.approx(np.sqrt(17))
    assert s["path_over_endpoint"] == pytest.approx(5 / np.sqrt(17))


def test_pairs_have_different_codes_and_labels():
    codes = torch.tensor([[0, 0], [0, 0], [1, 0], [1, 1], [0, 1], [1, 1]])
    labels = torch.tensor([0, 1, 1, 2, 2, 3])
    pairs = choose_pairs(codes, labels, 3, seed=1)
    for i, j in pairs:
        assert not torch.equal(codes[i], codes[j]) and labels[i] != labels[j]
    assert len({frozenset(p) for p in pairs}) == 3
    assert choose_pairs(codes, labels, 3, seed=1) == pairs and choose_pairs(codes, labels, 3, seed=2) != pairs
    with pytest.raises(AppError, match="asked for --pairs 2"):
        choose_pairs(torch.zeros(5, 2), torch.arange(5), 2)


def test_decode_from_x_t_keeps_the_image_at_small_t_and_not_at_large_t(runs):
    run = load_binary_run(runs["digits"])
    x = run.dataset("test").images[:3]
    codes = encode_split(run, "test")[0][:3]
    near = decode(run, codes, steps=10, seeds=[0, 1, 2], x0=x, start=0.1)   # one step from t = 0
    far = decode(run, codes, steps=10, seeds=[0, 1, 2], x0=x, start=1.0)    # from t = 999: x0 is forgotten
    assert (near - x).abs().max() < 0.1
    assert (far - x).abs().mean() > 0.2
    again = decode(run, codes, steps=10, seeds=[0, 1, 2], x0=x, start=1.0)
    assert torch.equal(far, again)  # seeded


def test_interpolate_cli_writes_strips_and_scores(runs, tmp_path):
    out = tmp_path / "interp"
    rc = main(["interpolate", "--run", str(runs["digits"]), "--pairs", "2", "--T", "3", "--out", str(out),
               "--methods", "index", "smooth", "relaxed", "xt50"])
    assert rc == 0
    s = json.loads((out / "scores.json").read_text())
    assert set(s["methods"]) == {"index", "smooth", "relaxed", "xt50"} and len(s["pairs"]) == 2
    assert s["feature_extractor"] == "digits-classifier-v1"
    for m, v in s["methods"].items():
        assert (out / f"{m}.png").exists()
        assert 0 <= v["mean_step"] <= v["max_step"] and v["max_over_mean"] >= 1
        assert v["frames"] == sum(h + 1 for h in s["hamming"])
    # index and smooth share their end frames (same codes, same noise seed), so the same end-to-end distance
    assert s["methods"]["index"]["endpoint_dist"] == pytest.approx(s["methods"]["smooth"]["endpoint_dist"])


def test_interpolate_bad_input_is_one_line(runs, tmp_path, capsys):
    run = str(runs["digits"])
    assert main(["interpolate", "--run", run, "--pair", "0,360", "--out", str(tmp_path)]) == 2
    assert "0 to 359" in _err(capsys)
    codes = encode_split(load_binary_run(runs["digits"]), "test")[0]
    first = {}
    i, j = next((first[k], n) for n, k in enumerate(map(tuple, codes.tolist())) if first.setdefault(k, n) != n)
    assert main(["interpolate", "--run", run, "--pair", f"{i},{j}", "--out", str(tmp_path)]) == 2
    assert "same code" in _err(capsys)
    assert main(["interpolate", "--run", run, "--methods", "spline", "--out", str(tmp_path)]) == 2
    assert "valid: index, random, smooth, relaxed" in _err(capsys)
    assert main(["interpolate", "--run", str(runs["normal"]), "--out", str(tmp_path)]) == 2
    assert "prior='normal'" in _err(capsys)
    assert main(["interpolate", "--run", str(tmp_path / "nope"), "--out", str(tmp_path)]) == 2
    assert "not a run folder" in _err(capsys)


# ------------------------------------------------------------------------------------------------ manipulation

def test_move_crosses_the_boundary_by_alpha():
    w, b = np.array([1.0, -1.0, 0.0]), -0.5
    z = torch.tensor([[0, 1, 1], [1, 0, 0]])  # margins -1.5 and +0.5
    assert torch.equal(move(z, w, b, 0.0), z)
    # alpha = 1 reaches the boundary (+|d| w/|w|^2), which binarisation puts on the attribute side for row 0
    assert move(z, w, b, 1.0).tolist() == [[1, 0, 1], [1, 0, 0]]
    # negative alpha moves away from the attribute
    assert move(z, w, b, -4.0).tolist() == [[0, 1, 1], [0, 1, 0]]


def test_attributes_resolve_by_name():
    assert resolve_attributes("digits", ["all"]) == [str(c) for c in range(10)]
    assert resolve_attributes("celeba64", ["Smiling"]) == ["Smiling"]
    with pytest.raises(AppError, match="unknown attribute 'Smiling' for dataset 'digits'; valid: 0, 1, 2"):
        resolve_attributes("digits", ["3", "Smiling"])
    with pytest.raises(AppError, match="no labels"):
        resolve_attributes("edges2shoes", ["all"])


def test_manipulate_cli_scores_each_alpha(runs, tmp_path, capsys):
    out = tmp_path / "manip"
    assert main(["manipulate", "--run", str(runs["digits"]), "--attribute", "3", "7", "--per-class", "1",
                 "--T", "2", "--out", str(out)]) == 0
    s = json.loads((out / "scores.json").read_text())
    assert set(s["attributes"]) == {"3", "7"} and s["alphas"] == [-4, -2, -1, 0, 1, 2, 4]
    a3 = s["attributes"]["3"]
    assert a3["n_sources"] == 9 and (out / "attribute_3.png").exists()
    assert a3["per_alpha"]["0.0"]["bits_changed"] == 0 and a3["per_alpha"]["0.0"]["dist_to_alpha0"] == 0
    for v in a3["per_alpha"].values():
        assert 0 <= v["p_attribute"] <= 1 and 0 <= v["labelled_attribute"] <= 1
    # the linear classifier's side of the moved codes follows alpha's sign
    side = [s["mean_over_attributes"][str(float(a))]["code_has_attribute"] for a in s["alphas"]]
    assert side[0] <= side[3] <= side[-1]
    assert main(["manipulate", "--run", str(runs["digits"]), "--attribute", "ten", "--out", str(out)]) == 2
    assert "valid: 0, 1, 2, 3, 4, 5, 6, 7, 8, 9 (or all)" in _err(capsys)


# ------------------------------------------------------------------------------------------------ translation

def test_mapping_mlp_learns_a_bit_permutation_with_negation():
    g = torch.Generator().manual_seed(0)
    src = (torch.rand(600, 8, generator=g) < 0.5).long()
    tgt = 1 - src[:, [3, 1, 7, 0, 2, 6, 5, 4]]
    model, fit = fit_mapper(src, tgt, epochs=40, patience=10, batch_size=64)
    assert fit["val_bit_accuracy"] > 0.98
    assert ((model.probs(src) > 0.5).long() == tgt).float().mean() > 0.98


def test_translate_cli_scores_mapped_oracle_and_prior(runs, tmp_path):
    out = tmp_path / "tr"
    assert main(["translate", "--source", str(runs["edges"]), "--target", str(runs["digits"]), "--num", "8",
                 "--T", "2", "--epochs", "2", "--out", str(out)]) == 0
    s = json.loads((out / "scores.json").read_text())
    assert (s["source_dataset"], s["target_dataset"], s["n"]) == ("digits_edges", "digits", 8)
    sets = s["sets"]
    assert set(sets) == {"mapped", "oracle", "prior", "real"} and sets["oracle"]["bit_accuracy"] == 1.0
    assert sets["real"]["mse_to_paired_target"] == 0 and sets["real"]["bit_accuracy"] is None
    # the classifier (test accuracy ~0.98) labels the real paired digits as the source's digit
    assert sets["real"]["labelled_as_source_digit"] > 0.7
    assert sets["mapped"]["bit_accuracy"] == pytest.approx(s["test_bit_accuracy"])
    for v in sets.values():
        assert v["fid"] >= 0 and v["feature_extractor"] == "digits-classifier-v1"
        assert 0 <= v["labelled_as_source_digit"] <= 1
    assert (out / "translations.png").exists()


def test_translate_refuses_unpaired_runs_and_runs_without_codes(runs, tmp_path, capsys):
    assert main(["translate", "--source", str(runs["digits"]), "--target", str(runs["digits"]),
                 "--out", str(tmp_path)]) == 2
    assert "are not paired" in _err(capsys)
    assert main(["translate", "--source", str(runs["edges"]), "--target", str(runs["normal"]),
                 "--out", str(tmp_path)]) == 2
    assert "need a prior=bernoulli run" in _err(capsys)
    assert main(["translate", "--source", str(runs["edges"]), "--target", str(runs["digits"]), "--num", "999",
                 "--out", str(tmp_path)]) == 2
    assert "360 pairs" in _err(capsys)


# ------------------------------------------------------------------------------------------------ CLI and summary

def test_help_does_not_import_torch_or_diffusers():
    code = ("import sys, contextlib, io\nimport dmz.apps.__main__ as m\n"
            "with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
            "    m.main(['translate', '--help'])\n"
            "print(sorted(k for k in ('torch', 'diffusers', 'torch_fidelity') if k in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_summary_tables_from_scores(runs, tmp_path):
    out = tmp_path / "all"
    main(["interpolate", "--run", str(runs["digits"]), "--pairs", "1", "--T", "2", "--methods", "index",
          "--out", str(out / "interpolate")])
    main(["translate", "--source", str(runs["edges"]), "--target", str(runs["digits"]), "--num", "4", "--T", "2",
          "--epochs", "1", "--out", str(out / "translate")])
    text = write_summary(out, {"interpolate": 1.0}).read_text()
    assert "| `index` |" in text and "(translation) |" in text and "## manipulate" not in text
