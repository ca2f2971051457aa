"""Collect a grid's result rows into one pandas DataFrame: ``results/<grid>/<preset>/results.csv``.

    python -m ablations.collect --grid latent_size [--preset digits] [--set ...] [--out results/runs]

Each cell's ``results.jsonl`` (written by ``evaluation.run``) is read; only the rows the grid asked for are kept
(an ad-hoc evaluation with another N or T in the same folder does not leak into the table), the latest row wins where
one was recomputed, and every row is tagged with its grid, cell (``variant``) and folder. A Parquet copy is written
too when pyarrow is installed.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd

if __package__ in (None, ""):  # run by path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ablations.grids import RESULTS_FILE, Cell, cell_dir, requested_rows, row_matches
from dmz.runio import read_jsonl

REPO = Path(__file__).resolve().parent.parent
# identity of a row within a cell (evaluation.run.KEY_FIELDS): a later row with the same key replaces an earlier one
KEY = ("metric", "T", "sampler", "solver", "N", "seeds", "feature_extractor", "feature_extractor_weights_sha256",
       "reference", "repr", "checkpoint_step", "weights")
CONFIG_COLUMNS = ("dataset", "prior", "latent_dim", "conditioning", "prior_matching", "categories", "run_id")
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
    latest: dict[tuple, dict[str, Any]] = {}
    for r in rows:
        latest[tuple(json.dumps(r.get(k), sort_keys=True) for k in KEY)] = r
    order = requested_rows(cell)  # rows in the order the grid asks for them (metric, sampler, T)
    rows = sorted(latest.values(),
                  key=lambda r: next((i for i, w in enumerate(order) if row_matches(w, r)), len(order)))
    m = cell.config().model
    fill = {"dataset": cell.config().data.dataset, "prior": m.prior, "latent_dim": m.latent_dim,
            "conditioning": m.conditioning, "prior_matching": m.prior_matching, "categories": m.categories,
            "run_id": cell.run_id}
    return [{**fill, **r, "grid": cell.grid, "preset": cell.preset, "variant": cell.name, "cell_dir": str(run_dir)}
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


def results_folder(grid: str, preset: str, results_dir: str | Path | None = None) -> Path:
    return Path(results_dir or default_results_dir()) / grid / preset


def save(df: pd.DataFrame, grid: str, preset: str, results_dir: str | Path | None = None) -> dict[str, Path]:
    """Write ``results.csv`` (and ``results.parquet`` when pyarrow is installed); returns the paths."""
    folder = results_folder(grid, preset, results_dir)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"csv": folder / "results.csv"}
    df.to_csv(paths["csv"], index=False)
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        return paths
    paths["parquet"] = folder / "results.parquet"
    df.to_parquet(paths["parquet"], index=False)
    return paths


def main(argv: list[str] | None = None) -> int:
    from ablations.grids import cell_parser, parse_cells, results_label

    parsed = parse_cells(cell_parser("python -m ablations.collect", __doc__.split("\n\n")[0]), argv)
    if parsed is None:
        return 2
    args, preset, cells = parsed
    df = collect(cells, args.out)
    paths = save(df, args.grid, results_label(preset, args.budget), args.results_dir)
    print(f"{len(df)} rows from {df['variant'].nunique()} of {len(cells)} cells -> {paths['csv']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
