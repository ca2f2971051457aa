"""Concurrency: dmz.locks (flock), whole appends to JSON-lines files, the per-cell lock of grid jobs, and two real
run_grid invocations on one results folder (one of them with a job killed by SIGKILL while it holds a cell)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ablations.clusters import load_profile
from ablations.grids import cell_dir, expand, requested_rows
from ablations.run_grid import LOCK_FILE, cell_statuses, launch, run_cell
from dmz.locks import FileLock, LockHeld, held_by, read_holder
from dmz.runio import append_jsonl, read_jsonl

REPO = Path(__file__).resolve().parent.parent
TINY = ["base_channels=8", "latent_dim=4", "attention_head_dim=2", "batch_size=16", "steps=3", "log_every=1",
        "sampling_compile=false", "diffusion_steps=20"]  # no minute of compiling; an NLL over 20 steps, not 1,000
SIZES = {"steps": [2], "num_samples": 20, "seeds": 1, "nll_images": 4}
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}

HOLD = """
import sys, time
from dmz.locks import FileLock
lock = FileLock(sys.argv[1], what="test holder")
lock.acquire()
print("locked", flush=True)
time.sleep(600)
"""


def hold(path: Path) -> subprocess.Popen:
    """Another process that takes the lock at ``path`` and keeps it until killed."""
    p = subprocess.Popen([sys.executable, "-c", HOLD, str(path)], stdout=subprocess.PIPE, text=True, cwd=REPO,
                         env=ENV)
    assert p.stdout.readline().strip() == "locked"
    return p


def sigkill(p: subprocess.Popen) -> None:
    os.kill(p.pid, signal.SIGKILL)
    p.wait(timeout=30)


def tiny_args(root, *extra):
    sets = [a for s in TINY for a in ("--set", s)]
    return ["--grid", "main", "--preset", "digits", *sets, "--T", "2", "--num-samples", "20", "--eval-seeds", "1", "--nll-images", "4",
            "--out", str(root), "--no-report", *extra]


def grid_cmd(root, *extra):
    return [sys.executable, str(REPO / "ablations" / "run_grid.py"), *tiny_args(root, *extra)]


# ---------------------------------------------------------------------------------------------------- dmz.locks
def test_lock_excludes_another_process_and_a_sigkilled_holder_is_taken_over(tmp_path):
    path = tmp_path / "cell" / "x.lock"
    p = hold(path)
    try:
        assert held_by(path).pid == p.pid and "test holder" in held_by(path).describe()
        lock = FileLock(path, what="me")
        ok, who = lock.try_acquire()
        assert not ok and who.pid == p.pid and who.alive() is True
        with pytest.raises(LockHeld, match=f"pid {p.pid}"):
            lock.acquire(wait=False)
        waited = []
        with pytest.raises(LockHeld):
            lock.acquire(timeout=0.6, poll_s=0.1, on_wait=waited.append)
        assert [h.pid for h in waited] == [p.pid]  # told once, not at every poll

        # the holder is killed while it waits: the waiter gets the lock and the dead holder's trace
        previous = lock.acquire(poll_s=0.1, on_wait=lambda h: sigkill(p))
    finally:
        if p.poll() is None:
            sigkill(p)
    assert lock.held and previous.pid == p.pid and previous.alive() is False
    assert held_by(path).pid == os.getpid()  # our record now
    lock.release()
    assert held_by(path) is None and read_holder(path) is None  # a clean release leaves no trace
    with FileLock(path) as again:
        assert again.held
    assert FileLock(path).acquire(wait=False) is None  # nobody died holding it: no previous holder


def test_held_by_creates_nothing(tmp_path):
    assert held_by(tmp_path / "nowhere" / "x.lock") is None
    assert not (tmp_path / "nowhere").exists()


# ---------------------------------------------------------------------------------------------------- appends
APPEND = """
import sys
from dmz.runio import append_jsonl
for i in range(int(sys.argv[3])):
    append_jsonl(sys.argv[1], {"writer": sys.argv[2], "i": i, "pad": "x" * 70000})
