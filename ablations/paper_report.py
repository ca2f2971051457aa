"""The paper's claims, each judged from our numbers: one report over every grid of a preset.

    python ablations/report.py --paper [--preset digits]
    python -m ablations.paper_report --preset digits

Runs nothing. Reads each grid's ``results/<grid>/<label>/results.csv`` (``label`` = the preset, or
``<preset>-<budget>`` for a grid's other named budgets; written by ``report.py --grid G``) and writes
``results/paper/<preset>/``: ``REPORT.md`` (protocol, rule, one section per claim with the table that tests it and
the paper's number beside ours where known), ``verdicts.csv`` (one row per claim and per part) and PNG plots.

This module only renders: the claims, the rule that judges them and the reading of the rows are in
:mod:`ablations.claims`.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

if __package__ in (None, ""):  # run by path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ablations.claims import PROBE_PREFERENCE, Ctx, verdict_rows
from ablations.claims import build_claims as judged_claims
from ablations.inference import ALPHA, POWER
from ablations.mi_curve import estimator_note, mi_plot, mi_table, split_mi
from ablations.penalties import BEGIN as PENALTIES_BEGIN
from ablations.penalties import END as PENALTIES_END
from ablations.penalties import penalties_markdown, penalty_frame
from ablations.rows import (GRIDS_USED, MixedFeatureSpaces, _best, expected_cells, fid_rows, load_all, run_commands,
                            stale_rows)
from ablations.tables import (PAPER_EXTRACTOR, PAPER_NUMBERS, column_label, fmt, lineplot, load_paper_numbers,
                              metric_label, missing, penalty)
from ablations.tables import to_markdown as markdown_table
from ablations.verdicts import (FAILS, FID_MARGIN, HOLDS, NLL_LABELS, NLL_MARGIN, NO_DATA, NO_DIFF, PROBE_MARGIN,
                                UNRESOLVED, Claim, Num, Part, margin_text)
from dmz.runio import REPO
from evaluation.extractor_names import INCEPTION_NAME

__all__ = ["grid_table", "parts_table", "context_tables", "protocol_table", "make_plots", "verdict_plot",
           "build_claims", "RULE_MD", "to_markdown", "render", "judge_claims", "claims_brief", "paper_report", "main",
           "run"]


# ----------------------------------------------------------------------------------------------------------------
# tables
# ----------------------------------------------------------------------------------------------------------------
def _column(metric: str, extractor: Any, T: Any, reference: Any, sampler: Any = None) -> str:
    if metric in NLL_LABELS:
        z = f", z~{sampler}" if metric == "nll_bpd_z" and not missing(sampler) else ""
        return f"{NLL_LABELS[metric]} (`{metric}`{z}, {reference}) bits/dim"
    return column_label(metric, extractor, T)


def cell_text(r: pd.Series) -> str:
    """A pooled row as a table cell: ``mean ± sd over trainings (n=k)``, then the within-training spread in
    brackets (FID: sd over sampling seeds; probe CV: over folds; NLL: se over images); one training: ``value
    (n=1)`` and the bracket."""
    d = 2 if r["metric"] == "fid" else 3
    k = 1 if missing(r.get("train_seeds")) else int(r["train_seeds"])
    sd = r.get("train_sd")
    head = fmt(float(r["value"]), None if k < 2 or missing(sd) else float(sd), d) + f" (n={k})"
    within = r.get("se") if r["metric"] in NLL_LABELS else r.get("sampling_sd")
    return head + ("" if missing(within) else f" [{float(within):.{d}f}]")


def grid_table(df: pd.DataFrame, keys: list[str], paper: pd.DataFrame | None = None) -> pd.DataFrame:
    """Rows ``keys`` (e.g. variant, sampler), one column per metric / T (FID labelled with its extractor), cells
    :func:`cell_text` (mean ± sd over trainings, n, [within-training spread]); then ``paper FID [Inception] T=...`` columns where the paper has a number for the row."""
    df, _ = split_mi(df)  # I(z; x_t) is reported on its own (mi_sections): 20 noise levels
    if df.empty:
        return pd.DataFrame()
    d = df.copy()
    d["column"] = [_column(m, e, t, r, s) for m, e, t, r, s in zip(d["metric"], d["feature_extractor"], d["T"],
                                                                   d["reference"], d["sampler"])]
    d["_order"] = [(0 if m == "fid" else 2 if m in NLL_LABELS else 1, 0 if missing(t) else float(t))
                   for m, t in zip(d["metric"], d["T"])]
    columns = [c for c, _ in sorted(dict(zip(d["column"], d["_order"])).items(), key=lambda kv: kv[1])]
    for k in keys:
        d[k] = d[k].map(lambda v: "–" if missing(v) else (f"{v:g}" if isinstance(v, float) else v))
    cells: dict[tuple, dict[str, str]] = {}
    first: dict[tuple, pd.Series] = {}
    for key, grp in d.groupby(keys + ["column"], sort=False):
        *row, col = key
        r = _best(grp)
        cells.setdefault(tuple(row), {})[col] = cell_text(r)
        first.setdefault(tuple(row), r)
    out = pd.DataFrame([{**dict(zip(keys, k)), **v} for k, v in cells.items()])
    out = out[keys + [c for c in columns if c in out.columns]]
    if paper is not None and not paper.empty and "variant" in keys:
        known = paper[(paper["grid"] == d["grid"].iloc[0]) & paper["dataset"].isin(d["dataset"].dropna().unique())]
        for (metric, T), grp in known.groupby(["metric", "T"], sort=False):
            label = "paper " + column_label(metric, PAPER_EXTRACTOR if metric == "fid" else None, T)
            col = []
            for k in cells:
                r = first[k]
                hit = grp[(grp["variant"] == r["variant"])
                          & (grp["latent_dim"].astype(float) == float(r["latent_dim"]))]
                if "sampler" in keys:
                    hit = hit[hit["sampler"] == r["sampler"]]
                col.append(f"{hit['value'].iloc[0]:g}" if len(hit) else "–")
            out[label] = col
    return out.fillna("–")


def parts_table(parts: list[Part]) -> pd.DataFrame:
    """The comparisons, the counted ones first: a, b (mean ± sd over trainings, n, within-training spread), the
    test (paired or Welch, with n and the pairs' correlation), the effect with its 95% interval (a / b for FID, a - b
    otherwise), the p and Holm-adjusted p, the equivalence margin and its Holm-adjusted TOST p, the level the part
    was decided at, the verdict, and for an unresolved part the trainings a side that would resolve it."""
    rows = []
    for p in sorted(parts, key=lambda p: not p.counted):
        paper = [f"{x.paper:g}" if x and x.paper is not None else "–" for x in (p.a, p.b)]
        d = 2 if (p.a or p.b) and (p.a or p.b).metric == "fid" else 3
        t = p.test
        rows.append({"part": p.pid + ("" if p.counted else " (info)"), "comparison": p.statement,
                     "a": (p.a.what + ": " + p.a.text()) if p.a else "–",
                     "b": (p.b.what + ": " + p.b.text()) if p.b else "–",
                     "test": p.test_text(), "effect [95% CI]": p.effect(d),
                     "p": "–" if t.p is None else f"{t.p:.3g}",
                     "p (Holm)": "–" if t.p_holm is None else f"{t.p_holm:.3g}",
                     "margin": margin_text(p.margin, t.scale == "log") if p.margin else "–",
                     "TOST p (Holm)": "–" if t.p_equiv_holm is None else f"{t.p_equiv_holm:.3g}",
                     "level": f"{p.alpha:.3g}" if p.counted else f"{ALPHA:g}",
                     "paper a / b": " / ".join(paper) if any(v != "–" for v in paper) else "–",
                     "verdict": p.verdict, "why": p.why + (f"; {p.needed_text()}" if p.needed_text() else "")})
    return pd.DataFrame(rows)


def grid_index(grid: str) -> list[str]:
    """The columns that identify a row of the grid's table (``GridDef.index``)."""
    try:
        from ablations.grids import get_grid

        return list(get_grid(grid).index)
    except (ImportError, ValueError):  # GridError: a grid the installed grids.py does not define
        return ["variant", "sampler"]


