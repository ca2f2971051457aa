"""What an evaluation costs: seconds per 1,000 generated images at each T, and feature extraction / FID / probe time.

    python benchmarks/eval_cost.py                                  # digits preset on CPU (1 thread)
    python benchmarks/eval_cost.py --preset cifar10 --device cuda --images 1024 \
        --out benchmarks/results/eval_cost_cifar10_cuda.md

Speed does not depend on what the weights are, so the digits run is trained for a couple of steps only (other
presets get an untrained run folder: their data need not be present). Generation is timed on ``--images`` images
per T (after a warm-up call) and scaled to 1,000; feature extraction and FID are timed on 1,000 images. Writes a
markdown table to ``--out`` (default ``benchmarks/results/eval_cost.md``) and prints it.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import dmz  # noqa: E402
import dmz.config  # noqa: E402
from dmz.data import to_uint8  # noqa: E402
from dmz.model import build_model  # noqa: E402
from dmz.run import load_run  # noqa: E402
from dmz.runio import CHECKPOINT, CONFIG, atomic_torch_save, atomic_write_json  # noqa: E402
from dmz.accel import default_micro_batch  # noqa: E402
from dmz.sampling import generate  # noqa: E402


def make_run(preset: str, out: Path, device: str) -> Path:
    if preset == "digits":
        import dmz.trainer

        cfg = dmz.config.resolve("digits", {"steps": 2, "log_every": 1, "warmup_steps": 0, "device": device})
        dmz.trainer.train(cfg, out, progress=False)
        return out
    cfg = dmz.config.resolve(preset)
    sd = build_model(cfg).state_dict()
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / CONFIG, cfg.to_dict())
    atomic_torch_save({"model": sd, "ema": sd, "step": 0}, out / CHECKPOINT)
    return out


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def timed(fn, sync):
    """``(result, wall seconds)``; the process CPU seconds of the call are kept in ``timed.cpu``."""
    sync()
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    sync()
    timed.cpu = time.process_time() - c0
    return out, time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="digits")
    p.add_argument("--steps", type=int, nargs="+", default=[10, 20, 50, 100])
    p.add_argument("--images", type=int, default=64, help="images generated per T (timing scaled to 1,000)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--micro-batch", type=int, default=None)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "eval_cost.md"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cuda = args.device.startswith("cuda")
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    rows: list[tuple[str, str, str, str]] = []  # (what, wall seconds, CPU seconds, note)

    def add(what, secs, note="", scale=1.0):
        rows.append((what, f"{secs * scale:.2f}", f"{timed.cpu * scale:.2f}", note))
        print(rows[-1], flush=True)

    with tempfile.TemporaryDirectory(prefix="dmz-evalcost-") as tmp:
        os.environ["DMZ_CACHE_DIR"] = str(Path(tmp) / "cache")  # cold caches: classifier and reference timed
        run = load_run(make_run(args.preset, Path(tmp) / "run", args.device), device=args.device)
        micro = args.micro_batch or default_micro_batch(run.device)
        kw = dict(batch_size=args.batch_size, micro_batch=micro)
        if args.images % micro:
            print(f"note: --images {args.images} is not a multiple of the micro-batch {micro}: the padded tail "
                  "inflates the per-image cost", file=sys.stderr)
        generate(run, steps=2, seeds=range(min(args.images, micro)), **kw)  # warm-up
        per_1k, cpu_1k = {}, {}
        for T in args.steps:
            imgs, s = timed(lambda: generate(run, steps=T, seeds=range(args.images), **kw), sync)
            per_1k[T] = s / args.images * 1000
            cpu_1k[T] = timed.cpu / args.images * 1000
            add(f"generate 1,000 images, T={T}", s, f"measured on {args.images} images: {s:.2f}s wall "
                f"({s / args.images / T * 1e3:.2f} ms/image/step)", scale=1000 / args.images)

        d = run.cfg.data
        from evaluation.features import default_feature_extractor, extract_features, get_feature_extractor

        name = default_feature_extractor(d.dataset)
        try:
            (ext, s_build) = timed(lambda: get_feature_extractor(name, dataset=d.dataset, device=args.device), sync)
        except Exception as e:  # e.g. Inception weights not present offline
            rows.append((f"feature extractor {name}", "n/a", "n/a", f"{type(e).__name__}: {str(e)[:120]}"))
            ext = None
        if ext is not None:
            note = "train the classifier (first use; cached after)" if name.startswith("digits") else "load"
            add(f"build {name}", s_build, note)
            u8 = to_uint8(imgs)
            u8 = u8.repeat((1000 + len(u8) - 1) // len(u8), 1, 1, 1)[:1000]
            extract_features(ext, u8[:64])  # warm-up
            _, s = timed(lambda: extract_features(ext, u8), sync)
            add(f"feature extraction, 1,000 images ({name})", s)
            from evaluation.fid import metrics_against_reference, reference_stats

            try:
                ref, s = timed(lambda: reference_stats(d.dataset, "train", extractor=ext, root=d.data_root,
                                                       resolution=d.resolution, device=args.device), sync)
                add(f"reference stats, whole {d.dataset} train split ({ref.meta['n_images']} images)", s,
                    "computed once, then cached")
                _, s = timed(lambda: metrics_against_reference(u8, ref, ext), sync)
                add("FID of 1,000 images via torch-fidelity (extraction + statistics)", s)
            except Exception as e:  # dataset not present
                rows.append(("reference stats", "n/a", "n/a", f"{type(e).__name__}: {str(e)[:120]}"))
        if d.dataset == "digits":
            from dmz.run import representations
            from evaluation.probe import probe_cv, probe_heldout

            def probe():
                xtr, ytr = representations(run, "train", "soft")
                xte, yte = representations(run, "test", "soft")
                x, y = torch.cat([xtr, xte]).numpy(), torch.cat([ytr, yte]).numpy()
                for m in ("accuracy", "auroc"):
                    probe_cv(x, y, metric=m)
                    probe_heldout(xtr.numpy(), ytr.numpy(), xte.numpy(), yte.numpy(), metric=m)

            _, s = timed(probe, sync)
            add("probes: soft features of 1,797 images + 5-fold CV and held-out, accuracy and AUROC", s)
        n_default, k_default = (1000, 3) if d.dataset == "digits" else (10_000, 1)
        est = sum(per_1k[T] for T in args.steps) * n_default / 1000 * k_default
        est_cpu = sum(cpu_1k[T] for T in args.steps) * n_default / 1000 * k_default
        rows.append((f"estimate: FID generation at T={','.join(map(str, args.steps))}, N={n_default:,} x {k_default} "
                     f"seed(s) (the default request)", f"{est:.0f}", f"{est_cpu:.0f}",
                     f"{est / 60:.1f} min wall ({est_cpu / 60:.1f} min CPU), generation only"))

    load = " / ".join(f"{v:.1f}" for v in os.getloadavg())
    dev = torch.cuda.get_device_name(0) if cuda else f"{cpu_name()}, {args.threads} thread(s)"
    params = sum(p.numel() for p in run.model.parameters())
    head = (f"# Evaluation cost ({args.preset} preset)\n\n"
            f"Written by `python benchmarks/eval_cost.py {' '.join(argv if argv is not None else sys.argv[1:])}`"
            f" on {time.strftime('%Y-%m-%d')}.\n\n"
            f"* device: {dev}; torch {torch.__version__}; dmz {dmz.__version__}\n"
            f"* model: {params / 1e6:.2f} M parameters, {run.model.resolution}x{run.model.resolution}x"
            f"{run.model.channels}; ancestral DDPM sampling, EMA weights, micro-batch {micro}, fp32\n"
            f"* generation seconds scale linearly with T and N (cost per image per step is constant)\n"
            f"* {os.cpu_count()} CPU cores on this machine, shared with other jobs while it ran (load average "
            f"{load}): wall seconds include waiting for a core; CPU seconds (this process) are closer to an idle "
            f"machine's wall time with 1 thread\n\n")
    table = ("| what | wall s | CPU s | note |\n|---|---:|---:|---|\n"
             + "".join(f"| {a} | {b} | {c} | {d} |\n" for a, b, c, d in rows))
    text = head + table
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print("\n" + text)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
