"""Collect a grid's result rows into one pandas DataFrame: ``results/<grid>/<preset>/results.csv``.

    python -m ablations.collect --grid latent_size [--preset digits] [--set ...] [--out results/runs]

Each cell's ``results.jsonl`` (written by ``evaluation.run``) is read; only the rows the grid asked for are kept
(an ad-hoc evaluation with another N or T in the same folder does not leak into the table), the latest row wins where
one was recomputed, and every row is tagged with its grid, cell (``variant``) and folder. A Parquet copy is written
too when pyarrow is installed.
"""

from __future__ import annotations

import json
import math
import re
import statistics
import sys
from pathlib import Path
from typing import Any

import pandas as pd

if __package__ in (None, ""):  # run by path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ablations.grids import Cell, cell_dir, requested_rows, row_matches
from ablations.tables import missing
from dmz.runio import REPO, atomic_write_bytes, read_jsonl, repo_relative
from evaluation.rows import RESULTS_FILE, latest_rows

CONFIG_COLUMNS = ("dataset", "prior", "latent_dim", "conditioning", "prior_matching", "categories", "run_id", "seed",
                  "seeding")
PATH_COLUMNS = ("run_dir", "copied_from", "cell_dir")  # folders a row names: written relative to the repository
FIRST = ("grid", "preset", "variant", *CONFIG_COLUMNS, "metric", "feature_extractor", "T", "sampler", "N", "seeds",
         "value", "sd")


def default_results_dir() -> Path:
    return REPO / "results"


def cell_rows(cell: Cell, run_dir: Path, *, requested_only: bool = True) -> list[dict[str, Any]]:
    """The cell's rows (the requested ones by default), tagged with grid / variant / cell folder."""
    rows = read_jsonl(run_dir / RESULTS_FILE)
    if requested_only:
        wants = requested_rows(cell)
        rows = [r for r in rows if any(row_matches(w, r) for w in wants)]
    order = requested_rows(cell)  # rows in the order the grid asks for them (metric, sampler, T)
    rows = sorted(latest_rows(rows, per_run=False),
                  key=lambda r: next((i for i, w in enumerate(order) if row_matches(w, r)), len(order)))
    m = cell.config().model
    fill = {"dataset": cell.config().data.dataset, "prior": m.prior, "latent_dim": m.latent_dim,
            "conditioning": m.conditioning, "prior_matching": m.prior_matching, "categories": m.categories,
            "run_id": cell.run_id, "seed": cell.seed, "seeding": cell.config().train.seeding,
            **({"prior_mmd": m.prior_mmd} if m.prior_mmd else {})}  # the column only where it is set
    return [{**fill, **{k: (repo_relative(v) if k in PATH_COLUMNS and isinstance(v, str) else v) for k, v in r.items()},
             "grid": cell.grid, "preset": cell.preset, "variant": cell.name, "cell_dir": repo_relative(run_dir)}
            for r in rows]


def _scalar(v: Any) -> Any:
    return json.dumps(v, sort_keys=True) if isinstance(v, (list, dict)) else v


def collect(cells: list[Cell], runs_root: str | Path | None = None, *, requested_only: bool = True) -> pd.DataFrame:
    """All cells' rows as one DataFrame (lists and dicts as JSON strings); empty frame with the key columns if
    nothing was evaluated yet. Rows come in the grid's order: cell, then the order the cell requests them."""
    rows = [{k: _scalar(v) for k, v in r.items()}
            for c in cells for r in cell_rows(c, cell_dir(c, runs_root), requested_only=requested_only)]
    df = pd.DataFrame(rows)
    for col in FIRST:
        if col not in df.columns:
            df[col] = pd.Series(dtype=object)
    return df[[*FIRST, *[c for c in df.columns if c not in FIRST]]]


# ----------------------------------------------------------------------------------------------------------------
# training-seed replicates
# ----------------------------------------------------------------------------------------------------------------
SEED_LABEL = re.compile(r"^(?P<base>.+)-seed(?P<seed>\d+)$")
#: what makes two rows of different training seeds the same entry of a table. The FID extractor's weights are part
#: of it: ``digits-classifier-v1`` is trained on first use and its float weights differ between CPUs (an Intel Xeon
#: and an AMD EPYC gave different sha256s), so FIDs from two machines are two feature spaces, never pooled
#: The seeding protocol (``train.seeding``; rows written before it existed are ``v1``) is part of it too: trainings of
#: two protocols never pool.
POOL_KEY = ("grid", "variant", "seeding", "metric", "T", "sampler", "solver", "N", "seeds", "feature_extractor",
            "feature_extractor_weights_sha256", "reference", "repr", "train_steps", "noise_t", "mi_estimator")


def row_seeding(df: pd.DataFrame) -> pd.Series:
    """Each row's seeding protocol (``train.seeding``): ``v1`` where the row predates the column."""
    col = df["seeding"] if "seeding" in df.columns else pd.Series(None, index=df.index, dtype=object)
    return col.astype(object).where(col.notna(), "v1")


def split_seed_label(label: str) -> tuple[str, int | None]:
    """``("digits", 1)`` for ``digits-seed1`` (a training-seed replicate's tables), ``(label, None)`` otherwise."""
    m = SEED_LABEL.match(label)
    return (m["base"], int(m["seed"])) if m else (label, None)


