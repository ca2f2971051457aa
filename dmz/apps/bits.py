"""What each bit of a binary code encodes, and whether it means the same in another training (beyond the paper).

    python -m dmz.apps bits --run RUN --out DIR                         # one training
    python -m dmz.apps bits --run RUN_A --run RUN_B --run RUN_C --out DIR   # + how consistent across trainings

Per bit b, on the first ``--num`` test images: each image's code is decoded twice from the same x_T and noise (the
same sample seed), once with b set to 1 and once with b set to 0 (T respaced steps). The bit's **effect profile** is
the mean change, over images, of the independent classifier's class distribution (digits: digits-classifier-v1, the
FID's own network), p(class | b=1) - p(class | b=0): which classes the bit moves towards and away from. Beside it:
the total-variation distance between the two class distributions (how much the bit changes the digit), the feature
distance between the two decodes (how much it changes the image), the mutual information of the bit with the labels
on the training codes, and with the other bits (``sklearn.metrics.mutual_info_score``, in bits).

A class **has a bit** when some bit moves the mean probability of that class by at least ``CLASS_BIT_MIN`` (0.10)
between its two settings; the classes no bit reaches are listed as such. With several runs (trainings of one cell),
each run's bits are matched to the first run's by their effect profiles (``scipy.optimize.linear_sum_assignment`` on
the absolute correlation, since a bit's polarity is arbitrary: b in one training can be not-b in another), and the
mean absolute correlation of the matched profiles is set against the same matching done on profiles whose class
entries are shuffled (the null: how well random profiles of the same spread would match). Outputs: ``scores.json``,
``bits_by_class.png`` (bit x class effect heatmap, seaborn; one per run), ``strongest_bits.png`` (the top bits'
settings on a few images). Datasets with attribute labels (CelebA) get the label MI and feature distances but no
effect profiles (no independent attribute classifier is available offline).
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from dmz.apps.common import (AppError, DigitsLabeller, Features, decode, feature_distance, load_binary_run,
                             save_rows, write_scores)
from dmz.data import dataset_info
from dmz.run import encode_split
from dmz.runio import repo_relative

CLASS_BIT_MIN = 0.10  # a class "has a bit" when some bit moves its mean probability by at least this much
NULL_SHUFFLES = 20
STRIP_BITS, STRIP_IMAGES = 6, 8


def _mi_bits(a: np.ndarray, b: np.ndarray) -> float:
    from sklearn.metrics import mutual_info_score

    return float(mutual_info_score(a, b)) / math.log(2)


def label_and_bit_mi(codes: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(I(bit; label) per bit, shape (|z|,) or (|z|, attributes); I(bit_i; bit_j) matrix, zero diagonal), in bits."""
    d = codes.shape[1]
    if labels.ndim == 1:
        label_mi = np.array([_mi_bits(labels, codes[:, b]) for b in range(d)])
    else:
        label_mi = np.array([[_mi_bits(labels[:, a], codes[:, b]) for a in range(labels.shape[1])] for b in range(d)])
    pair = np.zeros((d, d))
    for i in range(d):
        for j in range(i + 1, d):
            pair[i, j] = pair[j, i] = _mi_bits(codes[:, i], codes[:, j])
    return label_mi, pair


