"""How much do two arms trained with one seed share? The between-arm correlation of main's DMZ and DDPM trainings
under the v1 seeding and under common random numbers (``train.seeding=crn``), and what pairing buys.

    python benchmarks/crn_correlation.py --crn-dir benchmarks/results/crn_correlation \\
        [--v1-dir results] [--out benchmarks/results/crn_correlation.md]

Reads the per-training rows of ``main`` on digits (``<dir>/main/digits[-crn][-seed<k>]/results.csv``; v1 from
``--v1-dir``, crn from ``--crn-dir``) and, per metric both protocols score (FID of the prior sampler at each T, on
log FID as the verdict rule tests it; NLL with z's bits per split), lists over the seeds both arms trained: the
Pearson correlation of the two arms' per-seed values (``scipy.stats.pearsonr``, with its 95% interval), the sd of
the per-seed differences against the sd of an unpaired difference (``sqrt(sd_a^2 + sd_b^2)``), and the trainings a
side a paired and an unpaired test would need to resolve a 10% effect (log 1.1 for FID; 0.01 bits/dim for NLL)
with 80% power at alpha 0.05 (:func:`ablations.inference.trainings_needed`).
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run by path: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pandas as pd
from scipy import stats

from ablations.collect import row_seeding, split_seed_label
from ablations.inference import trainings_needed
from ablations.rows import read_results, result_folders
from benchmarks.record import emit
from dmz.runio import REPO, repo_relative

EFFECT = {"fid": math.log(1.1), "nll_bpd_z": 0.01}


def per_seed(root: Path, label: str) -> pd.DataFrame:
    """main's rows under ``label`` and its ``-seed<k>`` folders, one row per (variant, metric, T, reference, seed)."""
    dfs = []
    for folder in result_folders(Path(root) / "main", label):
        if split_seed_label(folder.name)[0] != label:
            continue
        df = read_results(folder / "results.csv")
        if df is not None:
            dfs.append(df)
    if not dfs:
        return pd.DataFrame()
    df = pd.concat(dfs, ignore_index=True)
    df = df.assign(seeding=row_seeding(df))
    fid = (df["metric"] == "fid") & ((df["sampler"] == "prior") | df["sampler"].isna()) & (df["solver"] == "ddpm")
    nll = df["metric"] == "nll_bpd_z"
    # DDPM has no z: its bound is its NLL (where its rows carry no nll_bpd_z of their own)
    ddpm_nll = (df["metric"] == "nll_bpd") & (df["variant"] == "ddpm") & ~(
        (df["variant"] == "ddpm") & (df["metric"] == "nll_bpd_z")).any()
    df = df[fid | nll | ddpm_nll].copy()
    df.loc[ddpm_nll[df.index], "metric"] = "nll_bpd_z"
    df = df[~((df["variant"] == "dmz") & (df["metric"] == "nll_bpd_z") & (df["sampler"].fillna("prior") != "prior"))]
    df["where"] = df.apply(lambda r: f"T={r['T']:g}" if r["metric"] == "fid" else str(r["reference"]), axis=1)
    return df[["variant", "metric", "where", "seed", "value", "seeding"]]


def summary(df: pd.DataFrame, protocol: str) -> list[dict]:
    out = []
    for (metric, where), grp in df.groupby(["metric", "where"], sort=True):
        wide = grp.pivot_table(index="seed", columns="variant", values="value", aggfunc="last")
        if not {"dmz", "ddpm"} <= set(wide.columns):
            continue
        wide = wide[["dmz", "ddpm"]].dropna()
        if len(wide) < 3:
            continue
        a, b = wide["dmz"].astype(float), wide["ddpm"].astype(float)
        if metric == "fid":
            a, b = a.map(math.log), b.map(math.log)
        r = stats.pearsonr(a, b)
        ci = r.confidence_interval(0.95)
        sd_a, sd_b = statistics.stdev(a), statistics.stdev(b)
        sd_d = statistics.stdev(a - b)
        unpaired = math.sqrt(sd_a ** 2 + sd_b ** 2)
        eff = EFFECT[metric]
        need_p = trainings_needed(eff, sd_a, sd_b, sd_diff=sd_d)
        need_u = trainings_needed(eff, sd_a, sd_b)
        out.append({"seeding": protocol, "metric": ("log FID" if metric == "fid" else "NLL with z's bits"),
                    "at": where, "seeds": ", ".join(str(int(s)) for s in wide.index), "r": f"{r.statistic:+.2f}",
                    "r 95% CI": f"[{ci.low:+.2f}, {ci.high:+.2f}]", "sd DMZ": f"{sd_a:.3f}", "sd DDPM": f"{sd_b:.3f}",
                    "sd of per-seed difference": f"{sd_d:.3f}", "sd unpaired": f"{unpaired:.3f}",
                    "variance ratio unpaired / paired": f"{(unpaired / sd_d) ** 2:.2f}" if sd_d else "inf",
                    "trainings a side, paired": "> 1000" if need_p is None else need_p,
                    "unpaired": "> 1000" if need_u is None else need_u})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--v1-dir", type=Path, default=REPO / "results", help="results root holding main/digits* (v1)")
    p.add_argument("--crn-dir", type=Path, required=True, help="results root holding main/digits-crn* (crn)")
    p.add_argument("--out", type=Path, default=None, help="write the record here (Markdown)")
    args = p.parse_args(argv)
    rows = []
    for root, label, protocol in ((args.v1_dir, "digits", "v1"), (args.crn_dir, "digits-crn", "crn")):
        df = per_seed(root, label)
        if df.empty:
            print(f"error: no main rows under {root / 'main' / label}*", file=sys.stderr)
            return 2
        rows += summary(df[df["seeding"] == protocol], protocol)
    table = pd.DataFrame(rows).sort_values(["metric", "at", "seeding"], kind="stable")
    text = "\n".join([
        "# Between-arm correlation: main's DMZ vs DDPM trained with one seed, v1 vs common random numbers", "",
        f"Written by `python benchmarks/crn_correlation.py --crn-dir {repo_relative(args.crn_dir)}` on "
        f"{time.strftime('%Y-%m-%d')} ({platform.processor() or platform.machine()}, {platform.python_version()}).",
        "", "Per metric: over the seeds both arms trained, the Pearson correlation of the arms' per-seed values "
        "(FID on the log scale, as the verdict rule tests it), the sd of the per-seed differences against the "
        "unpaired sd sqrt(sd_DMZ^2 + sd_DDPM^2), and the trainings a side a paired and an unpaired t-test would "
        "need for a 10% effect (a ratio of 1.1 for FID, 0.01 bits/dim for NLL) with 80% power at alpha 0.05. v1 "
        f"rows: `{repo_relative(args.v1_dir)}/main/digits*`; crn rows: `{repo_relative(args.crn_dir)}/main/"
        "digits-crn*`.", "", table.to_markdown(index=False), ""])
    return emit(text, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
