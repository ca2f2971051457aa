"""Generate images from a trained run (EMA weights), for any number of denoising steps T (its CLI:
``python -m dmz.sample``).

Sample i uses seed ``seed + i``: its z and its x_T come from their own generators, so the same image comes out
whatever the batch size, and the same (z, x_T) pair is used at every T.

Bit-identical sample sets across batch sizes also need the *arithmetic* to be batch-size independent, and it is
not: CPU (oneDNN/MKL) GEMM and convolution kernels pick their blocking from the batch dimension (cuBLAS/cuDNN
choose kernels by shape too), so one sample's output differs in the last bits between a batch of 5 and a batch
of 12 (the first ``Linear`` of the time embedding already does). For a fixed batch size, however, a row's result
does not depend on its position or on the other rows. :func:`generate` therefore calls the denoiser on
micro-batches of exactly ``micro_batch`` samples (the last one padded by repeating a row, padding discarded);
``batch_size`` only sets how many samples are in flight and is rounded to a multiple of ``micro_batch``. A sample
set is then a function of (seeds, micro_batch, device, weights), never of ``batch_size`` (tested on CPU,
tests/test_evaluation_run.py; not yet checked on CUDA). The device, and possibly the CPU thread count, still
change the last bits.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from dmz.accel import MicroBatched, amp_dtype, autocast, compiled, default_micro_batch
from dmz.data import to_uint8
from dmz.diffusion import PerSampleRNG
from dmz.model import build_diffusion
from dmz.run import LoadedRun
from dmz.runio import atomic_write_bytes
from dmz.zsamplers import ZSampler, build_zsampler


#: repetition k of image i (FID sampling seed k, reconstruction decode k) uses sample seed k * SEED_STRIDE + i
SEED_STRIDE = 1_000_000


def sample_seeds(seed: int, n: int) -> list[int]:
    return [seed + i for i in range(n)]


def check_steps(steps: int, diffusion_steps: int, solver: str = "ddpm") -> None:
    """T must be in 1..the run's training diffusion steps (a respaced solver keeps T of them); DDIM's fixed
    integer stride reaches only some T (``len(range(0, diffusion_steps, stride))``)."""
    if not 1 <= int(steps) <= diffusion_steps:
        raise ValueError(f"T={steps} denoising steps is out of range: T must be between 1 and {diffusion_steps} "
                         f"(the run's training diffusion steps)")
    if solver == "ddim":
        reachable = sorted({len(range(0, diffusion_steps, s)) for s in range(1, diffusion_steps)} | {diffusion_steps})
        if steps not in reachable:
            near = sorted(reachable, key=lambda t: (abs(t - steps), t))[:2]
            raise ValueError(f"DDIM cannot take exactly T={steps} steps: it keeps every k-th of the "
                             f"{diffusion_steps} training steps for an integer k; nearest valid T: "
                             f"{', '.join(map(str, sorted(near)))} (or use the ddpm solver, which takes any T)")


def sampling_setup(run: LoadedRun, *, precision: str | None = None, compile: bool | None = None
                   ) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, whether to compile) for sampling ``run``: the arguments, else the run's
    ``train.sampling_precision`` / ``train.sampling_compile``."""
    tc = run.cfg.train
    dtype, _ = amp_dtype(precision or tc.sampling_precision, run.device)
    return dtype, bool(tc.sampling_compile if compile is None else compile)


def respacing(steps: int, solver: str = "ddpm") -> str:
    if solver not in ("ddpm", "ddim"):
        raise ValueError(f"unknown solver {solver!r}; valid: ddpm, ddim")
    return f"ddim{steps}" if solver == "ddim" else str(steps)


