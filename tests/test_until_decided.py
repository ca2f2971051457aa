"""run_grid --until-decided: waves of training seeds judged after each wave at group-sequential levels, on
trainings whose rows are written by a stand-in for the jobs (no training: the loop, not the model, is tested here;
tests/test_slurm_grid.py runs two real waves through the local SLURM)."""

from __future__ import annotations

import json
import math

import pytest

import ablations.run_grid as run_grid
from ablations.grids import cell_dir, requested_rows
from ablations.run_grid import Outcome, main
from ablations.sequential import Design, load_design

TINY = ["base_channels=8", "latent_dim=4", "attention_head_dim=2", "batch_size=16", "steps=3", "diffusion_steps=20"]
CLI = ["--T", "10", "20", "--num-samples", "20", "--eval-seeds", "1", "--nll-images", "4"]


def args(root, *extra):
    return ["--grid", "main", "--preset", "digits", *[a for s in TINY for a in ("--set", s)], *CLI, "--out",
            str(root), "--results-dir", str(root / "res"), "--executor", "debug", *extra]


def fake_launch(fid):
    """A ``launch`` that writes each cell's rows instead of training: FID ``fid(variant, seed)``, NLL 2.0."""
    calls = []

    def launch(cells, **_kw):
        calls.append(sorted((c.name, c.seed) for c in cells))
        for c in cells:
            d = cell_dir(c, _kw["root"])
            d.mkdir(parents=True, exist_ok=True)
            (d / "train_summary.json").write_text(json.dumps({"finished": True, "step": 3}))
            with open(d / "results.jsonl", "w") as f:
                for w in requested_rows(c):
                    row = {k: (v if v is not None else 1) for k, v in w.items()}
                    value = fid(c.name, c.seed) if w["metric"] == "fid" else 2.0 + 0.01 * c.seed
                    f.write(json.dumps({**row, "value": value, "sd": None, "reference": "train",
                                        "feature_extractor": "digits-classifier-v1"}) + "\n")
        return [Outcome(c, None, True) for c in cells]

    return launch, calls


def seed_effect(seed):
    return [0.0, 0.3, -0.2, 0.5, -0.4, 0.1, 0.25, -0.1][seed % 8]


def test_a_clear_difference_stops_at_the_first_look_that_decides_it(tmp_path, monkeypatch, capsys):
    # DMZ's FID 30% below DDPM's, seeds shared (crn): the per-seed effect cancels in the paired test
    launch, calls = fake_launch(lambda v, k: math.exp(1.5 + seed_effect(k) + (-0.3 if v == "dmz" else 0.0)
                                                      + 0.03 * seed_effect(3 * k + (v == "dmz"))))
    monkeypatch.setattr(run_grid, "launch", launch)
    assert main(args(tmp_path, "--until-decided", "--max-trainings", "8")) == 0
    out = capsys.readouterr().out
    assert calls[0] == [("ddpm", 0), ("ddpm", 1), ("dmz", 0), ("dmz", 1)]  # wave 1: every cell, seeds 0 and 1
    assert len(calls) == 2 and calls[1] == [("ddpm", 2), ("ddpm", 3), ("dmz", 2), ("dmz", 3)]
    assert "wave 1: seeds 0, 1" in out and "wave 2: seeds 2, 3" in out and "wave 3" not in out
    assert "1a [1] holds (decided); paired t (4 pairs" in out  # n=2 could not decide (level 1e-5); n=4 did
    assert "every counted part has stopped" in out
    design = load_design(tmp_path / "res", "main", "digits-crn")
    assert design.looks == [2, 4] and design.max_trainings == 8
    assert (tmp_path / "res" / "main" / "digits-crn-seed3" / "results.csv").exists()
    # the paper report reads those rows at the design's levels: decided at n=4 under a level below 0.05
    from ablations.paper_report import judge_claims

    _, claims = judge_claims("digits", results_dir=tmp_path / "res", paper_numbers=None)
    part = next(p for c in claims if c.cid == "1" for p in c.parts if p.pid == "1a")
    assert part.test.test == "paired t" and part.test.n_pairs == 4 and part.alpha < 0.01
    assert part.alpha == pytest.approx(Design(max_trainings=8, looks=[2, 4]).alpha_at(4))


