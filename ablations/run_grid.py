"""Run an ablation grid: one submitit job per cell (train -> fit PixelSNAIL if needed -> evaluate), then the table.

    python ablations/run_grid.py --grid latent_size                     # digits on CPU; slurm if `sinfo` answers
    python ablations/run_grid.py --grid main --preset cifar10 --cluster a100-8x
    python ablations/run_grid.py --grid latent_size --dry-run           # cells, their state, the jobs that would run
    python ablations/run_grid.py --grid latent_size --status            # done / running / failed / pending per cell
    python ablations/run_grid.py --grid conditioning --executor local --set steps=50

Idempotent: a cell whose training finished and whose requested result rows are all in ``<cell>/results.jsonl`` is
skipped without submitting; an unfinished one is (re)submitted and resumes from ``<cell>/checkpoint.pt``; a cell
whose job is still queued or running is left alone. Jobs are ``submitit.helpers.Checkpointable``: on a time limit or
preemption (USR2) submitit requeues them and the trainer resumes from its last checkpoint. One failing cell does not
stop the others. Cell folders: ``<out>/<grid>/<preset>/<cell>-<run_id>`` (``--out`` default ``results/runs``);
submitit logs under ``<out>/<grid>/<preset>/_submitit/``.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

if __package__ in (None, ""):  # run by path (python ablations/run_grid.py): make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pandas as pd
import submitit

from ablations import reproduce
from ablations.grid_report import report
from ablations.clusters import ClusterProfile, executor_parameters, load_profile, make_executor
from ablations.collect import default_results_dir
from ablations.sequential import DEFAULT_MAX_TRAININGS, DEFAULT_WAVE
from ablations.grids import (Cell, EvalSpec, GridError, add_cell_args, cell_dir, cells_by_seed, cells_from_args, default_runs_root, is_done,
                             missing_rows, pixelsnail_width, requested_rows, results_label,
                             row_matches, train_finished, _canonical)
from dmz.config import ConfigError, _split
from dmz.locks import FileLock, held_by, read_holder
from dmz.runio import METRICS, append_jsonl, atomic_write_json, file_sha256, read_jsonl
from evaluation.rows import RESULTS_FILE
from evaluation.run import EvalRequest, evaluate

STATE_FILE = "cell_state.json"  # written by the job in the cell folder: running / failed / done
LOCK_FILE = "cell.lock"  # flock held by the job working on the cell (dmz.locks): one process per cell at a time
SUBMISSIONS = "submissions.jsonl"  # <out>/<grid>/<preset>/: one line per submitted job
EXECUTORS = ("slurm", "local", "debug")


# ----------------------------------------------------------------------------------------------------------------
# what a cell still needs
# ----------------------------------------------------------------------------------------------------------------
def train_progress(cell: Cell, run_dir: Path) -> str:
    rows = read_jsonl(run_dir / METRICS)
    step = rows[-1].get("step", 0) if rows else 0
    return f"step {step}/{cell.config().train.steps}"


def check_evals(cells: list[Cell]) -> None:
    """Evaluation sizes every job can run (``--T``, ``--num-samples``, ``--eval-seeds``), checked before submitting
    so a bad value is one error here rather than a failure in every job."""
    for c in cells:
        n_steps = c.config().diffusion.diffusion_steps
        for e in c.evals:
            bad = [t for t in e.steps if not 1 <= t <= n_steps] if "fid" in e.metrics else []
            if bad:
                raise GridError(f"--T {bad[0]} is out of range: T must be between 1 and {n_steps} (the training "
                                "diffusion steps)")
            if e.num_samples is not None and e.num_samples < 2:
                raise GridError(f"--num-samples must be >= 2 (an FID needs 2 images at least), got {e.num_samples}")
            if e.seeds is not None and e.seeds < 1:
                raise GridError(f"--eval-seeds must be >= 1, got {e.seeds}")


# ----------------------------------------------------------------------------------------------------------------
# the job
# ----------------------------------------------------------------------------------------------------------------
def _job_env() -> submitit.JobEnvironment | None:
    try:
        env = submitit.JobEnvironment()
        return env if env.activated() else None
    except Exception:  # not inside a submitit job
        return None


def _log_path(env) -> str | None:
    """The job's stderr file, where submitit writes it (not for the debug executor, which prints to the console)."""
    try:
        path = env.paths.stderr if env is not None and env.cluster != "debug" else None
    except Exception:
        return None
    return None if path is None else str(path)


def _write_state(run_dir: Path, state: str, **extra: Any) -> None:
    atomic_write_json(run_dir / STATE_FILE, {"state": state, "time": time.time(), "host": socket.gethostname(),
                                             "pid": os.getpid(), **extra})


def eval_request(e: EvalSpec, cell: Cell) -> EvalRequest:
    """The :class:`evaluation.run.EvalRequest` of one of a cell's evaluations (the cell's sampling options, not those
    its folder was trained with: they are execution fields)."""
    tc = cell.config().train
    fields: dict[str, Any] = {"metrics": e.metrics, "precision": tc.sampling_precision,
                              "compile": tc.sampling_compile}
    if "fid" in e.metrics:
        fields.update(steps=e.steps, samplers=e.samplers, num_samples=e.num_samples, seeds=e.seeds, solver=e.solver)
    if "nll" in e.metrics and e.num_samples is not None:
        fields["nll_images"] = e.num_samples
    return EvalRequest(**fields)


def _evaluate(run_dir: Path, cell: Cell, log: Callable[[str], None]) -> None:
    for e in cell.evals:
        log(f"evaluate {e.metrics} T={e.steps} samplers={e.samplers} N={e.num_samples} seeds={e.seeds}"
            + (f" solver={e.solver}" if e.solver != "ddpm" else ""))
        evaluate(run_dir, eval_request(e, cell), log=log)


