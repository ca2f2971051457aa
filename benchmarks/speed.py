"""Training and sampling speed: ours against the reference stack and against the machine, side by side in one run.

    python benchmarks/speed.py --compare                      # digits preset, this machine's threads; records a file
    python benchmarks/speed.py --compare --variants           # also every precision x compile option of ours
    python benchmarks/speed.py --compare --preset cifar10 --batch 4 --rounds 3

**Reference stack** (what the release runs): the same diffusers ``UNet2DConditionModel``, eager, ``torch.optim.AdamW``
with its defaults, MSE on the output, a fixed z token; sampling is a plain ancestral I-DDPM loop over the same
respaced T with learned variance, one UNet call per step on the whole batch. fp32 on CPU, fp16 autocast (with loss
scaling) on CUDA. **Ours**: the real ``Trainer`` step (batch, per-step randomness, prior + UNet + hybrid loss,
loss-second-moment sampler, clipping, AdamW, EMA) and ``dmz.sampling.generate`` as evaluation calls it (its default
micro-batch: the denoiser runs on fixed pieces of 32 rows on CPU, 256 on CUDA), each with the preset's execution
options (``train.precision``/``train.compile``, ``train.sampling_precision``/``train.sampling_compile``,
``train.cross_attention_shortcut``; the reference always runs diffusers' own attention and trains every parameter).

Method: both sides are built in one process with the same weights and batch; warm-up calls (compilation included)
are excluded from the rates and reported on their own; then ``--rounds`` rounds alternate between the sides, and a
ratio is the median of the per-round ratios (pairs taken seconds apart, so a busy neighbour slows both). **MFU**: model
FLOPs per step (``torch.utils.flop_counter``, one reference step: forward + backward) over the fp32 matmul peak
measured in the same run (a 2048^3 GEMM on the same threads). The last line printed is JSON with ``train_ratio`` and
``sample_ratio`` (ours / reference images per second). Not a test: the numbers describe the machine it ran on, which
the recorded file names.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _sync(device):
    import torch
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device, dtype, n: int = 2048, reps: int = 5) -> float:
    """FLOP/s of an n^3 GEMM on ``device`` (median of ``reps``)."""
    import torch
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    ts = []
    for _ in range(reps):
        _sync(device)
        t0 = time.perf_counter()
        a @ b
        _sync(device)
        ts.append(time.perf_counter() - t0)
    return 2 * n ** 3 / statistics.median(ts)


class Reference:
    """The release's way: eager UNet, AdamW, MSE on the output; a plain ancestral loop for sampling."""

    def __init__(self, cfg, model, device):
        import copy

        import torch
        self.torch = torch
        from diffusers.models.attention_processor import AttnProcessor2_0

        self.unet = copy.deepcopy(model.unet).to(device)
        # diffusers' own attention everywhere and every parameter trained, as released (ours may use the exact
        # single-token cross-attention, train.cross_attention_shortcut)
        self.unet.set_attn_processor(AttnProcessor2_0())
        self.unet.requires_grad_(True)
        self.methods = model.methods  # how z reaches the UNet (cross-attention token, class embedding)
        self.device, self.cfg = device, cfg
        self.cond_dim = model.latent.cond_dim
        self.cuda = device.type == "cuda"
        self.opt = torch.optim.AdamW(self.unet.parameters(), lr=cfg.train.lr)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.cuda)
        self.channels, self.resolution = model.channels, model.resolution

    def _kwargs(self, b):
        """A fixed random z for the batch, passed the way the model's conditioning methods pass it."""
        kw = {"encoder_hidden_states": None}
        if self.cond_dim:
            z = self.torch.rand(b, self.cond_dim, device=self.device)
            for m in self.methods:
                kw.update(m.forward_kwargs(z))
        return kw

    def train_step(self, x):
        torch = self.torch
        b = x.shape[0]
        t = torch.randint(0, self.cfg.diffusion.diffusion_steps, (b,), device=self.device)
        noise = torch.randn_like(x)
        with torch.autocast("cuda", dtype=torch.float16, enabled=self.cuda):
            out = self.unet(x + noise, t, return_dict=False, **self._kwargs(b))[0]
            loss = torch.nn.functional.mse_loss(out[:, : self.channels].float(), noise)
        self.opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()

    @staticmethod
    def coefficients(diffusion, device):
        import torch
        f = lambda a: torch.tensor(a, dtype=torch.float32, device=device)  # noqa: E731
        return {"map": diffusion.timestep_map.to(device), "recip": f(diffusion.sqrt_recip_alphas_cumprod),
                "recipm1": f(diffusion.sqrt_recipm1_alphas_cumprod), "c1": f(diffusion.posterior_mean_coef1),
                "c2": f(diffusion.posterior_mean_coef2), "minlog": f(diffusion.posterior_log_variance_clipped),
                "maxlog": f(__import__("numpy").log(diffusion.betas))}

    def sample(self, n, diffusion):
        torch = self.torch
        k = self.coefficients(diffusion, self.device)
        x = torch.randn(n, self.channels, self.resolution, self.resolution, device=self.device)
        kw = self._kwargs(n)
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16, enabled=self.cuda):
            for i in reversed(range(diffusion.num_timesteps)):
                t = torch.full((n,), i, device=self.device, dtype=torch.long)
                out = self.unet(x, k["map"][t], return_dict=False, **kw)[0].float()
                eps, v = out[:, : self.channels], out[:, self.channels:]
                x0 = (k["recip"][i] * x - k["recipm1"][i] * eps).clamp(-1, 1)
                mean = k["c1"][i] * x0 + k["c2"][i] * x
                frac = (v + 1) / 2
                logvar = frac * k["maxlog"][i] + (1 - frac) * k["minlog"][i]
                x = mean + (torch.exp(0.5 * logvar) * torch.randn_like(x) if i > 0 else 0)
        return x