def context_tables(ctx: Ctx, claim: Claim) -> list[tuple[str, pd.DataFrame]]:
    """The grid's rows the claim reads, as tables (one per results folder of the grid)."""
    out = []
    if claim.cid == "2":
        return out  # claim 1's table
    for label, df in ctx.frames(claim.grid):
        if claim.cid == "N":
            part, keys = df[df["metric"].isin(list(NLL_LABELS))], ["variant"]
        else:
            part = df[~df["metric"].isin(list(NLL_LABELS))]
            if claim.cid == "Q1":  # what the question reads: FID with the prior and with encoded codes, and the codes
                part = part[(part["metric"] != "fid") | part["sampler"].isin(["prior", "dataset"])]
            keys = [k for k in grid_index(claim.grid) if k in part.columns]
        if len(part):
            out.append((f"`{df['source'].iloc[0]}`" + _protocol_line(part), grid_table(part, keys, ctx.paper)))
    return out


# ----------------------------------------------------------------------------------------------------------------
# protocol
# ----------------------------------------------------------------------------------------------------------------
def _ints(values) -> str:
    vals = sorted({int(float(v)) for v in values if not missing(v)})
    return ", ".join(map(str, vals)) if vals else "–"


def _extractors(fid: pd.DataFrame) -> str:
    """The FID extractors of a table, each with the first 8 hex digits of its weights' sha256 when recorded."""
    out = []
    for name in sorted(fid["feature_extractor"].dropna().astype(str).unique()):
        col = fid.loc[fid["feature_extractor"].astype(str) == name].get("feature_extractor_weights_sha256")
        shas = [] if col is None else list(dict.fromkeys(str(v)[:8] for v in col.dropna()))
        out.append(f"{name} (weights {', '.join(shas)})" if shas else name)
    return "; ".join(out) or "–"


