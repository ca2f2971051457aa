"""Generate images from a trained run (EMA weights), for any number of denoising steps T.

    python -m dmz.sample --run runs/digits-dmz --steps 100 --num 64 --z dataset --out grid.png
    python -m dmz.sample --run runs/digits-dmz --steps 10 --num 1000 --out samples.npz   # uint8 NHWC in arr_0

Sample i uses seed ``seed + i``: its z and its x_T come from their own generators, so the same image comes out
whatever the batch size, and the same (z, x_T) pair is used at every T.
"""

from __future__ import annotations

import argparse
import io
import math
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from dmz.data import to_uint8
from dmz.diffusion import PerSampleRNG
from dmz.run import LoadedRun, load_run
from dmz.runio import CheckpointError, atomic_write_bytes
from dmz.train import diffusion_from_config
from dmz.zsamplers import ZSAMPLERS, ZSampler, build_zsampler


def sample_seeds(seed: int, n: int) -> list[int]:
    return [seed + i for i in range(n)]


def respacing(steps: int, sampler: str = "ddpm") -> str:
    if sampler not in ("ddpm", "ddim"):
        raise ValueError(f"unknown sampler {sampler!r}; valid: ddpm, ddim")
    return f"ddim{steps}" if sampler == "ddim" else str(steps)


@torch.no_grad()
def generate(run: LoadedRun, *, steps: int, seeds: Sequence[int], zsampler: ZSampler | None = None,
             batch_size: int = 256, sampler: str = "ddpm", progress: bool = False,
             amp: bool = False) -> torch.Tensor:
    """Images (N, C, H, W) in [-1, 1] on the CPU, one per seed.

    :param zsampler: where z comes from (the prior when None). :param sampler: ``ddpm`` (ancestral, I-DDPM
    respacing) or ``ddim`` (eta=0, ``ddimN`` spacing). :param amp: bf16 autocast on CUDA.
    """
    model, device = run.model, run.device
    zs = zsampler or build_zsampler("prior", run)
    diffusion = diffusion_from_config(run.cfg, timestep_respacing=respacing(steps, sampler))
    shape = (model.channels, model.resolution, model.resolution)
    loop = diffusion.ddim_sample_loop if sampler == "ddim" else diffusion.p_sample_loop
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if amp and device.type == "cuda" else nullcontext()
    out = []
    chunks = [list(seeds[i:i + batch_size]) for i in range(0, len(seeds), batch_size)]
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(seeds), desc=f"sample T={steps}", unit="img", dynamic_ncols=True)
    for chunk in chunks:
        z_rng = PerSampleRNG([2 * s + 1 for s in chunk])
        x_rng = PerSampleRNG([2 * s for s in chunk], device=device)
        codes = zs.sample(len(chunk), z_rng, device)
        cond = model.prior.code_to_cond(codes)
        kwargs = {} if cond is None else {"cond": cond}
        with ctx:
            x = loop(model, (len(chunk), *shape), model_kwargs=kwargs, rng=x_rng, device=device)
        out.append(x.float().clamp(-1, 1).cpu())
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    return torch.cat(out)


def save_samples(images: torch.Tensor, path: str | Path, nrow: int | None = None) -> None:
    """``.png``: a grid; ``.npz``: uint8 NHWC in ``arr_0`` (improved-diffusion's format)."""
    path = Path(path)
    u8 = to_uint8(images)
    if path.suffix == ".npz":
        buf = io.BytesIO()
        np.savez(buf, arr_0=u8.permute(0, 2, 3, 1).numpy())
        atomic_write_bytes(path, buf.getvalue())
    elif path.suffix == ".png":
        from PIL import Image
        from torchvision.utils import make_grid
        nrow = nrow or max(1, int(math.ceil(math.sqrt(len(u8)))))
        grid = make_grid(u8, nrow=nrow, padding=1, pad_value=255)  # 3 channels, also for greyscale
        buf = io.BytesIO()
        Image.fromarray(grid.permute(1, 2, 0).numpy()).save(buf, format="PNG")
        atomic_write_bytes(path, buf.getvalue())
    else:
        raise ValueError(f"--out must end in .png (grid) or .npz (raw uint8 samples), not {path.name!r}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dmz.sample", description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, help="run folder written by dmz.train")
    p.add_argument("--steps", type=int, default=100, help="denoising steps T (respaced; any T <= 1000)")
    p.add_argument("--num", type=int, default=64, help="number of images")
    p.add_argument("--z", default="prior", help=f"z-sampler: {', '.join(sorted(ZSAMPLERS))}")
    p.add_argument("--out", required=True, help="PATH.png (grid) or PATH.npz (uint8 NHWC, arr_0)")
    p.add_argument("--seed", type=int, default=0, help="sample i uses seed + i")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--sampler", default="ddpm", choices=["ddpm", "ddim"])
    p.add_argument("--device", default="auto")
    p.add_argument("--weights", default="ema", choices=["ema", "model"])
    args = p.parse_args(argv)
    if Path(args.out).suffix not in (".png", ".npz"):
        print(f"error: --out must end in .png or .npz, got {args.out}", file=sys.stderr)
        return 2
    try:
        run = load_run(args.run, device=args.device, weights=args.weights)
        zs = build_zsampler(args.z, run)
        images = generate(run, steps=args.steps, seeds=sample_seeds(args.seed, args.num), zsampler=zs,
                          batch_size=args.batch_size, sampler=args.sampler, progress=True)
    except (CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    save_samples(images, args.out)
    print(f"wrote {len(images)} samples (T={args.steps}, z={args.z}) to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
