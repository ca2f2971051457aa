"""Shared table formatting for the reports: labels of metrics and columns, ``value ± sd`` text, Markdown and LaTeX
tables, one line-plot helper, and the paper's numbers (``results/paper_numbers.csv``). No rows are read or judged
here: :mod:`ablations.grid_report` (one grid) and :mod:`ablations.paper_report` (the paper's claims) use it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

from dmz.runio import REPO
from evaluation.extractor_names import is_stale

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
    t = "" if missing(T) else f" T={int(T)}"
    return metric_label(metric, extractor) + t


def missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def decimals(metric: str) -> int:
    return DECIMALS.get(metric, 3)


def mean_sd(group: pd.DataFrame) -> tuple[float, float | None]:
    """One row: its value and sd (over seeds); several rows: mean and sd (ddof=1) of their values."""
    vals = group["value"].astype(float).tolist()
    if len(vals) == 1:
        sd = group["sd"].iloc[0]
        return vals[0], None if missing(sd) else float(sd)
    s = pd.Series(vals)
    return float(s.mean()), float(s.std(ddof=1))


def fmt(value: float, sd: float | None, digits: int, pm: str = " ± ") -> str:
    return f"{value:.{digits}f}" + ("" if sd is None else f"{pm}{sd:.{digits}f}")


def load_paper_numbers(path: str | Path = PAPER_NUMBERS) -> pd.DataFrame:
    df = pd.read_csv(path)
    need = ["dataset", "grid", "variant", "latent_dim", "sampler", "metric", "T", "value", "source", "note"]
    absent = [c for c in need if c not in df.columns]
    if absent:
        raise ValueError(f"{path}: missing columns {absent}; expected {', '.join(need)}")
    return df


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



def lineplot(data: pd.DataFrame, x: str, hue: str, style: str | None, ylabel: str, title: str, path: Path,
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


#: the prior penalties' config fields: rows carry them only where a cell sets them (missing = weight 0)
PENALTY_FIELDS = ("prior_matching", "prior_mmd")


def penalty_weights(df: pd.DataFrame, add: bool = True) -> pd.DataFrame:
    """``df`` with its :data:`PENALTY_FIELDS` columns float, a missing weight read as 0 (the one place the readers
    of results.csv normalise them); ``add``: also add the absent ones (all 0), else leave them absent (a grid
    table's index shows only the penalties its rows name)."""
    return df.assign(**{k: df[k].astype(float).fillna(0.0) if k in df else 0.0 for k in PENALTY_FIELDS
                        if add or k in df})


def penalty(df: pd.DataFrame) -> pd.Series:
    """Each row's prior penalty as a label: ``none`` (as released), ``pm0.1`` (prior matching), ``mmd1`` (prior
    MMD), for plots that set cells with and without a penalty side by side."""
    w = penalty_weights(df[[k for k in PENALTY_FIELDS if k in df]])
    pm, mmd = w["prior_matching"], w["prior_mmd"]
    return pd.Series(["+".join([f"pm{a:g}"] * (a > 0) + [f"mmd{b:g}"] * (b > 0)) or "none" for a, b in zip(pm, mmd)],
                     index=df.index)


def stale_mask(df: pd.DataFrame) -> pd.Series:
    """FID rows outside the pinned feature space of their extractor (:func:`evaluation.extractor_names.is_stale`)."""
    sha = df["feature_extractor_weights_sha256"] if "feature_extractor_weights_sha256" in df else pd.Series(
        [None] * len(df), index=df.index)
    return (df["metric"] == "fid") & pd.Series([is_stale(e, None if missing(h) else h)
                                                for e, h in zip(df["feature_extractor"], sha)], index=df.index)
