"""Interpolation between two test images through the binary latent (PAPER.md 1.10; the paper's Figure 6a).

For a pair (x1, x2) with hard codes z1, z2 (``dmz.run.encode_split`` of the test split) differing in d bits, every
method makes d + 1 frames, all decoded with the same noise (one seed per pair), so neighbouring frames differ only in
the code:

``index``    flip the differing bits one at a time in index order (released);
``random``   the same in a random order (seeded per pair; released);
``smooth``   greedy "smoothest next flip" (released): frame k flips, among the bits still to flip, the one whose flip
             gives the lowest BCE of the code under the blend (1 - k/d) q(z|x1) + (k/d) q(z|x2);
``relaxed``  no flips: the UNet gets the relaxed code (1 - k/d) q(z|x1) + (k/d) q(z|x2) (the per-bit probabilities,
             as the pair (1 - p, p) that training feeds it);
``xtP``      (P = 10, 30, 50, 70, 90) the ``index`` codes decoded from x1 noised to P% of T instead of from x_T: how
             much of the change the code still makes once the image is partly fixed (released t levels; which image
             is noised is our reading: the first).

Smoothness, per method, in the run's FID feature space (digits: digits-classifier-v1's standardised penultimate
layer): distances between neighbouring frames, their mean and max per pair, ``max / mean`` (1 = evenly spaced), the
distance between the end frames and the path length over that distance (1 = a straight path), averaged over pairs.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from dmz.apps.common import (AppError, Features, decode, feature_distance, load_binary_run, save_rows, soft_probs,
                             write_scores)
from dmz.run import encode_split, split_images
from dmz.runio import repo_relative

XT_LEVELS = (10, 30, 50, 70, 90)
METHODS = ("index", "random", "smooth", "relaxed") + tuple(f"xt{p}" for p in XT_LEVELS)


def choose_pairs(codes: torch.Tensor, labels: torch.Tensor, n: int, seed: int = 0) -> list[tuple[int, int]]:
    """``n`` distinct pairs of test indices, seeded: each image in a random order is paired with the next one (in that
    order) whose code differs and, for class labels, whose label differs. AppError when there are not enough."""
    perm = torch.randperm(len(codes), generator=torch.Generator().manual_seed(seed)).tolist()
    pairs, seen = [], set()
    class_labels = labels.dim() == 1 and bool((labels >= 0).all())
    for a, i in enumerate(perm):
        if len(pairs) == n:
            break
        for j in perm[a + 1:] + perm[:a]:
            if frozenset((i, j)) in seen or torch.equal(codes[i], codes[j]):
                continue
            if class_labels and labels[i] == labels[j]:
                continue
            pairs.append((i, j))
            seen.add(frozenset((i, j)))
            break
    if len(pairs) < n:
        raise AppError(f"only {len(pairs)} test pairs with different codes exist; asked for --pairs {n}")
    return pairs


def check_pairs(pairs: list[tuple[int, int]], codes: torch.Tensor) -> None:
    n = len(codes)
    for i, j in pairs:
        if not (0 <= i < n and 0 <= j < n):
            raise AppError(f"pair {i},{j} does not exist: test indices run from 0 to {n - 1}")
        if i == j or torch.equal(codes[i], codes[j]):
            raise AppError(f"pair {i},{j}: the two test images have the same code, so there is nothing to interpolate")


def flip_path(z1: torch.Tensor, order: list[int]) -> torch.Tensor:
    """Frames (len(order) + 1, L): z1, then z1 with order[:k] flipped."""
    frames = [z1.clone()]
    for j in order:
        nxt = frames[-1].clone()
        nxt[j] = 1 - nxt[j]
        frames.append(nxt)
    return torch.stack(frames)


def smooth_order(z1: torch.Tensor, z2: torch.Tensor, p1: torch.Tensor, p2: torch.Tensor) -> list[int]:
    """Greedy order of the differing bits: step k flips the bit whose flip lowers (or raises least) the BCE of the
    code under (1 - k/d) p1 + (k/d) p2 (BCE is a sum over bits, so only the flipped bit's term changes)."""
    remaining = (z1 != z2).nonzero().flatten().tolist()
    d, cur, order = len(remaining), z1.clone().double(), []
    for k in range(1, d + 1):
        lam = k / d
        t = ((1 - lam) * p1 + lam * p2).double().clamp(1e-6, 1 - 1e-6)
        def term(b, j):
            return -(b * t[j].log() + (1 - b) * (1 - t[j]).log())
        delta = [float(term(1 - cur[j], j) - term(cur[j], j)) for j in remaining]
        j = remaining.pop(int(np.argmin(delta)))
        cur[j] = 1 - cur[j]
        order.append(j)
    return order


def frames_for(method: str, z1, z2, p1, p2, seed: int) -> torch.Tensor:
    diff = (z1 != z2).nonzero().flatten().tolist()
    d = len(diff)
    if method in ("index",) or method.startswith("xt"):
        return flip_path(z1, diff)
    if method == "random":
        perm = torch.randperm(d, generator=torch.Generator().manual_seed(seed)).tolist()
        return flip_path(z1, [diff[i] for i in perm])
    if method == "smooth":
        return flip_path(z1, smooth_order(z1, z2, p1, p2))
    if method == "relaxed":
        lam = torch.linspace(0, 1, d + 1)[:, None]
        return (1 - lam) * p1[None] + lam * p2[None]
    raise AppError(f"unknown interpolation method {method!r}; valid: {', '.join(METHODS)}")


def smoothness(feats: np.ndarray) -> dict:
    steps = feature_distance(feats[1:], feats[:-1])
    end = float(feature_distance(feats[-1:], feats[:1])[0])
    mean = float(steps.mean())
    return {"mean_step": mean, "max_step": float(steps.max()), "max_over_mean": float(steps.max() / max(mean, 1e-12)),
            "endpoint_dist": end, "path_over_endpoint": float(steps.sum() / max(end, 1e-12))}


def interpolate(run_dir, out: Path, *, pairs: int = 8, pair: list[tuple[int, int]] | None = None, steps: int = 100,
                methods=METHODS, seed: int = 0, device: str = "cpu", log=print) -> dict:
    """Run the interpolation study; writes ``<out>/<method>.png`` strips and ``<out>/scores.json``."""
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise AppError(f"unknown interpolation method {bad[0]!r}; valid: {', '.join(METHODS)}")
    run = load_binary_run(run_dir, device)
    codes, labels = encode_split(run, "test")
    if pair:
        check_pairs(pair, codes)
        chosen = list(pair)
    else:
        if pairs < 1:
            raise AppError(f"--pairs must be >= 1, got {pairs}")
        chosen = choose_pairs(codes, labels, pairs, seed)
    x, _ = split_images(run)
    probs = soft_probs(run, x)
    feats_of = Features(run.cfg.data.dataset, run.cfg.data.resolution, run.cfg.data.data_root)
    out = Path(out)
    scores = {"app": "interpolate", "run": repo_relative(run.path), "run_id": run.cfg.run_id(), "step": run.step, "T": steps,
              "seed": seed, "pairs": [list(p) for p in chosen], **feats_of.row_fields(),
              "hamming": [int((codes[i] != codes[j]).sum()) for i, j in chosen], "methods": {}}
    for method in methods:
        t0 = time.perf_counter()
        per_pair, frames, seeds = [], [], []
        for k, (i, j) in enumerate(chosen):
            f = frames_for(method, codes[i], codes[j], probs[i], probs[j], seed=seed * 1000 + k)
            frames.append(f)
            seeds += [seed * 1000 + k] * len(f)
        allcodes = torch.cat(frames)
        if method.startswith("xt"):
            x0 = torch.cat([x[i].expand(len(f), *x.shape[1:]) for (i, _), f in zip(chosen, frames)])
            imgs = decode(run, allcodes, steps=steps, seeds=seeds, x0=x0, start=int(method[2:]) / 100)
        else:
            imgs = decode(run, allcodes, steps=steps, seeds=seeds)
        feats = feats_of(imgs)
        rows, s = [], 0
        for (i, j), f in zip(chosen, frames):
            per_pair.append(smoothness(feats[s:s + len(f)]))
            rows.append(torch.cat([x[i:i + 1], imgs[s:s + len(f)], x[j:j + 1]]))
            s += len(f)
        save_rows(rows, out / f"{method}.png")
        agg = {k: float(np.mean([p[k] for p in per_pair])) for k in per_pair[0]}
        scores["methods"][method] = {**agg, "per_pair": per_pair, "frames": int(len(allcodes)),
                                     "seconds": time.perf_counter() - t0}
        log(f"interpolate {method:8s} mean step {agg['mean_step']:.3f}  max step {agg['max_step']:.3f}  "
            f"max/mean {agg['max_over_mean']:.2f}  end-to-end {agg['endpoint_dist']:.3f}  "
            f"({time.perf_counter() - t0:.0f} s)")
    write_scores(out, scores)
    return scores
