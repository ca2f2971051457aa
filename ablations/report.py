"""Regenerate a grid's table (Markdown + LaTeX) and plots from its result rows, with the paper's numbers beside ours.

    python ablations/report.py --grid latent_size                 # digits; results/latent_size/digits/table.md
    python ablations/report.py --grid main --preset cifar10
    python ablations/report.py --paper --preset digits            # every grid: the paper's claims with verdicts

Writes ``results/<grid>/<preset>/``: ``results.csv`` (see :mod:`ablations.collect`), ``table.md``, ``table.tex`` and
the plots that apply (``fid_vs_T.png``, ``fid_vs_z.png``, ``probe_vs_z.png``). Cells read ``mean ± sd`` over the
sampling seeds (sd left out with one seed). FID columns carry the feature extractor's name: a digits-classifier FID is
labelled ``FID [digits-classifier-v1]`` and is never comparable to the paper's Inception FIDs. The paper's numbers
come from ``results/paper_numbers.csv`` (with their source) and are joined on dataset, grid, variant, |z|, sampler,
metric and T.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any, Callable

import pandas as pd

if __package__ in (None, ""):  # run by path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ablations.collect import collect, results_folder, save
from ablations.grids import Cell, get_grid
from evaluation.extractor_names import INCEPTION_NAME

REPO = Path(__file__).resolve().parent.parent
PAPER_NUMBERS = REPO / "results" / "paper_numbers.csv"
PAPER_EXTRACTOR = "Inception"  # the paper's FIDs: pytorch-fid's Inception (PAPER.md 3.3)
PROBE_LABELS = {"acc": "accuracy", "auroc": "AUROC", "cv": "5-fold CV", "heldout": "held-out"}
#: code diagnostics (evaluation ``codes``): labels and decimals
CODE_LABELS = {"bits_per_code": "bits per held-out code", "heldout_dup_frac": "held-out codes seen in train"}
DECIMALS = {"fid": 2, "bits_per_code": 1, "heldout_dup_frac": 2}


# ----------------------------------------------------------------------------------------------------------------
# labels and numbers
# ----------------------------------------------------------------------------------------------------------------
def metric_label(metric: str, extractor: Any = None) -> str:
    """``fid`` + extractor -> ``FID [digits-classifier-v1]``; ``probe_acc_cv`` -> ``probe accuracy (5-fold CV)``."""
    if metric == "fid":
        if not isinstance(extractor, str) or not extractor:
            raise ValueError("a FID row without feature_extractor cannot be labelled")
        return f"FID [{extractor}]"
    if metric in CODE_LABELS:
        return CODE_LABELS[metric]
    parts = metric.split("_")
    if len(parts) == 3 and parts[0] == "probe":
        return f"probe {PROBE_LABELS.get(parts[1], parts[1])} ({PROBE_LABELS.get(parts[2], parts[2])})"
    return metric


def nll_label(metric: str, code_model: Any, split: Any) -> str:
    """``nll_bpd`` -> ``NLL bits/dim (test)``; ``nll_bpd_z`` + ``prior`` -> ``NLL + z bits [prior] bits/dim (test)``."""
    what = "NLL" if metric == "nll_bpd" else f"NLL + z bits [{code_model}]"
    return f"{what} bits/dim ({split})"


def column_label(metric: str, extractor: Any, T: Any) -> str:
    t = "" if _missing(T) else f" T={int(T)}"
    return metric_label(metric, extractor) + t


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _digits(metric: str) -> int:
    return DECIMALS.get(metric, 3)


def mean_sd(group: pd.DataFrame) -> tuple[float, float | None]:
    """One row: its value and sd (over seeds); several rows: mean and sd (ddof=1) of their values."""
    vals = group["value"].astype(float).tolist()
    if len(vals) == 1:
        sd = group["sd"].iloc[0]
        return vals[0], None if _missing(sd) else float(sd)
    s = pd.Series(vals)
    return float(s.mean()), float(s.std(ddof=1))


def fmt(value: float, sd: float | None, digits: int, pm: str = " ± ") -> str:
    return f"{value:.{digits}f}" + ("" if sd is None else f"{pm}{sd:.{digits}f}")


def load_paper_numbers(path: str | Path = PAPER_NUMBERS) -> pd.DataFrame:
    df = pd.read_csv(path)
    need = ["dataset", "grid", "variant", "latent_dim", "sampler", "metric", "T", "value", "source", "note"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}; expected {', '.join(need)}")
    return df


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
    df = df.copy()
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
            cells.setdefault(tuple(row), {})[col] = fmt(v, sd, _digits(grp["metric"].iloc[0]))
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


TEXT_COLUMNS = {"variant", "sampler", "solver", "prior"}


def to_markdown(table: pd.DataFrame, text_columns: set[str] | frozenset[str] = frozenset()) -> str:
    """Text columns left-aligned, numbers right-aligned, cells kept as written ("30.00", not 30); a ``|`` inside a
    cell or header (``|z|``) is escaped so it does not split the Markdown table."""
    if table.empty:
        return "(no rows)"
    esc = lambda v: v.replace("|", "\\|") if isinstance(v, str) else v  # noqa: E731
    table = table.rename(columns=esc).map(esc)
    text = {esc(c) for c in TEXT_COLUMNS | set(text_columns)}
    align = ["left" if c in text else "right" for c in table.columns]
    return table.to_markdown(index=False, disable_numparse=True, colalign=align)


def _tex(s: Any) -> str:
    s = str(s)
    for a, b in [("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("$", r"\$"), ("#", r"\#"),
                 ("_", r"\_"), ("{", r"\{"), ("}", r"\}"), ("|", r"$|$"), ("~", r"\textasciitilde{}")]:
        s = s.replace(a, b)
    return s.replace(" ± ", r" $\pm$ ").replace("–", "--")


def to_latex(table: pd.DataFrame, caption: str = "", label: str = "") -> str:
    """A booktabs table (no pandas Styler / jinja2 needed)."""
    if table.empty:
        return "% no rows\n"
    cols = list(table.columns)
    lines = [r"\begin{table}[t]", r"\centering", r"\small", r"\begin{tabular}{" + "l" * len(cols) + "}", r"\toprule",
             " & ".join(_tex(c) for c in cols) + r" \\", r"\midrule"]
    lines += [" & ".join(_tex(v) for v in row) + r" \\" for row in table.itertuples(index=False)]
    lines += [r"\bottomrule", r"\end{tabular}"]
    if caption:
        lines.append(r"\caption{" + _tex(caption) + "}")
    if label:
        lines.append(r"\label{" + label + "}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------------------
# plots
# ----------------------------------------------------------------------------------------------------------------
def _lineplot(data: pd.DataFrame, x: str, hue: str, style: str | None, ylabel: str, title: str, path: Path,
              logx: bool = False) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    data = data.copy()
    data[x] = data[x].astype(float)
    fig, ax = plt.subplots(figsize=(6, 4))
    marks = {"markers": True, "dashes": False} if style else {"marker": "o"}
    sns.lineplot(data=data, x=x, y="value", hue=hue, style=style, errorbar=None, ax=ax, **marks)
    with_sd = data[data["sd"].notna()] if "sd" in data else data.iloc[:0]
    if len(with_sd):
        ax.errorbar(with_sd[x], with_sd["value"].astype(float), yerr=with_sd["sd"].astype(float), fmt="none",
                    ecolor="grey", alpha=0.6, capsize=2)
    if logx:
        ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(data[x].unique()))
    ax.get_xaxis().set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.set_xlabel({"latent_dim": "|z|", "T": "denoising steps T"}.get(x, x))
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def make_plots(df: pd.DataFrame, grid: str, preset: str, folder: Path) -> list[Path]:
    """FID vs T per variant; FID vs |z| per sampler (at the largest T); probe accuracy vs |z|. Only those the
    rows can show (at least two x values)."""
    out: list[Path] = []
    fid = df[df["metric"] == "fid"]
    tag = f"{grid} on {preset}"
    for ext, part in fid.groupby("feature_extractor"):
        if part["T"].nunique() > 1:
            out.append(_lineplot(part, "T", "variant", "sampler" if part["sampler"].nunique() > 1 else None,
                                 f"FID [{ext}]", f"{tag}: FID vs denoising steps T", folder / "fid_vs_T.png"))
        if part["latent_dim"].nunique() > 1:
            at = part[part["T"] == part["T"].max()].copy()
            at["prior matching"] = at["prior_matching"].astype(float).map(lambda w: f"{w:g}")
            style = "prior matching" if at["prior matching"].nunique() > 1 else None
            out.append(_lineplot(at, "latent_dim", "sampler", style, f"FID [{ext}] at T={int(at['T'].max())}",
                                 f"{tag}: FID vs |z| per z-sampler", folder / "fid_vs_z.png", logx=True))
    probe = df[df["metric"].isin(["probe_acc_cv", "probe_auroc_cv"])]
    if not probe.empty and probe["latent_dim"].nunique() > 1:
        metric = "probe_acc_cv" if (probe["metric"] == "probe_acc_cv").any() else "probe_auroc_cv"
        part = probe[probe["metric"] == metric].copy()
        part["prior matching"] = part["prior_matching"].astype(float).map(lambda w: f"{w:g}")
        style = "prior matching" if part["prior matching"].nunique() > 1 else None
        out.append(_lineplot(part, "latent_dim", "prior", style, metric_label(metric), f"{tag}: linear probe vs |z|",
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
    """Collect, save results.csv, write table.md / table.tex and the plots. Returns the paths, the table and the
    Markdown text (``markdown_text``)."""
    g = get_grid(grid)
    df = collect(cells, runs_root)
    paths: dict[str, Any] = dict(save(df, grid, preset, results_dir))
    folder = results_folder(grid, preset, results_dir)
    table, notes = build_table(df, grid, load_paper_numbers(paper_numbers))
    done = df["variant"].nunique() if len(df) else 0
    head = [f"# {grid} on {preset}: {g.table}", "", g.description, "",
            f"{done} of {len(cells)} cells have results. {_sizes(df, cells)}.", ""]
    md = "\n".join(head) + to_markdown(table) + "\n\n" + "\n".join(f"* {n}" for n in notes) + "\n"
    caption = f"{g.table} ({preset}). {'; '.join(notes)}"
    (folder / "table.md").write_text(md)
    (folder / "table.tex").write_text(to_latex(table, caption=caption, label=f"tab:{grid}-{preset}"))
    paths.update(markdown=folder / "table.md", latex=folder / "table.tex", table=table, markdown_text=md, rows=df)
    paths["plots"] = make_plots(df, grid, preset, folder) if plots and len(df) else []
    if say:
        say(f"wrote {paths['csv']}, {paths['markdown']}, {paths['latex']}"
            + "".join(f", {p}" for p in paths["plots"]))
    return paths


def main(argv: list[str] | None = None) -> int:
    from ablations.grids import cell_parser, parse_cells, results_label

    p = cell_parser("python ablations/report.py", __doc__.split("\n\n")[0],
                    results_help="where tables go (default results/)")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--paper", action="store_true", help="instead of one grid's table: every grid's results.csv on "
                   "--preset, each of the paper's claims with a verdict computed from them "
                   "(results/paper/<preset>/REPORT.md, verdicts.csv; see ablations/paper_report.py)")
    next(a for a in p._actions if a.dest == "grid").required = False  # --paper reads every grid
    args = p.parse_args(argv)
    if args.paper:
        from ablations.paper_report import run

        cell_opts = [a.option_strings[0] for a in p._actions if a.dest not in ("help", "preset", "results_dir",
                     "no_plots", "paper") and getattr(args, a.dest) not in (None, [])]
        if cell_opts:
            p.error(f"--paper reads every grid's results.csv on --preset; it takes no {', '.join(cell_opts)}")
        return run(args.preset, args.results_dir, plots=not args.no_plots)
    if args.grid is None:
        p.error("the following arguments are required: --grid (or --paper)")
    parsed = parse_cells(p, argv)
    if parsed is None:
        return 2
    args, preset, cells = parsed
    out = report(args.grid, results_label(preset, args.budget, cells), cells=cells, runs_root=args.out,
                 results_dir=args.results_dir, plots=not args.no_plots, say=print)
    print(out["markdown_text"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