def _fit_pixelsnail(run_dir: Path, cell: Cell, log: Callable[[str], None]) -> None:
    from dmz.zsamplers.pixelsnail import fit_pixelsnail

    kwargs = {"width": pixelsnail_width(cell.config().model.latent_dim), **cell.pixelsnail}
    fit_pixelsnail(run_dir, log=log, **kwargs)


def run_cell(cell: Cell, run_dir: str | os.PathLike, *, threads: int | None = None,
             log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train (resuming), fit PixelSNAIL when a sampler needs it, evaluate. Rank 0 of a DDP job does the last two.

    Returns ``{"cell", "run_dir", "rank", "train": summary, "timings": {phase: {"wall_s", "cpu_s"}}}``; the
    timings of a finished cell are also in ``<run_dir>/cell_state.json``. The job holds ``<run_dir>/cell.lock``
    throughout: a second job on the same cell (another invocation of the grid) waits for it, then finds the cell
    done (and returns ``"skipped"``) or resumes what is left.
    """
    from dmz.threads import limit_threads

    run_dir = Path(run_dir)
    say = log or (lambda m: print(f"[{time.strftime('%H:%M:%S')} {cell.grid}/{cell.tag}] {m}", flush=True))
    env = _job_env()
    if env is not None and env.num_tasks > 1:  # DDP through submitit tasks: RANK, WORLD_SIZE, MASTER_ADDR, ...
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)
    rank = int(os.environ.get("RANK", "0"))
    if threads is None and os.environ.get("SLURM_CPUS_PER_TASK"):
        threads = int(os.environ["SLURM_CPUS_PER_TASK"])
    if threads:
        limit_threads(threads)  # torch and the BLAS / OpenMP pools of the FID statistics and probes
    cfg = cell.config()
    if cfg.run_id() not in run_dir.name:
        raise ConfigError(f"{run_dir} does not belong to cell {cell.name} ({cfg.run_id()})")
    run_dir.mkdir(parents=True, exist_ok=True)
    job = {"job_id": env.job_id if env is not None else None, "log": _log_path(env),
           "restart": int(os.environ.get("SLURM_RESTART_COUNT", "0"))}
    timings: dict[str, dict[str, float]] = {}  # this attempt's wall and process-CPU seconds per phase
    lock = _lock_cell(cell, run_dir, rank, env, job, say)
    try:
        if is_done(cell, run_dir):  # finished by another process while this job waited for the cell
            say(f"already done (by another process: see {run_dir / STATE_FILE}); nothing to do")
            return {"cell": cell.name, "run_dir": str(run_dir), "rank": rank, "train": None, "timings": timings,
                    "skipped": "done by another process"}
        return _run_phases(cell, cfg, run_dir, rank, job, timings, say)
    finally:
        if lock is not None:
            lock.release()


def _lock_cell(cell: Cell, run_dir: Path, rank: int, env, job: dict[str, Any],
               say: Callable[[str], None]) -> FileLock | None:
    """Rank 0 takes ``<cell>/cell.lock``, waiting while another process (another grid invocation's job) holds it;
    the other ranks of a multi-task job wait until their rank 0 holds it. Returns rank 0's lock."""
    path = run_dir / LOCK_FILE
    job_id = str(job["job_id"]) if job["job_id"] is not None else None
    if rank != 0:  # until rank 0 holds the lock, or found the cell done and let it go again
        while env is not None and job_id is not None and not is_done(cell, run_dir):
            h = read_holder(path)
            if h is not None and str(h.info.get("job_id")) == job_id and held_by(path) is not None:
                break
            time.sleep(0.5)
        return None
    what = f"{cell.grid}/{cell.name}" + (f", job {job_id}" if job_id else "")
    lock = FileLock(path, what=what, job_id=job_id)
    previous = lock.acquire(on_wait=lambda h: say(
        f"waiting: another process works on this cell ({h.describe()}); it holds {path}, released when it ends"))
    if previous is not None:
        state = {True: "still running?", False: "no longer running", None: "on another host"}[previous.alive()]
        say(f"took over {path} from {previous.describe()} ({state}): it ended without releasing it (killed?); "
            "resuming from the last checkpoint")
    return lock


#: what a reused training does not carry over: the source's own job records, and its result rows (share_rows copies
#: the ones this cell asks for, marked as copied)
REUSE_SKIP = {LOCK_FILE, STATE_FILE, RESULTS_FILE}


def finished_siblings(cell: Cell, run_dir: Path) -> list[Path]:
    """Finished trainings of the same config (run id) in other grids' folders under the same root."""
    root = run_dir.parents[2]
    return [src for src in sorted(root.glob(f"*/{cell.preset}/*-{cell.run_id}"))
            if src.resolve() != run_dir.resolve() and train_finished(src) and (src / "checkpoint.pt").exists()]


def reusable_training(cell: Cell, run_dir: Path) -> Path | None:
    """A finished training of the same config (run id) in another grid's folder under the same root, or None.

    Grids share cells (``main``'s ``dmz`` is ``latent_type``'s ``bernoulli``, ``conditioning``'s ``cross_attention``
    and ``ddim``'s ``dmz-released``): the one that runs first trains it, the others copy it."""
    if (run_dir / "checkpoint.pt").exists() or train_finished(run_dir):
        return None
    found = finished_siblings(cell, run_dir)
    return found[0] if found else None


def share_rows(cell: Cell, run_dir: Path) -> list[dict[str, Any]]:
    """Copy into ``run_dir/results.jsonl`` the requested rows that are missing here but present in another grid's
    folder holding the very same checkpoint (same bytes): an evaluation one grid has done is never redone by
    another. Returns the rows copied (each marked ``copied_from``)."""
    missing = missing_rows(cell, run_dir)
    ckpt = run_dir / "checkpoint.pt"
    if not missing or not ckpt.exists():
        return []
    mine, copied = None, []
    for src in finished_siblings(cell, run_dir):
        rows = [r for r in read_jsonl(src / RESULTS_FILE) if any(row_matches(w, r) for w in missing)]
        if not rows:
            continue
        mine = mine or file_sha256(ckpt)
        if file_sha256(src / "checkpoint.pt") != mine:
            continue  # the same config trained again elsewhere: not the same weights, so not the same numbers
        for r in rows:
            if any(row_matches(w, r) for w in missing):
                append_jsonl(run_dir / RESULTS_FILE, {**r, "copied_from": str(src)})
                copied.append(r)
                missing = [w for w in missing if not row_matches(w, r)]
    return copied


def copy_training(src: Path, run_dir: Path) -> list[str]:
    """Copy a finished run folder's training (checkpoint, config, metrics, TensorBoard, encodings) into ``run_dir``:
    staged in a temporary sibling folder, then moved in with ``train_summary.json`` last, so a job killed half-way
    leaves either nothing or complete files (a complete checkpoint resumes at its last step)."""
    stage = run_dir.parent / f".{run_dir.name}.reuse-tmp"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    names = sorted((p.name for p in src.iterdir() if p.name not in REUSE_SKIP),
                   key=lambda n: n == "train_summary.json")
    for name in names:
        (shutil.copytree if (src / name).is_dir() else shutil.copy2)(src / name, stage / name)
    run_dir.mkdir(parents=True, exist_ok=True)
    for name in names:
        if (run_dir / name).is_dir():
            shutil.rmtree(run_dir / name)
        os.replace(stage / name, run_dir / name)
    stage.rmdir()
    return names


def _run_phases(cell: Cell, cfg, run_dir: Path, rank: int, job: dict[str, Any],
                timings: dict[str, dict[str, float]], say: Callable[[str], None]) -> dict[str, Any]:
    import torch

    from dmz.trainer import train

    def phase(name: str, fn: Callable, *args):
        if rank == 0:
            _write_state(run_dir, "running", phase=name, **job)
        t, c = time.perf_counter(), time.process_time()
        out = fn(*args)
        timings[name] = {"wall_s": round(time.perf_counter() - t, 1), "cpu_s": round(time.process_time() - c, 1)}
        return out

    try:
        src = reusable_training(cell, run_dir) if rank == 0 and int(os.environ.get("WORLD_SIZE", "1")) == 1 else None
        if src is not None:
            say(f"reuse the finished training of {cfg.run_id()} from {src} (same config): copied, not retrained")
            phase("reuse", copy_training, src, run_dir)
        say(f"train {cfg.run_id()} -> {run_dir} ({cfg.train.steps} steps, {torch.get_num_threads()} threads)")
        summary = phase("train", lambda: train(cfg, run_dir, progress=False))
        if torch.distributed.is_initialized():
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()
        result = {"cell": cell.name, "run_dir": str(run_dir), "rank": rank, "train": summary, "timings": timings}
        if rank != 0:
            return result
        if not summary.get("finished"):
            raise RuntimeError(f"training stopped at step {summary.get('step')} of {cfg.train.steps}")
        shared = share_rows(cell, run_dir)
        if shared:
            say(f"{len(shared)} result row(s) copied from other grids' folders with the same checkpoint (not "
                "recomputed)")
        if cell.needs_pixelsnail:
            phase("pixelsnail", _fit_pixelsnail, run_dir, cell, say)
        if missing_rows(cell, run_dir):
            phase("evaluate", _evaluate, run_dir, cell, say)
        missing = missing_rows(cell, run_dir)
        if missing:
            raise RuntimeError(f"evaluation finished but {len(missing)} requested rows are missing: {missing[:3]}")
        _write_state(run_dir, "done", timings=timings, **job)
        say("done: " + ", ".join(f"{k} {v['wall_s']:.0f} s (cpu {v['cpu_s']:.0f} s)" for k, v in timings.items()))
        return result
    except Exception as e:  # SystemExit from submitit's requeue passes through untouched
        if rank == 0:
            _write_state(run_dir, "failed", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc(),
                         timings=timings, **job)
        raise


class CellJob(submitit.helpers.Checkpointable):
    """The submitit callable. Arguments are plain data (``Cell.to_dict()``), so the pickle does not depend on
    how the launcher was started. The default ``checkpoint`` resubmits the same call; the trainer resumes from
    ``<run_dir>/checkpoint.pt`` and evaluation skips rows already written."""

    def __call__(self, cell: dict[str, Any], run_dir: str, threads: int | None = None) -> dict[str, Any]:
        return run_cell(Cell.from_dict(cell), run_dir, threads=threads)


# ----------------------------------------------------------------------------------------------------------------
# status
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class CellStatus:
    cell: Cell
    run_dir: Path
    state: str  # done | running | failed | pending
    detail: str = ""
    log: str | None = None
    job_id: str | None = None
    live: bool = False  # its job is queued or running: don't submit another


def submissions_file(root: Path, grid: str, preset: str) -> Path:
    return Path(root) / grid / preset / SUBMISSIONS


def last_submissions(root: Path, grid: str, preset: str) -> dict[str, dict[str, Any]]:
    """run-dir name -> the latest submission record for it."""
    out: dict[str, dict[str, Any]] = {}
    for rec in read_jsonl(submissions_file(root, grid, preset)):
        out[rec["run_dir_name"]] = rec
    return out


def _slurm_states(job_ids: Iterable[str]) -> dict[str, str] | None:
    """squeue state per queued/running job id (absent = no longer in the queue); None if SLURM does not answer.

    Lists this user's jobs rather than asking for the ids: squeue rejects the whole list when one id is unknown
    (ids are forgotten a few minutes after a job ends)."""
    ids = set(job_ids)
    if not ids:
        return {}
    try:
        proc = subprocess.run(["squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i %T"], capture_output=True,
                              text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    states = dict(line.split(None, 1) for line in proc.stdout.splitlines() if len(line.split()) == 2)
    return {i: st.strip() for i, st in states.items() if i in ids}


def _pid_alive(rec: dict[str, Any]) -> bool:
    if rec.get("host") != socket.gethostname():
        return False
    try:
        pid = int(rec["job_id"])
        os.kill(pid, 0)
        return "submitit" in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except (ValueError, ProcessLookupError, PermissionError, FileNotFoundError):
        return False


_RUNNING = {"RUNNING", "COMPLETING", "CONFIGURING", "STAGE_OUT", "SIGNALING"}


def cell_statuses(cells: list[Cell], root: str | os.PathLike | None = None) -> list[CellStatus]:
    """State of every cell: ``done`` (trained, all rows present), ``running`` (its job runs), ``failed`` (its last
    job ended without finishing the cell; ``log`` = that job's stderr), ``pending`` (queued or not submitted)."""
    root = Path(root or default_runs_root())
    out: list[CellStatus] = []
    by_grid: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
    for c in cells:
        by_grid.setdefault((c.grid, c.preset), last_submissions(root, c.grid, c.preset))
    recs = {c.dirname: by_grid[(c.grid, c.preset)].get(c.dirname) for c in cells}
    slurm_ids = [r["job_id"] for r in recs.values() if r and r.get("executor") == "slurm"]
    squeue = _slurm_states(slurm_ids)
    for c in cells:
        d = cell_dir(c, root)
        rec = recs[c.dirname]
        if is_done(c, d):
            out.append(CellStatus(c, d, "done", "trained, all result rows present"))
            continue
        try:
            marker = json.loads((d / STATE_FILE).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            marker = None
        job_id = rec.get("job_id") if rec else None
        same_job = marker is not None and (rec is None or str(marker.get("job_id")) == str(job_id))
        log = (marker or {}).get("log") if same_job else (rec or {}).get("stderr")
        progress = train_progress(c, d)
        alive: str | None = None  # a live job's scheduler state; "" = ended; None = unknown
        if rec is not None:
            if rec["executor"] == "slurm":
                alive = None if squeue is None else squeue.get(str(job_id), "")
            elif rec["executor"] == "local":
                alive = "RUNNING" if _pid_alive(rec) else ""
            else:
                alive = ""
        holder = held_by(d / LOCK_FILE) if alive not in _RUNNING else None
        if holder is not None:  # a job of another invocation (or another submissions file) works on it
            out.append(CellStatus(c, d, "running", f"{LOCK_FILE} held by {holder.describe()}, {progress}", log,
                                  job_id, live=True))
        elif alive in _RUNNING:
            phase = (marker or {}).get("phase", "starting") if (marker or {}).get("state") == "running" else "starting"
            out.append(CellStatus(c, d, "running", f"job {job_id}: {phase}, {progress}", log, job_id, live=True))
        elif alive:  # PENDING, REQUEUED, ...
            out.append(CellStatus(c, d, "pending", f"job {job_id} {alive.lower()}, {progress}", log, job_id,
                                  live=True))
        elif same_job and marker.get("state") == "failed":
            out.append(CellStatus(c, d, "failed", marker.get("error", ""), log, job_id))
        elif alive == "":
            out.append(CellStatus(c, d, "failed", f"job {job_id} ended before the cell finished ({progress})", log,
                                  job_id))
        elif alive is None and rec is not None:
            out.append(CellStatus(c, d, "pending", f"job {job_id}: scheduler not answering, {progress}", log, job_id))
        else:
            started = (d / METRICS).exists()
            out.append(CellStatus(c, d, "pending", "not submitted" + (f" ({progress}, resumes)" if started else "")))
    return out


def format_statuses(statuses: list[CellStatus]) -> str:
    from tabulate import tabulate

    rows = [[s.cell.tag, s.state, s.detail, str(s.run_dir) if s.state != "failed" else f"log: {s.log or '-'}"]
            for s in statuses]
    counts = {k: sum(s.state == k for s in statuses) for k in ("done", "running", "failed", "pending")}
    return tabulate(rows, headers=["cell", "state", "detail", "folder / log"], tablefmt="simple") + \
        "\n" + ", ".join(f"{v} {k}" for k, v in counts.items())


# ----------------------------------------------------------------------------------------------------------------
# executors
# ----------------------------------------------------------------------------------------------------------------
def sinfo_answers(timeout_s: float = 10.0) -> bool:
    if shutil.which("sinfo") is None:
        return False
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=timeout_s).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def choose_executor(requested: str | None) -> tuple[str, str]:
    """(executor, why)."""
    if requested:
        if requested not in EXECUTORS:
            raise GridError(f"unknown executor {requested!r}; valid: {', '.join(EXECUTORS)}")
        return requested, "--executor"
    if sinfo_answers():
        return "slurm", "`sinfo` answers"
    return "local", "`sinfo` does not answer"


def make_grid_executor(kind: str, folder: Path, profile: ClusterProfile, *, job_name: str, gpus: int):
    """A submitit executor for ``kind``; slurm and local take their sizes from the cluster profile."""
    if kind == "slurm":
        return make_executor(profile, folder, job_name=job_name, gpus=gpus)
    params = executor_parameters(profile, job_name=job_name, gpus=gpus)
    if kind == "local":
        ex = submitit.LocalExecutor(folder=folder)
        ex.update_parameters(timeout_min=params["timeout_min"], tasks_per_node=params["tasks_per_node"],
                             gpus_per_node=params.get("gpus_per_node", 0),
                             signal_delay_s=params["slurm_signal_delay_s"])
    elif kind == "debug":
        ex = submitit.DebugExecutor(folder=folder)
    else:
        raise GridError(f"unknown executor {kind!r}; valid: {', '.join(EXECUTORS)}")
    return ex


def default_local_parallel(profile: ClusterProfile) -> int:
    """Cells the local executor runs at once: the profile's ``array_parallelism`` (``local``: 2), at most one per core.
    On 2 cores, 2 cells with 1 thread each beat 1 cell with 2 threads (ablations/README.md)."""
    return max(1, min(profile.array_parallelism, os.cpu_count() or 1))


@dataclass
class Outcome:
    cell: Cell
    job_id: str | None
    ok: bool
    error: str = ""
    log: str | None = None
    skipped: str = ""  # not worked on here: another process held or finished the cell (why)


def _log_file(job, kind: str) -> str | None:
    """submitit's stderr file of the job (None for the debug executor: it prints to this console)."""
    return None if kind == "debug" else str(job.paths.stderr)


def _record(root: Path, cell: Cell, kind: str, job) -> None:
    from dmz.runio import append_jsonl

    path = submissions_file(root, cell.grid, cell.preset)
    path.parent.mkdir(parents=True, exist_ok=True)
    append_jsonl(path, {
        "cell": cell.name, "run_dir_name": cell.dirname, "executor": kind, "job_id": str(job.job_id),
        "host": socket.gethostname(), "time": time.time(),
        "stdout": None if kind == "debug" else str(job.paths.stdout), "stderr": _log_file(job, kind)})


def _outcome(cell: Cell, job, kind: str) -> Outcome:
    log = _log_file(job, kind)
    saved = dict(os.environ)
    if kind == "debug":  # DebugJob.results() would set this and drop into pdb on an error; exception() does not
        os.environ.update(job.environ)
    try:
        exc = job.exception()  # the debug executor runs the job here, in this process
    except Exception as e:  # UncompletedJobError: killed, cancelled, timed out too often
        exc = e
    finally:
        if kind == "debug":
            os.environ.clear()
            os.environ.update(saved)
    if exc is None:
        try:
            result = job.result()
        except Exception:  # the result pickle is gone: the job finished, that is what matters here
            result = None
        skipped = result.get("skipped", "") if isinstance(result, dict) else ""
        return Outcome(cell, str(job.job_id), True, log=log, skipped=skipped or "")
    msg = str(exc).strip().splitlines()
    return Outcome(cell, str(job.job_id), False, (msg[-1] if msg else type(exc).__name__)[:300], log)


def _duration(seconds: float) -> str:
    s = max(0, int(round(seconds)))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s" if m else f"{s}s"


def cell_progress(cell: Cell, run_dir: Path, *, started: float, job_id: str | None = None, now: float | None = None,
                  track: dict[str, Any] | None = None) -> str:
    """One progress line for a cell whose job ``job_id`` was started at ``started`` (epoch seconds): its phase,
    training step out of the total (from ``metrics.jsonl``) or result rows out of the requested ones, the time since
    the job started and an ETA for the phase (from the rate so far in this job; ``?`` until there is one), or that
    the job waits for another process's ``cell.lock``. ``track`` keeps what the evaluation's ETA needs between
    calls (one dict per cell)."""
    now = time.time() if now is None else now
    track = {} if track is None else track
    elapsed = f"elapsed {_duration(now - started)}"
    holder = held_by(run_dir / LOCK_FILE) if job_id is not None else None
    if holder is not None and holder.pid is not None and str(holder.info.get("job_id")) != str(job_id):
        return f"{cell.tag}: waiting for {LOCK_FILE} (held by {holder.describe()}) | {elapsed}"
    try:
        state = json.loads((run_dir / STATE_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        state = {}
    t_phase = float(state.get("time") or 0)
    if t_phase < started - 5 or state.get("state") not in ("running", "done", "failed"):  # an earlier job's state
        return f"{cell.tag}: starting | {elapsed}"
    if state["state"] != "running":
        return f"{cell.tag}: {state['state']} | {elapsed}"
    phase = state.get("phase", "?")
    what, eta = phase, None
    if phase == "train":
        if "steps" not in track:
            track["steps"] = cell.config().train.steps
        total = track["steps"]
        rows = [r for r in read_jsonl(run_dir / METRICS) if isinstance(r.get("step"), (int, float))]
        before = [r for r in rows if float(r.get("time") or 0) < t_phase]  # a resumed job: steps of earlier jobs
        s0 = int(before[-1]["step"]) if before else 0
        cur = rows[-1] if rows and float(rows[-1].get("time") or 0) >= t_phase else None
        step = int(cur["step"]) if cur else s0
        what = f"train step {step}/{total}"
        if cur is not None and step > s0 and float(cur["time"]) > t_phase:
            eta = (total - step) * (float(cur["time"]) - t_phase) / (step - s0)
    elif phase == "evaluate":
        if "rows" not in track:
            track["rows"] = len(requested_rows(cell))
        total, missing = track["rows"], len(missing_rows(cell, run_dir))
        first = track.setdefault(("evaluate", t_phase), (now, missing))  # (when, missing) at the first look
        what = f"evaluate rows {total - missing}/{total}"
        if first[1] > missing:
            eta = (now - first[0]) / (first[1] - missing) * missing
    elif phase == "pixelsnail":
        what = "fit PixelSNAIL"
    return f"{cell.tag}: {what} | {elapsed} | " + (f"ETA {_duration(eta)} ({phase})" if eta is not None else "ETA ?")


def launch(cells: list[Cell], *, kind: str, profile: ClusterProfile, root: Path, parallel: int = 1,
           threads: int | None = None, poll_s: float = 2.0, say: Callable[[str], None] = print,
           progress_s: float = 0.0) -> list[Outcome]:
    """Submit ``cells`` (already filtered to the ones that need work) and wait for all of them.

    slurm: one job array (the profile's ``array_parallelism`` throttles it). local: at most ``parallel`` jobs at
    once, each a subprocess; a cell that another process took or finished since the to-do list was made is skipped
    (``Outcome.skipped`` says why). debug: in this process, one after the other. Every ``progress_s`` seconds (0 =
    never; not for debug) and when a cell changes phase, a :func:`cell_progress` line per running cell.
    """
    if not cells:
        return []
    grid, preset = cells[0].grid, cells[0].preset
    ex = make_grid_executor(kind, root / grid / preset / "_submitit" / "%j", profile, job_name=f"dmz-{grid}",
                            gpus=cells[0].gpus)
    if kind == "local" and threads is None:  # share this machine's cores between the cells and their tasks
        tasks = executor_parameters(profile, job_name="x", gpus=cells[0].gpus)["tasks_per_node"]
        threads = max(1, (os.cpu_count() or 1) // (max(1, parallel) * tasks))
    queue = [(c, (c.to_dict(), str(cell_dir(c, root)), threads)) for c in cells]
    outcomes: list[Outcome] = []

    def finish(c: Cell, j) -> None:
        o = _outcome(c, j, kind)
        outcomes.append(o)
        if o.ok:
            say(f"{c.tag}: done" + (f" ({o.skipped}: this job waited for its {LOCK_FILE})" if o.skipped else ""))
        else:
            say(f"{c.tag}: FAILED: {o.error} (log: {o.log})")

    def taken(c: Cell) -> bool:
        """Did another process take or finish ``c`` since the to-do list was made? Then say so and skip it."""
        d = cell_dir(c, root)
        holder = held_by(d / LOCK_FILE)
        if holder is not None:
            why = f"another process works on it ({holder.describe()})"
        elif is_done(c, d):
            why = "another process finished it"
        else:
            return False
        say(f"skip {c.tag}: {why} since this grid started")
        outcomes.append(Outcome(c, None, True, skipped=why))
        return True

    started: dict[str, float] = {}  # cell name -> when its job was submitted
    tracks: dict[str, dict[str, Any]] = {}
    shown: dict[str, str] = {}  # cell name -> phase of its last progress line
    last_progress = time.monotonic()

    def show_progress(running: list) -> None:
        nonlocal last_progress
        if not progress_s or kind == "debug" or not running:
            return
        phases = {}
        for c, _ in running:
            try:
                phases[c.tag] = json.loads((cell_dir(c, root) / STATE_FILE).read_text()).get("phase", "")
            except (OSError, json.JSONDecodeError):
                phases[c.tag] = ""
        if time.monotonic() - last_progress < progress_s and all(shown.get(k) == v for k, v in phases.items()):
            return
        last_progress = time.monotonic()
        done = sum(o.ok for o in outcomes)
        lines = [f"[{time.strftime('%H:%M:%S')}] {done}/{len(cells)} cell(s) finished, {len(running)} running, "
                 f"{len(queue)} queued"]
        for c, j in running:
            shown[c.tag] = phases[c.tag]
            try:
                line = cell_progress(c, cell_dir(c, root), started=started.get(c.tag, time.time()),
                                     job_id=str(j.job_id), track=tracks.setdefault(c.tag, {}))
            except Exception as e:  # a progress line must never stop the grid
                line = f"{c.tag}: progress unavailable ({type(e).__name__}: {e})"
            lines.append("  " + line)
        say("\n".join(lines))

    if kind == "slurm":
        jobs = ex.map_array(CellJob(), *zip(*(a for _, a in queue)))
        queue, running = [], list(zip(cells, jobs))
        for c, j in running:
            _record(root, c, kind, j)
            started[c.tag] = time.time()
        say(f"submitted array {jobs[0].job_id.split('_')[0]} ({len(jobs)} cells) to partition {profile.partition} "
            f"of cluster profile {profile.name}")
    else:
        running = []
        parallel = 1 if kind == "debug" else max(1, parallel)
    while queue or running:
        while queue and len(running) < parallel:
            c, a = queue.pop(0)
            if taken(c):
                continue
            j = ex.submit(CellJob(), *a)
            _record(root, c, kind, j)
            started[c.tag] = time.time()
            say(f"started {c.tag} as {kind} job {j.job_id}" + (f" (log: {j.paths.stdout})" if kind == "local" else ""))
            running.append((c, j))
        done = [(c, j) for c, j in running if kind == "debug" or j.done()]  # debug: runs in finish()
        for c, j in done:
            running.remove((c, j))
            finish(c, j)
        if not done:
            show_progress(running)
            time.sleep(poll_s)
    return outcomes


# ----------------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------------
def _describe_eval(v) -> str:
    if v.metrics == ("nll",):
        return f"nll N={v.num_samples or 'default'} per split"
    if v.metrics == ("probe",):
        return "probe"
    solver = f" {v.solver}" if v.solver != "ddpm" else ""
    return f"{'+'.join(v.metrics)}{solver} T={list(v.steps)} z={list(v.samplers)} N={v.num_samples}"


def build_parser() -> argparse.ArgumentParser:
    from ablations.grids import GRIDS

    p = argparse.ArgumentParser(prog="python ablations/run_grid.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="grids: " + "; ".join(f"{g.name}: {g.description}" for g in GRIDS.values()))
    add_cell_args(p)
    p.add_argument("--executor", choices=EXECUTORS, help="default: slurm when `sinfo` answers, else local")
    p.add_argument("--cluster", default="local", help="cluster profile name or JSON path (slurm/clusters/)")
    p.add_argument("--results-dir", type=Path, default=None, help="where tables go (default results/)")
    p.add_argument("--parallel", type=int, default=None,
                   help="local executor: cells at once (default: the profile's array_parallelism, at most the cores)")
    p.add_argument("--threads", type=int, default=None,
                   help="local executor: torch threads per cell (default: the cores shared between the cells); e.g. "
                   "--parallel 1 --threads 1 for one of two grids run side by side on 2 cores")
    p.add_argument("--progress-every", type=float, default=60.0, metavar="SECONDS",
                   help="local/slurm executors: a progress line per running cell (phase, step/total, elapsed, ETA) "
                        "this often and at each phase change (0 = off; default 60)")
    p.add_argument("--status", action="store_true", help="print each cell's state and exit")
    p.add_argument("--dry-run", action="store_true", help="list the cells and the jobs that would run, then exit")
    p.add_argument("--no-report", action="store_true", help="don't collect results and print the table at the end")
    p.add_argument("--until-decided", action="store_true",
                   help="train the cells the grid's claims compare in waves of training seeds (seeding=crn) and "
                   "judge the claims after each wave, until every counted part is decided or futile "
                   "(ablations/sequential.py)")
    p.add_argument("--max-trainings", type=int, default=None, metavar="K",
                   help=f"--until-decided: at most K trainings a cell (the design's full information; default "
                   f"{DEFAULT_MAX_TRAININGS})")
    p.add_argument("--wave", type=int, default=None, metavar="W",
                   help=f"--until-decided: training seeds per wave (default {DEFAULT_WAVE})")
    return p


# ----------------------------------------------------------------------------------------------------------------
# --until-decided
# ----------------------------------------------------------------------------------------------------------------
def _until_decided_errors(args) -> str | None:
    """The one line for a request --until-decided cannot run (None when it can)."""
    if not args.until_decided:
        if args.max_trainings is not None or args.wave is not None:
            return "--max-trainings and --wave belong to --until-decided; add --until-decided (or drop them)"
        return None
    if args.seeds is not None:
        return ("--until-decided chooses the training seeds itself (waves of --wave seeds from 0 on); drop --seeds "
                "(or drop --until-decided to train exactly those seeds)")
    sets = {_canonical(k): v for k, v in (_split(x) for x in args.sets if "=" in x)}  # bad ones: cells_from_args
    if "seed" in sets:
        return "--until-decided chooses the training seeds itself; drop --set seed=..."
    if sets.get("seeding", "crn") != "crn":
        return "--until-decided trains with common random numbers (seeding=crn) so the arms pair; drop --set seeding=..."
    if args.max_trainings is not None and args.max_trainings < 2:
        return f"--max-trainings must be at least 2 (a spread over trainings needs 2), got {args.max_trainings}"
    if args.wave is not None and args.wave < 1:
        return f"--wave must be at least 1 training seed per wave, got {args.wave}"
    if args.status:
        return "--status shows cells, not a design: run it without --until-decided"
    return None


def until_decided(args, preset: str, profile: ClusterProfile, kind: str, say: Callable[[str], None]) -> int:
    """The wave loop of ``--until-decided`` (:mod:`ablations.sequential`); returns the exit code."""
    from ablations.sequential import (OPEN, Design, describe, grid_claims, judge_grid, load_design, open_cells,
                                      part_states, save_design, seeds_on_disk)
    from ablations.verdicts import FAILS, HOLDS, NO_DIFF

    results_dir = args.results_dir or default_results_dir()
    root = args.out or default_runs_root()
    if not grid_claims(args.grid, preset):
        from ablations.rows import GRIDS_USED

        print(f"error: grid {args.grid} has no claim to decide (--until-decided judges a grid's claims after each "
              f"wave); grids with claims: {', '.join(GRIDS_USED)}", file=sys.stderr)
        return 2
    sets = [*args.sets, "seeding=crn"]

    def cells_for(seeds: list[int], only: list[str] | None) -> list[Cell]:
        ns = argparse.Namespace(**{**vars(args), "sets": sets, "seeds": seeds})
        got = cells_from_args(ns, gpus_per_node=profile.gpus_per_node)[2]
        return [c for c in got if only is None or c.name in only]

    probe = cells_for([0], None)
    label = results_label(preset, args.budget, probe)
    design = load_design(results_dir, args.grid, label)
    max_t = args.max_trainings or (design.max_trainings if design else DEFAULT_MAX_TRAININGS)
    if design is not None and design.looks and design.max_trainings != max_t:
        print(f"error: {results_dir / args.grid / label} was planned with --max-trainings {design.max_trainings} "
              f"and has looked {len(design.looks)} time(s); a design's maximum is fixed once it has looked: use "
              f"--max-trainings {design.max_trainings}", file=sys.stderr)
        return 2
    design = design or Design(max_trainings=max_t, wave=args.wave or DEFAULT_WAVE)
    if args.wave:
        design.wave = args.wave
    done = seeds_on_disk(results_dir, args.grid, label)
    if len(done) > max_t:
        print(f"error: --max-trainings {max_t} is below the {len(done)} crn trainings already on disk under "
              f"{results_dir / args.grid / label}* (seeds {', '.join(map(str, done))}); give --max-trainings "
              f"{len(done)} or more", file=sys.stderr)
        return 2
    say(f"until decided: grid {args.grid} on {preset}, tables {results_dir / args.grid / label}*; at most {max_t} "
        f"trainings a cell in waves of {design.wave} seed(s); group-sequential levels ({design.spending}, "
        f"alpha {design.alpha:g}) at the planned looks: {design.bounds_text()}")
    failed_total = 0
    wave_no = len(design.looks)
    while True:
        done = seeds_on_disk(results_dir, args.grid, label)
        states = part_states(judge_grid(args.grid, preset, label, results_dir, design), design) if done else []
        if done:
            say(f"look {len(design.looks) or '-'} ({len(done)} seed(s) on disk: {', '.join(map(str, done))}):")
            for line in describe(states, design):
                say(line)
            counts = {v: sum(p.verdict == v for _, p, _ in states) for v in (HOLDS, FAILS, NO_DIFF)}
            say(f"  decided: {sum(counts.values())} of {len(states)} counted part(s) ("
                + ", ".join(f"{k}: {v}" for k, v in counts.items()) + "); open: "
                + str(sum(st == OPEN for *_, st in states)))
        todo_cells = open_cells(states) if done else None
        if done and not todo_cells:
            say("every counted part has stopped (decided, futile, at the most trainings allowed, or without rows "
                "in this budget)")
            break
        start = max(done) + 1 if done else 0
        trained = len(done)
        seeds = list(range(start, start + min(design.wave, max_t - trained)))
        if not seeds:
            say(f"the most trainings allowed ({max_t}) are on disk; the parts still open stay not resolved")
            break
        cells = cells_for(seeds, todo_cells)
        wave_no += 1
        say(f"wave {wave_no}: seeds {', '.join(map(str, seeds))} of "
            + ("every cell of the grid" if todo_cells is None else "the open parts' cells " + ", ".join(todo_cells))
            + f" ({len(cells)} training(s), one job array), then a look at n={trained + len(seeds)} (level "
            f"{design.alpha_at(trained + len(seeds), design.looks + design.planned()):.2g})")
        if args.dry_run:
            n = trained + len(seeds)
            while n < max_t:
                nxt = list(range(start + (n - trained), start + (n - trained) + min(design.wave, max_t - n)))
                wave_no += 1
                say(f"wave {wave_no} (if parts are still open): seeds {', '.join(map(str, nxt))} of the cells of the "
                    f"parts still open, then a look at n={n + len(nxt)} (level "
                    f"{design.alpha_at(n + len(nxt), design.looks + design.planned()):.2g})")
                n += len(nxt)
            say("dry run: nothing trained")
            return 0
        statuses = cell_statuses(cells, root)
        todo = [st.cell for st in statuses if st.state != "done" and not st.live]
        outcomes = launch(todo, kind=kind, profile=profile, root=root, parallel=args.parallel or
                          default_local_parallel(profile), say=say, threads=args.threads,
                          progress_s=args.progress_every)
        failed = [o for o in outcomes if not o.ok]
        failed_total += len(failed)
        for group in cells_by_seed(cells).values():
            report(args.grid, results_label(preset, args.budget, group), cells=group, runs_root=root,
                   results_dir=results_dir, plots=False, say=lambda _m: None)
        if failed:
            say(f"{len(failed)} cell(s) failed in wave {wave_no}: "
                + ", ".join(f"{o.cell.tag} (log: {o.log})" for o in failed) + "; stopping (rerun to resume)")
            break
        design.looks.append(trained + len(seeds))
        design.log.append({"look": len(design.looks), "n": trained + len(seeds), "seeds": seeds,
                           "cells": list(dict.fromkeys(c.name for c in cells))})
        save_design(design, results_dir, args.grid, label)
    return 1 if failed_total else 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    say = lambda m: print(m, flush=True)  # noqa: E731
    bad = _until_decided_errors(args)
    if bad:
        print(f"error: {bad}", file=sys.stderr)
        return 2
    try:
        profile = load_profile(args.cluster)
        preset, why, cells = cells_from_args(args, gpus_per_node=profile.gpus_per_node,
                                             warn=lambda m: say(f"warning: {m}"))
        check_evals(cells)
    except (GridError, ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    root = args.out or default_runs_root()
    say(f"grid {args.grid} on preset {preset} ({why}): {len(cells)} cells under {root / args.grid / preset}")
    statuses = cell_statuses(cells, root)
    if args.status:
        say(format_statuses(statuses))
        return 0
    todo = [s.cell for s in statuses if s.state != "done" and not s.live]
    try:
        kind, how = choose_executor(args.executor)
    except GridError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    parallel = args.parallel or default_local_parallel(profile)
    say(f"executor: {kind} ({how}); cluster profile {profile.name}"
        + (f"; {parallel} cell(s) at a time" if kind == "local" else ""))
    if args.until_decided:
        return until_decided(args, preset, profile, kind, say)
    for s in statuses:
        if s.cell not in todo:
            say(f"  skip {s.cell.tag}: {s.state} ({s.detail})")
    if args.dry_run:
        for c in todo:
            e = "; ".join(_describe_eval(v) for v in c.evals)
            src = reusable_training(c, cell_dir(c, root))
            train_what = f"copy the finished training of {src}" if src else f"train {c.config().train.steps} steps"
            say(f"  would run {c.tag}: {cell_dir(c, root)}\n      {train_what}"
                f"{', fit PixelSNAIL' if c.needs_pixelsnail else ''}; evaluate {e}")
        say(f"{len(todo)} job(s) would be submitted to {kind}")
        return 0
    base_label = results_label(preset, args.budget)
    reference = None if args.no_report else reproduce.trainings(args.grid, base_label, args.results_dir)
    outcomes = launch(todo, kind=kind, profile=profile, root=root, parallel=parallel, say=say, threads=args.threads,
                      progress_s=args.progress_every)
    failed = [o for o in outcomes if not o.ok]
    skipped = [o for o in outcomes if o.ok and o.skipped and not is_done(o.cell, cell_dir(o.cell, root))]
    if not args.no_report:
        try:
            mine = []
            for group in cells_by_seed(cells).values():  # one results folder per training seed
                paths = report(args.grid, results_label(preset, args.budget, group), cells=group, runs_root=root,
                               results_dir=args.results_dir, say=say)
                say(paths["markdown_text"])
                mine.append(paths["rows"])
            check = reproduce.reproduction_check(reproduce.mine_rows(pd.concat(mine, ignore_index=True)), reference)
            say(reproduce.to_text(check, reproduce.grid_findings(args.grid, base_label, args.results_dir, preset)))
        except Exception as e:  # a report problem must not hide the grid's outcome
            say(f"report failed: {type(e).__name__}: {e}")
    if skipped:
        say(f"{len(skipped)} cell(s) left to the other process that works on them: "
            + ", ".join(f"{o.cell.tag} ({o.skipped})" for o in skipped)
            + "; run this command again when it has finished for the whole table")
    if failed:
        say(f"{len(failed)} cell(s) failed: " + ", ".join(f"{o.cell.tag} (log: {o.log})" for o in failed))
        return 1
    return 0


if __name__ == "__main__":
    # Re-import as ablations.run_grid so jobs pickle CellJob by module name, not as __main__.CellJob.
    from ablations.run_grid import main as _main

    raise SystemExit(_main())
