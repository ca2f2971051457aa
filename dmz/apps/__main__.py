"""``python -m dmz.apps interpolate|manipulate|translate|bits``: the applications of the binary latent.

    python -m dmz.apps interpolate --run RUN --pairs 8 --out DIR           # PNG strips per method + scores.json
    python -m dmz.apps manipulate --run RUN --attribute 3 --out DIR        # digits: 0..9; CelebA: attribute names
    python -m dmz.apps translate --source RUN_A --target RUN_B --out DIR   # e.g. digits_edges -> digits
    python -m dmz.apps bits --run RUN [--run RUN2 ...] --out DIR           # what each bit encodes, across trainings

Each writes PNGs and ``DIR/scores.json``; bad input ends with a one-line ``error: ...`` and exit status 2. The
arguments are defined here without importing torch, so ``--help`` is immediate; the application modules are imported
only to run.
"""

from __future__ import annotations

import argparse
import sys


def _pair(text: str) -> tuple[int, int]:
    try:
        i, j = (int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--pair takes I,J (two test indices), got {text!r}") from None
    return i, j


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dmz.apps", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="app", required=True)

    def common(q, T):
        q.add_argument("--out", required=True, help="output folder (PNGs and scores.json)")
        q.add_argument("--T", type=int, default=T, help=f"denoising steps (respaced; default {T})")
        q.add_argument("--seed", type=int, default=0)
        q.add_argument("--device", default="cpu")
        q.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch's default)")

    i = sub.add_parser("interpolate", help="interpolate between two test images' codes")
    i.add_argument("--run", required=True, help="run folder (prior=bernoulli)")
    i.add_argument("--pairs", type=int, default=8, help="number of random test pairs (different digits/codes)")
    i.add_argument("--pair", type=_pair, action="append", metavar="I,J",
                   help="a given pair of test indices instead (repeatable)")
    i.add_argument("--methods", nargs="+", default=None,
                   help="index random smooth relaxed xt10 xt30 xt50 xt70 xt90 (default: all)")
    common(i, 100)

    m = sub.add_parser("manipulate", help="move codes along a linear attribute classifier's normal")
    m.add_argument("--run", required=True, help="run folder (prior=bernoulli)")
    m.add_argument("--attribute", nargs="+", required=True,
                   help="attribute name(s): digits 0..9, CelebA's 40 names, or all")
    m.add_argument("--per-class", type=int, default=8, help="digits: source images per other class")
    m.add_argument("--num", type=int, default=64, help="attribute datasets: source images")
    common(m, 100)

    t = sub.add_parser("translate", help="map source-model codes to target-model codes and decode")
    t.add_argument("--source", required=True, help="run folder of the source domain (e.g. digits_edges)")
    t.add_argument("--target", required=True, help="run folder of the target domain (e.g. digits)")
    t.add_argument("--num", type=int, default=None, help="translate the first NUM test pairs (default: all)")
    t.add_argument("--epochs", type=int, default=100, help="mapping MLP epochs at most (released: 100)")
    common(t, 40)

    b = sub.add_parser("bits", help="what each bit moves (set to 1 vs 0), its MI with the labels and the other bits; "
                                    "several runs: bits matched across trainings")
    b.add_argument("--run", required=True, action="append", dest="runs",
                   help="run folder (prior=bernoulli, labelled dataset); repeat for trainings of one cell")
    b.add_argument("--num", type=int, default=100, help="test images each bit is set on (default 100)")
    common(b, 10)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.T < 1:
        print(f"error: --T must be >= 1, got {args.T}", file=sys.stderr)
        return 2
    if args.threads:
        from dmz.threads import limit_threads

        limit_threads(args.threads)
    from dmz.apps.common import AppError

    log = lambda msg: print(msg, flush=True)  # noqa: E731
    try:
        if args.app == "interpolate":
            from dmz.apps.interpolate import METHODS, interpolate

            scores = interpolate(args.run, args.out, pairs=args.pairs, pair=args.pair, steps=args.T,
                                 methods=args.methods or METHODS, seed=args.seed, device=args.device, log=log)
        elif args.app == "manipulate":
            from dmz.apps.manipulate import manipulate

            scores = manipulate(args.run, args.out, attributes=args.attribute, steps=args.T, per_class=args.per_class,
                                num=args.num, seed=args.seed, device=args.device, log=log)
        elif args.app == "bits":
            from dmz.apps.bits import bits

            scores = bits(args.runs, args.out, num=args.num, steps=args.T, seed=args.seed, device=args.device, log=log)
        else:
            from dmz.apps.translate import translate

            scores = translate(args.source, args.target, args.out, steps=args.T, num=args.num, seed=args.seed,
                               epochs=args.epochs, device=args.device, log=log)
    except AppError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}/scores.json ({scores['app']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
