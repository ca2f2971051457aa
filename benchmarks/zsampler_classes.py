"""Which digits does each z-sampler make? Class histograms of generated samples (digits runs only).

    python benchmarks/zsampler_classes.py RUN [RUN ...] [--T 10] [--num-samples 500] [--sampler prior empirical ...]
        [--md benchmarks/results/zsampler_classes.md]

FID mixes image quality with class balance; this separates the second. For each run and z-sampler it generates the
same images the FID of ``evaluation.run`` scores (sampling seed 0: image i uses sample seed i), labels them with
``digits-classifier-v1`` (test accuracy ~0.98) and prints the class shares, the number of classes under 3% of the
samples (each digit is ~10% of the training set) and the total-variation distance to the training split's labels.
No training here: fit PixelSNAIL first for the ``pixelsnail`` sampler.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):  # run by path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dmz.data import to_uint8  # noqa: E402
from dmz.run import load_run  # noqa: E402
from dmz.sampling import generate  # noqa: E402
from dmz.threads import limit_threads  # noqa: E402
from dmz.zsamplers import build_zsampler  # noqa: E402
from evaluation.features import (DIGITS_CLASSIFIER_NAME, DIGITS_LOGITS_LAYER,  # noqa: E402
                                 DigitsClassifierFeatureExtractor, digits_classifier_checkpoint)

RARE = 0.03  # a class under 3% of the samples (a third of its training share) counts as rare


def load_classifier(resolution: int) -> DigitsClassifierFeatureExtractor:
    """digits-classifier-v1 as the FID uses it (cached checkpoint), returning logits for uint8 images."""
    path, _ = digits_classifier_checkpoint()
    return DigitsClassifierFeatureExtractor(DIGITS_CLASSIFIER_NAME, [DIGITS_LOGITS_LAYER],
                                            feature_extractor_weights_path=str(path))


@torch.no_grad()
def class_shares(net: DigitsClassifierFeatureExtractor, images_uint8: torch.Tensor) -> np.ndarray:
    logits = net(images_uint8)[0]
    return np.bincount(logits.argmax(1).numpy(), minlength=10) / len(images_uint8)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path)
    p.add_argument("--T", type=int, default=10)
    p.add_argument("--num-samples", type=int, default=500)
    p.add_argument("--sampler", nargs="+", default=["prior", "empirical", "dataset", "pixelsnail"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--md", type=Path, help="also write the table here (Markdown)")
    args = p.parse_args(argv)
    limit_threads(args.threads)
    head = ("| run | sampler | " + " | ".join(str(c) for c in range(10))
            + f" | classes < {RARE:.0%} | TV to train labels |")
    lines = [head, "|---|---|" + "---:|" * 12]
    net, train_shares = None, None
    for run_dir in args.runs:
        run = load_run(run_dir, device="cpu")
        if run.cfg.data.dataset != "digits":
            print(f"{run_dir}: not a digits run, skipped", file=sys.stderr)
            continue
        if net is None:
            net = load_classifier(run.cfg.data.resolution)
            labels = np.array([int(y) for _, y in run.dataset("train")])
            train_shares = np.bincount(labels, minlength=10) / len(labels)
            lines.append("| (training split labels) | | " + " | ".join(f"{s:.2f}" for s in train_shares)
                         + f" | {int((train_shares < RARE).sum())} | 0 |")
        for spec in args.sampler:
            t0 = time.perf_counter()
            try:
                zs = build_zsampler(spec, run)
            except Exception as e:  # e.g. pixelsnail not fitted
                print(f"{run_dir.name} {spec}: skipped ({e})", file=sys.stderr)
                continue
            imgs = generate(run, steps=args.T, seeds=list(range(args.num_samples)), zsampler=zs)
            shares = class_shares(net, to_uint8(imgs))
            tv = 0.5 * float(np.abs(shares - train_shares).sum())
            lines.append(f"| {run_dir.name.split('-digits')[0]} | {spec} | " + " | ".join(f"{s:.2f}" for s in shares)
                         + f" | {int((shares < RARE).sum())} | {tv:.3f} |")
            print(lines[-1], f"({time.perf_counter() - t0:.0f} s)", flush=True)
    text = "\n".join(lines)
    print(text)
    if args.md:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(f"# Class shares of generated digits per z-sampler\n\nWritten by `python "
                           f"benchmarks/zsampler_classes.py` (T={args.T}, N={args.num_samples}, sampling seed 0, "
                           f"labels from digits-classifier-v1).\n\n{text}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