@torch.no_grad()
def bit_settings(run, codes: torch.Tensor, bit: int, *, steps: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Decodes of ``codes`` with ``bit`` set to 1 and to 0, image i from sample seed ``seed + i`` both times."""
    seeds = [seed + i for i in range(len(codes))]
    on, off = codes.clone(), codes.clone()
    on[:, bit], off[:, bit] = 1, 0
    return decode(run, on, steps=steps, seeds=seeds), decode(run, off, steps=steps, seeds=seeds)


def analyse_run(run_path, *, num: int, steps: int, seed: int, device: str, log: Callable[[str], None]) -> dict:
    """One run's per-bit measurements (see the module docstring); images for the strip in ``_images``."""
    run = load_binary_run(run_path, device=device)
    info = dataset_info(run.cfg.data.dataset, resolution=run.cfg.data.resolution)
    if info.label_kind == "none":
        raise AppError(f"run {run.path} trains on {run.cfg.data.dataset!r}, which has no labels: `bits` relates "
                       "bits to classes or attributes, so it needs a labelled dataset (digits, cifar10, celeba64)")
    n_test = len(run.dataset("test"))
    if not 1 <= num <= n_test:
        raise AppError(f"--num must be in 1..{n_test} (the test split's size), got {num}")
    test_codes = encode_split(run, "test")[0][:num]
    train_codes, train_labels = encode_split(run, "train")
    label_mi, pair_mi = label_and_bit_mi(train_codes.numpy(), train_labels.numpy())
    d = test_codes.shape[1]
    labeller = DigitsLabeller(info.resolution) if run.cfg.data.dataset == "digits" else None
    feats = Features(run.cfg.data.dataset, run.cfg.data.resolution, device=device)
    profiles, tv, dist, strip = [], [], [], {}
    t0 = time.perf_counter()
    for b in range(d):
        on, off = bit_settings(run, test_codes, b, steps=steps, seed=seed)
        dist.append(float(feature_distance(feats(on), feats(off)).mean()))
        if labeller is not None:
            p_on, p_off = labeller(on), labeller(off)
            profiles.append((p_on - p_off).mean(0))
            tv.append(float(0.5 * np.abs(p_on - p_off).sum(1).mean()))
        strip[b] = (on[:STRIP_IMAGES], off[:STRIP_IMAGES])
        log(f"bits: {run.path.name} bit {b + 1}/{d}: feature distance {dist[-1]:.3f}"
            + (f", class TV {tv[-1]:.3f}" if tv else "") + f" ({time.perf_counter() - t0:.0f} s)")
    out = {"run": repo_relative(run.path), "run_id": run.cfg.run_id(), "seed": run.cfg.train.seed, "latent_dim": d,
           "dataset": run.cfg.data.dataset, "num_images": num, "T": steps,
           "feature_space": feats.name, "feature_distance": dist, "label_mi_bits": label_mi.tolist(),
           "bit_mi_bits": pair_mi.tolist(), "bit_mi_max": pair_mi.max(1).tolist(), "_images": strip,
           "labels": [str(c) for c in range(info.num_classes)] if info.label_kind == "class"
           else list(info.attribute_names)}
    if profiles:
        prof = np.stack(profiles)  # (|z|, classes)
        strongest = np.abs(prof).max(0)
        out.update(effect_profiles=prof.tolist(), class_tv=tv, labeller_weights_sha256=labeller.weights_sha256,
                   classes_without_bit=[str(c) for c in range(prof.shape[1]) if strongest[c] < CLASS_BIT_MIN],
                   class_strongest_effect=strongest.tolist(),
                   bit_top_class=[{"bit": b, "towards": int(prof[b].argmax()), "away": int(prof[b].argmin()),
                                   "size": float(np.abs(prof[b]).max())} for b in range(d)])
    return out


def _abs_corr(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|Pearson correlation| between every row of a and every row of b (a constant row correlates 0)."""
    za = a - a.mean(1, keepdims=True)
    zb = b - b.mean(1, keepdims=True)
    na, nb = np.linalg.norm(za, axis=1), np.linalg.norm(zb, axis=1)
    c = (za @ zb.T) / np.maximum(np.outer(na, nb), 1e-12)
    return np.abs(c)


def match_bits(ref: np.ndarray, other: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """other's bit matched to each of ref's bits (linear_sum_assignment maximising |correlation|), and those |r|."""
    from scipy.optimize import linear_sum_assignment

    c = _abs_corr(ref, other)
    rows, cols = linear_sum_assignment(-c)
    order = np.argsort(rows)
    return cols[order], c[rows, cols][order]


def consistency(profiles: Sequence[np.ndarray], seed: int = 0) -> dict:
    """Bits of runs 2.. matched to run 1's by effect profile; mean matched |r| against shuffled-profile nulls."""
    rng = np.random.default_rng(seed)
    ref = profiles[0]
    pairs = []
    for k, other in enumerate(profiles[1:], start=1):
        match, r = match_bits(ref, other)
        null, null_bits = [], []
        for _ in range(NULL_SHUFFLES):
            shuffled = np.stack([rng.permutation(row) for row in other])
            rn = match_bits(ref, shuffled)[1]
            null.append(float(rn.mean()))
            null_bits.extend(rn.tolist())
        q95 = float(np.quantile(null_bits, 0.95))
        pairs.append({"run": k, "match": match.tolist(), "abs_r": r.tolist(), "mean_abs_r": float(r.mean()),
                      "null_mean_abs_r": float(np.mean(null)), "null_sd": float(np.std(null, ddof=1)),
                      "null_bit_q95": q95, "bits_above_null_q95": int((r > q95).sum())})
    return {"reference_run": 0, "pairs": pairs, "null_shuffles": NULL_SHUFFLES,
            "mean_abs_r": float(np.mean([p["mean_abs_r"] for p in pairs])),
            "null_mean_abs_r": float(np.mean([p["null_mean_abs_r"] for p in pairs]))}


def heatmap(result: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    prof = np.asarray(result["effect_profiles"])
    fig, ax = plt.subplots(figsize=(0.45 * prof.shape[1] + 2, 0.3 * prof.shape[0] + 1.5))
    lim = float(np.abs(prof).max()) or 1.0
    sns.heatmap(prof, cmap="RdBu_r", vmin=-lim, vmax=lim, ax=ax, xticklabels=result["labels"],
                yticklabels=list(range(prof.shape[0])), cbar_kws={"label": "mean p(class | b=1) - p(class | b=0)"})
    ax.set_xlabel("class (independent classifier)")
    ax.set_ylabel("bit")
    ax.set_title(f"{Path(result['run']).name[:60]}: what each bit moves", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def bits(runs: Sequence[str], out: str | Path, *, num: int = 100, steps: int = 10, seed: int = 0,
         device: str = "cpu", log: Callable[[str], None] = print) -> dict:
    out = Path(out)
    if not runs:
        raise AppError("give at least one --run")
    results = [analyse_run(r, num=num, steps=steps, seed=seed, device=device, log=log) for r in runs]
    if len({r["latent_dim"] for r in results}) > 1:
        raise AppError("runs with different |z| cannot have their bits matched: give trainings of one cell")
    for i, res in enumerate(results):
        images = res.pop("_images")
        if "effect_profiles" in res:
            top = np.argsort(-np.abs(np.asarray(res["effect_profiles"])).max(1))[:STRIP_BITS]
        else:
            top = np.argsort(-np.asarray(res["feature_distance"]))[:STRIP_BITS]
        res["strip_bits"] = [int(b) for b in top]
        save_rows([t for b in top for t in images[int(b)]], out / f"strongest_bits_run{i}.png")
        if "effect_profiles" in res:
            heatmap(res, out / f"bits_by_class_run{i}.png")
    scores = {"app": "bits", "runs": results, "class_bit_min": CLASS_BIT_MIN}
    if len(results) > 1 and all("effect_profiles" in r for r in results):
        scores["consistency"] = consistency([np.asarray(r["effect_profiles"]) for r in results], seed=seed)
        c = scores["consistency"]
        log(f"bits: matched effect profiles |r| {c['mean_abs_r']:.3f} across {len(results)} runs, "
            f"shuffled-profile null {c['null_mean_abs_r']:.3f}")
    write_scores(out, scores)
    return scores
