"""I(z; x_t) against the noise level t (``mi_bits`` rows of ``evaluation.run --metrics mi``): a table and a plot.

Used by a grid's report (one training per cell) and by the paper report (pooled over trainings: mean ± sd over n
trainings, from :func:`ablations.collect.pool_training_seeds`). The rows are kept out of the grids' main tables,
where their 20 noise levels would not fit one column.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ablations.tables import missing, penalty

METRIC = "mi_bits"


def split_mi(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the rows without ``mi_bits``, the ``mi_bits`` rows)."""
    if df.empty or "metric" not in df:
        return df, df.iloc[:0]
    mi = df["metric"] == METRIC
    return df[~mi], df[mi]


def _label(r: pd.Series, pen: str) -> str:
    return f"{r['variant']} (|z|={int(r['latent_dim'])}" + ("" if pen == "none" else f", {pen}") + ")"


def _ordered(mi: pd.DataFrame) -> pd.DataFrame:
    mi = mi.copy()
    mi["noise_t"] = mi["noise_t"].astype(float)
    pen = penalty(mi)
    mi["cell"] = [_label(r, p) for (_, r), p in zip(mi.iterrows(), pen)]
    return mi.assign(_pen=pen).sort_values(["_pen", "latent_dim", "noise_t"], kind="stable")


def _n(r: pd.Series) -> int:
    n = r.get("train_seeds")
    return 1 if missing(n) else int(n)


def mi_table(mi: pd.DataFrame) -> pd.DataFrame:
    """Rows: noise level t; columns: one per cell, ``mean ± sd (n=k)`` over k trainings (the value alone for one),
    then the codes' plug-in entropy H(z) (the ceiling) as the last row."""
    mi = _ordered(mi)
    cols: dict[str, dict[str, str]] = {}
    for cell, grp in mi.groupby("cell", sort=False):
        col = {}
        for _, r in grp.iterrows():
            sd = r.get("sd")
            n = _n(r)
            col[f"{r['noise_t']:g}"] = f"{float(r['value']):.2f}" + (
                f" ± {float(sd):.2f}" if n > 1 and not missing(sd) else "") + f" (n={n})"
        if "h_z_bits" in grp:
            col["H(z), the ceiling"] = f"{grp['h_z_bits'].astype(float).mean():.2f}"
        cols[cell] = col
    out = pd.DataFrame(cols)
    out.index.name = "t"
    return out.reset_index().fillna("–")


def mi_plot(mi: pd.DataFrame, path: Path, title: str) -> Path:
    """I(z; x_t) in bits against t, one line per cell, ± the sd over trainings where there are several."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mi = _ordered(mi)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for cell, grp in mi.groupby("cell", sort=False):
        x, y = grp["noise_t"].to_numpy(float), grp["value"].to_numpy(float)
        line, = ax.plot(x, y, marker="o", ms=3, label=cell + (f", n={_n(grp.iloc[0])}" if len(grp) else ""))
        sd = grp["sd"].astype(float).to_numpy() if "sd" in grp else None
        if sd is not None and (grp.apply(_n, axis=1) > 1).any():
            ax.fill_between(x, y - sd, y + sd, color=line.get_color(), alpha=0.2, lw=0)
    ax.axhline(0, color="grey", lw=0.5)
    ax.set_xlabel("noise level t (x_t from q(x_t | x_0); 0 = the image, 1 = pure noise)")
    ax.set_ylabel("I(z; x_t), bits (held-out lower bound)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def estimator_note(mi: pd.DataFrame) -> str:
    specs = ", ".join(f"`{s}`" for s in dict.fromkeys(mi["mi_estimator"].dropna().astype(str))) \
        if "mi_estimator" in mi else "?"
    return (f"I(z; x_t) in bits, a lower bound from {specs} (`evaluation.mi`: critic trained on 60% of the training "
            "split's (code, x_t) pairs, epoch chosen on 20%, bound read on the last 20%); ± is the sd over trainings "
            "(n trainings); the last row is the plug-in entropy of the codes, the ceiling for a binary z.")
