"""The ablation launcher against the real local SLURM cluster (slurm/start-local-slurm.sh).

Skipped unless `sinfo` answers. A tiny 2-cell grid goes through ``run_grid`` with the ``slurm`` executor and the
``local`` cluster profile (one job array, results collected); a cell's job interrupted mid-training (USR2, as a
time limit does) is requeued by submitit, resumes from the cell's checkpoint and ends with the same weights and the
same FID as an uninterrupted run of the same cell.
"""

from __future__ import annotations

import json
import time

import pytest
import torch

from ablations import run_grid
from ablations.clusters import load_profile
from ablations.grids import cell_dir, expand
from ablations.run_grid import CellJob, cell_statuses, launch, main, make_grid_executor, sinfo_answers

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(600)]

TINY = ["base_channels=8", "latent_dim=4", "attention_head_dim=2", "batch_size=16", "steps=3", "sampling_compile=false",
        "diffusion_steps=20"]  # the NLL runs over every diffusion step: 20, not 1,000
SIZES = {"steps": [2], "num_samples": 20, "seeds": 1, "nll_images": 4}


if not sinfo_answers():
    pytestmark.append(pytest.mark.skip(reason="`sinfo` does not answer: start the local cluster with "
                                              "slurm/start-local-slurm.sh"))


def _sacct_state(job, expected="COMPLETED", timeout_s=30.0) -> str:
    """sacct lags about a second behind the end of a job; ask it afresh (not submitit's cached, backed-off view)."""
    deadline = time.monotonic() + timeout_s
    state = job.watcher.get_state(job.job_id, mode="force")
    while state != expected and time.monotonic() < deadline:
        time.sleep(0.5)
        state = job.watcher.get_state(job.job_id, mode="force")
    return state


def test_tiny_grid_as_a_slurm_array_and_collected(tmp_path, capsys):
    sets = [a for s in TINY for a in ("--set", s)]
    args = ["--grid", "main", "--preset", "digits", *sets, "--T", "2", "--num-samples", "20", "--eval-seeds", "1", "--nll-images", "4",
            "--out", str(tmp_path), "--results-dir", str(tmp_path / "res"), "--executor", "slurm",
            "--cluster", "local"]
    assert main(args) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    assert "executor: slurm" in out and "submitted array" in out and "ddpm: done" in out and "dmz: done" in out
    recs = [json.loads(line) for line in (tmp_path / "main" / "digits" / run_grid.SUBMISSIONS).read_text().splitlines()]
    assert [r["executor"] for r in recs] == ["slurm", "slurm"]
    assert len({r["job_id"].split("_")[0] for r in recs}) == 1  # one array, one task per cell
    cells = expand("main", "digits", TINY, eval_sizes=SIZES)
    assert [s.state for s in cell_statuses(cells, tmp_path)] == ["done", "done"]
    for c in cells:
        marker = json.loads((cell_dir(c, tmp_path) / run_grid.STATE_FILE).read_text())
        assert marker["state"] == "done" and marker["job_id"] in {r["job_id"] for r in recs}
    import pandas as pd
    df = pd.read_csv(tmp_path / "res" / "main" / "digits" / "results.csv")
    # per cell: one FID row, and nll_bpd + nll_bpd_z for the train and test splits (main's table carries the NLL)
    assert sorted(df.groupby("variant").size().items()) == [("ddpm", 5), ("dmz", 5)]
    assert sorted(df[df.metric == "fid"].variant) == ["ddpm", "dmz"] and "| dmz" in out  # the table is printed
    # a second run submits nothing
    assert main(args) == 0
    assert "submitted" not in capsys.readouterr().out


