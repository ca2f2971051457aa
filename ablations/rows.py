"""Reading the grids' result rows for the claims: ``{grid: {label: rows}}`` and the rows one comparison reads.

:func:`load_all` returns ``{grid: {label: rows}}`` from each grid's ``results/<grid>/<label>/results.csv``
(``label`` = the preset, ``<preset>-<budget>``, and ``-crn`` for trainings under common random numbers; the
``-seed<k>`` folders of one label pooled over trainings); stale FIDs (another feature space) are left out and listed by
:func:`stale_rows`; :func:`select`, :func:`fid_rows` and :func:`_best` pick the rows a comparison reads.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from ablations.collect import pool_training_seeds, split_seed_label
from ablations.tables import missing, penalty_weights, stale_mask
from dmz.runio import REPO

#: the grids the paper's claims read (ablations/claims.py); add a claim's grid here
GRIDS_USED = ("main", "latent_type", "conditioning", "latent_size", "representation", "ddim")


DEFAULTS: dict[str, Any] = {"solver": "ddpm", "sd": math.nan, "se": math.nan,
                            "seeds": math.nan, "N": math.nan, "T": math.nan, "sampler": None, "reference": None,
                            "feature_extractor": None, "latent_dim": math.nan, "dataset": None, "prior": None,
                            "train_steps": math.nan, "checkpoint_step": math.nan}


def read_results(path: Path) -> pd.DataFrame | None:
    """One results.csv, with the columns this report reads filled in where an older file lacks them; None when it
    is absent or has no rows."""
    if not path.exists():
        return None
    try:
        df = pd.read_csv(path)
    except pd.errors.EmptyDataError:
        return None
    if df.empty:
        return None
    for col, val in DEFAULTS.items():
        if col not in df.columns:
            df[col] = val
    fid = df["metric"] == "fid"
    df["solver"] = df["solver"].astype(object)
    df.loc[fid, "solver"] = df.loc[fid, "solver"].fillna("ddpm")
    df["source"] = _rel(path)
    return penalty_weights(df)


def pooled(dfs: list[pd.DataFrame]) -> pd.DataFrame:
    """One label's rows over its trainings (:func:`ablations.collect.pool_training_seeds`; sources joined)."""
    df = pool_training_seeds(pd.concat(dfs, ignore_index=True))
    df["source"] = "; ".join(dict.fromkeys(str(d["source"].iloc[0]) for d in dfs))
    return df


class MixedFeatureSpaces(ValueError):
    """A results.csv holds FIDs of one unpinned extractor computed with two weight files."""


def _check_one_space(df: pd.DataFrame, path: Path) -> None:
    fid = df[df["metric"] == "fid"]
    if "feature_extractor_weights_sha256" not in fid:
        return
    for ext, grp in fid.groupby("feature_extractor"):
        shas = sorted(grp["feature_extractor_weights_sha256"].dropna().astype(str).unique())
        if len(shas) > 1:
            raise MixedFeatureSpaces(
                f"{_rel(path)} mixes FIDs of {ext} from {len(shas)} weight files ({', '.join(h[:8] for h in shas)}): "
                "re-evaluate its cells with one weights file (python ablations/run_grid.py --grid "
                f"{df['grid'].iloc[0]} ...) or delete the other rows, then rerun the report")


