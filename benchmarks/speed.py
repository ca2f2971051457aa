"""Training images/s and sampling images/s per T, for the digits preset and the CIFAR-10 preset at a small batch.

    python benchmarks/speed.py                       # both presets, writes benchmarks/results/speed.md
    python benchmarks/speed.py --presets digits --steps 10 20 50 100

Measures the real Trainer step (prior + UNet + hybrid loss + AdamW + EMA) on synthetic batches of the preset's shape,
and dmz.sample.generate on a freshly initialised model (speed does not depend on the weights). Warm-up iterations are
excluded. Not a test: numbers depend on the machine; the file records where they were taken.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dmz.config import resolve  # noqa: E402
from dmz.distributed import resolve_device  # noqa: E402
from dmz.model import build_model  # noqa: E402
from dmz.run import LoadedRun  # noqa: E402
from dmz.sample import generate  # noqa: E402
from dmz.train import DiffusionLoss, diffusion_from_config  # noqa: E402


def train_speed(cfg, device, iters: int, warmup: int) -> float:
    model = build_model(cfg).to(device)
    loss_fn = DiffusionLoss(model, diffusion_from_config(cfg))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, **({"fused": True} if device.type == "cuda" else {}))
    amp = device.type == "cuda"
    b, c, r = cfg.train.batch_size, model.channels, model.resolution
    x = torch.rand(b, c, r, r, device=device) * 2 - 1
    spec = model.prior.noise_spec()
    for i in range(warmup + iters):
        if i == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
        t = torch.randint(0, 1000, (b,), device=device)
        pn = torch.rand(b, *spec.shape, device=device) if spec else None
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            losses, aux, _ = loss_fn(x, t, torch.randn_like(x), torch.randn_like(x), pn)
        opt.zero_grad(set_to_none=True)
        (losses["loss"].mean() + aux).backward()
        opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return b * iters / (time.perf_counter() - t0)


def sample_speed(cfg, device, steps: int, n: int, batch: int) -> float:
    model = build_model(cfg).to(device).eval()
    run = LoadedRun(Path("."), cfg, model, 0, device)
    kw = dict(batch_size=batch, micro_batch=min(n, batch))  # denoiser calls of the full batch, no padding
    generate(run, steps=2, seeds=range(min(n, batch)), **kw)  # warm-up
    t0 = time.perf_counter()
    generate(run, steps=steps, seeds=range(n), amp=device.type == "cuda", **kw)
    return n / (time.perf_counter() - t0)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", nargs="+", default=["digits", "cifar10"])
    p.add_argument("--steps", nargs="+", type=int, default=[10, 20, 50, 100])
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=str(Path(__file__).parent / "results" / "speed.md"))
    args = p.parse_args()
    device = resolve_device(args.device)
    # small batches on CPU so the CIFAR-10 preset (68.6 M parameters) finishes in minutes
    sizes = {"digits": dict(batch=64, iters=20, n=256), "cifar10": dict(batch=4, iters=3, n=4)}
    if device.type == "cuda":
        sizes = {"digits": dict(batch=256, iters=50, n=2048), "cifar10": dict(batch=128, iters=20, n=512)}
    rows = []
    for preset in args.presets:
        s = sizes.get(preset, sizes["cifar10"])
        cfg = resolve(preset, {"batch_size": s["batch"], "data_root": "unused"})
        row = {"preset": preset, "batch": s["batch"],
               "train_img_s": round(train_speed(cfg, device, s["iters"], warmup=2), 2)}
        for T in args.steps:
            row[f"sample_img_s_T{T}"] = round(sample_speed(cfg, device, T, s["n"], s["batch"]), 2)
        print(json.dumps(row), flush=True)
        rows.append(row)
    where = (f"{platform.node()} | {device} | torch {torch.__version__} | {torch.get_num_threads()} CPU threads | "
             f"{time.strftime('%Y-%m-%d')}")
    cols = list(rows[0])
    lines = [f"Measured on: {where}", "", "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in rows]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