def test_until_decided_runs_two_waves_as_two_slurm_arrays(tmp_path, capsys):
    """Real tiny trainings: a look at 2 trainings a side can decide nothing (its level is ~1e-5), so a design of at
    most 4 trains two waves of 2 seeds, each one job array, and judges after each."""
    sets = [a for s in TINY for a in ("--set", s)]
    args = ["--grid", "main", "--preset", "digits", *sets, "--T", "2", "--num-samples", "20", "--eval-seeds", "1",
            "--nll-images", "4", "--out", str(tmp_path), "--results-dir", str(tmp_path / "res"), "--executor",
            "slurm", "--cluster", "local", "--until-decided", "--max-trainings", "4", "--wave", "2"]
    assert main(args) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    assert "wave 1: seeds 0, 1" in out and "wave 2: seeds 2, 3" in out and "look 2 (4 seed(s) on disk" in out
    assert out.count("submitted array") == 2
    recs = [json.loads(line) for line in (tmp_path / "main" / "digits" / run_grid.SUBMISSIONS).read_text().splitlines()]
    assert len(recs) == 8 and len({r["job_id"].split("_")[0] for r in recs}) == 2  # 8 trainings in two arrays
    from ablations.sequential import load_design

    assert load_design(tmp_path / "res", "main", "digits-crn").looks == [2, 4]
    import pandas as pd

    for label in ("digits-crn", "digits-crn-seed1", "digits-crn-seed2", "digits-crn-seed3"):
        df = pd.read_csv(tmp_path / "res" / "main" / label / "results.csv")
        assert set(df["seeding"]) == {"crn"} and sorted(set(df[df.metric == "fid"].variant)) == ["ddpm", "dmz"]


def test_requeued_cell_resumes_from_its_checkpoint_and_matches_an_uninterrupted_run(tmp_path):
    ckpt_every = 10
    cell = expand("main", "digits", TINY + ["steps=400", f"ckpt_every={ckpt_every}", "log_every=1"],
                  eval_sizes=SIZES)[1]
    root = tmp_path / "slurm"
    run_dir = cell_dir(cell, root)
    ex = make_grid_executor("slurm", root / "_submitit" / "%j", load_profile("local"), job_name="dmz-test-requeue",
                            gpus=0)
    job = ex.submit(CellJob(), cell.to_dict(), str(run_dir), None)

    def logged_steps():
        path = run_dir / "metrics.jsonl"
        return [json.loads(line)["step"] for line in path.read_text().splitlines()] if path.exists() else []

    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        steps = logged_steps()
        if (run_dir / "checkpoint.pt").exists() and steps and steps[-1] >= 2 * ckpt_every + 3:
            break
        assert not job.done(), f"job {job.job_id} ended early: {job.state}"
        time.sleep(0.2)
    at_interrupt = logged_steps()[-1]
    assert at_interrupt < 400, "training finished before it could be interrupted: raise steps"
    job._interrupt(timeout=True)  # USR2 only, as a time limit: submitit checkpoints and requeues the job
    result = job.result()
    assert result["train"]["finished"] and result["train"]["step"] == 400
    assert _sacct_state(job) == "COMPLETED"

    marker = json.loads((run_dir / run_grid.STATE_FILE).read_text())
    assert marker["state"] == "done" and marker["restart"] == 1  # it ran twice: SLURM_RESTART_COUNT=1
    steps = logged_steps()
    assert sorted(set(steps)) == list(range(1, 401))
    redone = sorted({s for s in steps if steps.count(s) > 1})
    assert redone, "no step was logged twice: the job was not interrupted mid-training"
    # resumed from the last checkpoint, not from scratch: only the steps after it were redone
    assert redone[0] > 1 and (redone[0] - 1) % ckpt_every == 0 and redone[-1] < at_interrupt + 50, redone

    (one,) = launch([cell], kind="debug", profile=load_profile("local"), root=tmp_path / "plain",
                    say=lambda m: None)
    assert one.ok, one
    a = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=False)
    b = torch.load(cell_dir(cell, tmp_path / "plain") / "checkpoint.pt", map_location="cpu", weights_only=False)
    assert a["step"] == b["step"] == 400
    for part in ("model", "ema"):
        for k in a[part]:
            torch.testing.assert_close(a[part][k], b[part][k], rtol=0, atol=0, msg=f"{part}.{k}")
    fid = [json.loads(line) for line in (run_dir / "results.jsonl").read_text().splitlines()]
    fid_plain = [json.loads(line) for line in
                 (cell_dir(cell, tmp_path / "plain") / "results.jsonl").read_text().splitlines()]
    key = lambda r: (r["metric"], r.get("T"), r.get("reference"))  # noqa: E731
    assert sorted(map(key, fid), key=str) == sorted(map(key, fid_plain), key=str)
    assert [(r["metric"], r["T"]) for r in fid if r["metric"] == "fid"] == [("fid", 2)]
    plain = {key(r): r["value"] for r in fid_plain}
    for r in fid:  # FID and the NLL rows: the requeued run evaluates to the same numbers
        assert r["value"] == pytest.approx(plain[key(r)], rel=1e-6), key(r)
