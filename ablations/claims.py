"""The paper's claims as verdicts computed from the grids' result rows (no rendering: see ``paper_report.py``).

A claim is a statement of the paper (or of its reviewers) that one grid's rows can test, e.g. "at T=10, DMZ has a
lower FID than DDPM". It is a :class:`Claim` made of parts (:class:`Part`); each is one comparison of two numbers
(:class:`Num`, read from a ``results.csv`` row with its spread), ``a < b`` (``better="lower"``, e.g. FID) or
``a > b`` (``"higher"``, e.g. probe accuracy). Parts marked ``counted=False`` are information and do not decide.

The rule is :mod:`ablations.verdicts`' (:class:`Num`, :class:`Part`, :class:`Claim`, the margins) on the
statistics of :mod:`ablations.inference`; the rows come from :mod:`ablations.rows` (:func:`load_all`, :func:`select`,
:func:`fid_rows`, :func:`_best`). This module is the catalogue: one function per claim (:data:`CLAIMS`), the context
they read (:class:`Ctx`), and the verdicts as rows (:func:`verdict_rows`).

To add a claim: write ``claim_<name>(ctx: Ctx) -> Claim`` beside the others (take the grid's rows with
``df = ctx.rows_for(c, placeholders)``, which marks the claim as having no data and returns None when the grid has
no rows, or ``ctx.frames(grid)`` for every table; build numbers with ``ctx.num`` / :func:`_fid` /
:func:`as_num` and append a
``Part(pid, statement, a, b, better=...)`` per comparison), add its grid to :data:`ablations.rows.GRIDS_USED` if it
is new, and
append the function to :data:`CLAIMS` (report order); list it in ``ablations/README.md``'s claim table.
``paper_report.py`` renders it (tables, plots, ``verdicts.csv``) with no further change.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from ablations.inference import ALPHA
from ablations.rows import _best, fid_rows, run_commands, select
from ablations.tables import column_label, metric_label, missing, penalty
from ablations.verdicts import FAILS, HOLDS, NLL_LABELS, Claim, Num, Part, as_num, margin_text

#: probe metric for the representation claim, in order of preference (CV rows carry an sd over folds)
PROBE_PREFERENCE = ("probe_acc_cv", "probe_auroc_cv", "probe_acc_heldout", "probe_auroc_heldout")


# ----------------------------------------------------------------------------------------------------------------
# the claims
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Ctx:
    preset: str
    data: dict[str, dict[str, pd.DataFrame]]
    paper: pd.DataFrame | None = None
    results_dir: Path | None = None  # where the rows were read (for the stale-row listing)
    #: group-sequential designs (``run_grid --until-decided``: :class:`ablations.sequential.Design`) by grid: the
    #: claims of such a grid are decided at each part's look's nominal alpha
    designs: dict[str, Any] = field(default_factory=dict)

    def alpha_for(self, grid: str) -> float | Callable[["Part"], float]:
        """The level a counted part of ``grid`` is decided at: alpha, or under a sequential design the nominal
        alpha of the look its trainings (the fewer side's) stand for."""
        design = self.designs.get(grid)
        if design is None:
            return ALPHA
        return lambda p: (design.alpha_at(min(p.a.n, p.b.n), paired=p.test.test == "paired t") if p.a and p.b
                          else design.alpha)

    def frames(self, grid: str) -> list[tuple[str, pd.DataFrame]]:
        return list(self.data.get(grid, {}).items())

    def frame(self, grid: str) -> tuple[str, pd.DataFrame] | None:
        f = self.frames(grid)
        return f[0] if f else None

    def missing(self, grid: str) -> str:
        return (f"no results for grid {grid} on {self.preset} (results/{grid}/{self.preset}/results.csv); produce "
                f"them with `{run_commands(grid, self.preset)[0]}`")

    def rows_for(self, c: "Claim", placeholders: list[tuple[str, str]] = (), better: str = "lower"
                 ) -> pd.DataFrame | None:
        """The first table of ``c.grid``'s rows; or None after marking ``c`` as having no data, with one
        no-data part ``(pid, statement)`` per placeholder, each saying which command produces the rows."""
        got = self.frame(c.grid)
        if got is not None:
            return got[1]
        c.missing = self.missing(c.grid)
        c.parts = [Part(pid, text, None, None, better=better, why_missing=c.missing) for pid, text in placeholders]
        return None

    def num(self, df: pd.DataFrame | None, what: str, **where) -> Num | None:
        return None if df is None else as_num(_best(select(df, **where)), what, self.paper)


def _fid_what(variant: str, sampler: str | None, T: float, extractor: Any, solver: str = "ddpm") -> str:
    z = f", z~{sampler}" if sampler else ""
    loop = "" if solver == "ddpm" else f", {solver}"
    return f"{variant}{z}{loop}: {column_label('fid', extractor or '?', T)}"


def _fid(ctx: Ctx, df: pd.DataFrame, variant: str, T: float, sampler: str | None = "prior",
         solver: str = "ddpm", **where) -> Num | None:
    rows = select(fid_rows(df, solver), variant=variant, T=T, **where)
    if sampler is not None:
        rows = select(rows, sampler=sampler)
    r = _best(rows)
    ext = r["feature_extractor"] if r is not None else None
    return as_num(r, _fid_what(variant, sampler, T, ext, solver), ctx.paper)


def _pick_T(available, want: float) -> tuple[float | None, str]:
    ts = sorted({float(t) for t in available if not missing(t)})
    if not ts:
        return None, ""
    if want in ts:
        return want, ""
    return ts[-1], f"T={want:g} is not in the rows; the largest T there, T={ts[-1]:g}, is used instead"


def claim_small_T(ctx: Ctx) -> Claim:
    c = Claim("1", "DMZ beats DDPM at small T", "At T=10 and at T=20, DMZ (z ~ Bernoulli(0.5) prior) has a lower "
              "FID than unconditional DDPM at the same T (Table 1; 'clear gains at small numbers of denoising "
              "steps').", "main")
    df = ctx.rows_for(c, [(f"1{s}", f"T={T}") for s, T in (("a", 10), ("b", 20))])
    if df is None:
        return c
    for s, T in (("a", 10), ("b", 20)):
        a, b = _fid(ctx, df, "dmz", T), _fid(ctx, df, "ddpm", T, sampler=None)
        c.parts.append(Part(f"1{s}", f"T={T}: DMZ FID < DDPM FID", a, b,
                            why_missing=f"main has no FID row at T={T} for " + ("dmz" if a is None else "ddpm")))
    return c


def claim_T100(ctx: Ctx) -> Claim:
    c = Claim("2", "DMZ vs DDPM at T=100", "At T=100, DMZ's FID is lower than DDPM's. ICLR reviewers read Table 1 "
              "as the opposite on CIFAR-10 (DMZ worse than DDPM); 'does not hold' here means we reproduce their "
              "reading, 'not resolved' that this budget cannot tell.", "main")
    df = ctx.rows_for(c, [("2", "T=100")])
    if df is None:
        return c
    T, note = _pick_T(fid_rows(df)["T"], 100.0)
    if note:
        c.notes.append(note)
    a, b = (_fid(ctx, df, "dmz", T), _fid(ctx, df, "ddpm", T, sampler=None)) if T else (None, None)
    p = Part("2", f"T={T or 100:g}: DMZ FID < DDPM FID", a, b, why_missing="main has no FID rows at T=100")
    c.parts.append(p)
    if p.diff is not None:
        better = "DMZ" if p.diff < 0 else "DDPM" if p.diff > 0 else "neither"
        resolved = ("resolved" if p.verdict in (HOLDS, FAILS) else "NOT resolved (" + p.why + ")")
        c.notes.append(f"At T={T:g} the lower FID is {better}'s ({a.value:.2f} vs {b.value:.2f}); the difference is "
                       f"{resolved}.")
    return c


def claim_latent_type(ctx: Ctx) -> Claim:
    c = Claim("3", "Bernoulli beats Normal and categorical latents", "At FID@100, the Bernoulli latent (prior "
              "sampler) has a lower FID than a Normal latent (with its N(0, I) prior, and with the release's "
              "`normal` sampler: per-dimension mean/std of training latents) and than categorical latents "
              "(16 groups of K=4 = 32 bits, and the capacity-matched 8 groups of K=4 = 16 bits).", "latent_type")
    rivals = [("a", "normal", "prior", "Normal, z ~ N(0, I)"), ("b", "normal", "normal", "Normal, `normal` sampler"),
              ("c", "categorical", "prior", "categorical 16x4 (32 bits)"),
              ("d", "categorical-16bit", "prior", "categorical 8x4 (16 bits, capacity-matched)")]
    df = ctx.rows_for(c, [(f"3{s}", f"vs {text}") for s, _, _, text in rivals])
    if df is None:
        return c
    fid = fid_rows(df)
    T, note = _pick_T(fid["T"], 100.0)
    if note:
        c.notes.append(note)
    ts = sorted({float(t) for t in fid["T"].dropna()})
    for t in ts:
        counted = t == T
        a = _fid(ctx, df, "bernoulli", t)
        for s, variant, sampler, text in rivals:
            b = _fid(ctx, df, variant, t, sampler=sampler)
            c.parts.append(Part(f"3{s}" + ("" if counted else f"@T={t:g}"), f"T={t:g}: Bernoulli FID < {text} FID",
                                a, b, counted=counted, why_missing=f"no FID row at T={t:g} for "
                                + ("bernoulli/prior" if a is None else f"{variant}/{sampler}")))
        b = _fid(ctx, df, "none", t, sampler=None)
        if b is not None:
            c.parts.append(Part(f"3-none@T={t:g}", f"T={t:g}: Bernoulli FID < no latent (DDPM) FID", a, b,
                                counted=False))
    if not any(p.counted for p in c.parts):
        c.parts = [Part(f"3{s}", f"vs {text}", None, None, why_missing="latent_type has no FID rows")
                   for s, _, _, text in rivals]
    return c


def claim_latent_size(ctx: Ctx) -> Claim:
    c = Claim("4", "|z| hurts prior sampling; PixelSNAIL recovers part of it", "(4a) Bernoulli(0.5)-prior FID is "
              "worse at the largest |z| than at the smallest (cells without prior matching, the largest T both "
              "have; the table with the most sampling seeds); (4b) at the largest |z| with a PixelSNAIL row, the "
              "PixelSNAIL z-sampler's FID is below the prior's.", "latent_size")
    frames = ctx.frames("latent_size")
    if not frames:
        c.missing = ctx.missing("latent_size")
        c.parts = [Part("4a", "|z| effect", None, None, better="higher", why_missing=c.missing),
                   Part("4b", "PixelSNAIL", None, None, why_missing=c.missing)]
        return c
    # 4a: smallest vs largest |z| per table, at the largest T both have
    cands = []
    for label, df in frames:
        prior = fid_rows(df)
        prior = prior[(prior["sampler"] == "prior") & (penalty(prior) == "none")]
        sizes = sorted({float(z) for z in prior["latent_dim"].dropna()})
        if len(sizes) < 2:
            continue
        lo, hi = sizes[0], sizes[-1]
        common = (set(select(prior, latent_dim=lo)["T"].astype(float))
                  & set(select(prior, latent_dim=hi)["T"].astype(float)))
        if not common:
            continue
        T = max(common)
        a, b = (as_num(_best(select(prior, latent_dim=z, T=T)), f"|z|={z:g} ({label}), z~prior: "
                       f"{column_label('fid', select(prior, latent_dim=z)['feature_extractor'].iloc[0], T)}",
                       ctx.paper) for z in (hi, lo))
        seeds = min(x.seeds or 1 for x in (a, b))
        cands.append((seeds, hi - lo, label == ctx.preset, label, T, hi, lo, a, b))
    cands.sort(key=lambda t: t[:3], reverse=True)  # most seeds, then the widest |z| range, then the default budget
    for i, (_, _, _, label, T, hi, lo, a, b) in enumerate(cands):
        # "a is worse (higher FID) than b": the claimed direction is a - b > 0
        c.parts.append(Part("4a" if i == 0 else f"4a-{label}", f"{label}, T={T:g}: prior FID at |z|={hi:g} > at "
                            f"|z|={lo:g}", a, b, better="higher", counted=i == 0))
    if not cands:
        c.parts.append(Part("4a", "|z| effect", None, None, better="higher", why_missing="no latent_size table has "
                            "prior-sampler FID at two |z| sharing a T"))
    # 4b: PixelSNAIL vs the prior at the largest |z| that has both, at the largest T they share
    cands = []
    for label, df in frames:
        fid = fid_rows(df)
        fid = fid[penalty(fid) == "none"]
        for z in sorted({float(z) for z in fid.loc[fid["sampler"] == "pixelsnail", "latent_dim"].dropna()},
                        reverse=True):
            both = set(select(fid, latent_dim=z, sampler="pixelsnail")["T"].astype(float)) & set(
                select(fid, latent_dim=z, sampler="prior")["T"].astype(float))
            if both:
                T = max(both)
                ext = select(fid, latent_dim=z, sampler="prior")["feature_extractor"].iloc[0]
                a = as_num(_best(select(fid, latent_dim=z, sampler="pixelsnail", T=T)),
                           f"|z|={z:g} ({label}), z~pixelsnail: {column_label('fid', ext, T)}", ctx.paper)
                b = as_num(_best(select(fid, latent_dim=z, sampler="prior", T=T)),
                           f"|z|={z:g} ({label}), z~prior: {column_label('fid', ext, T)}", ctx.paper)
                cands.append((min(x.seeds or 1 for x in (a, b)), z, label, T, a, b, fid))
                break
    cands.sort(key=lambda t: (t[1], t[0]), reverse=True)
    for i, (_, z, label, T, a, b, fid) in enumerate(cands):
        c.parts.append(Part("4b" if i == 0 else f"4b-{label}", f"{label}, |z|={z:g}, T={T:g}: PixelSNAIL FID < prior "
                            "FID", a, b, counted=i == 0))
        lo_rows = select(fid, sampler="prior", T=T)
        zmin = lo_rows["latent_dim"].astype(float).min()
        lo = _best(select(lo_rows, latent_dim=zmin))
        if lo is not None and zmin < z and b.value > lo["value"]:
            frac = (b.value - a.value) / (b.value - float(lo["value"]))
            c.notes.append(f"{label}, T={T:g}: PixelSNAIL recovers {frac:.0%} of the prior's FID gap between "
                           f"|z|={zmin:g} ({float(lo['value']):.2f}) and |z|={z:g} ({b.value:.2f}) "
                           f"(information, not part of the rule).")
    if not cands:
        cmds = " or ".join(f"`{cmd}`" for cmd in run_commands("latent_size", ctx.preset))
        c.parts.append(Part("4b", "PixelSNAIL", None, None, why_missing=f"no latent_size table on {ctx.preset} has "
                            f"PixelSNAIL z-sampler rows (the budget that scores them: one of {cmds})"))
    return c


def claim_conditioning(ctx: Ctx) -> Claim:
    c = Claim("5", "Cross-attention beats concatenation and addition", "The released cross-attention "
              "conditioning (z as one token) has a lower FID than z concatenated to / added to the time "
              "embedding, at every T the grid scores. cross_attention+add and z as 4 tokens are reported as "
              "information.", "conditioning")
    rivals = [("concat", True), ("add", True)]
    df = ctx.rows_for(c, [(f"5-{v}", f"vs {v}") for v, k in rivals if k])
    if df is None:
        return c
    rivals += [(v, False) for v in dict.fromkeys(df["variant"]) if v not in ("cross_attention", "concat", "add")]
    ts = sorted({float(t) for t in fid_rows(df)["T"].dropna()})
    for t in ts:
        a = _fid(ctx, df, "cross_attention", t)
        for v, counted in rivals:
            b = _fid(ctx, df, v, t)
            if b is None and not counted:
                continue
            c.parts.append(Part(f"5-{v}@T={t:g}", f"T={t:g}: cross_attention FID < {v} FID", a, b, counted=counted,
                                why_missing=f"no FID row at T={t:g} for "
                                + ("cross_attention" if a is None else v)))
    if not ts:
        c.parts = [Part(f"5-{v}", f"vs {v}", None, None, why_missing="conditioning has no FID rows")
                   for v, k in rivals if k]
    return c


def claim_representation(ctx: Ctx) -> Claim:
    c = Claim("6", "Probe accuracy rises with |z|", "For each prior (Bernoulli, Normal, categorical), the "
              "linear-probe score at the largest |z| is above the one at the smallest |z| (reviewer 4: "
              "'representation learning ... benefits from more informative, higher-dimensional latents').",
              "representation")
    priors = ("bernoulli", "normal", "categorical")
    df = ctx.rows_for(c, [(f"6-{p}", p) for p in priors])
    if df is None:
        return c
    metric = next((m for m in PROBE_PREFERENCE if (df["metric"] == m).any()), None)
    if metric is None:
        c.parts = [Part(f"6-{p}", p, None, None, why_missing="representation has no probe rows") for p in priors]
        return c
    c.notes.append(f"Score: {metric_label(metric)} (`{metric}`)" + (
        "; its sd is the spread (numpy std, ddof=0) of the per-fold score over the 5 CV folds: it is not a spread "
        "over training or sampling seeds." if metric.endswith("_cv") else "; held-out rows have no sd, so no "
        "difference can be resolved."))
    rows = df[df["metric"] == metric]
    for p in [*priors, *sorted(set(rows["prior"].dropna()) - set(priors))]:
        part = rows[rows["prior"] == p]
        sizes = sorted({float(z) for z in part["latent_dim"].dropna()})
        if len(sizes) < 2:
            c.parts.append(Part(f"6-{p}", f"{p}: score at largest |z| > at smallest", None, None,
                                better="higher", counted=p in priors,
                                why_missing=f"{p}: fewer than two |z| with `{metric}` rows"))
            continue
        a = as_num(_best(select(part, latent_dim=sizes[-1])), f"{p}, |z|={sizes[-1]:g}: {metric}", ctx.paper)
        b = as_num(_best(select(part, latent_dim=sizes[0])), f"{p}, |z|={sizes[0]:g}: {metric}", ctx.paper)
        c.parts.append(Part(f"6-{p}", f"{p}: score at |z|={sizes[-1]:g} > at |z|={sizes[0]:g}", a, b,
                            better="higher", counted=p in priors))
    return c


def claim_ddim(ctx: Ctx) -> Claim:
    c = Claim("7", "DDIM needs gamma=0", "With the DDIM (eta=0) loop, a model trained without input perturbation "
              "(gamma=0) has a lower FID than the same model trained with the released gamma, for DDPM and for "
              "DMZ, at the smallest T the grid scores (the other T are information; reviewer 4: 'limited "
              "compatibility with DDIM in Table 10').", "ddim")
    df = ctx.rows_for(c, [(f"7-{m}", m) for m in ("ddpm", "dmz")])
    if df is None:
        return c
    ddim = fid_rows(df, "ddim")
    ts = sorted({float(t) for t in ddim["T"].dropna()})
    if not ts:
        c.parts = [Part(f"7-{m}", m, None, None, why_missing="ddim has no FID rows with solver ddim")
                   for m in ("ddpm", "dmz")]
        return c
    for t in ts:
        for m in ("ddpm", "dmz"):
            sampler = None if m == "ddpm" else "prior"
            a = _fid(ctx, df, f"{m}-gamma0", t, sampler=sampler, solver="ddim")
            b = _fid(ctx, df, f"{m}-released", t, sampler=sampler, solver="ddim")
            c.parts.append(Part(f"7-{m}" + ("" if t == ts[0] else f"@T={t:g}"),
                                f"{m}, DDIM T={t:g}: gamma=0 FID < released-gamma FID", a, b, counted=t == ts[0],
                                why_missing=f"no DDIM FID row at T={t:g} for {m}-"
                                + ("gamma0" if a is None else "released")))
    gam = df.drop_duplicates("variant").set_index("variant")["input_perturbation"] \
        if "input_perturbation" in df.columns else pd.Series(dtype=float)
    if len(gam):
        c.notes.append("gamma (input_perturbation) per cell: " + ", ".join(f"{v}={g:g}" for v, g in gam.items()
                                                                            if not missing(g)))
    return c


def nll_section(ctx: Ctx) -> Claim:
    c = Claim("N", "NLL: DMZ (with z's bits) below DDPM", "Information (we know of no NLL claim in the paper). "
              "Bits/dim per split (evaluation/nll.py): `nll_bpd` is the diffusion bound given z, `nll_bpd_z` adds "
              "z's coding cost under a code model (`sampler`: `prior` = |z| bits for Bernoulli(0.5), `pixelsnail` = "
              "the fitted PixelSNAIL's bits; 0 for DDPM), so `nll_bpd_z` with the prior is the fair comparison with "
              "DDPM. Like every part, it is tested over trainings (a training's NLL = its mean over images; the "
              "standard error over images is shown beside it).", "main", kind="information")
    df = ctx.rows_for(c)
    if df is None:
        return c
    nll = df[df["metric"].isin(list(NLL_LABELS)) & df["value"].notna()]
    if nll.empty:
        c.missing = f"main on {ctx.preset} has no NLL rows (`nll_bpd`, `nll_bpd_z`)"
        return c
    for split in [s for s in ("test", "train") if (nll["reference"] == s).any()]:
        b = ctx.num(nll, f"ddpm: nll_bpd_z ({split})", variant="ddpm", metric="nll_bpd_z", reference=split)
        if b is None:  # DDPM has no z: its NLL with z's bits is its bound
            b = ctx.num(nll, f"ddpm: nll_bpd ({split}, no z)", variant="ddpm", metric="nll_bpd", reference=split)
        dmz = nll[(nll["variant"] == "dmz") & (nll["metric"] == "nll_bpd_z") & (nll["reference"] == split)]
        models = ["prior"] + sorted(set(dmz["sampler"].dropna()) - {"prior"})
        for m in models:
            a = ctx.num(dmz, f"dmz: nll_bpd_z, z coded by {m} ({split})", sampler=m)
            p = Part(f"N-{split}" + ("" if m == "prior" else f"-{m}"), f"{split}: DMZ nll_bpd_z (z~{m}) < DDPM's",
                     a, b, counted=m == "prior",
                     why_missing=f"no NLL row for {'dmz (z coded by ' + m + ')' if a is None else 'ddpm'} on {split}")
            c.parts.append(p)
    c.finalize()
    for p in c.parts:
        if p.diff is not None:
            c.notes.append(f"{p.statement.split(':')[0]}, {p.a.what.split(', ', 1)[1]}: the lower NLL is "
                           f"{'DMZ' if p.diff < 0 else 'DDPM'}'s ({p.a.value:.3f} vs {p.b.value:.3f} bits/dim); "
                           + ("resolved." if p.verdict in (HOLDS, FAILS) else f"not resolved ({p.why})."))
    return c


#: the project's open question 1 (beyond the paper): the largest |z|'s prior FID within this factor of the smallest's
Q1_RATIO = 1.5


def _scaled(n: Num, k: float, what: str) -> Num:
    return dataclasses.replace(n, what=what, value=k * n.value, sd=None if n.sd is None else k * n.sd,
                               trainings=tuple(k * v for v in n.trainings),
                               sampling_sd=None if n.sampling_sd is None else k * n.sampling_sd, paper=None)


def question_large_z(ctx: Ctx) -> Claim:
    """Open question 1: can Bernoulli(0.5) sampling stay good as |z| grows without an auxiliary sampler? Per prior
    penalty (none, prior matching, prior MMD): prior FID at the largest |z| < 1.5 x the FID at the smallest, tested
    as a - 1.5 b < 0 with Welch on the per-training values (b's trainings scaled by 1.5), Holm over the penalties at
    the largest T; the other T as information. Each penalty is read from the table holding it with the most
    trainings."""
    c = Claim("Q1", f"Bernoulli(0.5)-prior FID at the largest |z| within {Q1_RATIO:g}x of the smallest",
              f"(beyond the paper: open question 1) For each prior penalty, the prior-sampler FID at the largest |z| "
              f"is below {Q1_RATIO:g} times the one at the smallest |z| (each penalty from the latent_size table with the "
              "most trainings; the penalties are in --budget full).", "latent_size", kind="beyond")
    frames = ctx.frames("latent_size")
    if not frames:
        c.missing = ctx.missing("latent_size")
        return c
    found: dict[str, tuple] = {}  # penalty -> (rank, label, its rows, smallest |z|, largest |z|): its best table
    for label, df in frames:
        prior = fid_rows(df)
        prior = prior[prior["sampler"] == "prior"]
        prior = prior.assign(_pen=penalty(prior))
        for pen, part in prior.groupby("_pen"):
            sizes = sorted({float(z) for z in part["latent_dim"].dropna()})
            if len(sizes) < 2:
                continue
            n = int(part["train_seeds"].min()) if "train_seeds" in part and part["train_seeds"].notna().any() else 1
            rank = (n, sizes[-1] - sizes[0], part["T"].astype(float).max())
            if pen not in found or rank > found[pen][0]:
                found[pen] = (rank, label, part, sizes[0], sizes[-1])
    for pen in sorted(found, key=lambda x: (x != "none", x)):
        _, label, part, lo, hi = found[pen]
        common = sorted(set(select(part, latent_dim=lo)["T"].astype(float))
                        & set(select(part, latent_dim=hi)["T"].astype(float)))
        for T in common:
            a = as_num(_best(select(part, latent_dim=hi, T=T)), f"|z|={hi:g} ({pen}, {label}), z~prior: FID T={T:g}")
            b = as_num(_best(select(part, latent_dim=lo, T=T)), f"|z|={lo:g} ({pen}, {label}), z~prior: FID T={T:g}")
            if a is None or b is None:
                continue
            b = _scaled(b, Q1_RATIO, f"{Q1_RATIO:g} x " + b.what)
            counted = T == max(common)
            c.parts.append(Part(f"Q1-{pen}" + ("" if counted else f"@T={T:g}"),
                                f"{label}, T={T:g}, penalty {pen}: FID(|z|={hi:g}) < {Q1_RATIO:g} x FID(|z|={lo:g})",
                                a, b, counted=counted, margin=None))  # a threshold, not a rival: no margin
    if not c.parts:
        c.missing = (f"no latent_size table on {ctx.preset} has prior-sampler FID at two sizes of z sharing a T; "
                     f"`{run_commands('latent_size', ctx.preset)[-1]}` scores it")
    return c


#: the claims in report order; each a function of the loaded rows
CLAIMS: tuple[Callable[[Ctx], Claim], ...] = (claim_small_T, claim_T100, claim_latent_type, claim_latent_size,
                                               claim_conditioning, claim_representation, claim_ddim, nll_section,
                                               question_large_z)


# ----------------------------------------------------------------------------------------------------------------
# all claims and their verdicts
# ----------------------------------------------------------------------------------------------------------------
def build_claims(ctx: Ctx, functions: tuple[Callable[[Ctx], Claim], ...] | list | None = None) -> list[Claim]:
    """Every claim of :data:`CLAIMS` (or of ``functions``), judged on ``ctx``'s rows at the level of its grid's
    design (:meth:`Ctx.alpha_for`); their ``tables`` are left empty: the report fills them."""
    out = []
    for f in CLAIMS if functions is None else functions:
        c = f(ctx)
        out.append(c.finalize(ctx.alpha_for(c.grid)))
    return out


def verdict_rows(claims: list[Claim], preset: str) -> pd.DataFrame:
    def num(n: Num | None, k: str) -> Any:
        return getattr(n, k) if n is not None else None

    rows = []
    for c in claims:
        rows.append({"preset": preset, "claim_id": c.cid, "part_id": "", "kind": c.kind, "grid": c.grid,
                     "statement": c.statement, "verdict": c.verdict,
                     "numbers": "; ".join(f"{p.pid}: {p.verdict}" for p in c.parts if p.counted) or c.missing,
                     "rule": "multi-part: counted parts Holm-corrected together; holds only if every counted part "
                     "holds; does not hold if any does not; else not resolved (no data if no part has data)"})
        for p in c.parts:
            t = p.test
            rows.append({"preset": preset, "claim_id": c.cid, "part_id": p.pid,
                         "kind": "part" if p.counted and c.kind != "information" else "information", "grid": c.grid,
                         "statement": p.statement, "verdict": p.verdict,
                         "numbers": (f"a = {p.a.text() if p.a else '–'}; b = {p.b.text() if p.b else '–'}; "
                                     f"a - b = {'–' if p.diff is None else f'{p.diff:+.4g}'}"
                                     + ("" if t.ci is None else f" [95% CI {t.ci[0]:+.4g}, {t.ci[1]:+.4g}]")
                                     + f"; {p.why}" + (f"; {p.needed_text()}" if p.needed_text() else "")),
                         "rule": p.rule, "a": num(p.a, "what"), "a_value": num(p.a, "value"), "a_sd": num(p.a, "sd"),
                         "a_trainings": num(p.a, "n"), "a_training_values": json.dumps(list(p.a.trainings))
                         if p.a else None, "a_sampling_sd": num(p.a, "sampling_sd"), "a_N": num(p.a, "N"),
                         "a_seeds": num(p.a, "seeds"), "b": num(p.b, "what"), "b_value": num(p.b, "value"),
                         "b_sd": num(p.b, "sd"), "b_trainings": num(p.b, "n"),
                         "b_training_values": json.dumps(list(p.b.trainings)) if p.b else None,
                         "b_sampling_sd": num(p.b, "sampling_sd"), "b_N": num(p.b, "N"), "b_seeds": num(p.b, "seeds"),
                         "difference": p.diff, "test": t.test or None, "scale": t.scale,
                         "test_difference": t.diff, "ci_low": t.ci[0] if t.ci else None,
                         "ci_high": t.ci[1] if t.ci else None, "ratio": t.ratio,
                         "ratio_ci_low": t.ratio_ci()[0] if t.ratio_ci() else None,
                         "ratio_ci_high": t.ratio_ci()[1] if t.ratio_ci() else None, "df": t.df,
                         "n_pairs": t.n_pairs or None, "pair_corr": t.corr, "p": t.p, "p_holm": t.p_holm,
                         "alpha": p.alpha, "margin": margin_text(p.margin, t.scale == "log"),
                         "p_equiv": t.p_equiv, "p_equiv_holm": t.p_equiv_holm,
                         "seeding": num(p.a or p.b, "seeding"),
                         "trainings_needed": p.needed, "claimed": p.claimed,
                         "feature_extractor": num(p.a or p.b, "extractor"),
                         "paper_a": num(p.a, "paper"), "paper_b": num(p.b, "paper"),
                         "source": num(p.a or p.b, "source")})
    return pd.DataFrame(rows)
