"""ablations.grids: grid expansion, sizes, errors, and what a finished cell must have (no training here)."""

from __future__ import annotations

import argparse
import json
import math

import pytest

from ablations import grids
from ablations.grids import (GRIDS, Cell, EvalSpec, GridError, add_cell_args, cell_dir, cells_from_args, expand,
                             is_done, missing_rows, pixelsnail_width, requested_rows)
from dmz.config import ConfigError, resolve

TINY = ["base_channels=8", "latent_dim=4", "attention_head_dim=2", "batch_size=16", "steps=3"]


def test_every_grid_expands_on_every_preset_with_distinct_run_ids():
    for name in GRIDS:
        for preset in ("digits", "cifar10", "celeba64"):
            cells = expand(name, preset)
            assert cells, (name, preset)
            assert len({c.run_id for c in cells}) == len(cells)
            assert len({c.name for c in cells}) == len(cells)
            assert all(c.grid == name and c.preset == preset for c in cells)


def test_main_grid_is_ddpm_vs_dmz_at_paper_T():
    cells = expand("main", "cifar10")
    assert [c.name for c in cells] == ["ddpm", "dmz"]
    assert [c.config().model.prior for c in cells] == ["none", "bernoulli"]
    for c in cells:
        spec, nll = c.evals
        assert spec.metrics == ("fid",) and spec.steps == (10, 20, 50, 100) and spec.samplers == ("prior",)
        assert spec.num_samples is None and spec.solver == "ddpm"  # paper presets: evaluation's default (10k)
        assert nll.metrics == ("nll",)
        assert c.config().train.steps == resolve("cifar10").train.steps  # trained as released
    nll_rows = [r for r in requested_rows(cells[0]) if r["metric"].startswith("nll")]
    assert {(r["metric"], r["reference"]) for r in nll_rows} == {
        (m, s) for m in grids.NLL_METRICS for s in ("train", "test")}


def test_latent_type_and_conditioning_axes():
    lt = {c.name: c.config() for c in expand("latent_type", "digits")}
    assert {k: v.model.prior for k, v in lt.items()} == {
        "bernoulli": "bernoulli", "normal": "normal", "categorical": "categorical",
        "categorical-16bit": "categorical", "none": "none"}
    bits = {k: v.model.latent_dim * (math.log2(v.model.categories) if v.model.prior == "categorical" else 1)
            for k, v in lt.items() if v.model.prior in ("bernoulli", "categorical")}
    assert bits["categorical-16bit"] == bits["bernoulli"] < bits["categorical"]  # capacity-matched, and today's
    samplers = {c.name: c.evals[0].samplers for c in expand("latent_type", "digits")}
    assert samplers["normal"] == ("prior", "normal", "const") and samplers["bernoulli"] == ("prior",)
    none_cell = [c for c in expand("latent_type", "digits") if c.name == "none"][0]
    assert all("probe" not in e.metrics for e in none_cell.evals)  # nothing to probe without a latent
    cond = {c.name: c.config().model.conditioning for c in expand("conditioning", "digits")}
    tok = f"cross_attention_tokens{grids.Z_TOKENS}"
    assert cond == {"cross_attention": "cross_attention", "concat": "concat", "add": "add",
                    "cross_attention_add": "cross_attention+add", tok: "cross_attention"}
    z_tokens = {c.name: c.config().model.z_tokens for c in expand("conditioning", "digits")}
    assert z_tokens[tok] == grids.Z_TOKENS and {v for k, v in z_tokens.items() if k != tok} == {1}
    for preset in ("cifar10", "celeba64"):  # the paper presets keep the released single token
        assert resolve(preset).model.z_tokens == 1


def test_ddim_grid_is_ddpm_and_dmz_at_two_gammas_with_both_solvers():
    for preset in ("digits", "cifar10"):
        cells = {c.name: c for c in expand("ddim", preset)}
        assert sorted(cells) == ["ddpm-gamma0", "ddpm-released", "dmz-gamma0", "dmz-released"]
        released = resolve(preset).diffusion.input_perturbation
        assert released > 0
        for name, c in cells.items():
            cfg = c.config()
            assert cfg.model.prior == ("none" if name.startswith("ddpm") else "bernoulli")
            assert cfg.diffusion.input_perturbation == (0.0 if name.endswith("gamma0") else released)
            fid = [r for r in requested_rows(c) if r["metric"] == "fid"]
            assert {(r["solver"], r["T"]) for r in fid} == {(s, t) for s in ("ddpm", "ddim") for t in (10, 20, 50, 100)}