def _protocol_line(df: pd.DataFrame) -> str:
    fid = df[df["metric"] == "fid"]
    bits = []
    if len(fid):
        bits.append(f"FID: N={_ints(fid['N'])}, {_ints(fid['seeds'])} sampling seed(s), T={_ints(fid['T'])}, "
                    f"extractor {', '.join(sorted(fid['feature_extractor'].dropna().astype(str).unique()))}")
    probe = df[df["metric"].astype(str).str.startswith("probe_")]
    if len(probe):
        bits.append(f"probe: N={_ints(probe['N'])}")
    return (": " + "; ".join(bits)) if bits else ""


def protocol_table(ctx: Ctx) -> tuple[pd.DataFrame, list[str]]:
    """One row per grid and results folder: what was trained and evaluated; and the missing grids' commands."""
    rows, missing = [], []
    for grid in GRIDS_USED:
        frames = ctx.frames(grid)
        if not frames:
            missing.append(f"`{grid}`: no results on {ctx.preset}; run "
                           + " and ".join(f"`{c}`" for c in run_commands(grid, ctx.preset))
                           + f" (or `python ablations/report.py --grid {grid} --preset {ctx.preset}` to collect "
                           "rows of finished cells)")
            continue
        for label, df in frames:
            fid = df[df["metric"] == "fid"]
            probe = df[df["metric"].astype(str).str.startswith("probe_")]
            steps = df["train_steps"] if df["train_steps"].notna().any() else df["checkpoint_step"]
            want = expected_cells(grid, ctx.preset, label)
            have = list(dict.fromkeys(df["variant"]))
            lacking = [n for n in (want or []) if n not in have]
            rows.append({"grid": grid, "results": f"`{df['source'].iloc[0]}`",
                         "cells with rows": f"{len(have)}" + (f" of {len(want)}" if want else "")
                         + (f" (none yet: {', '.join(lacking)})" if lacking else ""),
                         "training steps": _ints(steps), "FID N": _ints(fid["N"]),
                         "trainings (n per entry)": _ints(df["train_seeds"]) if "train_seeds" in df else "1",
                         "sampling seeds": _ints(fid['seeds']), "T": _ints(fid["T"]),
                         "solvers": ", ".join(sorted(fid["solver"].dropna().astype(str).unique())) or "–",
                         "FID extractor": _extractors(fid), "probe N": _ints(probe["N"]),
                         "metrics": ", ".join(dict.fromkeys(df["metric"].astype(str)))})
    return pd.DataFrame(rows), missing


# ----------------------------------------------------------------------------------------------------------------
# plots
# ----------------------------------------------------------------------------------------------------------------
#: how the summary and the claims table mark what is not one of the paper's claims
KIND_SUFFIX = {"information": " (information)", "beyond": " (beyond the paper)"}


def make_plots(ctx: Ctx, claims: list[Claim], folder: Path) -> dict[str, list[Path]]:
    """Per claim: its grid's FID vs T (or vs |z|, probe vs |z|); plus ``verdicts.png``. Returns {claim id: paths}."""
    out: dict[str, list[Path]] = {}
    tag = ctx.preset
    for c in claims:
        paths = []
        for label, df in ctx.frames(c.grid):
            if c.cid in ("2", "N", "Q1"):  # 2: claim 1's plot; Q1: claim 4's (its lines per penalty)
                continue
            fid = fid_rows(df) if c.grid != "ddim" else df[(df["metric"] == "fid") & df["value"].notna()]
            if c.grid == "representation":
                metric = next((m for m in PROBE_PREFERENCE if (df["metric"] == m).any()), None)
                part = df[df["metric"] == metric]
                if metric and part["latent_dim"].nunique() > 1:
                    paths.append(lineplot(part, "latent_dim", "prior", None, metric_label(metric),
                                           f"representation on {tag}: linear probe vs |z|",
                                           folder / f"claim{c.cid}_{label}_probe_vs_z.png", logx=True))
                continue
            for ext, part in fid.groupby("feature_extractor"):
                if c.grid == "latent_size" and part["latent_dim"].nunique() > 1:
                    at = part[part["T"] == part["T"].max()].copy()
                    at["penalty"] = penalty(at)
                    style = "penalty" if at["penalty"].nunique() > 1 else None
                    paths.append(lineplot(at, "latent_dim", "sampler", style, f"FID [{ext}] at T={at['T'].max():g}",
                                           f"latent_size ({label}): FID vs |z| per z-sampler",
                                           folder / f"claim{c.cid}_{label}_fid_vs_z.png", logx=True))
                elif c.grid != "latent_size" and part["T"].nunique() > 1:
                    part = part.copy()
                    part["cell"] = [v if missing(s) or s == "prior" else f"{v} (z~{s})"
                                    for v, s in zip(part["variant"], part["sampler"])]
                    style = "solver" if part["solver"].nunique() > 1 else None
                    paths.append(lineplot(part, "T", "cell", style, f"FID [{ext}]",
                                           f"{c.grid} ({label}): FID vs denoising steps T (bars: sd over seeds)",
                                           folder / f"claim{c.cid}_{label}_fid_vs_T.png"))
        out[c.cid] = paths
    out["verdicts"] = [verdict_plot(claims, folder / "verdicts.png")]
    out["mi"] = [mi_plot(mi, folder / f"mi_{grid}_{label}.png",
                         f"{grid} ({label}): I(z; x_t) vs noise level t (band: ± sd over trainings)")
                 for grid, label, mi in mi_frames(ctx)]
    return out