def ident(v: Any) -> str:
    """A key field as text: 3 and 3.0 alike, every missing value alike."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return ""
    return repr(float(v)) if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v)


def _rms(values: list[float]) -> float:
    return math.sqrt(statistics.fmean(v * v for v in values)) if values else math.nan


def _pool(group: pd.DataFrame) -> dict[str, Any]:
    """One row from the same entry's trainings (one row per training seed; ``len(group)`` = n >= 1).

    ``value`` is the mean of the n per-training values (a training's FID is already the mean over its sampling
    seeds, its probe score the mean over CV folds); ``sd`` and ``train_sd`` are the sd (ddof=1) over the n trainings
    (NaN for n = 1: one training has no spread over trainings); ``sampling_sd`` is the spread within a training
    (root mean square of the trainings' own sd: over sampling seeds for FID, over CV folds for probes, over images
    for NLL), reported beside it and never used to decide; ``se`` (NLL) likewise the trainings' rms within-training
    standard error. ``train_seed_values`` lists the per-training values, the unit of evidence of
    :mod:`ablations.claims`."""
    group = group.sort_values("seed", kind="stable")  # train_seed_values[i] is the training of train_seed_list[i]
    first = group.iloc[0].to_dict()
    per_seed = [float(v) for v in group["value"]]
    k = len(group)
    within = [float(x) for x in group["sd"] if not missing(x)] if "sd" in group else []
    out = {**first, "train_seeds": k, "train_seed_list": json.dumps([int(s) for s in group["seed"]]),
           "train_seed_values": json.dumps(per_seed), "value": statistics.fmean(per_seed),
           "train_sd": statistics.stdev(per_seed) if k > 1 else math.nan,
           "sampling_sd": _rms(within) if len(within) == k else math.nan}
    out["sd"] = out["train_sd"]
    if "se" in group:
        se = [float(x) for x in group["se"] if not missing(x)]
        out["se"] = _rms(se) if len(se) == k else math.nan
    if k > 1:
        out["run_id"] = ";".join(map(str, group["run_id"])) if "run_id" in group else ""
        out["cell_dir"] = ";".join(map(str, group.get("cell_dir", pd.Series([""] * k))))
    return out


def pool_training_seeds(df: pd.DataFrame) -> pd.DataFrame:
    """Rows of the same entry (:data:`POOL_KEY`) from runs with different training seeds (column ``seed``; a frame
    without it is one training) merged into one row per entry (:func:`_pool`), with ``train_seeds`` (n),
    ``train_seed_list``, ``train_seed_values`` (the n per-training values), ``train_sd`` and ``sampling_sd``. Row
    order: first appearance. FIDs of two feature spaces never share an entry (the weights' sha256 is in the key)."""
    if df.empty:
        return df
    df = df if "seed" in df.columns else df.assign(seed=0)
    df = df.assign(seed=df["seed"].fillna(0).astype(int), seeding=row_seeding(df))
    key = [c for c in POOL_KEY if c in df.columns]
    entry = df[key].apply(lambda r: "\x1f".join(map(ident, r)), axis=1)
    rows = [_pool(group.drop_duplicates(subset=["seed"], keep="last"))
            for _, group in df.groupby(entry, sort=False)]
    return pd.DataFrame(rows)


def results_folder(grid: str, preset: str, results_dir: str | Path | None = None) -> Path:
    return Path(results_dir or default_results_dir()) / grid / preset


def with_recorded(df: pd.DataFrame, recorded: Path) -> tuple[pd.DataFrame, list[str]]:
    """``df`` (the rows collected from run folders now) plus the rows of ``recorded`` (the results.csv written
    before) of every cell that has no row in ``df``: a run with ``--only``, or one whose run folders are gone (run
    folders are scratch, results.csv is the record), must never drop the other cells' rows. Returns the rows in the
    recorded file's cell order (new cells last) and the names of the cells kept from the file."""
    if not recorded.is_file():
        return df, []
    old = pd.read_csv(recorded)
    if old.empty or "variant" not in old:
        return df, []
    have = set(df["variant"]) if len(df) else set()
    kept = [v for v in dict.fromkeys(old["variant"]) if v not in have]
    if not kept:
        return df, []
    order = list(dict.fromkeys([*old["variant"], *(df["variant"] if len(df) else [])]))
    parts = [df] if len(df) else []
    out = pd.concat([*parts, old[old["variant"].isin(kept)]], ignore_index=True)
    out = out.iloc[sorted(range(len(out)), key=lambda i: order.index(out["variant"].iat[i]))].reset_index(drop=True)
    return out[[*FIRST, *[c for c in out.columns if c not in FIRST]]], kept


def save(df: pd.DataFrame, grid: str, preset: str, results_dir: str | Path | None = None) -> dict[str, Path]:
    """Write ``results.csv`` (and ``results.parquet`` when pyarrow is installed) atomically; returns the paths."""
    folder = results_folder(grid, preset, results_dir)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"csv": folder / "results.csv"}
    atomic_write_bytes(paths["csv"], df.to_csv(index=False).encode())
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return paths
    paths["parquet"] = folder / "results.parquet"
    atomic_write_bytes(paths["parquet"], df.to_parquet(index=False))
    return paths


def main(argv: list[str] | None = None) -> int:
    from ablations.grids import cell_parser, cells_by_seed, parse_cells, results_label

    parsed = parse_cells(cell_parser("python -m ablations.collect", __doc__.split("\n\n")[0]), argv)
    if parsed is None:
        return 2
    args, preset, cells = parsed
    for group in cells_by_seed(cells).values():  # one results folder per training seed
        label = results_label(preset, args.budget, group)
        df, kept = with_recorded(collect(group, args.out), results_folder(args.grid, label, args.results_dir)
                                 / "results.csv")
        paths = save(df, args.grid, label, args.results_dir)
        print(f"{len(df)} rows from {df['variant'].nunique() if len(df) else 0} of {len(group) + len(kept)} cells -> "
              f"{paths['csv']}"
              + (f" (kept from the file: {', '.join(kept)})" if kept else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