def test_cells_that_are_the_same_training_share_a_run_id_across_grids():
    """main's dmz is latent_type's bernoulli, conditioning's cross_attention, ddim's dmz-released and latent_size's
    z16 on digits (one training; run_grid copies it), and main's ddpm is latent_type's none and ddim's ddpm-released."""
    ids = {(g, c.name): c.run_id for g in ("main", "latent_type", "conditioning", "ddim") for c in expand(g, "digits")}
    ids[("latent_size", "z16")] = expand("latent_size", "digits", only=["z16"])[0].run_id
    dmz = {ids[k] for k in [("main", "dmz"), ("latent_type", "bernoulli"), ("conditioning", "cross_attention"),
                            ("ddim", "dmz-released"), ("latent_size", "z16")]}
    ddpm = {ids[k] for k in [("main", "ddpm"), ("latent_type", "none"), ("ddim", "ddpm-released")]}
    assert len(dmz) == 1 and len(ddpm) == 1
    assert ids[("ddim", "dmz-gamma0")] not in dmz and ids[("conditioning", "concat")] not in dmz


def test_latent_size_samplers_are_evaluations_of_one_training():
    cells = expand("latent_size", "cifar10")
    plain = [c for c in cells if c.config().model.prior_matching == 0 and c.config().model.prior_mmd == 0]
    assert [c.config().model.latent_dim for c in plain] == list(grids.LATENT_SIZES)
    pm = [c for c in cells if c.config().model.prior_matching > 0]
    assert [c.config().model.latent_dim for c in pm] == list(grids.PRIOR_MATCHING_SIZES)
    mmd = [c for c in cells if c.config().model.prior_mmd > 0]
    assert [c.config().model.latent_dim for c in mmd] == list(grids.PRIOR_MATCHING_SIZES)
    assert {c.config().model.prior_mmd for c in mmd} == {grids.PRIOR_MMD_WEIGHT}
    assert len(cells) == len(grids.LATENT_SIZES) + 2 * len(grids.PRIOR_MATCHING_SIZES)  # no cell per sampler
    # the larger MMD weight is a follow-up: only --only runs it, on any preset and budget
    assert not any(c.name.endswith("-mmd10") for p in ("cifar10", "digits")
                   for c in expand("latent_size", p, budget="full" if p == "digits" else None))
    big = expand("latent_size", "digits", budget="full", only=["z128-mmd10"])
    assert [(c.name, c.config().model.prior_mmd) for c in big] == [("z128-mmd10", grids.PRIOR_MMD_WEIGHT_LARGE)]
    for c in cells:
        samplers = {s for e in c.evals if "fid" in e.metrics for s in e.samplers}
        metrics = {m for e in c.evals for m in e.metrics}
        code = {s for e in c.evals if "codes" in e.metrics for s in e.samplers}
        # the penalty cells: FID with the prior and with encoded codes, bits under every code model, no I(z; x_t)
        assert samplers == (set(grids.ZSAMPLERS_ALL) if c in plain else {"prior", "dataset"})
        assert ("mi" in metrics) == (c in plain)
        assert code == set(grids.CODE_SAMPLERS)
        assert c.needs_pixelsnail  # the penalty cells fit it for their bits per code
        fid_T = {t for e in c.evals if "fid" in e.metrics for t in e.steps}
        assert fid_T == {10, 20, 50, 100}


def test_digits_budgets_live_in_the_grid_not_the_preset():
    size = expand("latent_size", "digits", budget="full")
    b = grids.DIGITS_LATENT_SIZE
    assert all(c.config().train.steps == b.train["steps"] for c in size)
    assert resolve("digits").train.steps != b.train["steps"]  # the preset itself is untouched
    rows = requested_rows(size[0])
    fid = [r for r in rows if r["metric"] == "fid"]
    assert {r["N"] for r in fid} == {b.num_samples} and {r["seeds"] for r in fid} == {b.seeds}
    assert {(r["sampler"], r["T"]) for r in fid} == {(s, t) for s in grids.ZSAMPLERS_ALL for t in b.steps}
    assert size[0].pixelsnail == b.pixelsnail
    # the digits study runs the budget's variants only: |z| in {16, 64, 128}, each with no penalty, prior matching
    # and the prior MMD (issue 20)
    assert sorted(c.name for c in size) == sorted(b.variants)
    assert sorted((c.config().model.latent_dim, c.config().model.prior_matching > 0, c.config().model.prior_mmd > 0)
                  for c in size) == sorted((L, *pen) for L in grids.DIGITS_LATENT_SIZES
                                           for pen in ((False, False), (True, False), (False, True)))
    codes = [r for r in rows if r["metric"] in ("bits_per_code", "heldout_dup_frac")]
    assert {r["sampler"] for r in codes} == {"prior", "empirical", "pixelsnail", None}  # no likelihood for dataset