def mi_frames(ctx: Ctx) -> list[tuple[str, str, pd.DataFrame]]:
    """(grid, label, its ``mi_bits`` rows pooled over trainings) for every table that has some."""
    out = []
    for grid in ctx.data:
        for label, df in ctx.frames(grid):
            _, mi = split_mi(df)
            if len(mi):
                out.append((grid, label, mi))
    return out


def penalties_md(ctx: Ctx) -> str:
    """Open question 1's penalties at a glance (:mod:`ablations.penalties`); "" when no latent_size table has a
    penalty."""
    got = penalty_frame(ctx.frames("latent_size"))
    return penalties_markdown(*got) if got else ""


def mi_sections(ctx: Ctx, plots: dict[str, list[Path]]) -> list[str]:
    """Beyond the paper's tables: I(z; x_t) against t (the release's ``mi_eval.py``) where a grid scored it."""
    frames = mi_frames(ctx)
    if not frames:
        return []
    md = ["## Beyond the paper's tables: where z's information lives, I(z; x_t)", "",
          "The release's `mi_eval.py` estimates the mutual information between the latent and the forward-noised "
          "image over the noise level t, its evidence for where in the denoising process z carries information. "
          "It decides no claim here.", ""]
    pics = {p.name: p for p in plots.get("mi", [])}
    for grid, label, mi in frames:
        md += [f"Rows from `results/{grid}/{label}`", "", to_markdown(mi_table(mi)), "", f"* {estimator_note(mi)}", ""]
        name = f"mi_{grid}_{label}.png"
        if name in pics:
            md += [f"![{Path(name).stem}]({name})", ""]
    return md


def _metric_group(p: Part) -> str:
    m = (p.a or p.b).metric
    return "FID" if m == "fid" else "NLL (bits/dim)" if m in NLL_LABELS else str(m)


