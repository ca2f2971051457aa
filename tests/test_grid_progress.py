"""run_grid's progress line per running cell (local and slurm executors): phase, step/total, elapsed, ETA."""

from __future__ import annotations

import json

from ablations.grids import expand, requested_rows
from ablations.run_grid import LOCK_FILE, STATE_FILE, cell_progress
from dmz.locks import FileLock

TINY = ["base_channels=8", "latent_dim=4", "attention_head_dim=2", "batch_size=16"]
T0 = 1_700_000_000.0  # when the job was started


def _state(d, **kw):
    (d / STATE_FILE).write_text(json.dumps(kw))


def test_train_line_counts_only_this_jobs_steps_for_the_eta(tmp_path):
    cell = expand("main", "digits", TINY + ["steps=1000"], eval_sizes={"steps": [2], "num_samples": 20})[1]
    assert cell_progress(cell, tmp_path, started=T0, now=T0 + 3) == "dmz: starting | elapsed 3s"
    _state(tmp_path, state="done", phase="evaluate", time=T0 - 600)  # an earlier job's state: not this one's
    assert cell_progress(cell, tmp_path, started=T0, now=T0 + 3) == "dmz: starting | elapsed 3s"
    _state(tmp_path, state="running", phase="train", time=T0 + 5)
    assert cell_progress(cell, tmp_path, started=T0, now=T0 + 6) == "dmz: train step 0/1000 | elapsed 6s | ETA ?"
    # a resumed job: 100 steps were trained by an earlier job, this one did 200 more in 20 s -> 10 steps/s
    rows = [{"step": 50, "time": T0 - 80}, {"step": 100, "time": T0 - 50}, {"step": 300, "time": T0 + 25}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    line = cell_progress(cell, tmp_path, started=T0, now=T0 + 30)
    assert line == "dmz: train step 300/1000 | elapsed 30s | ETA 1m10s (train)"
    _state(tmp_path, state="failed", phase="train", time=T0 + 40)
    assert cell_progress(cell, tmp_path, started=T0, now=T0 + 3700) == "dmz: failed | elapsed 1h01m"


def test_evaluate_line_counts_rows_and_estimates_from_rows_done_since_first_seen(tmp_path):
    cell = expand("latent_type", "digits", TINY, eval_sizes={"steps": [2, 4], "num_samples": 20, "seeds": 1},
                  only=["none"])[0]
    want = requested_rows(cell)
    assert len(want) == 2
    _state(tmp_path, state="running", phase="evaluate", time=T0 + 100)
    track: dict = {}
    assert cell_progress(cell, tmp_path, started=T0, now=T0 + 110, track=track) == \
        "none: evaluate rows 0/2 | elapsed 1m50s | ETA ?"
    row = {k: (v if v is not None else 1) for k, v in want[0].items()}
    (tmp_path / "results.jsonl").write_text(json.dumps({**row, "value": 1.0}) + "\n")
    assert cell_progress(cell, tmp_path, started=T0, now=T0 + 150, track=track) == \
        "none: evaluate rows 1/2 | elapsed 2m30s | ETA 40s (evaluate)"


def test_a_job_waiting_for_another_process_says_whom_it_waits_for(tmp_path):
    cell = expand("main", "digits", TINY, eval_sizes={"steps": [2]})[0]
    _state(tmp_path, state="running", phase="train", time=T0 + 5)  # the other process's phase
    with FileLock(tmp_path / LOCK_FILE, what="main/ddpm, job 77", job_id="77") as lock:
        assert lock.held
        line = cell_progress(cell, tmp_path, started=T0, job_id="78", now=T0 + 9)
        assert line.startswith(f"ddpm: waiting for {LOCK_FILE} (held by pid ") and "job 77" in line
        assert line.endswith("| elapsed 9s")
        assert cell_progress(cell, tmp_path, started=T0, job_id="77", now=T0 + 9).startswith("ddpm: train step")