@torch.no_grad()
def generate(run: LoadedRun, *, steps: int, seeds: Sequence[int], zsampler: ZSampler | None = None,
             batch_size: int = 256, solver: str = "ddpm", progress: bool = False,
             micro_batch: int | None = None,
             codes: torch.Tensor | None = None, precision: str | None = None,
             compile: bool | None = None, x0: torch.Tensor | None = None,
             start_step: int | None = None) -> torch.Tensor:
    """Images (N, C, H, W) in [-1, 1] on the CPU, one per seed.

    :param zsampler: where z comes from (the prior when None). :param solver: ``ddpm`` (ancestral, I-DDPM
    respacing) or ``ddim`` (eta=0, ``ddimN`` spacing).
    :param precision: fp32 | bf16 | auto (None = the run's ``train.sampling_precision``).
    :param compile: ``torch.compile`` the denoiser (None = the run's ``train.sampling_compile``).
    :param micro_batch: rows per denoiser call (default :data:`dmz.accel.MICRO_BATCH` for the device); see the module
    docstring. :param codes: (N, code_dim) codes to decode instead of drawing z (reconstruction).
    :param x0: (N, C, H, W) images to start from instead of x_T: row i is noised to the respaced step
    ``start_step - 1`` with ``q_sample`` (its noise the first draw of sample i's generator, where x_T would be), then
    denoised over the last ``start_step`` steps (the applications' edits start at 0.9 T). :param start_step: with
    ``x0``: how many of the T respaced steps to run (1..T).
    """
    model, device = run.model, run.device
    check_steps(steps, run.cfg.diffusion.diffusion_steps, solver)
    if len(seeds) < 1:
        raise ValueError("nothing to generate: give at least one seed (--num must be >= 1)")
    if codes is not None and len(codes) != len(seeds):
        raise ValueError(f"codes has {len(codes)} rows but {len(seeds)} seeds were given")
    if (x0 is None) != (start_step is None):
        raise ValueError("x0 and start_step go together: give both (start from noised x0) or neither (from x_T)")
    if x0 is not None and len(x0) != len(seeds):
        raise ValueError(f"x0 has {len(x0)} rows but {len(seeds)} seeds were given")
    zs = zsampler or (build_zsampler("prior", run) if codes is None else None)
    micro = micro_batch or default_micro_batch(device)
    batch_size = max(micro, batch_size // micro * micro)
    dtype, compiled_ = sampling_setup(run, precision=precision, compile=compile)
    denoiser = MicroBatched(compiled(model) if compiled_ else model, micro)
    diffusion = build_diffusion(run.cfg, timestep_respacing=respacing(steps, solver))
    shape = (model.channels, model.resolution, model.resolution)
    loop = diffusion.ddim_sample_loop if solver == "ddim" else diffusion.p_sample_loop
    ctx = autocast(device, dtype)
    out = []
    chunks = [(i, list(seeds[i:i + batch_size])) for i in range(0, len(seeds), batch_size)]
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(seeds), desc=f"sample T={steps}", unit="img", dynamic_ncols=True)
    for start, chunk in chunks:
        z_rng = PerSampleRNG([2 * s + 1 for s in chunk])
        x_rng = PerSampleRNG([2 * s for s in chunk], device=device)
        if codes is None:
            z = zs.sample(len(chunk), z_rng, device)
        else:
            z = codes[start:start + len(chunk)].to(device)
        cond = model.latent.code_to_cond(z)
        kwargs = {} if cond is None else {"cond": cond}
        with ctx:
            if x0 is None:
                x = loop(denoiser, (len(chunk), *shape), model_kwargs=kwargs, rng=x_rng, device=device)
            else:
                t = torch.full((len(chunk),), int(start_step) - 1, dtype=torch.long, device=device)
                x_t = diffusion.q_sample(x0[start:start + len(chunk)].to(device), t,
                                         noise=x_rng.randn(*shape).to(device))
                x = loop(denoiser, (len(chunk), *shape), noise=x_t, model_kwargs=kwargs, rng=x_rng, device=device,
                         start_step=start_step)
        out.append(x.float().clamp(-1, 1).cpu())
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    return torch.cat(out)


SAMPLE_GRID_NUM = 16  # images in a sample grid (4 x 4)
SAMPLE_GRID_T = 10  # denoising steps of a sample grid
SAMPLE_GRID_SEED = 0  # image i of every grid uses sample seed SAMPLE_GRID_SEED + i: frames are comparable


def sample_grid(cfg, model, device, *, num: int = SAMPLE_GRID_NUM, steps: int = SAMPLE_GRID_T,
                seed: int = SAMPLE_GRID_SEED, step: int = 0):
    """Images (N, C, H, W) in [-1, 1] from ``model`` (e.g. the trainer's EMA copy) at ``steps`` denoising steps,
    image i from sample seed ``seed + i`` (same z and x_T at every call: frames of a run are comparable). The model
    is put in eval mode for the call and its previous mode restored. The trainer logs them to TensorBoard
    (:mod:`dmz.tblog`)."""
    was_training = model.training
    model.eval()
    try:
        run = LoadedRun(Path("."), cfg, model, int(step), device)
        # eager fp32: a 16-image grid is not worth compiling the EMA copy inside a training process
        return generate(run, steps=min(steps, cfg.diffusion.diffusion_steps), seeds=sample_seeds(seed, num),
                        precision="fp32", compile=False)
    finally:
        model.train(was_training)


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