def build(cfg, device, workdir):
    """(Trainer, Reference, LoadedRun) sharing the same initial UNet weights."""
    import torch

    from dmz.run import LoadedRun
    from dmz.trainer import Trainer

    trainer = Trainer(cfg, Path(workdir) / "run", progress=False)
    ref = Reference(cfg, trainer.model, device)
    run = LoadedRun(Path(workdir), cfg, trainer.ema.eval(), 0, device)
    torch.manual_seed(0)
    return trainer, ref, run


def measure(cfg, device, *, batch: int, steps_T: list[int], rounds: int, iters: int, n_sample: int,
            micro_batch: int | None = None) -> dict:
    """One row of rates and ratios for ``cfg``'s options (ours) against the reference; ours samples in
    ``micro_batch`` pieces (None: ``generate``'s default for the device)."""

    from dmz.accel import precision_name
    from dmz.model import build_diffusion
    from dmz.accel import default_micro_batch
    from dmz.sampling import generate, respacing, sampling_setup

    micro_batch = micro_batch or default_micro_batch(device)
    with tempfile.TemporaryDirectory() as tmp:
        trainer, ref, run = build(cfg, device, tmp)
        shape = (trainer.model.channels, trainer.model.resolution, trainer.model.resolution)
        batches = trainer.batches()
        x_ref = next(trainer.batches()).to(device)

        def ours_train():
            for _ in range(iters):
                x0 = next(batches).to(device, non_blocking=True)
                trainer.train_step(x0, trainer.step_randomness(trainer.step, shape))
            trainer.meter.means()  # what a log step reads (once per iters steps here; log_every in training)
            _sync(device)

        def ref_train():
            for _ in range(iters):
                ref.train_step(x_ref)
            _sync(device)

        dtype, compiled = sampling_setup(run)
        seeds = list(range(n_sample))

        def ours_sample(T):
            generate(run, steps=T, seeds=seeds, batch_size=n_sample, micro_batch=micro_batch)
            _sync(device)

        diffs = {T: build_diffusion(cfg, timestep_respacing=respacing(T)) for T in steps_T}

        def ref_sample(T):
            ref.sample(n_sample, diffs[T])
            _sync(device)

        fns = {"ours_train": ours_train, "ref_train": ref_train,
               **{f"ours_sample_T{T}": (lambda T=T: ours_sample(T)) for T in steps_T},
               **{f"ref_sample_T{T}": (lambda T=T: ref_sample(T)) for T in steps_T}}
        warm = {}
        for name, fn in fns.items():  # first calls: compilation, caches, allocator; reported, not rated
            t0 = time.perf_counter()
            fn()
            warm[name] = time.perf_counter() - t0
        times: dict[str, list[float]] = {k: [] for k in fns}
        for r in range(rounds):
            order = list(fns) if r % 2 == 0 else list(reversed(fns))  # alternate who goes first
            for name in order:
                t0 = time.perf_counter()
                fns[name]()
                times[name].append(time.perf_counter() - t0)

        # FLOPs of one reference training step (forward + backward of the UNet)
        from torch.utils.flop_counter import FlopCounterMode
        with FlopCounterMode(display=False) as fc:
            ref.train_step(x_ref)
        flops_step = fc.get_total_flops()

    def rate(name, images):
        return images / statistics.median(times[name])

    def ratio(a, b):  # median of per-round ratios: b's time / a's time (a faster -> > 1)
        return statistics.median(tb / ta for ta, tb in zip(times[a], times[b]))

    row = {"train_precision": cfg.train.precision, "train_compile": cfg.train.compile,
           "sampling_precision": cfg.train.sampling_precision, "sampling_compile": cfg.train.sampling_compile,
           "cross_attention_shortcut": cfg.train.cross_attention_shortcut,
           "train_img_s": rate("ours_train", batch * iters), "ref_train_img_s": rate("ref_train", batch * iters),
           "train_ratio": ratio("ours_train", "ref_train"),
           "train_warmup_s": warm["ours_train"], "ref_train_warmup_s": warm["ref_train"],
           "flops_per_train_step": flops_step,
           "train_flop_s": flops_step * iters / statistics.median(times["ours_train"]),
           "ref_train_flop_s": flops_step * iters / statistics.median(times["ref_train"])}
    for T in steps_T:
        row[f"sample_img_s_T{T}"] = rate(f"ours_sample_T{T}", n_sample)
        row[f"ref_sample_img_s_T{T}"] = rate(f"ref_sample_T{T}", n_sample)
        row[f"sample_ratio_T{T}"] = ratio(f"ours_sample_T{T}", f"ref_sample_T{T}")
        row[f"sample_warmup_s_T{T}"] = warm[f"ours_sample_T{T}"]
    row["sample_ratio"] = statistics.median(row[f"sample_ratio_T{T}"] for T in steps_T)
    row["precision_used"] = {"train": precision_name(trainer.amp_dtype), "sampling": precision_name(dtype),
                             "sampling_compile": compiled, "sampling_micro_batch": micro_batch}
    return row


