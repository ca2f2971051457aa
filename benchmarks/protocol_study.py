"""Which digits protocol resolves a difference fastest? Cost per training and spread between trainings of ``main``'s
two cells under candidate recipes, compared by one figure: the wall time to resolve a 10% FID difference.

    python benchmarks/protocol_study.py --settings current steps2000 lr-cosine ema9995 small-long n900 \\
        --seeds 0 1 2 3 [--out-root benchmarks/results/protocol] [--dry-run]
    python benchmarks/protocol_study.py --analyse-only --settings current steps2000 ...   # the record from disk

Each setting (:data:`SETTINGS`: ``--set`` overrides and evaluation sizes on top of ``main``'s digits budget) trains
DMZ and DDPM with common random numbers (``seeding=crn``) for every ``--seeds`` seed through
``ablations/run_grid.py`` (one job array per setting; results under ``<out-root>/<setting>/results``, run folders under
``<out-root>/<setting>/runs``; finished cells are never retrained). The analysis reads, per setting and arm, each
training's FID at T = 10, 20 and 100 (the numbers claims 1 and 2 compare) and its cost (CPU seconds of the training
and the evaluation from each cell's ``cell_state.json``), and reports:

* the between-training sd of log FID per arm and the sd of the per-seed log differences (the paired design's);
* trainings a side for 80% power at alpha 0.05 to resolve a ratio of 1.1, paired (:func:`ablations.inference.
  trainings_needed` with the per-seed sd) and unpaired;
* **the figure**: hours to resolve it = trainings needed x CPU hours of one training of each arm (the mean over
  the setting's trainings), the paired design, at each T; the setting with the lowest worst-T figure wins.

CPU seconds are the machine's, not wall time on a shared machine: compare settings measured on one CPU kind.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run by path: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pandas as pd

from ablations.inference import trainings_needed
from ablations.rows import read_results, result_folders
from benchmarks.record import emit
from dmz.runio import REPO, atomic_write_bytes, repo_relative

#: candidate protocols: ``sets`` are run_grid --set overrides, ``eval`` its evaluation sizes (T is always 10 20 100)
SETTINGS: dict[str, dict] = {
    "current": {"sets": [], "eval": {"num-samples": 300, "eval-seeds": 3},
                "what": "the recipe of every checked-in row: 1,000 steps, lr 1e-3 constant after 100 warm-up steps, "
                        "EMA 0.999, FID on N=300 x 3 sampling seeds"},
    "steps2000": {"sets": ["steps=2000"], "eval": {"num-samples": 300, "eval-seeds": 3},
                  "what": "twice the training steps"},
    "lr-cosine": {"sets": ["lr_decay=cosine"], "eval": {"num-samples": 300, "eval-seeds": 3},
                  "what": "the learning rate decayed to 0 at the last step (cosine)"},
    "steps2000-lr-cosine": {"sets": ["steps=2000", "lr_decay=cosine"], "eval": {"num-samples": 300, "eval-seeds": 3},
                            "what": "twice the steps, decayed to 0"},
    "ema9995": {"sets": ["ema_rate=0.9995"], "eval": {"num-samples": 300, "eval-seeds": 3},
                "what": "a slower EMA (0.9995: an average over the last ~2,000 steps with warm-up)"},
    "small-long": {"sets": ["base_channels=16", "steps=3000", "lr_decay=cosine"],
                   "eval": {"num-samples": 300, "eval-seeds": 3},
                   "what": "a UNet of base width 16 (about a quarter of the FLOPs) trained 3,000 steps, decayed"},
    "n900": {"sets": [], "eval": {"num-samples": 900, "eval-seeds": 1},
             "what": "the current training, FID on N=900 x 1 seed (the same images generated, one larger set)"},
}
STEPS = (10, 20, 100)
EFFECT = math.log(1.1)  # a 10% FID difference, on the log scale the rule tests


def run_setting(name: str, seeds: list[int], out_root: Path, *, dry_run: bool, extra_sets: list[str]) -> int:
    s = SETTINGS[name]
    cmd = [sys.executable, str(REPO / "ablations" / "run_grid.py"), "--grid", "main", "--preset", "digits",
           "--seeds", *map(str, seeds), "--set", "seeding=crn", *[a for x in [*s["sets"], *extra_sets]
                                                                    for a in ("--set", x)],
           "--T", *map(str, STEPS), "--num-samples", str(s["eval"]["num-samples"]), "--eval-seeds",
           str(s["eval"]["eval-seeds"]), "--out", str(out_root / name / "runs"), "--results-dir",
           str(out_root / name / "results"), "--executor", "local", "--parallel", "2", "--threads", "1",
           "--no-report"] + (["--dry-run"] if dry_run else [])
    print(f"[{name}] {' '.join(cmd)}", flush=True)
    code = subprocess.call(cmd, cwd=REPO)
    if code == 0 and not dry_run:  # collect the rows (run_grid --no-report does not)
        code = subprocess.call([sys.executable, "-m", "ablations.collect", "--grid", "main", "--preset", "digits",
                                "--seeds", *map(str, seeds), "--set", "seeding=crn",
                                *[a for x in [*s["sets"], *extra_sets] for a in ("--set", x)],
                                "--T", *map(str, STEPS), "--num-samples", str(s["eval"]["num-samples"]),
                                "--eval-seeds", str(s["eval"]["eval-seeds"]), "--out", str(out_root / name / "runs"),
                                "--results-dir", str(out_root / name / "results")], cwd=REPO)
    return code


COSTS = "costs.csv"  # <out-root>/<setting>/: each training's CPU seconds, kept with the rows (run folders are scratch)


def _cpu_seconds(out_root: Path, name: str, run_id: str) -> float:
    """CPU seconds (training + evaluation) of the run folder ``<out-root>/<setting>/runs/main/digits/*-<run_id>``."""
    for cell in (out_root / name / "runs" / "main" / "digits").glob(f"*-{run_id}"):
        try:
            t = json.loads((cell / "cell_state.json").read_text())["timings"]
            return sum(float(v.get("cpu_s") or 0) for v in t.values())
        except (OSError, KeyError, json.JSONDecodeError):
            pass
    return math.nan


def per_training(out_root: Path, name: str) -> pd.DataFrame:
    """One row per (arm, seed): its log FID at each T and its CPU seconds (training + evaluation), the seconds from
    the run folders where they exist (then also written to ``costs.csv``), else from ``costs.csv``."""
    rows = []
    results = out_root / name / "results" / "main"
    costs_path = out_root / name / COSTS
    known = pd.read_csv(costs_path).set_index("run_id")["cpu_s"].to_dict() if costs_path.is_file() else {}
    for folder in result_folders(results, "digits-crn"):
        df = read_results(folder / "results.csv")
        if df is None:
            continue
        fid = df[(df["metric"] == "fid") & (df["solver"] == "ddpm")]
        for (variant, seed), grp in fid.groupby(["variant", "seed"]):
            row = {"arm": variant, "seed": int(seed)}
            for _, r in grp.iterrows():
                row[f"log FID T={r['T']:g}"] = math.log(float(r["value"]))
            run_id = str(grp["run_id"].iloc[0])
            cpu = _cpu_seconds(out_root, name, run_id)
            row["run_id"], row["cpu_s"] = run_id, cpu if math.isfinite(cpu) else known.get(run_id, math.nan)
            rows.append(row)
    df = pd.DataFrame(rows)
    if len(df) and df["cpu_s"].notna().any():
        atomic_write_bytes(costs_path, df[["arm", "seed", "run_id", "cpu_s"]].to_csv(index=False).encode())
    return df


def analyse(out_root: Path, names: list[str]) -> pd.DataFrame:
    out = []
    for name in names:
        df = per_training(out_root, name)
        if df.empty:
            out.append({"setting": name, "trainings": 0})
            continue
        wide = {arm: g.set_index("seed") for arm, g in df.groupby("arm")}
        if not {"dmz", "ddpm"} <= set(wide):
            continue
        seeds = sorted(set(wide["dmz"].index) & set(wide["ddpm"].index))
        pair_h = (wide["dmz"]["cpu_s"].mean() + wide["ddpm"]["cpu_s"].mean()) / 3600
        row = {"setting": name, "trainings": len(seeds), "CPU h per pair": round(pair_h, 3)}
        worst = 0.0
        for T in STEPS:
            col = f"log FID T={T}"
            if col not in wide["dmz"] or len(seeds) < 3:
                continue
            a, b = wide["dmz"].loc[seeds, col], wide["ddpm"].loc[seeds, col]
            sd_a, sd_b, sd_d = statistics.stdev(a), statistics.stdev(b), statistics.stdev(a - b)
            paired = trainings_needed(EFFECT, sd_a, sd_b, sd_diff=sd_d)
            unpaired = trainings_needed(EFFECT, sd_a, sd_b)
            hours = math.inf if paired is None else paired * pair_h
            worst = max(worst, hours)
            row.update({f"T={T}: sd DMZ / DDPM": f"{sd_a:.3f} / {sd_b:.3f}", f"T={T}: sd paired": f"{sd_d:.3f}",
                        f"T={T}: trainings paired / unpaired": f"{paired or '>1000'} / {unpaired or '>1000'}",
                        f"T={T}: hours to resolve 10%": "inf" if math.isinf(hours) else f"{hours:.1f}"})
        row["worst-T hours to resolve 10% (the figure)"] = "inf" if math.isinf(worst) else f"{worst:.1f}"
        out.append(row)
    return pd.DataFrame(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3])
    p.add_argument("--out-root", type=Path, default=REPO / "benchmarks" / "results" / "protocol")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="an override for every setting (a smoke test: --set steps=3 --set base_channels=8)")
    p.add_argument("--analyse-only", action="store_true", help="only the record, from the rows on disk")
    p.add_argument("--dry-run", action="store_true", help="print the run_grid commands' plans, train nothing")
    p.add_argument("--out", type=Path, default=None, help="the record (default <out-root>/protocol_study.md)")
    args = p.parse_args(argv)
    if len(args.seeds) < 3 and not args.dry_run:
        print("error: --seeds: a spread needs at least 3 trainings a side (the issue asks for 4)", file=sys.stderr)
        return 2
    if not args.analyse_only:
        for name in args.settings:
            code = run_setting(name, args.seeds, args.out_root, dry_run=args.dry_run, extra_sets=args.sets)
            if code:
                print(f"error: setting {name}: run_grid exited {code}", file=sys.stderr)
                return code
        if args.dry_run:
            return 0
    table = analyse(args.out_root, args.settings)
    text = "\n".join([
        "# The digits protocol study: cost per training and spread between trainings", "",
        f"Written by `python benchmarks/protocol_study.py --analyse-only --settings {' '.join(args.settings)}` on "
        f"{time.strftime('%Y-%m-%d')} ({platform.processor() or platform.machine()}).", "",
        *[f"* `{n}`: {SETTINGS[n]['what']} (`--set {' --set '.join(SETTINGS[n]['sets'])}`)" if SETTINGS[n]["sets"]
          else f"* `{n}`: {SETTINGS[n]['what']}" for n in args.settings], "",
        "Trainings under `seeding=crn`, DMZ and DDPM per seed; sds of log FID over trainings; trainings a side for "
        "80% power at alpha 0.05 on a 10% FID ratio; hours = paired trainings x CPU hours of one DMZ + one DDPM "
        "training with their evaluation.", "", table.to_markdown(index=False), ""])
    out = args.out or args.out_root / "protocol_study.md"
    emit(text, out)
    print(f"wrote {repo_relative(out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
