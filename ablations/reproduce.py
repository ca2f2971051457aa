"""Where a user's own training stands: its numbers against the checked-in distribution over trainings.

    python -m ablations.reproduce --grid latent_size [--preset digits]

``run_grid`` calls :func:`reproduction_check` after a grid finishes (the reference is read before the run, so a
fresh clone compares with the checked-in rows it is about to overwrite). For every row of the user's trainings that
the checked-in tables also hold (same cell, metric, T, z-sampler, N, feature space), it prints the checked-in mean
± sd over trainings with n, the 95% prediction interval for one new training
(mean ± t(0.975, n-1) · sd · √(1 + 1/n), scipy.stats.t) and whether the user's value falls inside it. It then gives
the grid's verdict over every training now on disk (:func:`grid_findings`, the paper report's rule).
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

import pandas as pd
from scipy import stats

if __package__ in (None, ""):  # run by path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ablations.claims import Ctx, claim_latent_size
from ablations.collect import POOL_KEY, ident, split_seed_label
from ablations.rows import pooled, read_results, result_folders, split_stale
from ablations.tables import column_label, fmt, missing, stale_mask, to_markdown
from ablations.verdicts import Claim
from dmz.runio import REPO

#: what identifies one number across trainings (the pooling key, without the grid-level columns)
#: a new training is compared with the checked-in ones of the same entry whatever its seeding protocol (the protocol
#: changes which draws two arms share, not the distribution of one arm's trainings)
MATCH = tuple(k for k in POOL_KEY if k not in ("grid", "seeding"))
LEVEL = 0.95


def trainings(grid: str, label: str, results_dir: str | Path | None = None) -> pd.DataFrame | None:
    """Every training's rows of ``results/<grid>/<label>[-seed<k>]/results.csv`` pooled per entry (mean, sd over
    trainings, n, the per-training values), stale FIDs left out; None when there are none."""
    root = Path(results_dir) if results_dir else REPO / "results"
    dfs = []
    for folder in result_folders(root / grid, label):
        if split_seed_label(folder.name)[0] != label:
            continue
        f = folder / "results.csv"
        df = read_results(f)
        if df is not None:
            df, _ = split_stale(df, f)
            if len(df):
                dfs.append(df)
    return pooled(dfs) if dfs else None


def prediction_interval(mean: float, sd: float, n: int, level: float = LEVEL, *,
                        values: list[float] | None = None, log: bool = False) -> tuple[float, float] | None:
    """Where one new training's value falls with probability ``level``, if the trainings are normal with the
    observed mean and sd: mean ± t(level, n-1) · sd · √(1 + 1/n). ``log=True`` (FID: positive and skewed) computes
    it on the log of the per-training ``values`` and returns exp of its ends (a ratio interval around their
    geometric mean that never reaches below zero). None for n < 2."""
    if log and values is not None and len(values) >= 2 and all(v > 0 for v in values):
        logs = [math.log(v) for v in values]
        lo, hi = prediction_interval(statistics.fmean(logs), statistics.stdev(logs), len(logs), level)
        return math.exp(lo), math.exp(hi)
    if n < 2 or missing(sd):
        return None
    half = stats.t.ppf(0.5 + level / 2, n - 1) * sd * math.sqrt(1 + 1 / n)
    return mean - half, mean + half


def _key(row: pd.Series | dict) -> str:
    return "\x1f".join(ident(row.get(k)) for k in MATCH)


def reproduction_check(mine: pd.DataFrame, reference: pd.DataFrame | None) -> pd.DataFrame:
    """One row per FID / probe / NLL number of ``mine`` (a grid's collected rows: one training per cell and seed)
    that ``reference`` (:func:`trainings`) also holds: your value, the reference's mean ± sd (n) and its 95%
    prediction interval, and whether yours falls inside."""
    if reference is None or mine is None or mine.empty:
        return pd.DataFrame()
    ref = {_key(r): r for _, r in reference.iterrows()}
    out = []
    for _, r in mine.iterrows():
        if missing(r.get("value")):
            continue
        hit = ref.get(_key(r))
        if hit is None:
            continue
        n = int(hit["train_seeds"])
        d = 2 if r["metric"] == "fid" else 3
        values = [float(v) for v in json.loads(hit["train_seed_values"])] \
            if isinstance(hit.get("train_seed_values"), str) else None
        pi = prediction_interval(float(hit["value"]), float(hit["train_sd"]) if n > 1 else math.nan, n,
                                 values=values, log=r["metric"] == "fid")
        mine_v = float(r["value"])
        where = ("no interval (1 checked-in training)" if pi is None else
                 "inside" if pi[0] <= mine_v <= pi[1] else
                 ("above" if mine_v > pi[1] else "below") + " the interval")
        out.append({"cell": r["variant"] + ("" if missing(r.get("sampler")) else f", z~{r['sampler']}"),
                    "metric": column_label(r["metric"], r.get("feature_extractor"), r.get("T")),
                    "training seed": "" if missing(r.get("seed")) else int(r["seed"]),
                    "yours": f"{mine_v:.{d}f}",
                    "checked in: mean ± sd over trainings": fmt(float(hit["value"]),
                                                                float(hit["train_sd"]) if n > 1 else None, d)
                    + f" (n={n})",
                    f"{LEVEL:.0%} prediction interval": "–" if pi is None else f"[{pi[0]:.{d}f}, {pi[1]:.{d}f}]",
                    "yours is": where})
    return pd.DataFrame(out)


def grid_findings(grid: str, label: str, results_dir: str | Path | None = None,
                  preset: str | None = None) -> list[str]:
    """The grid's claim verdict over every training now on disk (the paper report's rule: Welch over trainings,
    Holm), as lines; for grids without a one-grid finding, nothing."""
    pooled = trainings(grid, label, results_dir)
    if pooled is None or grid != "latent_size":
        return []
    c: Claim = claim_latent_size(Ctx(preset or label.split("-")[0], {grid: {label: pooled}})).finalize()
    lines = []
    for p in c.parts:
        if not p.pid.startswith("4a") or p.a is None:
            continue
        lines.append(f"|z| effect ({p.statement}): {p.a.text()} vs {p.b.text()}; {p.test_text()}, "
                     f"{p.effect(2)} (95% CI); "
                     f"{p.why} -> {p.verdict}" + (f" ({p.needed_text()})" if p.needed_text() else ""))
    return lines


def to_text(check: pd.DataFrame, findings: list[str]) -> str:
    parts = []
    if len(check):
        inside = int((check["yours is"] == "inside").sum())
        parts += ["Reproduction check: your trainings against the checked-in ones (a training differs from another "
                  "by its seed and by this CPU's rounding, so expect your numbers inside the interval, not equal "
                  f"to the mean): {inside} of {len(check)} inside the {LEVEL:.0%} prediction interval.", "",
                  to_markdown(check, {"cell", "metric", "yours is"}), ""]
    else:
        parts += ["Reproduction check: no checked-in trainings of these cells to compare with.", ""]
    parts += [f"* {f}" for f in findings]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    from ablations.grids import cell_parser, parse_cells, results_label

    p = cell_parser("python -m ablations.reproduce", __doc__.split("\n\n")[0])
    parsed = parse_cells(p, argv)
    if parsed is None:
        return 2
    args, preset, cells = parsed
    label = results_label(preset, args.budget)
    pooled = trainings(args.grid, label, args.results_dir)
    if pooled is None:
        print(f"no checked-in rows for {args.grid} on {label}")
        return 1
    cols = [c for c in ("variant", "sampler", "metric", "T", "value", "train_sd", "train_seeds", "sampling_sd")
            if c in pooled]
    print(pooled[cols].to_string(index=False))
    for f in grid_findings(args.grid, label, args.results_dir, preset):
        print(f"* {f}")
    return 0


def mine_rows(df: pd.DataFrame) -> pd.DataFrame:
    """A collected grid frame without stale FIDs (what the check compares)."""
    return df if df.empty else df[~stale_mask(df)]


if __name__ == "__main__":
    raise SystemExit(main())
