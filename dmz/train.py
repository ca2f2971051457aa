"""Train (or resume) a run: the command line of :mod:`dmz.trainer`.

    python -m dmz.train --preset digits --out runs/digits-dmz
    python -m dmz.train --preset cifar10 --set prior=none --out runs/cifar-ddpm --dry-run
    torchrun --nproc_per_node 2 -m dmz.train --preset celeba64 --out runs/celeba

This module imports torch only after the arguments are parsed, so ``--help`` answers at once. The library
(``Trainer``, ``train``, ``DiffusionLoss``, ...) is :mod:`dmz.trainer`.
"""

from __future__ import annotations

import argparse
import json
import sys

from dmz.config import ConfigError, resolve


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dmz.train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="digits", help="digits (CPU default) | cifar10 | celeba64")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field, e.g. prior=none or train.lr=2e-4 (repeatable)")
    p.add_argument("--out", help="run folder (resumed when it holds a checkpoint)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and parameter counts, then exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    overrides = list(args.overrides)
    try:
        cfg = resolve(args.preset, overrides)
    except (ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from dmz.finetune import InitFromError
    from dmz.runio import CheckpointError
    from dmz.trainer import NonFiniteLossError, dry_run_info, train

    if args.dry_run:
        print(cfg.to_json())
        print(json.dumps(dry_run_info(cfg)))
        return 0
    if not args.out:
        p.error("--out DIR is required (or use --dry-run)")
    try:
        summary = train(cfg, args.out, progress=not args.no_progress)
    except (ConfigError, CheckpointError, NonFiniteLossError, FileNotFoundError, InitFromError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