def test_no_difference_runs_to_the_maximum_or_to_futility_and_never_decides(tmp_path, monkeypatch, capsys):
    launch, calls = fake_launch(lambda v, k: math.exp(1.5 + seed_effect(k) + 0.2 * seed_effect(k * 3 + (v == "dmz"))))
    monkeypatch.setattr(run_grid, "launch", launch)
    assert main(args(tmp_path, "--until-decided", "--max-trainings", "6")) == 0
    out = capsys.readouterr().out
    assert sum(len(c) for c in calls) <= 12 and calls[0][0] == ("ddpm", 0)
    assert "holds (decided)" not in out and "does not hold (decided)" not in out
    assert "every counted part has stopped" in out or "the most trainings allowed" in out
    # a second run finds the design and the trainings on disk and trains nothing more
    before = len(calls)
    assert main(args(tmp_path, "--until-decided", "--max-trainings", "6")) == 0
    assert len(calls) == before


def test_dry_run_prints_the_waves_and_trains_nothing(tmp_path, monkeypatch, capsys):
    launch, calls = fake_launch(lambda v, k: 1.0)
    monkeypatch.setattr(run_grid, "launch", launch)
    assert main(args(tmp_path, "--until-decided", "--max-trainings", "8", "--dry-run")) == 0
    out = capsys.readouterr().out
    assert not calls and "dry run: nothing trained" in out
    for w, seeds in ((1, "0, 1"), (2, "2, 3"), (3, "4, 5"), (4, "6, 7")):
        assert f"wave {w}" in out and f"seeds {seeds}" in out
    assert "n=8: paired t p < 0.04" in out  # the last planned look's level, below the fixed-n 0.05


@pytest.mark.parametrize("extra, message", [
    (["--seeds", "0", "1"], "--until-decided chooses the training seeds itself"),
    (["--set", "seed=3"], "drop --set seed="),
    (["--set", "seeding=v1"], "drop --set seeding="),
    (["--max-trainings", "1"], "--max-trainings must be at least 2"),
])
def test_bad_until_decided_requests_get_one_line(tmp_path, capsys, extra, message):
    assert main(args(tmp_path, "--until-decided", *extra)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and message in err[0]


def test_max_trainings_without_until_decided_is_one_line(tmp_path, capsys):
    assert main(args(tmp_path, "--max-trainings", "4")) == 2
    assert "belong to --until-decided" in capsys.readouterr().err


def test_a_maximum_below_the_trainings_on_disk_is_one_line(tmp_path, monkeypatch, capsys):
    launch, _ = fake_launch(lambda v, k: math.exp(1.5 + seed_effect(k)))
    monkeypatch.setattr(run_grid, "launch", launch)
    assert main(args(tmp_path, "--until-decided", "--max-trainings", "4")) == 0
    capsys.readouterr()
    (tmp_path / "res" / "main" / "digits-crn" / "sequential.json").unlink()  # a new design over old trainings
    assert main(args(tmp_path, "--until-decided", "--max-trainings", "2")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "below the 4 crn trainings already on disk" in err[0]


def test_a_grid_with_no_claim_to_decide_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("ablations.sequential.grid_claims", lambda grid, preset: [])
    assert main(args(tmp_path, "--until-decided")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "grid main has no claim to decide" in err[0]


def test_paper_report_on_a_results_dir_that_does_not_exist_is_one_line(tmp_path, capsys):
    from ablations.report import main as report_main

    assert report_main(["--paper", "--preset", "digits", "--results-dir", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0]
