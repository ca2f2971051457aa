"""Generate images from a trained run (EMA weights): the command line of :mod:`dmz.sampling`.

    python -m dmz.sample --run runs/digits-dmz --steps 100 --num 64 --z dataset --out grid.png
    python -m dmz.sample --run runs/digits-dmz --steps 10 --num 1000 --out samples.npz   # uint8 NHWC in arr_0

torch is imported only after the arguments are parsed (``--help`` answers at once). The library (``generate``,
``save_samples``, ...) is :mod:`dmz.sampling`.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dmz.sample", description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="run folder written by dmz.train")
    p.add_argument("--steps", type=int, default=100,
                   help="denoising steps T (respaced): 1 to the run's training diffusion steps (1000)")
    p.add_argument("--num", type=int, default=64, help="number of images")
    p.add_argument("--z", default="prior", help="z-sampler (dmz.zsamplers): prior | empirical | dataset | normal | const | pixelsnail; "
                   "options after a colon, e.g. pixelsnail:temperature=0.8")
    p.add_argument("--out", required=True, help="PATH.png (grid) or PATH.npz (uint8 NHWC, arr_0)")
    p.add_argument("--seed", type=int, default=0, help="sample i uses seed + i")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--micro-batch", type=int, default=None,
                   help="rows per denoiser call (default: 32 on CPU, 256 on CUDA); the images depend on it, "
                        "not on --batch-size")
    p.add_argument("--solver", "--sampler", dest="solver", default="ddpm", choices=["ddpm", "ddim"],
                   help="sampling loop: ddpm (ancestral) or ddim (eta=0); --sampler is an alias")
    p.add_argument("--device", default="auto")
    p.add_argument("--weights", default="ema", choices=["ema", "model"])
    p.add_argument("--precision", default=None, choices=["fp32", "bf16", "auto"],
                   help="sampling arithmetic (default: the run's train.sampling_precision)")
    p.add_argument("--compile", default=None, action=argparse.BooleanOptionalAction,
                   help="torch.compile the denoiser (default: the run's train.sampling_compile)")
    args = p.parse_args(argv)
    if Path(args.out).suffix not in (".png", ".npz"):
        print(f"error: --out must end in .png or .npz, got {args.out}", file=sys.stderr)
        return 2
    if args.num < 1:
        print(f"error: --num must be >= 1 (the number of images), got {args.num}", file=sys.stderr)
        return 2
    from dmz.run import load_run
    from dmz.runio import CheckpointError
    from dmz.sampling import generate, sample_seeds, save_samples
    from dmz.zsamplers import build_zsampler

    try:
        run = load_run(args.run, device=args.device, weights=args.weights)
        zs = build_zsampler(args.z, run)
        images = generate(run, steps=args.steps, seeds=sample_seeds(args.seed, args.num), zsampler=zs,
                          batch_size=args.batch_size, solver=args.solver, progress=True,
                          micro_batch=args.micro_batch, precision=args.precision, compile=args.compile)
    except (CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    save_samples(images, args.out)
    print(f"wrote {len(images)} samples (T={args.steps}, z={args.z}) to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