"""


def test_concurrent_appends_from_two_processes_stay_whole_lines(tmp_path):
    """Rows of 70 kB (more than one pipe/page-sized write) from two processes at once: every line parses."""
    path = tmp_path / "results.jsonl"
    procs = [subprocess.Popen([sys.executable, "-c", APPEND, str(path), w, "150"], cwd=REPO, env=ENV)
             for w in ("a", "b")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    lines = path.read_text().splitlines()
    assert len(lines) == 300
    rows = [json.loads(line) for line in lines]  # raises on an interleaved line
    for w in ("a", "b"):
        assert [r["i"] for r in rows if r["writer"] == w] == list(range(150))


def test_append_after_a_line_cut_short_keeps_the_new_row(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text('{"metric": "fid", "value": 1.0}\n{"metric": "fid", "val')  # a writer killed mid-line
    append_jsonl(path, {"metric": "probe", "value": 2.0})
    assert [r["metric"] for r in read_jsonl(path)] == ["fid", "probe"]
    assert path.read_text().endswith('{"metric": "probe", "value": 2.0}\n')


# ---------------------------------------------------------------------------------------------------- cell lock
def test_status_and_launch_leave_a_locked_cell_to_its_holder(tmp_path, capsys):
    cells = expand("main", "digits", TINY, eval_sizes=SIZES)
    d = cell_dir(cells[0], tmp_path)
    p = hold(d / LOCK_FILE)
    try:
        st = cell_statuses(cells, tmp_path)
        assert st[0].state == "running" and st[0].live and f"held by pid {p.pid}" in st[0].detail
        assert st[1].state == "pending" and not st[1].live
        # taken after this invocation made its to-do list: launch skips it and says so (runs nothing)
        said = []
        (o,) = launch(cells[:1], kind="debug", profile=load_profile("local"), root=tmp_path, say=said.append)
        assert o.ok and o.job_id is None and f"pid {p.pid}" in o.skipped
        assert said == [f"skip {cells[0].name}: another process works on it ({held_by(d / LOCK_FILE).describe()}) "
                        "since this grid started"]
        assert not (d / "metrics.jsonl").exists()
    finally:
        sigkill(p)
    assert cell_statuses(cells, tmp_path)[0].state == "pending"  # the holder died: free again


def test_cell_job_waits_for_the_lock_then_takes_over_from_a_sigkilled_holder(tmp_path):
    cell = expand("main", "digits", TINY, eval_sizes=SIZES)[1]
    d = cell_dir(cell, tmp_path)
    p = hold(d / LOCK_FILE)
    said = []

    def log(m):
        said.append(m)
        if m.startswith("waiting"):
            assert not (d / "metrics.jsonl").exists()  # nothing trained while another process holds the cell
            sigkill(p)

    try:
        out = run_cell(cell, d, threads=1, log=log)
    finally:
        if p.poll() is None:
            sigkill(p)
    assert said[0].startswith(f"waiting: another process works on this cell (pid {p.pid} ")
    assert said[1].startswith(f"took over {d / LOCK_FILE} from pid {p.pid} ") and "no longer running" in said[1]
    assert out["train"]["finished"] and "skipped" not in out
    assert held_by(d / LOCK_FILE) is None and read_holder(d / LOCK_FILE) is None  # released cleanly

    # a second job for the finished cell (it waited while the first worked): nothing is redone
    before = (d / "results.jsonl").read_text()
    again = run_cell(cell, d, threads=1, log=said.append)
    assert again["skipped"] == "done by another process" and said[-1].startswith("already done")
    assert (d / "results.jsonl").read_text() == before


# ---------------------------------------------------------------------------------------------------- real grids
def _check_trained_once(root):
    for cell in expand("main", "digits", TINY, eval_sizes=SIZES):
        d = cell_dir(cell, root)
        assert [r["step"] for r in read_jsonl(d / "metrics.jsonl")] == [1, 2, 3], cell.name  # one training
        rows = read_jsonl(d / "results.jsonl")
        assert len(rows) == len(requested_rows(cell)) == 5, cell.name  # one evaluation: FID + 4 NLL rows


def test_two_grid_invocations_started_together_never_share_a_cell(tmp_path):
    procs = [subprocess.Popen(grid_cmd(tmp_path, "--executor", "local", "--parallel", "1", "--progress-every", "1"),
                              cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=540)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    _check_trained_once(tmp_path)
    for name in ("ddpm", "dmz"):
        # exactly one invocation worked on the cell; the other said why it did not
        assert sum(line == f"{name}: done" for out in outs for line in out.splitlines()) == 1, outs
        other = [out for out in outs if f"\n{name}: done\n" not in out]
        assert len(other) == 1
        assert any(s in other[0] for s in (f"skip {name}: ", f"{name}: done (done by another process")), outs
    assert any("| elapsed " in out for out in outs)  # progress lines


def test_grid_resumes_a_cell_whose_job_was_sigkilled_holding_its_lock(tmp_path):
    cell = next(c for c in expand("main", "digits", TINY, eval_sizes=SIZES) if c.name == "ddpm")
    lock = cell_dir(cell, tmp_path) / LOCK_FILE
    first = subprocess.Popen(grid_cmd(tmp_path, "--executor", "local", "--only", "ddpm"), cwd=tmp_path, env=ENV,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        holder = None
        while holder is None or holder.pid is None:
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()[0]
            holder = held_by(lock)
            time.sleep(0.02)
        assert holder.pid != first.pid  # the cell's job (a submitit subprocess) holds it, not the launcher
        os.kill(holder.pid, signal.SIGKILL)
        out = first.communicate(timeout=120)[0]
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 1 and "ddpm: FAILED" in out
    assert read_holder(lock).pid == holder.pid  # the killed job's trace; the lock itself is free
    assert held_by(lock) is None

    again = subprocess.run(grid_cmd(tmp_path, "--executor", "debug", "--only", "ddpm"), cwd=tmp_path, env=ENV,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"took over {lock} from pid {holder.pid}" in again.stdout and "no longer running" in again.stdout
    d = cell_dir(cell, tmp_path)
    assert read_jsonl(d / "metrics.jsonl")[-1]["step"] == 3 and len(read_jsonl(d / "results.jsonl")) == 5
    assert all(s.state == "done" for s in cell_statuses([cell], tmp_path))
