"""The three applications of the binary latent on digits, end to end (README "Applications"; issue 11).

    python ablations/run_apps.py                       # train what is missing, run all three, write the summary
    python ablations/run_apps.py --threads 1 --out results/apps/digits --runs results/runs/apps/digits

Trains two DMZ models with the ``digits`` preset (1,800 steps each; about 10-20 minutes each on one CPU thread):
``digits`` (the photo domain; interpolation, manipulation and the translation target) and ``digits_edges`` (the edge
maps; the translation source), then runs ``python -m dmz.apps interpolate|manipulate|translate`` on them and writes
``<out>/summary.md`` from the applications' ``scores.json``. Every step is a subprocess with the command printed, so
the log is a recipe. Re-running skips finished trainings (``dmz.train`` resumes or returns at once); the applications
run again (a few minutes). Run folders go under ``--runs`` (git-ignored), scores and PNGs under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def sh(cmd: list[str], threads: int) -> float:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads))
    print("$ " + " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, cwd=ROOT, env=env)
    dt = time.perf_counter() - t0
    print(f"  ({dt:.0f} s)", flush=True)
    return dt


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("results/apps/digits"))
    p.add_argument("--runs", type=Path, default=Path("results/runs/apps/digits"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--set", dest="overrides", action="append", default=[],
                   help="extra --set for both trainings (e.g. steps=10 for a smoke test)")
    p.add_argument("--pairs", type=int, default=8, help="interpolation pairs")
    p.add_argument("--T", type=int, default=100, help="denoising steps for interpolation")
    p.add_argument("--manipulate-T", type=int, default=50,
                   help="denoising steps for manipulation (decoded from 0.9T; 50 keeps 10 attributes x 7 alphas cheap)")
    p.add_argument("--translate-T", type=int, default=40, help="denoising steps for translation (released: 40)")
    p.add_argument("--per-class", type=int, default=4, help="manipulation: source images per other class")
    p.add_argument("--num", type=int, default=None, help="translation: test pairs to translate (default: all 360)")
    args = p.parse_args(argv)
    py = sys.executable
    sets = [a for o in [f"threads={args.threads}", *args.overrides] for a in ("--set", o)]
    photo, edges = args.runs / "digits-dmz", args.runs / "digits_edges-dmz"
    times = {}
    times["train digits"] = sh([py, "-m", "dmz.train", "--preset", "digits", *sets, "--out", str(photo),
                                "--no-progress"], args.threads)
    times["train digits_edges"] = sh([py, "-m", "dmz.train", "--preset", "digits", "--set", "dataset=digits_edges",
                                      *sets, "--out", str(edges), "--no-progress"], args.threads)
    common = ["--threads", str(args.threads)]
    times["interpolate"] = sh([py, "-m", "dmz.apps", "interpolate", "--run", str(photo), "--pairs", str(args.pairs),
                               "--T", str(args.T), "--out", str(args.out / "interpolate"), *common], args.threads)
    times["manipulate"] = sh([py, "-m", "dmz.apps", "manipulate", "--run", str(photo), "--attribute", "all",
                              "--T", str(args.manipulate_T), "--per-class", str(args.per_class),
                              "--out", str(args.out / "manipulate"), *common], args.threads)
    num = [] if args.num is None else ["--num", str(args.num)]
    times["translate"] = sh([py, "-m", "dmz.apps", "translate", "--source", str(edges), "--target", str(photo),
                             "--T", str(args.translate_T), *num, "--out", str(args.out / "translate"), *common],
                            args.threads)
    from dmz.apps.summary import write_summary  # light: json + formatting only

    path = write_summary(args.out, times)
    print(f"wrote {path}")
    print(json.dumps({k: round(v) for k, v in times.items()}))
    return 0


if __name__ == "__main__":
    if __package__ in (None, ""):
        sys.path.insert(0, str(ROOT))
    raise SystemExit(main())