def verdict_plot(claims: list[Claim], path: Path) -> Path:
    """A forest plot: each counted part's difference in the claimed direction (> 0: as claimed) with its 95%
    interval (Welch), coloured by verdict; one panel per metric (their units differ). Parts without an interval
    (fewer than 2 trainings a side) are listed as a dot at their difference with no bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    parts = [p for c in claims if c.kind != "information" for p in c.parts if p.counted and p.test.diff is not None]
    colours = {HOLDS: "tab:green", FAILS: "tab:red", NO_DIFF: "tab:blue", UNRESOLVED: "tab:grey"}
    groups: dict[str, list[Part]] = {}
    for p in parts:
        groups.setdefault(_metric_group(p), []).append(p)
    if not groups:
        groups = {"no comparisons": []}
    heights = [max(len(g), 1) for g in groups.values()]
    fig, axes = plt.subplots(len(groups), 1, figsize=(8, 0.32 * sum(heights) + 1.2 * len(groups)),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    for ax, (name, ps) in zip(axes[:, 0], groups.items()):
        for i, p in enumerate(ps):
            sign = -1 if p.better == "lower" else 1
            c = colours.get(p.verdict, "tab:grey")
            d = p.test.diff  # on the test's scale: log(a / b) for FID
            if p.ci is not None:
                lo, hi = sorted((sign * p.ci[0], sign * p.ci[1]))
                ax.plot([lo, hi], [i, i], color=c, lw=2)
                ax.plot(sign * d, i, "o", color=c)
            else:
                ax.plot(sign * d, i, "o", mfc="white", color=c)
        ax.set_yticks(range(len(ps)), [f"{p.pid}: {p.verdict}" + (f" (n={p.a.n}/{p.b.n})" if p.a and p.b else "")
                                       for p in ps], fontsize=7)
        ax.axvline(0, color="black", lw=0.8)
        ax.invert_yaxis()
        what = "log(a / b)" if name == "FID" else "difference"
        ax.set_xlabel(f"{name}: {what} in the claimed direction (> 0: as claimed), 95% CI over trainings",
                      fontsize=8)
    axes[0, 0].set_title("Counted parts: effect in the claimed direction, 95% interval over trainings (paired or "
                         "Welch)\n"
                         "open dot: fewer than 2 trainings a side, no interval; colour: the verdict", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------------------------------
# the report
# ----------------------------------------------------------------------------------------------------------------
def build_claims(ctx: Ctx) -> list[Claim]:
    """:func:`ablations.claims.build_claims`, each claim with the tables of the rows it reads."""
    claims = judged_claims(ctx)
    for c in claims:
        c.tables = context_tables(ctx, c)
    return claims


def _paper_lines(ctx: Ctx, grid: str) -> list[str]:
    if ctx.paper is None:
        return []
    out = []
    for _, p in ctx.paper[ctx.paper["grid"] == grid].iterrows():
        label = column_label(p["metric"], PAPER_EXTRACTOR if p["metric"] == "fid" else None, p["T"])
        same = p["dataset"] == (_dataset(ctx, grid) or ctx.preset)
        out.append(f"paper ({p['dataset']}): {p['variant']} |z|={p['latent_dim']} z~{p['sampler']}, {label} = "
                   f"{p['value']:g} [{p['source']}]" + ("" if same else " (another dataset: not comparable with ours)"))
    return out


def _dataset(ctx: Ctx, grid: str) -> str | None:
    got = ctx.frame(grid)
    if got is None:
        return None
    vals = got[1]["dataset"].dropna().unique()
    return str(vals[0]) if len(vals) else None


#: the rule as the report states it
RULE_MD = (
    ("* **The unit of evidence is a training.** A training's FID is the mean over its sampling seeds (its probe "
     "score the mean over CV folds, its NLL the mean over images). Cells are trained with several seeds "
     "(`run_grid --seeds 0 1 2`, rows per training in `results/<grid>/<preset>[-seed<k>]/`), and every number is "
     "the mean ± sd over its trainings with n; the within-training spread (sd over sampling seeds, over CV folds, "
     "or se over images) is shown in brackets and never decides. A table cell reads **`mean ± sd (n=k) [s]`**: mean "
     "and sd over k trainings (no ± when k = 1), and in brackets s, the root-mean-square over those trainings of "
     "the within-training spread."),
    ("* **Paired where the design pairs.** Trainings with `seeding=crn` (common random numbers: every random draw "
     "of a seed from its own generator, `dmz/seeding.py`; tables `results/<grid>/<preset>-crn[-seed<k>]/`, which "
     "a grid's claims read first where they exist) pair by seed: a part whose two sides share at least 2 such "
     "seeds is tested on the per-seed differences (**paired t**, `scipy.stats.ttest_rel`; the table gives the "
     "pairs and their correlation r). Every other part (v1 trainings, which never pair) uses **Welch's t-test** "
     "(`scipy.stats.ttest_ind`, `equal_var=False`). Both two-sided, with the 95% interval of the effect."),
    ("* **FID on the log scale.** FID is positive and skewed: its tests, intervals and margins are on log FID, so "
     "the effect is a ratio **a/b** with an interval that never reaches below zero. Probe scores and NLL stay on "
     "their own scale (a − b)."),
    (f"* **Holds, does not hold, no practical difference.** The counted parts of one claim are corrected together "
     f"by **Holm's step-down procedure** (family-wise α = {ALPHA:g}). Holm-adjusted p < α with the effect in the "
     "claimed direction: **holds**; in the other direction: **does not hold**. Each part also has a margin of "
     f"practical relevance, declared in `ablations/claims.py` before any data (FID: a/b in "
     f"[{FID_MARGIN[0]:g}, {FID_MARGIN[1]:g}]; probe scores: a − b in [{PROBE_MARGIN[0]:+g}, {PROBE_MARGIN[1]:+g}]; "
     f"NLL: a − b in [{NLL_MARGIN[0]:+g}, {NLL_MARGIN[1]:+g}] bits/dim; Q1's 1.5x threshold has none): when two "
     "one-sided tests (TOST, `statsmodels` `ttost_paired` / `ttost_ind(usevar='unequal')`, Holm-adjusted the same "
     "way) put the effect inside it, the part reads **no practical difference**, and a claim of an improvement "
     "counts it as **does not hold**. Otherwise **not resolved at this budget**; fewer than 2 trainings on a "
     "side: not resolved, whatever the gap."),
    ("* **Sequential looks** (`run_grid --until-decided`): a grid trained in waves until its parts are decided is "
     "judged at each look's nominal level of a Lan-DeMets O'Brien-Fleming-type alpha-spending design "
     "(`ablations/inference.py`; the design is `sequential.json` beside the tables; the table's `level` column), "
     "so looking after every wave does not raise the chance of a false decision above α."),
    (f"* For an unresolved part the table gives the trainings a side that would resolve an effect of the observed "
     f"size at the observed spread over trainings with {POWER:.0%} power (noncentral t, `scipy.stats.nct`, paired "
     "or unpaired as the part is tested, at α / m for a claim of m counted parts, the first Holm step). The test "
     "assumes the per-training values are roughly normal (log-normal for FID); with 3-5 trainings a side that "
     "cannot be checked, so read a p near α with care. `ablations.inference.simulate` gives any rule's decision "
     "rate for your own n, spread and effect."),
    ("* A claim of several parts holds only if every counted part holds, does not hold if any counted part does "
     "not (or shows no practical difference), and is otherwise not resolved; parts marked (info) are reported (raw "
     "p) but do not decide. **no data**: the grid has no rows on this preset (the command that produces them is "
     "listed under Protocol)."),
    ("* One feature space: digits FIDs use the pinned `digits-classifier-v1` weights (shipped with the package, "
     "sha256 checked at load). Rows computed with other weights are **stale**: never compared or pooled, and "
     "listed under Protocol with the command that regenerates them."),
)


#: synthetic experiments per design in the report's calibration lines (:func:`calibration_lines`)
CALIBRATION_DRAWS = 20_000


def calibration_lines(claims: list[Claim], draws: int = CALIBRATION_DRAWS) -> list[str]:
    """What the rule does at the trainings this report holds, by :func:`ablations.inference.simulate` (the function
    the calibration tests use): for each design among the counted parts (Welch or paired, n a side), the share of
    synthetic experiments without a difference that it decides (at most alpha plus Monte-Carlo error), and its
    decision rate at a true difference of 1.5 sds beside the power :func:`ablations.inference.power` states."""
    from ablations.inference import power, simulate

    designs = sorted({("paired" if p.test.test == "paired t" else "welch", min(p.a.n, p.b.n))
                      for c in claims if c.kind != "information" for p in c.parts
                      if p.counted and p.test.test and p.a and p.b})
    if not designs:
        return []
    cells = []
    for rule, n in designs:
        kw = {"n": n, "corr": 0.5 if rule == "paired" else 0.0, "draws": draws, "seed": 0}
        null = simulate(rule, diff=0.0, **kw)
        sd_diff = math.sqrt(2 * (1 - kw["corr"]))  # per-arm sd 1
        hit = simulate(rule, diff=1.5, **kw)
        stated = power(1.5, sd_diff if rule == "paired" else 1.0, n, paired=rule == "paired")
        cells.append(f"{'paired t' if rule == 'paired' else 'Welch'} at {n} a side: {null['decided']:.1%} without "
                     f"a difference; {hit['decided']:.0%} at a true difference of 1.5 sds (stated power "
                     f"{stated:.0%})")
    return [(f"* **Checked by simulation** (`ablations.inference.simulate`, {draws:,} synthetic experiments per "
             "design, the function the calibration tests use; paired with a per-seed correlation of 0.5): "
             + "; ".join(cells) + ".")]


PAPER_TEXT_COLUMNS = {"claim", "verdict", "parts", "grid", "results", "cells with rows", "solvers", "FID extractor",
                      "metrics", "part", "comparison", "a", "b", "why", "cells", "weights", "regenerate with"}


def to_markdown(table: pd.DataFrame) -> str:
    return markdown_table(table, PAPER_TEXT_COLUMNS)


def render(ctx: Ctx, claims: list[Claim], plots: dict[str, list[Path]], folder: Path, today: str,
           penalties: str | None = None) -> str:
    """REPORT.md's text; ``penalties``: the penalties table (:func:`penalties_md`, computed when not given)."""
    proto, missing = protocol_table(ctx)
    exts = sorted({str(e) for fr in ctx.data.values() for df in fr.values()
                   for e in df.loc[df["metric"] == "fid", "feature_extractor"].dropna()})
    not_inception = "".join(f"`{e}` FIDs are not Inception FIDs and never comparable with the paper's Inception "
                            "numbers, which are shown beside ours only for reference. "
                            for e in exts if e != INCEPTION_NAME)
    md = [f"# DMZ (arXiv 2506.00136): the paper's claims against our numbers, preset `{ctx.preset}`", "",
          (f"Generated {today} by `python ablations/report.py --paper --preset {ctx.preset}` from the grids' "
           "`results.csv` files (this report runs nothing; rerun it after a grid finishes). Machine-readable: "
           "`verdicts.csv` beside this file."), "",
          "## Verdict rule", "", *RULE_MD, *calibration_lines(claims),
          (f"* Every FID is labelled with its feature extractor. {not_inception}The paper's numbers come from "
           "`results/paper_numbers.csv` (with their source)."), "",
          "## Summary", ""]
    summary = pd.DataFrame([{"claim": f"{c.cid}. {c.title}" + KIND_SUFFIX.get(c.kind, ""),
                             "verdict": f"**{c.verdict}**" if c.kind != "information" else c.verdict,
                             "parts": "; ".join(f"{p.pid}: {p.verdict}" for p in c.parts
                                                if p.counted or c.kind == "information") or c.missing}
                            for c in claims])
    md += [to_markdown(summary), "", "## Protocol", ""]
    md += [to_markdown(proto) if len(proto) else "(no grid has results on this preset)", ""]
    stale = stale_rows(ctx.preset, ctx.results_dir)
    if len(stale):
        md += ["**Stale rows** (FIDs in another feature space than the pinned weights: left out of every table and "
               "comparison above; their probe and NLL rows are used):", "", to_markdown(stale), ""]
    if missing:
        md += ["Missing grids (their claims read **no data**):", ""] + [f"* {m}" for m in missing] + [""]
    md += [f"Every counted part's difference with its 95% interval: ![verdicts]({plots['verdicts'][0].name})"
           if plots.get("verdicts") else "", ""]
    pens = penalties_md(ctx) if penalties is None else penalties
    for c in claims:
        md += [f"## {c.cid}. {c.title}: {c.verdict}", "", f"**Claim.** {c.statement}", ""]
        if c.missing:
            md += [f"**No data:** {c.missing}.", ""]
        for caption, table in c.tables:
            md += [f"Rows from {caption}", "", to_markdown(table), ""]
        if c.parts and not c.missing:
            md += ["**Comparisons** (each states the claimed direction; Welch's t-test over trainings, Holm over the "
                   "counted parts, decides):", "",
                   to_markdown(parts_table(c.parts)), ""]
        notes = c.notes + (_paper_lines(ctx, c.grid) if c.cid != "N" else [])
        md += [f"* {n}" for n in notes] + ([""] if notes else [])
        md += [f"![{p.stem}]({p.name})" for p in plots.get(c.cid, [])] + [""]
        if c.cid == "Q1" and pens:
            md += ["**The penalties at a glance** (also `PENALTIES.md`, which the README carries):", "", pens, ""]
        md += [f"**Verdict: {c.verdict}.**" if c.kind != "information" else "", ""]
    md += mi_sections(ctx, plots)
    return "\n".join(md).replace("\n\n\n", "\n\n")


