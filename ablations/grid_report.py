"""One grid's table (Markdown + LaTeX) and plots from its result rows, with the paper's numbers beside ours.

Writes ``results/<grid>/<label>/``: ``results.csv`` (see :mod:`ablations.collect`), ``table.md``, ``table.tex`` and
the plots that apply (``fid_vs_T.png``, ``fid_vs_z.png``, ``probe_vs_z.png``). This table is one training per cell:
its cells read ``mean ± sd`` over that training's sampling seeds (sd left out with one seed), which is not the spread
between trainings; verdicts are computed over trainings by :mod:`ablations.claims` (the paper report and
:mod:`ablations.reproduce`). FID columns carry the feature extractor's name: a digits-classifier FID is labelled
``FID [digits-classifier-v1]`` and is never comparable to the paper's Inception FIDs. The paper's numbers come from
``results/paper_numbers.csv`` (with their source) and are joined on dataset, grid, variant, |z|, sampler, metric and T.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pandas as pd

from ablations.collect import collect, results_folder, save, with_recorded
from ablations.grids import Cell, get_grid
from ablations.mi_curve import estimator_note, mi_plot, mi_table, split_mi
from ablations.tables import (PAPER_EXTRACTOR, PAPER_NUMBERS, column_label, decimals, fmt, lineplot,
                              load_paper_numbers, mean_sd, metric_label, nll_label, penalty, penalty_weights,
                              stale_mask, to_latex, to_markdown)
from evaluation.extractor_names import INCEPTION_NAME

# ----------------------------------------------------------------------------------------------------------------
# the table
# ----------------------------------------------------------------------------------------------------------------
def build_table(df: pd.DataFrame, grid: str, paper: pd.DataFrame | None = None) -> tuple[pd.DataFrame, list[str]]:
    """(table of strings, notes). Rows: the grid's index (variant, sampler, |z|, ...); columns: one per metric
    label and T; then ``paper ...`` columns where the paper has a number for this dataset and grid."""
    g = get_grid(grid)
    notes: list[str] = []
    if df.empty:
        return pd.DataFrame(), ["no result rows yet"]
    df, _ = split_mi(df)  # I(z; x_t) has a table of its own (mi.md): 20 noise levels
    if df.empty:
        return pd.DataFrame(), []
    stale = stale_mask(df)
    if stale.any():  # FIDs in another feature space than the pinned one are never set beside the others
        cells = ", ".join(dict.fromkeys(df.loc[stale, "variant"].astype(str)))
        notes.append(f"FIDs of {cells} left out: computed in another feature space than the pinned weights (stale); "
                     f"`python ablations/run_grid.py --grid {grid} --only {cells.replace(', ', ',')} ...` (with the "
                     "grid's budget and seeds) recomputes them")
        df = df[~stale]
        if df.empty:
            return pd.DataFrame(), notes
    df = penalty_weights(df, add=False)  # written only where set: a cell without the penalty has weight 0
    df["column"] = [column_label(m, e, t) for m, e, t in zip(df["metric"], df["feature_extractor"], df["T"])]
    nll = df["metric"].astype(str).str.startswith("nll_")
    if nll.any():  # per-cell columns: one per metric, split and code model (the sampler names the code model)
        df.loc[nll, "column"] = [nll_label(m, s, r) for m, s, r in
                                 zip(df.loc[nll, "metric"], df.loc[nll, "sampler"], df.loc[nll, "reference"])]
        df["sampler"] = df["sampler"].astype(object)
        df.loc[nll, "sampler"] = None
    gen = df[df["sampler"].notna()]
    rep = df[df["sampler"].isna()]
    index = [k for k in g.index if k in df.columns]
    rep_index = [k for k in index if k != "sampler"]
    order = list(dict.fromkeys(df["column"]))

    def pivot(part: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
        cells: dict[tuple, dict[str, str]] = {}
        for key, grp in part.groupby(keys + ["column"], sort=False, dropna=False):
            *row, col = key
            v, sd = mean_sd(grp)
            cells.setdefault(tuple(row), {})[col] = fmt(v, sd, decimals(grp["metric"].iloc[0]))
        out = pd.DataFrame.from_dict(cells, orient="index")
        out.index = pd.MultiIndex.from_tuples(list(cells), names=keys)
        return out.reset_index()

    if not gen.empty and "sampler" in index:
        table = pivot(gen, index)
        if not rep.empty:  # per-cell columns (probe, code duplicates) beside every sampler row, in the grid's order
            per_cell = pivot(rep, rep_index)
            table = table.merge(per_cell, on=rep_index, how="left", sort=False)
            keys = lambda t: pd.MultiIndex.from_frame(t[rep_index].astype(str))  # noqa: E731
            table = pd.concat([table, per_cell[~keys(per_cell).isin(keys(table))]], ignore_index=True)
    else:
        table = pivot(rep if not rep.empty else gen, rep_index)
    table = table[index + [c for c in order if c in table.columns]]

    if (df["metric"] == "fid").any():
        notes.append("± is the sd over the sampling seeds of this one training: it is not the spread between "
                     "trainings, which is several times larger; the spread over trainings, the verdicts and the "
                     "reproduction check are computed over every training's rows (run_grid's output, "
                     "`python ablations/report.py --paper`).")
    if paper is not None:
        table, paper_notes = _join_paper(table, df, grid, paper)
        notes += paper_notes
    for ext in sorted(df.loc[df["metric"] == "fid", "feature_extractor"].dropna().unique()):
        if ext != INCEPTION_NAME:
            notes.append(f"FID [{ext}] uses the {ext} feature extractor, not Inception: its values are not "
                         "comparable to Inception FIDs (the paper's).")
    return table.fillna("–"), notes


def _join_paper(table: pd.DataFrame, df: pd.DataFrame, grid: str, paper: pd.DataFrame):
    """Add one ``paper FID [Inception] T=...`` column per paper metric/T known for this dataset and grid."""
    datasets = df["dataset"].dropna().unique().tolist()
    known = paper[(paper["grid"] == grid) & paper["dataset"].isin(datasets)]
    if known.empty:
        return table, [f"paper numbers: none known for {grid} on {', '.join(map(str, datasets))}"]
    zdim = df.groupby("variant")["latent_dim"].first().to_dict()
    notes = []
    for (metric, T), grp in known.groupby(["metric", "T"], sort=False):
        label = "paper " + column_label(metric, PAPER_EXTRACTOR if metric == "fid" else None, T)
        col = []
        for _, row in table.iterrows():
            hit = grp[(grp["variant"] == row["variant"]) & (grp["latent_dim"] == zdim.get(row["variant"]))]
            if "sampler" in table.columns:
                hit = hit[hit["sampler"] == row["sampler"]]
            col.append(f"{hit['value'].iloc[0]:g}" if len(hit) else "–")
        table[label] = col
        for _, p in grp.iterrows():
            notes.append(f"paper {p['variant']} |z|={p['latent_dim']} {p['sampler']} {metric}@{T} = {p['value']:g}: "
                         f"{p['source']}" + (f" ({p['note']})" if isinstance(p["note"], str) and p["note"] else ""))
    return table, notes


def make_plots(df: pd.DataFrame, grid: str, preset: str, folder: Path) -> list[Path]:
    """FID vs T per variant; FID vs |z| per sampler (at the largest T); probe accuracy vs |z|. Only those the
    rows can show (at least two x values)."""
    out: list[Path] = []
    fid = df[df["metric"] == "fid"]
    tag = f"{grid} on {preset}"
    for ext, part in fid.groupby("feature_extractor"):
        if part["T"].nunique() > 1:
            out.append(lineplot(part, "T", "variant", "sampler" if part["sampler"].nunique() > 1 else None,
                                 f"FID [{ext}]", f"{tag}: FID vs denoising steps T", folder / "fid_vs_T.png"))
        if part["latent_dim"].nunique() > 1:
            at = part[part["T"] == part["T"].max()].copy()
            at["penalty"] = penalty(at)
            style = "penalty" if at["penalty"].nunique() > 1 else None
            out.append(lineplot(at, "latent_dim", "sampler", style, f"FID [{ext}] at T={int(at['T'].max())}",
                                 f"{tag}: FID vs |z| per z-sampler", folder / "fid_vs_z.png", logx=True))
    probe = df[df["metric"].isin(["probe_acc_cv", "probe_auroc_cv"])]
    if not probe.empty and probe["latent_dim"].nunique() > 1:
        metric = "probe_acc_cv" if (probe["metric"] == "probe_acc_cv").any() else "probe_auroc_cv"
        part = probe[probe["metric"] == metric].copy()
        part["penalty"] = penalty(part)
        style = "penalty" if part["penalty"].nunique() > 1 else None
        out.append(lineplot(part, "latent_dim", "prior", style, metric_label(metric), f"{tag}: linear probe vs |z|",
                             folder / "probe_vs_z.png", logx=True))
    return out


# ----------------------------------------------------------------------------------------------------------------
# the whole report
# ----------------------------------------------------------------------------------------------------------------
def _sizes(df: pd.DataFrame, cells: list[Cell]) -> str:
    fid = df[df["metric"] == "fid"]
    parts = []
    steps = sorted({c.config().train.steps for c in cells})
    parts.append(f"training steps: {', '.join(map(str, steps))}")
    if len(fid):
        parts.append(f"FID: N={', '.join(str(int(n)) for n in sorted(fid['N'].dropna().unique()))} samples, "
                     f"{', '.join(str(int(k)) for k in sorted(fid['seeds'].dropna().unique()))} sampling seed(s), "
                     f"T={', '.join(str(int(t)) for t in sorted(fid['T'].dropna().unique()))}")
    return "; ".join(parts)


def report(grid: str, preset: str, *, cells: list[Cell], runs_root: str | Path | None = None,
           results_dir: str | Path | None = None, paper_numbers: str | Path = PAPER_NUMBERS,
           plots: bool = True, say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Collect, save results.csv (with the rows of cells this run did not collect kept from the file:
    :func:`ablations.collect.with_recorded`), write table.md / table.tex and the plots. Returns the paths, the
    table, the Markdown text (``markdown_text``), the rows collected now (``rows``) and the kept cells (``kept``)."""
    g = get_grid(grid)
    folder = results_folder(grid, preset, results_dir)
    collected = collect(cells, runs_root)
    df, kept = with_recorded(collected, folder / "results.csv")
    paths: dict[str, Any] = dict(save(df, grid, preset, results_dir))
    table, notes = build_table(df, grid, load_paper_numbers(paper_numbers))
    if kept:
        notes.append(f"rows of {', '.join(kept)} kept from the results.csv written before (not collected by this "
                     "run: not selected, or no run folder here)")
    done = df["variant"].nunique() if len(df) else 0
    asked = len({c.name for c in cells} | set(kept))
    head = [f"# {grid} on {preset}: {g.table}", "", g.description, "",
            f"{done} of {asked} cells have results. {_sizes(df, cells)}.", ""]
    md = "\n".join(head) + to_markdown(table) + "\n\n" + "\n".join(f"* {n}" for n in notes) + "\n"
    caption = f"{g.table} ({preset}). {'; '.join(notes)}"
    (folder / "table.md").write_text(md)
    (folder / "table.tex").write_text(to_latex(table, caption=caption, label=f"tab:{grid}-{preset}"))
    paths.update(markdown=folder / "table.md", latex=folder / "table.tex", table=table, markdown_text=md, rows=collected, kept=kept)
    paths["plots"] = make_plots(df, grid, preset, folder) if plots and len(df) else []
    _, mi = split_mi(df)
    if len(mi):
        (folder / "mi.md").write_text(f"# {grid} on {preset}: I(z; x_t) against the noise level t\n\n"
                                      + to_markdown(mi_table(mi)) + f"\n\n* {estimator_note(mi)}\n")
        paths["mi"] = folder / "mi.md"
        if plots:
            paths["plots"].append(mi_plot(mi, folder / "mi_vs_t.png", f"{grid} on {preset}: I(z; x_t) vs t"))
    if say:
        say(f"wrote {paths['csv']}, {paths['markdown']}, {paths['latex']}"
            + "".join(f", {p}" for p in paths["plots"]))
    return paths
