"""submitit against the real local single-node SLURM cluster (slurm/start-local-slurm.sh).

Skipped unless `sinfo` answers. Covers the generic mechanisms the ablation launcher relies on:
job arrays through map_array with results and sacct states, and Checkpointable preemption ->
checkpoint -> requeue -> resume without redoing finished work.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

submitit = pytest.importorskip("submitit")
cloudpickle = pytest.importorskip("cloudpickle")

from ablations.clusters import load_profile, make_executor  # noqa: E402

pytestmark = [pytest.mark.slurm, pytest.mark.timeout(240)]


def _slurm_answer() -> str | None:
    """None when the local cluster answers, else the reason to skip."""
    if shutil.which("sinfo") is None:
        return "sinfo not found: SLURM is not installed (start it with slurm/start-local-slurm.sh)"
    try:
        proc = subprocess.run(["sinfo", "-h", "-o", "%P %a"], capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 15 s (start the cluster with slurm/start-local-slurm.sh)"
    if proc.returncode != 0:
        detail = (proc.stderr.strip().splitlines() or [f"exit {proc.returncode}"])[-1]
        return f"local SLURM not running (sinfo: {detail}); start it with slurm/start-local-slurm.sh"
    if "debug" not in proc.stdout:
        return f"SLURM answers but has no 'debug' partition (sinfo: {proc.stdout.strip()!r})"
    return None


_REASON = _slurm_answer()
if _REASON is not None:
    pytestmark.append(pytest.mark.skip(reason=_REASON))


@pytest.fixture(scope="module", autouse=True)
def _pickle_this_module_by_value():
    # The jobs unpickle our functions in a fresh interpreter where this test module is not
    # importable; ship their code by value instead of by module reference.
    module = sys.modules[__name__]
    cloudpickle.register_pickle_by_value(module)
    yield
    cloudpickle.unregister_pickle_by_value(module)


def wait_for_state(job, expected: str = "COMPLETED", timeout_s: float = 20.0) -> str:
    """sacct lags about a second behind the end of a job: poll the state for a while."""
    deadline = time.monotonic() + timeout_s
    state = job.state
    while state != expected and time.monotonic() < deadline:
        time.sleep(0.5)
        state = job.state
    return state


# ---------------------------------------------------------------- job functions (run on the node)
def square_with_env(x: int) -> dict:
    return {
        "value": x * x,
        "array_task": int(os.environ["SLURM_ARRAY_TASK_ID"]),
        "partition": os.environ.get("SLURM_JOB_PARTITION"),
        "cpus": int(os.environ.get("SLURM_CPUS_PER_TASK", "0")),
    }


class StepCounter(submitit.helpers.Checkpointable):
    """Counts `total` steps of `step_s` seconds; progress lives in a file, so a requeued run
    continues where the checkpointed one stopped (the default checkpoint() resubmits self with
    the same arguments)."""

    def __call__(self, workdir: str, total: int, step_s: float) -> dict:
        work = Path(workdir)
        steps_file = work / "steps.log"  # one line per finished step: the progress
        done = len(steps_file.read_text().split()) if steps_file.exists() else 0
        with open(work / "starts.log", "a") as f:
            f.write(f"{os.environ.get('SLURM_RESTART_COUNT', '0')} {done}\n")
        for step in range(done, total):
            time.sleep(step_s)
            with open(steps_file, "a") as f:  # one small write per step: atomic w.r.t. signals
                f.write(f"{step}\n")
        starts = [line.split() for line in (work / "starts.log").read_text().splitlines()]
        return {
            "starts": [(int(r), int(d)) for r, d in starts],
            "steps": [int(s) for s in steps_file.read_text().split()],
            "restart_count": int(os.environ.get("SLURM_RESTART_COUNT", "0")),
        }


# ---------------------------------------------------------------- tests
def test_map_array_results_and_states(tmp_path):
    profile = load_profile("local")
    executor = make_executor(profile, tmp_path / "jobs", job_name="dmz-test-array")
    t0 = time.monotonic()
    jobs = executor.map_array(square_with_env, [1, 2, 3])
    assert len(jobs) == 3
    results = [job.result() for job in jobs]
    elapsed = time.monotonic() - t0
    assert [r["value"] for r in results] == [1, 4, 9]
    assert sorted(r["array_task"] for r in results) == [0, 1, 2]
    assert all(r["partition"] == "debug" and r["cpus"] == profile.cpus_per_task for r in results)
    # one array job: ids <array>_<task>
    assert len({job.job_id.split("_")[0] for job in jobs}) == 1
    for job in jobs:
        assert wait_for_state(job) == "COMPLETED", f"{job.job_id}: {job.state}"
    print(f"map_array of 3 -> results in {elapsed:.1f} s")


def test_checkpointable_interrupt_requeue_resume(tmp_path):
    total, step_s = 12, 0.5
    work = tmp_path / "work"
    work.mkdir()
    executor = make_executor("local", tmp_path / "jobs", job_name="dmz-test-requeue")
    job = executor.submit(StepCounter(), str(work), total, step_s)

    steps_file = work / "steps.log"
    deadline = time.monotonic() + 90
    done = 0
    while time.monotonic() < deadline:
        done = len(steps_file.read_text().split()) if steps_file.exists() else 0
        if done >= 3:
            break
        time.sleep(0.2)
    assert done >= 3, f"job {job.job_id} did not make progress (state {job.state})"
    assert done < total, "job finished before it could be interrupted; raise total/step_s"

    t_interrupt = time.monotonic()
    job._interrupt(timeout=True)  # USR2 only: submitit checkpoints and requeues itself
    result = job.result()
    requeue_to_done = time.monotonic() - t_interrupt

    assert len(result["starts"]) == 2, result
    (first_restart, first_done), (second_restart, second_done) = result["starts"]
    assert (first_restart, first_done) == (0, 0)
    assert second_restart == 1 and result["restart_count"] == 1
    assert second_done >= 3, "the requeued run did not resume from the saved progress"
    assert result["steps"] == list(range(total)), "steps were redone or skipped"
    assert wait_for_state(job) == "COMPLETED", job.state
    print(f"interrupt -> requeue -> resumed at step {second_done} -> done in {requeue_to_done:.1f} s")