BRIEF_BEGIN = "<!-- claims table: generated by `python ablations/report.py --paper` (CLAIMS.md); do not edit -->"
BRIEF_END = "<!-- end of the generated claims table -->"


def _short(n: Num) -> str:
    digits = 2 if n.metric == "fid" else 3
    return f"{fmt(n.value, n.sd if n.n > 1 else None, digits)} (n={n.n})"


def part_brief(p: Part) -> str:
    """One part in a line: verdict, a vs b over trainings, the effect [95% CI] (a / b for FID), the test, the
    deciding p or what would decide."""
    head = f"{p.pid} ({p.verdict})" if p.verdict != NO_DATA else f"{p.pid}: no data"
    if p.a is None or p.b is None or p.diff is None:
        return head
    digits = 2 if p.a.metric == "fid" else 3
    text = f"{head}: {_short(p.a)} vs {_short(p.b)}, {p.effect(digits)}"
    if p.test.test:
        text += f"; {p.test_text()}"
    p_value = p.test.p_holm if p.test.p_holm is not None else p.test.p
    if p.verdict == NO_DIFF and p.test.p_equiv_holm is not None:
        text += f"; TOST Holm p {p.test.p_equiv_holm:.3g}"
    elif p_value is not None:
        text += f"; {'Holm p' if p.test.p_holm is not None else 'p'} {p_value:.3g}"
    if p.verdict == UNRESOLVED:
        if p.needed is not None:
            text += f"; ~{p.needed} a side would resolve it"
        elif min(p.a.n, p.b.n) < 2:
            text += "; fewer than 2 trainings a side"
        else:
            text += "; too small to resolve"
    return text