def test_user_sets_apply_to_every_cell_but_not_the_grid_axis():
    warnings = []
    cells = expand("latent_size", "digits", TINY, warn=warnings.append, budget="full")
    assert [c.config().model.latent_dim for c in cells[:3]] == list(grids.DIGITS_LATENT_SIZES)  # axis wins over --set
    assert all(c.config().model.base_channels == 8 and c.config().train.steps == 3 for c in cells)
    assert warnings and "latent_dim" in warnings[0]
    # a --set changes the config, hence the run id and the folder
    assert cells[0].run_id != expand("latent_size", "digits")[0].run_id
    # dict form and section-qualified keys work too, last one wins over the budget
    c = expand("main", "digits", {"train.steps": 7})[0]
    assert c.config().train.steps == 7


def test_unknown_grid_preset_key_and_bad_value_errors_suggest():
    with pytest.raises(GridError, match=r"unknown grid 'latent_sise' \(did you mean 'latent_size'\?\).*main"):
        expand("latent_sise", "digits")
    with pytest.raises(GridError, match=r"did you mean 'digits'.*celeba64"):
        expand("main", "digit")
    with pytest.raises(GridError, match=r"unknown config key 'base_chanels' \(did you mean 'base_channels'\?\)"):
        expand("main", "digits", ["base_chanels=8"])
    with pytest.raises(ConfigError, match="bad value"):
        expand("main", "digits", ["steps=many"])
    with pytest.raises(GridError, match="unknown evaluation size"):
        expand("main", "digits", eval_sizes={"T": [2]})


def test_eval_sizes_change_evaluations_not_folders():
    a = expand("main", "digits", TINY)
    b = expand("main", "digits", TINY, eval_sizes={"steps": [2], "num_samples": 20, "seeds": 1})
    assert [c.dirname for c in a] == [c.dirname for c in b]
    assert b[0].evals == (EvalSpec(("fid",), (2,), ("prior",), 20, 1), EvalSpec(("nll",), (), (), None, None))
    c = expand("main", "digits", TINY, eval_sizes={"nll_images": 4})
    assert c[0].evals[1] == EvalSpec(("nll",), (), (), 4, None) and [x.dirname for x in c] == [x.dirname for x in a]


def test_cell_dict_round_trip_is_plain_data():
    for c in expand("latent_size", "digits", TINY):
        d = c.to_dict()
        assert json.loads(json.dumps(d))["run_id"] == c.run_id  # JSON-able: nothing of ours inside
        assert Cell.from_dict(json.loads(json.dumps(d))) == c


def test_pixelsnail_width_divides_latent_dim():
    assert pixelsnail_width(16) == 8 and pixelsnail_width(256) == 8
    assert pixelsnail_width(4) == 4 and pixelsnail_width(6) == 6 and pixelsnail_width(7) == 7
    assert pixelsnail_width(9) == 3


def test_cells_from_args_only_and_errors():
    p = argparse.ArgumentParser()
    add_cell_args(p)
    preset, why, cells = cells_from_args(p.parse_args(["--grid", "latent_size", "--preset", "digits", "--only",
                                                       "z16,z64", "--T", "2", "--num-samples", "10"]))
    assert preset == "digits" and why == "--preset" and [c.name for c in cells] == ["z16", "z64"]
    assert {t for e in cells[0].evals for t in e.steps} == {2}
    # --only may pick a cell the digits budget leaves out; it gets the digits budget
    _, _, extra = cells_from_args(p.parse_args(["--grid", "latent_size", "--preset", "digits", "--only", "z32"]))
    assert [c.name for c in extra] == ["z32"] and extra[0].config().model.latent_dim == 32
    assert extra[0].config().train.steps == grids.DIGITS_LATENT_SIZE.train["steps"]
    with pytest.raises(GridError, match="did you mean 'z64'"):
        cells_from_args(p.parse_args(["--grid", "latent_size", "--preset", "digits", "--only", "z46"]))
    preset, why, _ = cells_from_args(p.parse_args(["--grid", "main"]), gpus_per_node=8)
    assert preset == "cifar10" and "GPUs" in why


def _write_rows(run_dir, rows):
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "results.jsonl", "a") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


PIN = "9371b7aeccca287bee17f58963fb1a0749ffc420850544189f9b06730402117c"  # digits-classifier-v1's pinned weights


def test_seeds_expand_every_cell_once_per_training_seed_and_bad_lists_are_one_line():
    p = argparse.ArgumentParser()
    add_cell_args(p)
    _, _, cells = cells_from_args(p.parse_args(["--grid", "main", "--preset", "digits", "--seeds", "0", "1", "2"]))
    assert [(c.name, c.seed) for c in cells] == [(n, k) for k in (0, 1, 2) for n in ("ddpm", "dmz")]
    assert len({c.run_id for c in cells}) == 6 and [c.tag for c in cells[:3]] == ["ddpm", "dmz", "ddpm@seed1"]
    assert cells[0].run_id == expand("main", "digits")[0].run_id  # seed 0 is the grid's own cell
    by = grids.cells_by_seed(cells)
    assert list(by) == [0, 1, 2] and grids.results_label("digits", None, by[2]) == "digits-seed2"
    for argv, msg in ((["--seeds", "1", "1"], "seed 1 is listed twice"), (["--seeds", "-1"], "non-negative"),
                      (["--seeds", "1", "--set", "seed=2"], "use one")):
        with pytest.raises(GridError, match=msg):
            cells_from_args(p.parse_args(["--grid", "main", "--preset", "digits", *argv]))