def machine(device, threads: int) -> dict:
    import torch

    from dmz.accel import bf16_supported
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"host": platform.node(), "device": str(device),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None, "cpu": cpu,
            "cores": os.cpu_count(), "torch_threads": threads, "bf16_hardware": bf16_supported(device),
            "torch": torch.__version__, "python": platform.python_version(),
            "load_avg_start": os.getloadavg()[0], "date": time.strftime("%Y-%m-%d %H:%M")}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/speed.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--compare", action="store_true", help="ours against the reference stack (the only mode)")
    p.add_argument("--preset", default="digits")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config overrides for ours (e.g. compile=true, sampling_precision=bf16)")
    p.add_argument("--variants", action="store_true",
                   help="also measure every precision (fp32, bf16 where supported) x compile option of ours, and "
                   "the preset with diffusers' cross-attention (train.cross_attention_shortcut=false)")
    p.add_argument("--batch", type=int, default=None, help="training and sampling batch (default: digits 64, "
                   "others 4 on CPU; the preset's on CUDA)")
    p.add_argument("--T", nargs="+", type=int, default=[10, 100], dest="steps_T")
    p.add_argument("--micro-batch", type=int, default=None, help="rows per denoiser call when ours samples "
                   "(default: generate's default for the device, 32 on CPU, as evaluation runs it)")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--iters", type=int, default=4, help="training steps per timed call")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", default=None, help="record file (default benchmarks/results/speed_compare_<preset>_"
                   "<device>_<threads>t.md)")
    args = p.parse_args(argv)
    if not args.compare:
        p.error("use --compare (ours against the reference stack)")

    import torch

    from dmz.config import resolve
    from dmz.distributed import resolve_device
    from dmz.accel import bf16_supported
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    cuda = device.type == "cuda"
    batch = args.batch or (None if cuda else (64 if args.preset == "digits" else 4))
    sets = [*args.overrides, "logger=none", "data_root=unused", f"device={device}"]
    if batch:
        sets.append(f"batch_size={batch}")
    base = resolve(args.preset, sets)
    batch = base.train.batch_size
    info = machine(device, torch.get_num_threads())
    print(json.dumps(info), flush=True)
    peak = {"fp32": matmul_peak(device, torch.float32)}
    if bf16_supported(device):
        peak["bf16"] = matmul_peak(device, torch.bfloat16)
    print(json.dumps({"matmul_peak_flop_s": peak}), flush=True)

    configs = [("preset", base)]
    if args.variants:
        for prec in ["fp32", "bf16"] if bf16_supported(device) else ["fp32"]:
            for comp in (False, True):
                name = f"{prec}{'+compile' if comp else ''}"
                cfg = resolve(args.preset, [*sets, f"precision={prec}", f"compile={comp}",
                                            f"sampling_precision={prec}", f"sampling_compile={comp}"])
                if cfg != base:  # the preset's own options are measured once
                    configs.append((name, cfg))
        if base.train.cross_attention_shortcut:  # before/after of the exact single-token cross-attention
            configs.append(("preset, diffusers cross-attention",
                            resolve(args.preset, [*sets, "cross_attention_shortcut=false"])))
    rows = []
    n_sample = batch
    for name, cfg in configs:
        row = {"variant": name, **measure(cfg, device, batch=batch, steps_T=args.steps_T, rounds=args.rounds,
                                          iters=args.iters, n_sample=n_sample, micro_batch=args.micro_batch)}
        row["mfu_fp32_peak"] = row["train_flop_s"] / peak["fp32"]
        row["ref_mfu_fp32_peak"] = row["ref_train_flop_s"] / peak["fp32"]
        print(json.dumps(row), flush=True)
        rows.append(row)
    info["load_avg_end"] = os.getloadavg()[0]

    lines = [f"# Speed: ours vs the reference stack ({args.preset}, batch {batch})", "",
             "Machine: " + ", ".join(f"{k} {v}" for k, v in info.items()), "",
             f"Command: `python benchmarks/speed.py {' '.join(sys.argv[1:] if argv is None else argv)}`", "",
             "Matmul peak (2048^3 GEMM): " + ", ".join(f"{k} {v / 1e9:.1f} GFLOP/s" for k, v in peak.items()),
             f"; FLOPs per training step (forward + backward, flop_counter): {rows[0]['flops_per_train_step'] / 1e9:.2f} G",
             "", "| ours: variant (train / sampling) | train img/s | reference | **train ratio** | MFU ours / ref | "
             "warm-up s (ours / ref) | " + " | ".join(f"sample img/s T={T} (ours / ref, ratio)" for T in args.steps_T)
             + " | sample warm-up s |",
             "|---|---:|---:|---:|---:|---:|" + "---:|" * len(args.steps_T) + "---:|"]
    for r in rows:
        u = r["precision_used"]
        label = (f"{r['variant']}: {u['train']}{' compiled' if r['train_compile'] else ''} / "
                 f"{u['sampling']}{' compiled' if u['sampling_compile'] else ''}, micro-batch "
                 f"{u['sampling_micro_batch']}{', cross-attention shortcut' if r['cross_attention_shortcut'] else ''}")
        lines.append(
            f"| {label} | {r['train_img_s']:.0f} | {r['ref_train_img_s']:.0f} | **{r['train_ratio']:.2f}** | "
            f"{r['mfu_fp32_peak']:.1%} / {r['ref_mfu_fp32_peak']:.1%} | {r['train_warmup_s']:.1f} / "
            f"{r['ref_train_warmup_s']:.1f} | "
            + " | ".join(f"{r[f'sample_img_s_T{T}']:.3g} / {r[f'ref_sample_img_s_T{T}']:.3g} "
                         f"(**{r[f'sample_ratio_T{T}']:.2f}**)" for T in args.steps_T)
            + " | " + ", ".join(f"{r[f'sample_warmup_s_T{T}']:.1f}" for T in args.steps_T) + " |")
    text = "\n".join(lines) + "\n"
    print(text)
    tag = f"{args.preset}_{device.type}_{torch.get_num_threads()}t"
    out = Path(args.out) if args.out else Path(__file__).parent / "results" / f"speed_compare_{tag}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    summary = {"train_ratio": rows[0]["train_ratio"], "sample_ratio": rows[0]["sample_ratio"],
               "train_img_s": rows[0]["train_img_s"], "ref_train_img_s": rows[0]["ref_train_img_s"],
               "mfu": rows[0]["mfu_fp32_peak"], "variants": {r["variant"]: {k: r[k] for k in (
                   "train_ratio", "sample_ratio")} for r in rows}, "record": str(out)}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