def claims_brief(claims: list[Claim]) -> str:
    """The claims in one Markdown table (claim, verdict, each counted part in a line): ``CLAIMS.md``, which the
    README carries between :data:`BRIEF_BEGIN` and :data:`BRIEF_END`."""
    lines = ["| claim | verdict | counted parts: a vs b (mean ± sd over n trainings), a/b (FID) or a − b [95% CI], "
             "test, Holm p or trainings needed |", "|---|---|---|"]
    for c in claims:
        parts = [p for p in c.parts if p.counted or c.kind == "information"]
        verdict = (c.verdict if c.kind == "information" else f"**{c.verdict}**") + KIND_SUFFIX.get(c.kind, "")
        cell = "<br>".join(part_brief(p) for p in parts) or c.missing
        lines.append(f"| {c.cid}. {c.title.replace('|', chr(92) + '|')} | {verdict} | {cell} |")
    return "\n".join(lines) + "\n"


def judge_claims(preset: str = "digits", *, results_dir: str | Path | None = None,
                 paper_numbers: str | Path | None = PAPER_NUMBERS) -> tuple[Ctx, list[Claim]]:
    """Read every grid's checked-in rows on ``preset`` and judge the claims (writes nothing)."""
    root = Path(results_dir) if results_dir else REPO / "results"
    paper = load_paper_numbers(paper_numbers) if paper_numbers and Path(paper_numbers).exists() else None
    data = load_all(preset, root)
    ctx = Ctx(preset, data, paper, results_dir=root, designs=load_designs(root, data))
    return ctx, build_claims(ctx)


