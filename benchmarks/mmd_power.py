"""Can the prior-MMD penalty see what is left to fix? Its batch MMD^2 on a trained run's codes against the null.

    python benchmarks/mmd_power.py --run RUN [--run RUN ...] [--batch 64 256 1024] [--out benchmarks/results/mmd_power.md]

``model.prior_mmd`` (:func:`dmz.priors.bernoulli.prior_mmd_penalty`) compares a training batch of codes with as many
Bernoulli(0.5) codes. For each run and batch size B this draws batches of the run's hard training codes
(:func:`dmz.run.encode_split`, cached) and reports the estimator's value against three references:

* **null**: two independent batches of fair bits (what the penalty reads when the codes already are fair coins);
* **codes**: B of the run's codes against B fair bits (what training sees, on hard codes);
* **marginals only**: the same codes with each bit's column shuffled independently over the split (the marginals
  kept, every dependence between bits destroyed).

"power" is the fraction of batches above the null's 95th percentile: how often one batch tells the codes from fair
bits at all (codes) and from their own marginals (codes against the marginals-only batches). When the codes are no
more distinguishable than their marginals, the penalty's signal at that batch size is about marginals, whatever
dependence PixelSNAIL finds; a larger batch (or weight) is what would show it.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run by path: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np
import torch

from dmz.priors.bernoulli import prior_mmd_penalty
from dmz.run import encode_split, load_run
from dmz.runio import atomic_write_bytes, read_jsonl, repo_relative


def draws(codes: torch.Tensor, B: int, n: int, g: torch.Generator) -> dict[str, np.ndarray]:
    """``n`` values of the penalty per reference (null, codes, marginals only) at batch size ``B``."""
    N, L = codes.shape
    out = {"null": [], "codes": [], "marginals only": []}
    for _ in range(n):
        fair = (torch.rand(B, L, generator=g) < 0.5).float()
        fair2 = (torch.rand(B, L, generator=g) < 0.5).float()
        batch = codes[torch.randperm(N, generator=g)[:B]].float()
        cols = torch.stack([codes[torch.randperm(N, generator=g)[:B], j] for j in range(L)], 1).float()
        out["null"].append(float(prior_mmd_penalty(fair2, fair)))
        out["codes"].append(float(prior_mmd_penalty(batch, fair)))
        out["marginals only"].append(float(prior_mmd_penalty(cols, fair)))
    return {k: np.asarray(v) for k, v in out.items()}


def training_curve(run_dir: Path, cfg, every: int = 4) -> str | None:
    """The penalty as training saw it (relaxed codes of each training batch): ``aux / prior_mmd`` from the run's
    ``metrics.jsonl`` at every ``every``-th logged step, or None when the aux loss is not the MMD alone."""
    m = cfg.model
    if m.prior_mmd <= 0 or m.prior_matching > 0 or m.prior_confidence > 0 or not (run_dir / "metrics.jsonl").exists():
        return None
    rows = [r for r in read_jsonl(run_dir / "metrics.jsonl") if "aux" in r and "step" in r]
    if not rows:
        return None
    picked = rows[every - 1::every]
    if not picked or picked[-1] is not rows[-1]:  # always end on the last logged step
        picked.append(rows[-1])
    return ", ".join(f"{int(r['step'])}: {r['aux'] / m.prior_mmd:.3f}" for r in picked)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", action="append", required=True, help="a run folder (repeatable)")
    p.add_argument("--batch", type=int, nargs="+", default=[64, 256, 1024])
    p.add_argument("--draws", type=int, default=200)
    p.add_argument("--out", type=Path, default=None, help="also write the Markdown table here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    lines = ["| run | \\|z\\| | prior_mmd | B | null: mean [95th pct] | codes: mean ± sd (power) | "
             "marginals only: mean ± sd (power) | codes > marginals only |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    t0 = time.perf_counter()
    curves: list[str] = []
    for r in args.run:
        run = load_run(r, device="cpu")
        codes, _ = encode_split(run, "train")
        L = codes.shape[1]
        for B in args.batch:
            if B > len(codes):
                print(f"skip B={B}: the split has {len(codes)} codes", file=sys.stderr)
                continue
            g = torch.Generator().manual_seed(B)
            d = draws(codes, B, args.draws, g)
            q = float(np.quantile(d["null"], 0.95))
            cell = lambda k: f"{d[k].mean():.4f} ± {d[k].std(ddof=1):.4f} ({(d[k] > q).mean():.2f})"  # noqa: E731
            lines.append(f"| `{repo_relative(r)}` | {L} | {run.cfg.model.prior_mmd:g} | {B} | "
                         f"{d['null'].mean():.4f} [{q:.4f}] | {cell('codes')} | {cell('marginals only')} | "
                         f"{(d['codes'] > d['marginals only']).mean():.2f} |")
            print(lines[-1], flush=True)
        curve = training_curve(Path(r), run.cfg)
        if curve:
            curves.append(f"* `{repo_relative(r)}` (weight {run.cfg.model.prior_mmd:g}), step: MMD^2 {curve}")
    text = ("# The prior-MMD penalty's power on trained codes\n\n"
            f"`python benchmarks/mmd_power.py` on {platform.processor() or platform.machine()}, one thread, "
            f"{time.strftime('%Y-%m-%d')}, {args.draws} batches per cell, {time.perf_counter() - t0:.0f} s. "
            "Values are MMD^2 (the penalty before its weight) on hard training codes; power = the fraction of batches "
            "above the null's 95th percentile; the last column: the fraction of draws where the codes' batch reads "
            "higher than a batch with the same marginals and no dependence.\n\n" + "\n".join(lines) + "\n")
    if curves:
        text += ("\nThe penalty during training (the runs' `metrics.jsonl`: aux loss / weight, i.e. MMD^2 of each "
                 "training batch's relaxed codes against fair bits):\n\n" + "\n".join(curves) + "\n")
    if args.out:  # atomically: a killed run leaves the last record whole
        atomic_write_bytes(args.out, text.encode())
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
