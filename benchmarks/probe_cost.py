"""What the linear probes cost, and why they were slow inside grid cells.

    python benchmarks/probe_cost.py --run RUN [--busy 1] [--md benchmarks/results/probe_cost.md]

Times the probes of ``evaluation.run`` (5-fold CV over train+test and held-out, accuracy and AUROC, on the run's soft
latents) four ways: one classifier per metric (two calls, as before) or one for both (``probe_cv_all``), each with
the BLAS/OpenMP pools left at one thread per core or capped at one thread (``dmz.threads.limit_threads``). Each
configuration runs in its own process (a pool's size is fixed once it is loaded). ``--busy N`` keeps N other
processes spinning one torch thread each meanwhile, like the other cell of a 2-core grid.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

CHILD = r"""
import json, sys, time
shared, cap = sys.argv[2] == "shared", sys.argv[3] == "cap"
if cap:
    from dmz.threads import limit_threads
    limit_threads(1)
import numpy as np, torch, threadpoolctl
from dmz.run import load_run, representations
from evaluation import probe
run = load_run(sys.argv[1], device="cpu")
xtr, ytr = (a.numpy() for a in representations(run, "train", "soft"))
xte, yte = (a.numpy() for a in representations(run, "test", "soft"))
xa, ya = np.concatenate([xtr, xte]), np.concatenate([ytr, yte])
t = time.perf_counter(); c = time.process_time()
if shared:
    cv = probe.probe_cv_all(xa, ya); ho = probe.probe_heldout_all(xtr, ytr, xte, yte)
else:
    cv = {m: probe.probe_cv(xa, ya, metric=m) for m in ("accuracy", "auroc")}
    ho = {m: probe.probe_heldout(xtr, ytr, xte, yte, metric=m) for m in ("accuracy", "auroc")}
acc = cv["accuracy"]["mean"]
pools = max(p["num_threads"] for p in threadpoolctl.threadpool_info())
print(json.dumps({"wall_s": time.perf_counter() - t, "cpu_s": time.process_time() - c, "acc_cv": acc,
                  "dim": int(xtr.shape[1]), "max_pool_threads": pools}))
"""


def _spin(stop):
    import torch

    torch.set_num_threads(1)
    a = torch.randn(256, 256)
    while not stop.is_set():
        a = (a @ a).tanh()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True)
    p.add_argument("--busy", type=int, default=0, help="other 1-thread torch processes running meanwhile")
    p.add_argument("--md", type=Path)
    args = p.parse_args(argv)
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                                             "MKL_NUM_THREADS")}
    stop = mp.Event()
    spinners = [mp.Process(target=_spin, args=(stop,), daemon=True) for _ in range(args.busy)]
    for s in spinners:
        s.start()
    rows = []
    try:
        for fits in ("per-metric", "shared"):
            for pools in ("default", "cap"):
                out = subprocess.run([sys.executable, "-c", CHILD, args.run, fits, pools], cwd=REPO, env=env,
                                     capture_output=True, text=True, check=True)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                rows.append({"fits": fits, "pools": pools, **r})
                print(rows[-1], flush=True)
    finally:
        stop.set()
        for s in spinners:
            s.join()
    lines = ["| classifiers | BLAS/OpenMP threads | wall s | CPU s | CV accuracy |", "|---|---|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {'one per metric' if r['fits'] == 'per-metric' else 'one for both metrics'} | "
                     f"{r['max_pool_threads']} ({'limit_threads(1)' if r['pools'] == 'cap' else 'default'}) | "
                     f"{r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['acc_cv']:.4f} |")
    text = "\n".join(lines)
    print(text)
    if args.md:
        args.md.write_text(
            "# Linear-probe cost\n\nWritten by `python benchmarks/probe_cost.py` on "
            f"{time.strftime('%Y-%m-%d')}: run `{Path(args.run).name}` ({rows[0]['dim']}-dim soft latents, 1,797 "
            f"digits), {os.cpu_count()} CPU cores, {args.busy} other 1-thread torch process(es) busy meanwhile.\n\n"
            + text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