def load_designs(root: Path, data: dict[str, dict[str, pd.DataFrame]]) -> dict[str, Any]:
    """The group-sequential design (``run_grid --until-decided``) of each grid whose claims read a table with
    one (the grid's first table: :meth:`Ctx.frame`)."""
    from ablations.sequential import load_design

    out = {}
    for grid, frames in data.items():
        label = next(iter(frames), None)
        design = load_design(root, grid, label) if label else None
        if design is not None:
            out[grid] = design
    return out


def paper_report(preset: str = "digits", *, results_dir: str | Path | None = None,
                 paper_numbers: str | Path | None = PAPER_NUMBERS, plots: bool = True, today: str | None = None,
                 say: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Read every grid's results on ``preset``, judge the claims, write ``results/paper/<preset>/``. Returns the
    paths (``report``, ``verdicts``, ``plots``), the claims and the Markdown text."""
    ctx, claims = judge_claims(preset, results_dir=results_dir, paper_numbers=paper_numbers)
    folder = ctx.results_dir / "paper" / preset
    folder.mkdir(parents=True, exist_ok=True)
    pics = make_plots(ctx, claims, folder) if plots else {}
    today = today or datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    pens = penalties_md(ctx)
    md = render(ctx, claims, pics, folder, today, pens)
    (folder / "REPORT.md").write_text(md)
    (folder / "CLAIMS.md").write_text(claims_brief(claims))
    if pens:
        (folder / "PENALTIES.md").write_text(pens)
    else:  # no penalty rows (any more): no table left over from an earlier report
        (folder / "PENALTIES.md").unlink(missing_ok=True)
    verdicts = verdict_rows(claims, preset)
    verdicts.to_csv(folder / "verdicts.csv", index=False)
    out = {"report": folder / "REPORT.md", "verdicts": folder / "verdicts.csv", "brief": folder / "CLAIMS.md",
           "penalties": folder / "PENALTIES.md" if pens else None,
           "plots": [p for ps in pics.values() for p in ps], "claims": claims, "markdown_text": md,
           "verdict_table": verdicts, "missing": [g for g in GRIDS_USED if g not in ctx.data]}
    if say:
        say(f"wrote {out['report']}, {out['brief']}, {out['verdicts']}" + "".join(f", {p}" for p in out["plots"]))
        for c in claims:
            say(f"  claim {c.cid} ({c.title}): {c.verdict}")
        if out["missing"]:
            say(f"  grids without results on {preset}: {', '.join(out['missing'])}")
    return out


def main(argv: list[str] | None = None, prog: str = "python -m ablations.paper_report") -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", help="digits | cifar10 | celeba64 (default: as report.py, cifar10 with a GPU)")
    p.add_argument("--results-dir", type=Path, default=None, help="where the grids' tables are (default results/)")
    p.add_argument("--paper-numbers", type=Path, default=PAPER_NUMBERS)
    p.add_argument("--no-plots", action="store_true")
    args = p.parse_args(argv)
    return run(args.preset, args.results_dir, args.paper_numbers, not args.no_plots)


def run(preset: str | None, results_dir: Path | None, paper_numbers: Path | None = PAPER_NUMBERS,
        plots: bool = True) -> int:
    if preset is None:
        from ablations.grids import default_preset

        preset, why = default_preset()
        print(f"preset {preset} ({why})")
    from dmz.config import PRESETS

    if preset not in PRESETS:
        print(f"error: unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}", file=sys.stderr)
        return 2
    if results_dir is not None and not Path(results_dir).is_dir():
        print(f"error: --results-dir {results_dir} does not exist; give the folder that holds the grids' tables "
              "(<grid>/<preset>/results.csv), e.g. results", file=sys.stderr)
        return 2
    try:
        out = paper_report(preset, results_dir=results_dir, paper_numbers=paper_numbers, plots=plots, say=print)
    except MixedFeatureSpaces as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if results_dir is None and preset == "digits":  # the checked-in rows: the README carries their claims table
        if sync_readme(REPO / "README.md", out["brief"].read_text()):
            print(f"updated the claims table in {REPO / 'README.md'}")
        if out["penalties"] and sync_readme(REPO / "README.md", out["penalties"].read_text(), PENALTIES_BEGIN,
                                            PENALTIES_END):
            print(f"updated the penalties table in {REPO / 'README.md'}")
    return 0


def sync_readme(readme: Path, block: str, begin: str = BRIEF_BEGIN, end: str = BRIEF_END) -> bool:
    """Put ``block`` (CLAIMS.md by default) between the README's markers ``begin`` and ``end``; True when the
    README changed."""
    if not readme.exists():
        return False
    text = readme.read_text()
    if text.count(begin) != 1 or text.count(end) != 1:
        return False
    head, rest = text.split(begin + "\n", 1)
    new = head + begin + "\n" + block + end + rest.split(end, 1)[1]
    if new != text:
        readme.write_text(new)
    return new != text


if __name__ == "__main__":
    raise SystemExit(main())
