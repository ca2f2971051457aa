"""ablations.collect, ablations.grid_report, ablations.tables and the report CLI on synthetic result rows (no training,
no sampling)."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from ablations.collect import collect, save
from ablations.grids import DIGITS_MAIN, cell_dir, expand
from ablations.grid_report import build_table, report
from ablations.tables import PAPER_NUMBERS, column_label, load_paper_numbers, metric_label, to_latex

TINY = ["base_channels=8", "latent_dim=4", "attention_head_dim=2", "batch_size=16", "steps=3", "sampling_compile=false",
        "diffusion_steps=20"]  # the NLL runs over every diffusion step: 20, not 1,000
INCEPTION = "inception-v3-compat"
DIGITS_EXT = "digits-classifier-v1"


PIN = "9371b7aeccca287bee17f58963fb1a0749ffc420850544189f9b06730402117c"  # digits-classifier-v1's pinned weights


def fid_row(T, sampler, value, sd=None, *, N=20, seeds=1, extractor=DIGITS_EXT, **extra):
    return {"metric": "fid", "T": T, "sampler": sampler, "N": N, "seeds": seeds, "value": value, "sd": sd,
            "feature_extractor": extractor, "feature_extractor_weights_sha256": PIN if extractor == DIGITS_EXT
            else "c" * 64, "solver": "ddpm", "checkpoint_step": 3, "weights": "ema", **extra}


def probe_rows(acc, auroc=0.9):
    return [{"metric": f"probe_{s}_{p}", "T": None, "sampler": None, "N": 100, "seeds": None, "value": v,
             "sd": 0.01 if p == "cv" else None, "feature_extractor": None, "repr": "soft", "values": [v, v]}
            for s, v in (("acc", acc), ("auroc", auroc)) for p in ("cv", "heldout")]


def code_rows(bits: dict, dup: float, N=360):
    common = {"T": None, "N": N, "seeds": None, "sd": None, "feature_extractor": None, "repr": "hard",
              "checkpoint_step": 3, "weights": "ema"}
    return ([{"metric": "bits_per_code", "sampler": s, "value": v, **common} for s, v in bits.items()]
            + [{"metric": "heldout_dup_frac", "sampler": None, "value": dup, **common}])


def write(cell, root, rows):
    d = cell_dir(cell, root)
    d.mkdir(parents=True, exist_ok=True)
    with open(d / "results.jsonl", "a") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return d


# ---------------------------------------------------------------------------------------------------- collect
def test_collect_keeps_requested_rows_latest_wins_and_tags_cells(tmp_path):
    cells = expand("latent_type", "digits", TINY, eval_sizes={"steps": [2, 4], "num_samples": 20, "seeds": 1})
    by = {c.name: c for c in cells}
    write(by["bernoulli"], tmp_path, [fid_row(2, "prior", 50.0), fid_row(4, "prior", 40.0),
                                      fid_row(4, "prior", 99.0, N=1000),  # not requested (other N): left out
                                      fid_row(2, "prior", 45.0)] + probe_rows(0.8))  # recomputed: latest wins
    write(by["none"], tmp_path, [fid_row(2, "prior", 70.0)])
    df = collect(cells, tmp_path)
    assert set(df["variant"]) == {"bernoulli", "none"}
    b = df[(df["variant"] == "bernoulli") & (df["metric"] == "fid")].set_index("T")["value"]
    assert b.to_dict() == {2: 45.0, 4: 40.0}
    assert (df["grid"] == "latent_type").all() and (df["preset"] == "digits").all()
    assert df.loc[df["variant"] == "none", "prior"].tolist() == ["none"]  # config fields filled from the cell
    assert df.loc[df["variant"] == "bernoulli", "latent_dim"].unique().tolist() == [4]
    assert isinstance(df.loc[df["metric"] == "probe_acc_cv", "values"].iloc[0], str)  # lists stored as JSON
    assert list(df["variant"].unique()) == ["bernoulli", "none"]  # grid order
    paths = save(df, "latent_type", "digits", tmp_path / "results")
    back = pd.read_csv(paths["csv"])
    assert len(back) == len(df) == 2 + 4 + 1
    assert paths["csv"] == tmp_path / "results" / "latent_type" / "digits" / "results.csv"


def test_collect_with_nothing_evaluated_is_an_empty_frame(tmp_path):
    df = collect(expand("main", "digits", TINY), tmp_path)
    assert df.empty and {"variant", "metric", "value", "sd", "feature_extractor"} <= set(df.columns)
    table, notes = build_table(df, "main")
    assert table.empty and notes == ["no result rows yet"]


# ---------------------------------------------------------------------------------------------------- labels
def test_fid_labels_carry_the_extractor_and_never_say_inception_for_digits():
    assert metric_label("fid", DIGITS_EXT) == "FID [digits-classifier-v1]"
    assert "nception" not in metric_label("fid", DIGITS_EXT)
    assert column_label("fid", INCEPTION, 100) == "FID [inception-v3-compat] T=100"
    assert column_label("probe_acc_cv", None, None) == "probe accuracy (5-fold CV)"
    assert column_label("probe_auroc_heldout", None, float("nan")) == "probe AUROC (held-out)"
    with pytest.raises(ValueError, match="feature_extractor"):
        metric_label("fid", None)


def test_paper_numbers_file_has_its_sources():
    paper = load_paper_numbers()
    assert len(paper) and paper["source"].notna().all()
    dmz = paper[(paper["grid"] == "main") & (paper["variant"] == "dmz")]
    assert dmz[["dataset", "latent_dim", "sampler", "metric", "T", "value"]].values.tolist() == [
        ["cifar10", 16, "prior", "fid", 100, 4.79]]
    z128 = paper[(paper["grid"] == "latent_size") & (paper["latent_dim"] == 128)]
    assert z128["value"].tolist() == [17.23]
    normal = paper[(paper["grid"] == "latent_type") & (paper["variant"] == "normal")]
    assert normal["value"].tolist() == [34.32] and "inferred" in normal["note"].iloc[0]


# ---------------------------------------------------------------------------------------------------- tables
def test_main_table_joins_paper_column_on_cifar10(tmp_path):
    cells = expand("main", "cifar10")
    by = {c.name: c for c in cells}
    write(by["dmz"], tmp_path, [fid_row(t, "prior", v, 0.1, N=10000, extractor=INCEPTION)
                                for t, v in ((10, 9.5), (100, 5.25))])
    write(by["ddpm"], tmp_path, [fid_row(t, "prior", v, None, N=10000, extractor=INCEPTION)
                                 for t, v in ((10, 30.0), (100, 6.0))])
    df = collect(cells, tmp_path)
    table, notes = build_table(df, "main", load_paper_numbers())
    t = table.set_index("variant")
    assert list(table.columns) == ["variant", "sampler", "FID [inception-v3-compat] T=10",
                                   "FID [inception-v3-compat] T=100", "paper FID [Inception] T=100"]
    assert t.loc["dmz", "paper FID [Inception] T=100"] == "4.79"
    assert t.loc["ddpm", "paper FID [Inception] T=100"] == "–"  # no paper number for the baseline
    assert t.loc["dmz", "FID [inception-v3-compat] T=100"] == "5.25 ± 0.10"
    assert t.loc["ddpm", "FID [inception-v3-compat] T=10"] == "30.00"  # one seed: no sd
    assert any("4.79" in n and "PAPER.md 2.0" in n for n in notes)
    assert not any("not comparable" in n for n in notes)  # Inception FIDs need no warning


def test_latent_size_table_joins_by_z_and_sampler_and_broadcasts_probe(tmp_path):
    cells = expand("latent_size", "cifar10")
    by = {c.name: c for c in cells}
    for name in ("z16", "z128"):
        write(by[name], tmp_path, [fid_row(100, s, 10.0 + i, 0.5, N=10000, extractor=INCEPTION)
                                   for i, s in enumerate(("prior", "empirical", "dataset", "pixelsnail"))]
              + probe_rows(0.7 if name == "z16" else 0.8)
              + code_rows({"prior": float(name[1:]), "empirical": 0.9 * float(name[1:]), "pixelsnail": 7.25},
                          0.5 if name == "z16" else 0.0))
    table, _ = build_table(collect(cells, tmp_path), "latent_size", load_paper_numbers())
    paper = "paper FID [Inception] T=100"
    got = {(r["variant"], r["sampler"]): r[paper] for _, r in table.iterrows()}
    assert got[("z16", "prior")] == "4.79" and got[("z128", "prior")] == "17.23"
    assert got[("z16", "pixelsnail")] == "–" and got[("z128", "dataset")] == "–"
    assert len(table) == 8  # 2 |z| x 4 samplers; the probe does not add rows
    assert table["variant"].tolist() == ["z16"] * 4 + ["z128"] * 4  # the grid's order, not sorted as strings
    probe = {(r["variant"], r["sampler"]): r["probe accuracy (5-fold CV)"] for _, r in table.iterrows()}
    assert probe[("z16", "pixelsnail")] == "0.700 ± 0.010" and probe[("z128", "prior")] == "0.800 ± 0.010"
    assert set(table["latent_dim"]) == {16, 128}
    # code diagnostics: bits per held-out code in each sampler's row (none for dataset), duplicates per cell
    bits = {(r["variant"], r["sampler"]): r["bits per held-out code"] for _, r in table.iterrows()}
    assert bits[("z16", "prior")] == "16.0" and bits[("z128", "empirical")] == "115.2"
    assert bits[("z128", "pixelsnail")] == "7.2" and bits[("z16", "dataset")] == "–"
    dup = {(r["variant"], r["sampler"]): r["held-out codes seen in train"] for _, r in table.iterrows()}
    assert dup[("z16", "dataset")] == dup[("z16", "prior")] == "0.50" and dup[("z128", "pixelsnail")] == "0.00"


def test_paper_numbers_only_join_their_dataset(tmp_path):
    cells = expand("main", "digits", TINY)
    write(cells[1], tmp_path,  # the digits main budget
          [fid_row(100, "prior", 12.0, N=DIGITS_MAIN.num_samples, seeds=DIGITS_MAIN.seeds)])
    table, notes = build_table(collect(cells, tmp_path), "main", load_paper_numbers())
    assert not any(c.startswith("paper") for c in table.columns)  # digits FIDs never sit beside Inception numbers
    assert any("none known" in n for n in notes)
    assert any("digits-classifier-v1" in n and "not comparable" in n for n in notes)
    assert "FID [digits-classifier-v1] T=100" in table.columns


def nll_rows(value, *, bits=0.0, code_model="prior", N=8):
    out = []
    for split, shift in (("train", 0.0), ("test", 0.1)):
        out.append({"metric": "nll_bpd", "T": None, "sampler": None, "reference": split, "N": N, "seeds": None,
                    "value": value + shift, "sd": 0.2, "feature_extractor": None})
        out.append({**out[-1], "metric": "nll_bpd_z", "sampler": code_model, "value": value + shift + bits})
    return out


def test_main_table_has_one_nll_column_per_split_and_code_model(tmp_path):
    cells = expand("main", "digits", TINY)
    write(cells[0], tmp_path, [fid_row(10, "prior", 5.0)] + nll_rows(1.0))
    write(cells[1], tmp_path, [fid_row(10, "prior", 3.0)] + nll_rows(1.5, bits=0.25))
    table, _ = build_table(collect(cells, tmp_path, requested_only=False), "main")
    row = {r["variant"]: r for _, r in table.iterrows()}
    assert len(table) == 2  # one row per cell: the NLL columns sit beside its FID
    assert row["ddpm"]["NLL bits/dim (test)"] == "1.100 ± 0.200" and row["dmz"]["NLL bits/dim (train)"] == "1.500 ± 0.200"
    assert row["dmz"]["NLL + z bits [prior] bits/dim (test)"] == "1.850 ± 0.200"
    assert row["dmz"]["FID [digits-classifier-v1] T=10"] == "3.00"


def test_several_rows_for_one_entry_average_with_sd():
    df = pd.DataFrame([fid_row(10, "prior", v, None, variant="dmz", dataset="digits", latent_dim=16, prior="bernoulli",
                               prior_matching=0.0) for v in (1.0, 3.0)])
    table, _ = build_table(df, "main")
    assert table["FID [digits-classifier-v1] T=10"].tolist() == [f"2.00 ± {math.sqrt(2):.2f}"]


def test_representation_table_rows_are_prior_and_z(tmp_path):
    cells = expand("representation", "digits", TINY)
    for i, c in enumerate(cells[:3]):
        write(c, tmp_path, probe_rows(0.5 + 0.1 * i))
    table, _ = build_table(collect(cells, tmp_path), "representation")
    assert list(table.columns[:3]) == ["variant", "prior", "latent_dim"]
    assert table["latent_dim"].tolist() == [16, 64, 256]
    assert table["probe accuracy (held-out)"].tolist() == ["0.500", "0.600", "0.700"]


def test_latex_escapes_and_pm():
    table = pd.DataFrame({"variant": ["z16_pm"], "FID [digits-classifier-v1] T=10": ["1.00 ± 0.20"],
                          "paper": ["–"]})
    tex = to_latex(table, caption="|z| & 50% test", label="tab:x")
    assert r"z16\_pm" in tex and r"1.00 $\pm$ 0.20" in tex and r"50\% test" in tex and r"$|$z$|$ \&" in tex
    assert tex.count(r"\\") == 2 and r"\begin{tabular}{lll}" in tex and "--" in tex


def test_report_writes_csv_tables_and_plots(tmp_path):
    cells = expand("latent_size", "digits", TINY, eval_sizes={"steps": [2, 4], "num_samples": 20}, budget="full")
    for c in cells[:3]:
        write(c, tmp_path / "runs", [fid_row(t, s, 80.0 - t, N=20, seeds=1) for s in ("prior", "empirical", "dataset",
                                                                                   "pixelsnail") for t in (2, 4)])
    out = report("latent_size", "digits", cells=cells, runs_root=tmp_path / "runs", results_dir=tmp_path / "res")
    folder = tmp_path / "res" / "latent_size" / "digits"
    assert out["markdown"] == folder / "table.md" and out["latex"] == folder / "table.tex"
    md = (folder / "table.md").read_text()
    assert "FID [digits-classifier-v1] T=4" in md and "Inception]" not in md
    assert "3 of 9 cells have results" in md and "N=20 samples" in md  # full: z, pm0.1 and mmd1 at 16, 64, 128
    assert r"\begin{tabular}" in (folder / "table.tex").read_text()
    assert {p.name for p in out["plots"]} == {"fid_vs_T.png", "fid_vs_z.png"}
    assert all(p.stat().st_size > 1000 for p in out["plots"])
    assert (folder / "results.csv").exists() and PAPER_NUMBERS.exists()
    # rows in the grid's order: cell, then sampler as the grid lists them, then T
    assert out["table"]["sampler"].tolist()[:4] == ["prior", "empirical", "dataset", "pixelsnail"]

    rep = expand("representation", "digits", TINY)
    for i, c in enumerate(rep):
        write(c, tmp_path / "runs", probe_rows(0.5 + 0.01 * i))
    out = report("representation", "digits", cells=rep, runs_root=tmp_path / "runs", results_dir=tmp_path / "res")
    assert [p.name for p in out["plots"]] == ["probe_vs_z.png"]


def test_a_report_of_some_cells_keeps_the_recorded_rows_of_the_others(tmp_path):
    # run folders are scratch, results.csv is the record: a grid run with --only (or after its run folders are
    # gone) rewrites its own cells' rows and keeps every other cell's rows, value for value
    cells = expand("latent_type", "digits", TINY, eval_sizes={"steps": [2, 4], "num_samples": 20, "seeds": 1})
    by = {c.name: c for c in cells}
    write(by["bernoulli"], tmp_path / "runs", [fid_row(2, "prior", 1 / 3), fid_row(4, "prior", 2 / 3)])
    write(by["normal"], tmp_path / "runs", [fid_row(2, "prior", 30.0)])
    report("latent_type", "digits", cells=cells, runs_root=tmp_path / "runs", results_dir=tmp_path / "res")
    csv = tmp_path / "res" / "latent_type" / "digits" / "results.csv"
    first = pd.read_csv(csv)

    runs2 = tmp_path / "runs2"  # another session: bernoulli's run folder is gone, normal is retrained
    write(by["normal"], runs2, [fid_row(2, "prior", 20.0)])
    out = report("latent_type", "digits", cells=[by["normal"]], runs_root=runs2, results_dir=tmp_path / "res")
    again = pd.read_csv(csv)
    assert list(again["variant"].unique()) == ["bernoulli", "normal"] and out["kept"] == ["bernoulli"]
    assert again[again["variant"] == "bernoulli"]["value"].tolist() == [1 / 3, 2 / 3]
    assert again[again["variant"] == "normal"]["value"].tolist() == [20.0]
    assert list(out["rows"]["variant"].unique()) == ["normal"]  # only what this run collected is "mine"
    md = out["markdown_text"]
    assert "2 of 2 cells have results" in md and "rows of bernoulli kept from the results.csv" in md
    assert len(first) == 3 and len(again) == 3

    report("latent_type", "digits", cells=cells, runs_root=tmp_path / "none", results_dir=tmp_path / "res")
    assert pd.read_csv(csv).equals(again)  # nothing collected: nothing lost


def test_collect_and_report_command_lines(tmp_path, capsys):
    from ablations import collect as collect_cli
    from ablations import report as report_cli

    sets = [a for s in TINY for a in ("--set", s)]
    common = ["--grid", "main", "--preset", "digits", *sets, "--T", "2", "--num-samples", "20", "--eval-seeds", "1", "--nll-images", "4",
              "--out", str(tmp_path / "runs"), "--results-dir", str(tmp_path / "res")]
    cells = expand("main", "digits", TINY, eval_sizes={"steps": [2], "num_samples": 20, "seeds": 1})
    write(cells[1], tmp_path / "runs", [fid_row(2, "prior", 33.3)])
    assert collect_cli.main(common) == 0
    assert "1 rows from 1 of 2 cells" in capsys.readouterr().out
    assert report_cli.main(common + ["--no-plots"]) == 0
    out = capsys.readouterr().out
    assert "| dmz" in out and "33.30" in out and (tmp_path / "res" / "main" / "digits" / "table.tex").exists()
    assert report_cli.main(["--grid", "mian"]) == 2
    assert "did you mean 'main'" in capsys.readouterr().err


def _size_csv(root, label, seed, z16, z128, sha="9371b7aeccca287bee17f58963fb1a0749ffc420850544189f9b06730402117c"):
    import pandas as pd

    base = dict(grid="latent_size", preset="digits", dataset="digits", metric="fid", sampler="prior", T=10, N=300,
                seeds=3, sd=0.2, solver="ddpm", feature_extractor="digits-classifier-v1", prior="bernoulli",
                feature_extractor_weights_sha256=sha, prior_matching=0.0, train_steps=1000, seed=seed)
    df = pd.DataFrame([dict(base, variant="z16", latent_dim=16, value=z16),
                       dict(base, variant="z128", latent_dim=128, value=z128)])
    (root / "latent_size" / label).mkdir(parents=True, exist_ok=True)
    df.to_csv(root / "latent_size" / label / "results.csv", index=False)
    return df


def test_reproduction_check_places_a_new_training_in_the_prediction_interval(tmp_path):
    import math

    from scipy import stats

    from ablations import reproduce

    for k, (a, b) in enumerate(((3.0, 21.0), (4.0, 23.0), (5.0, 22.0))):
        _size_csv(tmp_path, "digits" if k == 0 else f"digits-seed{k}", k, a, b)
    _size_csv(tmp_path, "digits-seed3", 3, 40.0, 1.0, sha="b" * 64)  # stale: another feature space, left out
    ref = reproduce.trainings("latent_size", "digits", tmp_path)
    z16 = ref[ref["variant"] == "z16"].iloc[0]
    assert z16["train_seeds"] == 3 and z16["value"] == 4.0 and z16["train_sd"] == 1.0
    lo, hi = reproduce.prediction_interval(4.0, 1.0, 3)
    half = stats.t.ppf(0.975, 2) * math.sqrt(1 + 1 / 3)
    assert (lo, hi) == (pytest.approx(4.0 - half), pytest.approx(4.0 + half))
    mine = _size_csv(tmp_path / "mine", "digits", 0, 6.0, 60.0)  # z16 inside [-1.3, 9.3]; z128 far above
    check = reproduce.reproduction_check(mine, ref).set_index("cell")
    assert check.loc["z16, z~prior", "yours is"] == "inside"
    assert check.loc["z128, z~prior", "yours is"] == "above the interval"
    assert check.loc["z16, z~prior", "checked in: mean ± sd over trainings"] == "4.00 ± 1.00 (n=3)"
    text = reproduce.to_text(check.reset_index(), reproduce.grid_findings("latent_size", "digits", tmp_path))
    assert "1 of 2 inside the 95% prediction interval" in text
    assert "|z| effect" in text and "-> holds" in text and "Welch (3 vs 3)" in text  # the verdict over 3 trainings
    assert "a/b 5.62" in text  # FID on the log scale: the effect is a ratio
    assert "p = " in text


def test_grid_table_says_its_spread_is_over_sampling_seeds_of_one_training(tmp_path):

    df = _size_csv(tmp_path, "digits", 0, 3.0, 21.0)
    table, notes = build_table(df, "latent_size")
    assert any("sampling seeds of this one training" in n and "not the spread between trainings" in n for n in notes)
    assert not any("holds" in n for n in notes)  # no verdict from one training's sampling spread


def test_rows_name_folders_relative_to_the_checkout_that_ran_them(tmp_path):
    from dmz.runio import REPO, repo_relative

    assert repo_relative(REPO / "results" / "runs" / "main" / "x") == "results/runs/main/x"
    other = tmp_path / "run-seeds"  # a git worktree of the project: its .git is a file
    (other / "results" / "runs").mkdir(parents=True)
    (other / ".git").write_text("gitdir: elsewhere\n")
    assert repo_relative(other / "results" / "runs" / "cell") == "results/runs/cell"
    assert repo_relative(tmp_path / "loose" / "cell") == str(tmp_path / "loose" / "cell")  # no checkout: as given


def test_grid_table_leaves_out_stale_fids_and_names_them(tmp_path):
    """A results.csv keeps a cell's FIDs from another feature space (its record), but its table never sets them
    beside the pinned ones: they are left out and the note names the cell and the command that recomputes them."""
    import pandas as pd

    fresh = _size_csv(tmp_path, "digits", 0, 3.0, 21.0)
    old = _size_csv(tmp_path / "old", "digits", 0, 1.0, 9.0, sha="a" * 64).assign(
        variant=["z16-pm0.1", "z128-pm0.1"], prior_matching=0.1)
    bits = old.iloc[[0]].assign(metric="bits_per_code", value=15.9, T=None, feature_extractor=None,
                                feature_extractor_weights_sha256=None)
    table, notes = build_table(pd.concat([fresh, old, bits], ignore_index=True), "latent_size")
    fid_cols = [c for c in table.columns if str(c).startswith("FID")]
    assert set(table.loc[table[fid_cols].ne("–").any(axis=1) & table[fid_cols].notna().any(axis=1), "variant"]) \
        == {"z16", "z128"}
    assert "15.9 ± 0.2" in set(table.loc[table["variant"] == "z16-pm0.1"].astype(str).values.ravel())  # bits stay
    note = next(n for n in notes if "left out" in n)
    assert "z16-pm0.1, z128-pm0.1" in note and "--only z16-pm0.1,z128-pm0.1" in note
