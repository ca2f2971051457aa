"""ablations.run_grid without SLURM: status, idempotent skipping, the debug and local executors on tiny grids
(including a 2-task DDP cell through submitit's local executor), and running the script by path."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ablations import run_grid
from ablations.clusters import ClusterProfile, load_profile
from ablations.grids import cell_dir, expand, requested_rows
from ablations.run_grid import STATE_FILE, CellJob, cell_statuses, format_statuses, launch, main

REPO = Path(__file__).resolve().parent.parent
TINY = ["base_channels=8", "latent_dim=4", "attention_head_dim=2", "batch_size=16", "steps=3",
        "diffusion_steps=20"]  # the NLL runs over every diffusion step: 20, not 1,000
SIZES = {"steps": [2], "num_samples": 20, "seeds": 1, "nll_images": 4}
CLI_SIZES = ["--T", "2", "--num-samples", "20", "--eval-seeds", "1", "--nll-images", "4"]


def tiny_args(root, *extra):
    sets = [a for s in TINY for a in ("--set", s)]
    return ["--grid", "main", "--preset", "digits", *sets, *CLI_SIZES, "--out", str(root),
            "--results-dir", str(root / "res"), *extra]


def fake_done(cell, root):
    """Make a cell look finished: training summary + every requested row."""
    d = cell_dir(cell, root)
    d.mkdir(parents=True, exist_ok=True)
    (d / "train_summary.json").write_text(json.dumps({"finished": True, "step": 3}))
    with open(d / "results.jsonl", "w") as f:
        for w in requested_rows(cell):
            row = {k: (v if v is not None else 1) for k, v in w.items()}
            f.write(json.dumps({**row, "value": 1.0, "sd": None, "feature_extractor": "digits-classifier-v1"}) + "\n")
    return d


def record(root, cell, executor, job_id, host=None):
    path = root / cell.grid / cell.preset / run_grid.SUBMISSIONS
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps({"cell": cell.name, "run_dir_name": cell.dirname, "executor": executor,
                            "job_id": str(job_id), "host": host or os.uname().nodename,
                            "stderr": f"/logs/{job_id}.err", "stdout": f"/logs/{job_id}.out"}) + "\n")


# ---------------------------------------------------------------------------------------------------- status
def test_status_reports_every_state(tmp_path, monkeypatch):
    cells = expand("latent_type", "digits", TINY, eval_sizes=SIZES, only=["bernoulli", "normal", "categorical", "none"])
    done, failed, running, queued = cells
    fake_done(done, tmp_path)
    d = cell_dir(failed, tmp_path)
    d.mkdir(parents=True)
    (d / "metrics.jsonl").write_text(json.dumps({"step": 2}) + "\n")
    record(tmp_path, failed, "slurm", "71_1")
    (d / STATE_FILE).write_text(json.dumps({"state": "failed", "job_id": "71_1", "log": "/logs/71_1.err",
                                            "error": "RuntimeError: boom"}))
    record(tmp_path, running, "slurm", "71_2")
    record(tmp_path, queued, "slurm", "71_3")
    monkeypatch.setattr(run_grid, "_slurm_states", lambda ids: {"71_2": "RUNNING", "71_3": "PENDING"})
    st = {s.cell.name: s for s in cell_statuses(cells, tmp_path)}
    assert {k: v.state for k, v in st.items()} == {"bernoulli": "done", "normal": "failed", "categorical": "running",
                                                   "none": "pending"}
    assert st["normal"].log == "/logs/71_1.err" and "boom" in st["normal"].detail
    assert st["categorical"].live and st["none"].live and not st["normal"].live
    assert "pending" in st["none"].detail
    text = format_statuses(list(st.values()))
    assert "log: /logs/71_1.err" in text and "1 done, 1 running, 1 failed, 1 pending" in text

    # the queued job left the queue without finishing the cell: failed, with the job's own log
    monkeypatch.setattr(run_grid, "_slurm_states", lambda ids: {"71_2": "RUNNING"})
    st = {s.cell.name: s for s in cell_statuses(cells, tmp_path)}
    assert st["none"].state == "failed" and st["none"].log == "/logs/71_3.err" and "ended" in st["none"].detail
    # scheduler unreachable: nothing is called failed on a guess
    monkeypatch.setattr(run_grid, "_slurm_states", lambda ids: None)
    st = {s.cell.name: s for s in cell_statuses(cells, tmp_path)}
    assert st["categorical"].state == "pending" and "not answering" in st["categorical"].detail


def test_status_of_local_jobs_follows_the_process(tmp_path):
    cell = expand("main", "digits", TINY, eval_sizes=SIZES)[0]
    assert cell_statuses([cell], tmp_path)[0].detail == "not submitted"
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)", "submitit"])
    deadline = time.monotonic() + 10
    while b"submitit" not in Path(f"/proc/{proc.pid}/cmdline").read_bytes() and time.monotonic() < deadline:
        time.sleep(0.05)  # until the child has exec'd
    try:
        record(tmp_path, cell, "local", proc.pid)
        assert cell_statuses([cell], tmp_path)[0].state == "running"
    finally:
        proc.kill()
        proc.wait()
    s = cell_statuses([cell], tmp_path)[0]
    assert s.state == "failed" and s.log == f"/logs/{proc.pid}.err"
    record(tmp_path, cell, "local", proc.pid, host="elsewhere")  # another machine's pid is not ours to probe
    assert cell_statuses([cell], tmp_path)[0].state == "failed"


# ---------------------------------------------------------------------------------------------------- skipping
def test_done_and_live_cells_are_not_submitted(tmp_path, monkeypatch, capsys):
    cells = expand("latent_type", "digits", TINY, eval_sizes=SIZES)
    fake_done(cells[0], tmp_path)
    record(tmp_path, cells[1], "slurm", "9_1")
    monkeypatch.setattr(run_grid, "_slurm_states", lambda ids: {"9_1": "RUNNING"})
    launched = []
    monkeypatch.setattr(run_grid, "launch", lambda todo, **kw: launched.append([c.name for c in todo]) or [])
    args = ["--grid", "latent_type", "--preset", "digits", *[a for s in TINY for a in ("--set", s)], *CLI_SIZES,
            "--out", str(tmp_path), "--executor", "debug", "--no-report"]
    assert main(args) == 0
    assert launched == [["categorical", "categorical-16bit", "none"]]
    out = capsys.readouterr().out
    assert "skip bernoulli: done" in out and "skip normal: running" in out

    for c in cells:
        fake_done(c, tmp_path)
    launched.clear()
    assert main(args) == 0 and launched == [[]]  # nothing left to do: nothing submitted
    assert main(args + ["--dry-run"]) == 0
    assert "0 job(s) would be submitted" in capsys.readouterr().out


def test_bad_grid_key_and_cluster_are_errors(capsys):
    assert main(["--grid", "latent_sise"]) == 2
    assert "did you mean 'latent_size'" in capsys.readouterr().err
    assert main(["--grid", "main", "--set", "latnt_dim=3"]) == 2
    assert "did you mean 'latent_dim'" in capsys.readouterr().err
    assert main(["--grid", "main", "--cluster", "nowhere"]) == 2
    assert "available profiles" in capsys.readouterr().err


def test_cell_job_pickles_by_module_name():
    blob = pickle.dumps(CellJob())
    assert b"ablations.run_grid" in blob and b"__main__" not in blob


# ---------------------------------------------------------------------------------------------------- executors
def test_debug_executor_grid_one_failure_does_not_stop_the_others(tmp_path, monkeypatch, capsys):
    real = run_grid._evaluate

    def flaky(run_dir, cell, log):
        if cell.name == "ddpm":
            raise RuntimeError("injected evaluation failure")
        return real(run_dir, cell, log)

    monkeypatch.setattr(run_grid, "_evaluate", flaky)
    assert main(tiny_args(tmp_path, "--executor", "debug")) == 1
    out = capsys.readouterr().out
    assert "ddpm: FAILED: injected evaluation failure" in out
    assert "dmz: done" in out and "1 cell(s) failed: ddpm" in out
    assert "| dmz" in out and "FID [digits-classifier-v1] T=2" in out  # the table of what finished

    st = {s.cell.name: s for s in cell_statuses(expand("main", "digits", TINY, eval_sizes=SIZES), tmp_path)}
    assert st["ddpm"].state == "failed" and st["ddpm"].detail == "RuntimeError: injected evaluation failure"
    assert st["ddpm"].log is None  # the debug executor logs to this console, not to a file
    assert st["dmz"].state == "done"
    ckpt = st["ddpm"].run_dir / "checkpoint.pt"
    trained_at = ckpt.stat().st_mtime_ns

    monkeypatch.setattr(run_grid, "_evaluate", real)  # fixed: a rerun only redoes the failed cell's missing part
    assert main(tiny_args(tmp_path, "--executor", "debug")) == 0
    out = capsys.readouterr().out
    assert "skip dmz: done" in out and "started ddpm" in out and "started dmz" not in out
    assert ckpt.stat().st_mtime_ns == trained_at  # finished training is not redone
    assert all(s.state == "done" for s in cell_statuses(expand("main", "digits", TINY, eval_sizes=SIZES), tmp_path))
    csv = (tmp_path / "res" / "main" / "digits" / "results.csv").read_text()
    assert csv.count("\n") == 1 + 2 * 5  # header + per cell one FID row and 4 NLL rows (2 metrics x 2 splits)


def test_local_executor_runs_cells_as_subprocesses_then_skips(tmp_path, capsys):
    assert main(tiny_args(tmp_path, "--executor", "local", "--parallel", "2", "--no-report")) == 0
    out = capsys.readouterr().out
    assert "2 cell(s) at a time" in out and "ddpm: done" in out and "dmz: done" in out
    recs = [json.loads(line) for line in (tmp_path / "main" / "digits" / run_grid.SUBMISSIONS).read_text().splitlines()]
    assert [r["executor"] for r in recs] == ["local", "local"]
    assert all(Path(r["stderr"]).exists() for r in recs)  # submitit's own log files
    assert main(tiny_args(tmp_path, "--executor", "local", "--no-report")) == 0
    assert "started" not in capsys.readouterr().out


def test_ddp_cell_through_submitit_tasks_matches_one_process(tmp_path):
    """tasks_per_node=2 on the local executor: TorchDistributedEnvironment -> gloo DDP; rank 0 evaluates. The
    trainer slices one global batch across processes, so the run equals a single-process one (same losses, same
    FID) up to the order of float reductions. (Weights are not compared: in this tiny model every conv bias feeds a
    one-channel GroupNorm, gets a zero gradient, and Adam turns the float noise in it into lr-sized steps.)"""
    cell = expand("main", "digits", TINY + ["warmup_steps=0", "log_every=1"], eval_sizes=SIZES)[1]
    two = ClusterProfile(name="local-ddp2", partition=None, timeout_min=10, tasks_per_node=2)
    (o,) = launch([cell], kind="local", profile=two, root=tmp_path / "ddp", say=lambda m: None)
    assert o.ok, o
    (one,) = launch([cell], kind="debug", profile=load_profile("local"), root=tmp_path / "one", say=lambda m: None)
    assert one.ok, one
    d2, d1 = cell_dir(cell, tmp_path / "ddp"), cell_dir(cell, tmp_path / "one")
    assert json.loads((d2 / "run.json").read_text())["world_size"] == 2
    assert json.loads((d1 / "run.json").read_text())["world_size"] == 1
    loss2, loss1 = ([json.loads(line)["loss"] for line in (d / "metrics.jsonl").read_text().splitlines()]
                    for d in (d2, d1))
    assert len(loss2) == 3 and loss2 == pytest.approx(loss1, rel=1e-4)
    assert loss2[0] != pytest.approx(loss2[2], rel=1e-3)  # the model did change over the 3 steps
    rows2, rows1 = ([json.loads(line) for line in (d / "results.jsonl").read_text().splitlines()] for d in (d2, d1))
    assert [(r["metric"], r["T"]) for r in rows2][:1] == [("fid", 2)]  # only rank 0 evaluated: one row each
    assert len(rows2) == 5  # FID + 4 NLL rows, once
    assert rows2[0]["value"] == pytest.approx(rows1[0]["value"], rel=1e-3)


def test_script_runs_by_path_from_anywhere(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ""}
    proc = subprocess.run([sys.executable, str(REPO / "ablations" / "run_grid.py"), *tiny_args(tmp_path, "--dry-run",
                                                                                              "--executor", "local")],
                          cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "would run ddpm" in proc.stdout and "2 job(s) would be submitted to local" in proc.stdout
    proc = subprocess.run([sys.executable, str(REPO / "ablations" / "run_grid.py"), "--grid", "mian"], cwd=tmp_path,
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2 and "did you mean 'main'" in proc.stderr


# ---------------------------------------------------------------------------------------------------- latent_size cell
def test_latent_size_cell_fits_pixelsnail_and_writes_code_rows(tmp_path):
    """A whole latent_size cell (train -> PixelSNAIL -> FID with 4 z-samplers -> code diagnostics), tiny sizes."""
    from ablations.grids import is_done, missing_rows
    from dmz.runio import read_jsonl

    cells = expand("latent_size", "digits", TINY + ["warmup_steps=0"], eval_sizes={**SIZES, "pixelsnail_epochs": 2},
                   budget="full")
    cell = next(c for c in cells if c.name == "z16")
    cell = dataclasses.replace(cell, pixelsnail={**cell.pixelsnail, "model_kwargs": {
        "channel": 8, "res_channel": 8, "n_block": 1, "n_res_block": 1, "attention": False}},
        evals=tuple(e for e in cell.evals if "mi" not in e.metrics))  # I(z; x_t): tests/test_mi.py, at small sizes
    d = cell_dir(cell, tmp_path)
    assert missing_rows(cell, d)  # nothing yet
    out = run_grid.run_cell(cell, d, threads=1, log=lambda m: None)
    assert set(out["timings"]) == {"train", "pixelsnail", "evaluate"}
    assert is_done(cell, d) and (d / "pixelsnail.pt").exists()
    rows = read_jsonl(d / "results.jsonl")
    bits = {r["sampler"]: r["value"] for r in rows if r["metric"] == "bits_per_code"}
    assert set(bits) == {"prior", "empirical", "pixelsnail"} and bits["prior"] == 16.0  # Bernoulli(0.5): |z| bits
    assert 0 < bits["empirical"] <= 16.0 and bits["pixelsnail"] > 0
    fids = {(r["sampler"], r["T"]) for r in rows if r["metric"] == "fid"}
    assert fids == {(s, 2) for s in ("prior", "empirical", "dataset", "pixelsnail")}
    assert json.loads((d / "code_diagnostics.json").read_text())["bits_per_code"]["uniform"] == 16.0


# ---------------------------------------------------------------------------------------------------- shared cells
def test_a_cell_another_grid_trained_and_evaluated_is_copied_not_recomputed(tmp_path, monkeypatch):
    """latent_type's bernoulli and conditioning's cross_attention are one config: the second copies the first's
    training (same checkpoint bytes, metrics untouched) and the result rows it asks for, marked as copied."""
    tiny = TINY + ["sampling_compile=false"]
    src_cell = expand("latent_type", "digits", tiny, eval_sizes={**SIZES, "steps": [2, 3]}, only=["bernoulli"])[0]
    dst_cell = expand("conditioning", "digits", tiny, eval_sizes=SIZES, only=["cross_attention"])[0]
    assert src_cell.run_id == dst_cell.run_id
    src, dst = cell_dir(src_cell, tmp_path), cell_dir(dst_cell, tmp_path)
    assert run_grid.reusable_training(dst_cell, dst) is None  # nothing finished yet
    run_grid.run_cell(src_cell, src, threads=1, log=lambda m: None)
    assert run_grid.reusable_training(dst_cell, dst) == src

    def no_eval(*a, **k):
        raise AssertionError("evaluation ran although every row was there to copy")

    monkeypatch.setattr("evaluation.run.evaluate", no_eval)
    said = []
    out = run_grid.run_cell(dst_cell, dst, threads=1, log=said.append)
    assert "reuse" in out["timings"] and any("copied, not retrained" in m for m in said)
    assert (dst / "checkpoint.pt").read_bytes() == (src / "checkpoint.pt").read_bytes()
    assert (dst / "metrics.jsonl").read_text() == (src / "metrics.jsonl").read_text()  # no step trained again
    rows = [json.loads(line) for line in (dst / "results.jsonl").read_text().splitlines()]
    assert rows and all(r["copied_from"] == str(src) for r in rows)
    assert {r["T"] for r in rows if r["metric"] == "fid"} == {2}  # only what this cell asks for (not T=3)
    assert run_grid.is_done(dst_cell, dst)
    assert json.loads((dst / STATE_FILE).read_text())["state"] == "done"

    # the same config trained again elsewhere (other weights) lends no rows
    other_cell = expand("main", "digits", tiny, eval_sizes=SIZES, only=["dmz"])[0]
    other = cell_dir(other_cell, tmp_path)
    other.mkdir(parents=True)
    (other / "checkpoint.pt").write_bytes(b"other weights")
    (other / "train_summary.json").write_text(json.dumps({"finished": True}))
    assert run_grid.share_rows(other_cell, other) == []
    (other / "checkpoint.pt").write_bytes((src / "checkpoint.pt").read_bytes())  # the same weights do
    assert {r["T"] for r in run_grid.share_rows(other_cell, other)} == {2}


def test_seeds_run_one_array_and_the_report_checks_against_the_trainings_on_disk(tmp_path, capsys):
    from ablations.grids import cells_from_args, add_cell_args
    import argparse

    p = argparse.ArgumentParser()
    add_cell_args(p)
    args = tiny_args(tmp_path, "--seeds", "0", "1")
    _, _, cells = cells_from_args(p.parse_args([a for a in args if a not in ("--results-dir", str(tmp_path / "res"))]))
    for c in cells:
        fake_done(c, tmp_path)
    assert main([*args, "--executor", "debug"]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "res" / "main" / "digits" / "results.csv").exists()
    assert (tmp_path / "res" / "main" / "digits-seed1" / "results.csv").exists()  # rows stay per training
    assert "Reproduction check: no checked-in trainings of these cells" in out  # nothing was on disk before
    assert main([*args, "--executor", "debug"]) == 0  # now the two trainings are the reference
    out = capsys.readouterr().out
    assert "inside the 95% prediction interval" in out and "(n=2)" in out
