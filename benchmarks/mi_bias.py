"""The I(z; x_t) estimators' bias on pairs with a known answer, at the release's settings and at the digits default.

    python benchmarks/mi_bias.py [--pairs 1437] [--out benchmarks/results/mi_bias.md]

Cases (z: d fair bits; x = 2z - 1 + N(0, sigma^2) per bit, so I(z; x) = d * I_BPSK(sigma), a one-dimensional
integral; with sigma -> 0, I = H(z)): a code read through a clean channel, through noisy ones, d = 16 bits at the
digits training split's size (every code distinct: H(z) = log2 N, which no bound from N pairs can reach), and
independent pairs (I = 0). Each estimate is the held-out bound of :func:`evaluation.mi.estimate_mi` (early stopping
on a validation fifth); bias = estimate - truth. The pairs default to the digits training split's 1,437.
"""

from __future__ import annotations

import argparse
import math
import platform
import time
from pathlib import Path

import numpy as np
import torch
from scipy import integrate

from evaluation.mi import codes_entropy_bits, estimate_mi
from evaluation.mi_settings import parse_spec

SPECS = ("mine", "mine:epochs=100,lr=0.001", "infonce:epochs=100,lr=0.001")
CASES = ((4, 0.01), (4, 1.0), (8, 0.8), (16, 0.01), (8, None))  # (bits, channel sd; None = independent x)


def bpsk_bits(sigma: float) -> float:
    f = lambda y: (math.exp(-(y - 1) ** 2 / (2 * sigma ** 2)) / math.sqrt(2 * math.pi * sigma ** 2)  # noqa: E731
                   * np.logaddexp(0, -2 * y / sigma ** 2) / math.log(2))
    return 1 - integrate.quad(f, 1 - 12 * sigma, 1 + 12 * sigma, limit=200)[0]


def truth(d: int, sigma: float | None, z: torch.Tensor) -> float:
    if sigma is None:
        return 0.0
    if sigma <= 0.05:  # a clean channel: I = H(z), the plug-in entropy of the drawn codes
        return codes_entropy_bits(z)
    return d * bpsk_bits(sigma)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pairs", type=int, default=1437)
    p.add_argument("--specs", nargs="+", default=list(SPECS))
    p.add_argument("--out", type=Path, default=None, help="also write the Markdown table here")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    lines = ["| case | true I (bits) | " + " | ".join(f"`{s}`" for s in args.specs) + " |",
             "|---|---:|" + "---:|" * len(args.specs)]
    for d, sigma in CASES:
        g = torch.Generator().manual_seed(d)
        z = (torch.rand(args.pairs, d, generator=g) > 0.5).long()
        x = torch.randn(args.pairs, d, generator=g) if sigma is None else (2 * z - 1).float() + sigma * torch.randn(
            args.pairs, d, generator=g)
        true = truth(d, sigma, z)
        cells = []
        for spec in args.specs:
            t0 = time.perf_counter()
            r = estimate_mi(x, z, parse_spec(spec))
            cells.append(f"{r['bits']:.2f} ({r['bits'] - true:+.2f}; {time.perf_counter() - t0:.0f} s)")
        case = f"{d} bits, " + ("independent x" if sigma is None else f"channel sd {sigma:g}")
        lines.append(f"| {case} | {true:.2f} | " + " | ".join(cells) + " |")
        print(lines[-1], flush=True)
    text = (f"# I(z; x) estimators on pairs with a known answer ({args.pairs} pairs)\n\n"
            f"`python benchmarks/mi_bias.py --pairs {args.pairs}` on {platform.processor() or platform.machine()}, "
            f"one thread, {time.strftime('%Y-%m-%d')}. Each cell: held-out estimate in bits (bias = estimate - truth; "
            "seconds).\n\n" + "\n".join(lines) + "\n")
    if args.out:
        args.out.write_text(text)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