def split_stale(df: pd.DataFrame, path: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(rows in the pinned feature space or without a FID, stale FID rows) of one results.csv; raises
    :class:`MixedFeatureSpaces` when the kept FIDs of one extractor come from two weight files."""
    stale = stale_mask(df)
    kept = df[~stale]
    _check_one_space(kept, path)
    return kept, df[stale]


def _rel(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(REPO))
    except ValueError:
        return str(path)


def result_folders(grid_dir: Path, label: str) -> list[Path]:
    """A grid's result folders for ``label`` and every label that extends it: ``<label>/`` first, then
    ``<label>-<budget>`` and ``<label>[-<budget>]-seed<k>`` in name order (folders without a results.csv
    included; :func:`read_results` answers None for them)."""
    return [grid_dir / label, *sorted(grid_dir.glob(f"{label}-*"))] if grid_dir.is_dir() else []


def load_all(preset: str, results_dir: str | Path | None = None) -> dict[str, dict[str, pd.DataFrame]]:
    """``{grid: {label: rows}}`` for every grid with rows on ``preset``; the preset's own label (the default
    budget) first, then ``<preset>-<budget>`` labels in name order. Training-seed replicates (``<label>-seed<k>``
    folders, written by ``run_grid --set seed=k``) are pooled into their label's rows
    (:func:`ablations.collect.pool_training_seeds`: one row per entry, ``train_seeds`` = how many trainings it
    holds), so each comparison reads the spread over training seeds where there is one."""
    root = Path(results_dir) if results_dir else REPO / "results"
    out: dict[str, dict[str, pd.DataFrame]] = {}
    for grid in GRIDS_USED:
        frames: dict[str, list[pd.DataFrame]] = {}
        for folder in result_folders(root / grid, preset):
            df = read_results(folder / "results.csv")
            if df is not None:
                df, _ = split_stale(df, folder / "results.csv")
            if df is not None and len(df):
                frames.setdefault(split_seed_label(folder.name)[0], []).append(df)
        frames = {label: pooled(dfs) for label, dfs in frames.items()}
        # the common-random-numbers tables first: a grid's claims read them where they exist (they never pool with
        # v1's trainings, and their arms pair)
        frames = dict(sorted(frames.items(), key=lambda kv: not is_crn_label(kv[0])))
        if frames:
            out[grid] = frames
    return out


def is_crn_label(label: str) -> bool:
    """Is ``label`` a table of trainings under common random numbers (``<preset>[-<budget>]-crn``)?"""
    return label.endswith("-crn")


def stale_rows(preset: str, results_dir: str | Path | None = None) -> pd.DataFrame:
    """One row per results.csv with FIDs outside the pinned feature space (which :func:`load_all` leaves out): the
    file, its cells, how many rows, the weights they were computed with and the command that regenerates them."""
    root = Path(results_dir) if results_dir else REPO / "results"
    out = []
    for grid in GRIDS_USED:
        for folder in result_folders(root / grid, preset):
            df = read_results(folder / "results.csv")
            if df is None:
                continue
            stale = df[stale_mask(df)]
            if stale.empty:
                continue
            label, seed = split_seed_label(folder.name)
            budget = label[len(preset) + 1:] if label != preset else None
            cells = list(dict.fromkeys(stale["variant"].astype(str)))
            shas = stale["feature_extractor_weights_sha256"] if "feature_extractor_weights_sha256" in stale \
                else pd.Series([None] * len(stale))
            out.append({"results": f"`{_rel(folder / 'results.csv')}`", "cells": ", ".join(cells),
                        "stale FID rows": len(stale),
                        "weights": ", ".join(dict.fromkeys("not recorded" if missing(h) else str(h)[:8]
                                                           for h in shas)),
                        "regenerate with": f"`python ablations/run_grid.py --grid {grid} --preset {preset}"
                        + (f" --budget {budget}" if budget else "") + f" --seeds {seed or 0} --only "
                        + ",".join(cells) + "`"})
    return pd.DataFrame(out)


def run_commands(grid: str, preset: str) -> list[str]:
    """The commands that produce a grid's tables on ``preset`` (one per named budget)."""
    try:
        from ablations.grids import get_grid

        budgets = get_grid(grid).budget_names(preset)
    except (ImportError, ValueError):  # a grid the installed grids.py does not define yet (GridError)
        budgets = ["default"]
    return [f"python ablations/run_grid.py --grid {grid} --preset {preset}"
            + ("" if b == "default" else f" --budget {b}") for b in budgets]


def expected_cells(grid: str, preset: str, label: str) -> list[str] | None:
    """The cell names the grid's budget behind ``label`` runs (None if the grid definitions cannot say)."""
    try:
        from ablations.grids import expand

        budget = None if label == preset else label[len(preset) + 1:]
        return [c.name for c in expand(grid, preset, budget=budget)]
    except (ImportError, ValueError):  # GridError, ConfigError
        return None


def _best(rows: pd.DataFrame) -> pd.Series | None:
    """One row of several for the same entry: the most trainings, then the most sampling seeds, then the most
    samples."""
    if rows.empty:
        return None
    k = rows["train_seeds"].fillna(1) if "train_seeds" in rows else pd.Series(1, index=rows.index)
    return rows.assign(_k=k, _s=rows["seeds"].fillna(1), _n=rows["N"].fillna(0)).sort_values(
        ["_k", "_s", "_n"], ascending=False, kind="stable").iloc[0]


def select(df: pd.DataFrame, **where: Any) -> pd.DataFrame:
    """Rows matching every ``column=value`` (a float column compares as float)."""
    keep = pd.Series(True, index=df.index)
    for k, v in where.items():
        col = df[k]
        keep &= (col.astype(float) == float(v)) if isinstance(v, (int, float)) and not isinstance(v, bool) \
            else (col == v)
    return df[keep]


def fid_rows(df: pd.DataFrame, solver: str = "ddpm") -> pd.DataFrame:
    return df[(df["metric"] == "fid") & (df["solver"] == solver) & df["value"].notna()]