def test_a_fid_row_outside_the_pinned_feature_space_is_missing(tmp_path):
    cell = expand("latent_type", "digits", TINY, eval_sizes={"steps": [2], "num_samples": 20, "seeds": 1},
                  only=["categorical"])[0]
    d = cell_dir(cell, tmp_path)
    row = {"metric": "fid", "T": 2, "sampler": "prior", "N": 20, "seeds": 1, "value": 1.0, "solver": "ddpm"}
    _write_rows(d, [{**row, "feature_extractor_weights_sha256": "3756564200000000"}])  # another machine's weights
    assert [(r["metric"], r["T"]) for r in missing_rows(cell, d) if r["metric"] == "fid"] == [("fid", 2)]
    _write_rows(d, [{**row, "feature_extractor_weights_sha256": PIN}])
    assert not [r for r in missing_rows(cell, d) if r["metric"] == "fid"]


def test_done_needs_finished_training_and_every_requested_row(tmp_path):
    cell = expand("latent_type", "digits", TINY, eval_sizes={"steps": [2, 4], "num_samples": 20, "seeds": 1},
                  only=["categorical"])[0]
    d = cell_dir(cell, tmp_path)
    assert d == tmp_path / "latent_type" / "digits" / f"categorical-{cell.run_id}"
    assert not is_done(cell, d)
    want = requested_rows(cell)
    assert len(want) == 2 + 4  # FID at T=2, 4 + four probe rows (accuracy/AUROC x CV/held-out) on class labels
    _write_rows(d, [{"metric": "fid", "T": 2, "sampler": "prior", "N": 20, "seeds": 1, "value": 1.0, "solver": "ddpm",
                     "feature_extractor_weights_sha256": PIN},
                    {"metric": "fid", "T": 4, "sampler": "prior", "N": 50, "seeds": 1, "value": 1.0,
                     "solver": "ddpm", "feature_extractor_weights_sha256": PIN},  # wrong N
                    {"metric": "fid", "T": 4, "sampler": "prior", "N": 20, "seeds": 1, "value": 1.0,
                     "solver": "ddim", "feature_extractor_weights_sha256": PIN}])  # wrong solver
    _write_rows(d, [{"metric": m, "T": None, "sampler": None, "N": 360, "seeds": None, "value": 0.5}
                    for m in ("probe_acc_cv", "probe_acc_heldout", "probe_auroc_cv", "probe_auroc_heldout")])
    assert [(r["metric"], r["T"]) for r in missing_rows(cell, d)] == [("fid", 4)]
    _write_rows(d, [{"metric": "fid", "T": 4, "sampler": "prior", "N": 20, "seeds": 1, "value": 1.0, "solver": "ddpm",
                     "feature_extractor_weights_sha256": PIN}])
    assert missing_rows(cell, d) == []
    assert not is_done(cell, d)  # rows alone are not enough: training must have finished
    (d / "train_summary.json").write_text(json.dumps({"finished": False, "step": 2}))
    assert not is_done(cell, d)
    (d / "train_summary.json").write_text(json.dumps({"finished": True, "step": 3}))
    assert is_done(cell, d)


def test_latent_size_default_budget_is_the_quick_study_sharing_the_full_studys_cells():
    quick = expand("latent_size", "digits")
    full = {c.name: c for c in expand("latent_size", "digits", budget="full")}
    lo, hi = f"z{grids.DIGITS_LATENT_SIZES[0]}", f"z{grids.DIGITS_LATENT_SIZES[-1]}"
    assert [c.name for c in quick] == [lo, hi]
    for c in quick:
        assert c.run_id == full[c.name].run_id  # same trainings: --budget full reuses the quick run's folders
        assert not c.needs_pixelsnail
        fid = [r for r in requested_rows(c) if r["metric"] == "fid"]
        assert {(r["sampler"], r["T"], r["seeds"]) for r in fid} == {("prior", 10, 3), ("dataset", 10, 3)}
    assert expand("latent_size", "digits", budget="default") == quick
    with pytest.raises(GridError, match="unknown budget 'huge'.*valid: default, full"):
        expand("latent_size", "digits", budget="huge")
    p = argparse.ArgumentParser()
    add_cell_args(p)
    _, _, cells = cells_from_args(p.parse_args(["--grid", "latent_size", "--preset", "digits", "--budget", "full"]))
    assert len(cells) == len(full)
