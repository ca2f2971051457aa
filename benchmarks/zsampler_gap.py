"""How far are a run's codes from the generation prior? Bits per held-out (test) code under each z-sampler.

    python benchmarks/zsampler_gap.py runs/digits-z8 runs/digits-z16 runs/digits-z32 [--json gap.jsonl]

For each trained run (no training or fitting here: fit PixelSNAIL first with ``python -m dmz.zsamplers fit --run DIR``,
otherwise its column shows "-"), prints |z|, the bits per test code under Bernoulli(0.5) (= |z|), the independent
empirical fit and PixelSNAIL, the gap uniform - pixelsnail (bits the default sampler wastes per code on a
mismatched distribution, as far as PixelSNAIL can tell), and the share of test codes that duplicate a training code.
"""

from __future__ import annotations

import argparse
import json
import sys

from dmz.zsamplers.pixelsnail import PixelSNAILError, diagnose


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="trained run folders (discrete priors)")
    p.add_argument("--split", default="test")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", help="also append one JSON line per run here")
    args = p.parse_args(argv)
    cols = ("uniform", "empirical", "pixelsnail")
    print(f"{'run':<40}{'|z|':>5}{'K':>3}" + "".join(f"{c:>12}" for c in cols) + f"{'gap_ps':>9}{'dup':>7}")
    rc = 0
    for run in args.runs:
        try:
            d = diagnose(run, split=args.split, write=False, device=args.device)
        except (PixelSNAILError, ValueError, RuntimeError) as e:
            print(f"{run:<40} error: {e}", file=sys.stderr)
            rc = 1
            continue
        b = d["bits_per_code"]
        fmt = lambda v: f"{v:>12.3f}" if v is not None else f"{'-':>12}"  # noqa: E731
        gap = d["gap_bits"].get("pixelsnail")
        print(f"{run:<40}{d['L']:>5}{d['n_class']:>3}" + "".join(fmt(b.get(c)) for c in cols)
              + (f"{gap:>9.3f}" if gap is not None else f"{'-':>9}") + f"{d['heldout_duplicate_fraction']:>7.3f}")
        if args.json:
            row = {"run": run, "L": d["L"], "n_class": d["n_class"], "checkpoint_step": d["checkpoint_step"],
                   "bits_per_code": b, "gap_bits": d["gap_bits"], "dup": d["heldout_duplicate_fraction"],
                   "n_unique_heldout": d["n_unique_heldout"], "n_heldout": d["n_heldout"]}
            with open(args.json, "a") as f:
                f.write(json.dumps(row) + "\n")
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
