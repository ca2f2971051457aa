"""Attribute manipulation by moving binary codes across a linear classifier's boundary (PAPER.md 1.10; Figure 6b).

Per attribute (digits: one-vs-rest per class, attributes ``0`` ... ``9``; CelebA: the 40 attributes by name) a linear
classifier (logistic regression, class-balanced) is fitted on the hard codes of the training split. A source code z
with signed margin d = w.z + b is moved along the normal, z' = z + alpha |d| w / |w|^2, binarised at 0.5 and decoded
from the source image noised to 0.9T (released). Released step: alpha (d / |w|) along w / |w|, alpha in {-4, -2, -1,
0, 1, 2, 4}; we orient the step by |d| so that alpha > 0 always moves towards the attribute (alpha = 1 reaches the
boundary from the other side, 2 reflects the code across it), since the release's sign convention is not known.

Sources: ``--per-class`` test images of every class without the attribute (digits), or ``--num`` test images without
it (attribute datasets). Scores per alpha: the edit's success, the attribute's probability under an independent
classifier of the decoded image (digits: digits-classifier-v1, the FID's network, P(class = attribute) and the share
labelled as the attribute; no such classifier exists offline for CelebA, so it is left out there), and how much else
changed: the feature distance (run's FID feature space) to the source image and to the alpha = 0 decode, plus the
share of bits that changed.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from dmz.apps.common import (AppError, DigitsLabeller, Features, decode, feature_distance, load_binary_run,
                             save_rows, write_scores)
from dmz.data import dataset_info
from dmz.run import encode_split, split_images
from dmz.runio import repo_relative

ALPHAS = (-4.0, -2.0, -1.0, 0.0, 1.0, 2.0, 4.0)  # released
START = 0.9  # decode from x_t at t = 0.9 T (released)


def attribute_names(dataset: str) -> list[str]:
    info = dataset_info(dataset)
    if info.label_kind == "class":
        return [str(c) for c in range(info.num_classes)]
    if info.label_kind == "attributes":
        return list(info.attribute_names)
    raise AppError(f"dataset {dataset!r} has no labels, so no attributes to manipulate")


def resolve_attributes(dataset: str, requested: list[str]) -> list[str]:
    names = attribute_names(dataset)
    if requested == ["all"]:
        return names
    bad = [a for a in requested if a not in names]
    if bad:
        raise AppError(f"unknown attribute {bad[0]!r} for dataset {dataset!r}; valid: {', '.join(names)} (or all)")
    return list(requested)


def targets(labels: torch.Tensor, names: list[str], attribute: str) -> np.ndarray:
    """0/1 presence of ``attribute`` per item."""
    k = names.index(attribute)
    return (labels[:, k] if labels.dim() == 2 else (labels == k)).long().numpy()


def fit_direction(codes: torch.Tensor, y: np.ndarray, seed: int = 0):
    """Logistic regression on the codes: returns (w, b) as float64 numpy arrays."""
    from sklearn.linear_model import LogisticRegression

    if len(np.unique(y)) < 2:
        raise AppError("the attribute is constant on the training split: no boundary to cross")
    clf = LogisticRegression(max_iter=2000, class_weight="balanced", random_state=seed)
    clf.fit(codes.double().numpy(), y)
    w = clf.coef_[0].astype(np.float64)
    if float(w @ w) < 1e-12:
        raise AppError("the codes carry no information about the attribute (the linear classifier's normal is 0)")
    return w, float(clf.intercept_[0])


def move(codes: torch.Tensor, w: np.ndarray, b: float, alpha: float) -> torch.Tensor:
    """z' = z + alpha |d| w / |w|^2 (d = w.z + b), binarised at 0.5."""
    z = codes.double().numpy()
    d = z @ w + b
    moved = z + alpha * np.abs(d)[:, None] * w[None] / float(w @ w)
    return torch.from_numpy(moved > 0.5).long()


def choose_sources(labels: torch.Tensor, present: np.ndarray, names: list[str], per_class: int,
                   num: int, seed: int) -> list[int]:
    """Test indices without the attribute: ``per_class`` of each other class (class labels), else ``num``."""
    g = np.random.default_rng(seed)
    absent = np.flatnonzero(present == 0)
    if labels.dim() == 1:
        out = []
        for c in range(len(names)):
            idx = absent[labels[absent].numpy() == c]
            out += sorted(g.choice(idx, size=min(per_class, len(idx)), replace=False).tolist()) if len(idx) else []
        return out
    if len(absent) < num:
        raise AppError(f"only {len(absent)} test images lack the attribute; asked for --num {num}")
    return sorted(g.choice(absent, size=num, replace=False).tolist())


def manipulate(run_dir, out: Path, *, attributes: list[str], steps: int = 100, per_class: int = 8, num: int = 64,
               alphas=ALPHAS, seed: int = 0, device: str = "cpu", log=print) -> dict:
    """Run the manipulation study; writes ``<out>/attribute_<name>.png`` and ``<out>/scores.json``."""
    run = load_binary_run(run_dir, device)
    dataset = run.cfg.data.dataset
    names = attribute_names(dataset)
    chosen = resolve_attributes(dataset, attributes)
    train_codes, train_labels = encode_split(run, "train")
    test_codes, test_labels = encode_split(run, "test")
    x, _ = split_images(run)
    feats_of = Features(dataset, run.cfg.data.resolution, run.cfg.data.data_root)
    labeller = DigitsLabeller(run.model.resolution) if dataset == "digits" else None
    out = Path(out)
    scores = {"app": "manipulate", "run": repo_relative(run.path), "run_id": run.cfg.run_id(), "step": run.step, "T": steps,
              "start": START, "alphas": list(alphas), "seed": seed, **feats_of.row_fields(),
              "success_classifier": "digits-classifier-v1" if labeller else None, "attributes": {}}
    for attr in chosen:
        t0 = time.perf_counter()
        w, b = fit_direction(train_codes, targets(train_labels, names, attr), seed)
        y_test = targets(test_labels, names, attr)
        pred = (test_codes.double().numpy() @ w + b) > 0
        bal_acc = 0.5 * (pred[y_test == 1].mean() + (~pred[y_test == 0]).mean())
        src = choose_sources(test_labels, y_test, names, per_class, num, seed)
        n = len(src)
        z = test_codes[src]
        moved = torch.cat([move(z, w, b, a) for a in alphas])  # alpha-major: rows a * n + i
        seeds = [seed * 1_000_000 + i for i in src] * len(alphas)
        imgs = decode(run, moved, steps=steps, seeds=seeds, x0=x[src].repeat(len(alphas), 1, 1, 1), start=START)
        feats = feats_of(imgs).reshape(len(alphas), n, -1)
        f_src = feats_of(x[src])
        a0 = list(alphas).index(0.0) if 0.0 in alphas else None
        probs = labeller(imgs).reshape(len(alphas), n, -1) if labeller else None
        per_alpha = {}
        for ai, a in enumerate(alphas):
            row = {"dist_to_source": float(feature_distance(feats[ai], f_src).mean()),
                   "bits_changed": float((moved[ai * n:(ai + 1) * n] != z).float().mean()),
                   "code_has_attribute": float(((moved[ai * n:(ai + 1) * n].double().numpy() @ w + b) > 0).mean())}
            if a0 is not None:
                row["dist_to_alpha0"] = float(feature_distance(feats[ai], feats[a0]).mean())
            if probs is not None:
                k = names.index(attr)
                row["p_attribute"] = float(probs[ai, :, k].mean())
                row["labelled_attribute"] = float((probs[ai].argmax(1) == k).mean())
            per_alpha[str(a)] = row
        show = min(n, 10)
        pick = np.linspace(0, n - 1, show).round().astype(int)
        rows = [torch.cat([x[src][i:i + 1], imgs.reshape(len(alphas), n, *imgs.shape[1:])[:, i]]) for i in pick]
        save_rows(rows, out / f"attribute_{attr}.png")
        scores["attributes"][attr] = {"n_sources": n, "sources": src, "classifier_test_balanced_accuracy": bal_acc,
                                      "per_alpha": per_alpha, "seconds": time.perf_counter() - t0}
        line = "  ".join(f"{a:+g}: {per_alpha[str(a)].get('p_attribute', float('nan')):.2f}" for a in alphas)
        log(f"manipulate {attr}: P(attribute) by alpha  {line}  ({time.perf_counter() - t0:.0f} s)")
    summary = {}
    for a in alphas:
        vals = [v["per_alpha"][str(a)] for v in scores["attributes"].values()]
        summary[str(a)] = {k: float(np.mean([v[k] for v in vals])) for k in vals[0]}
    scores["mean_over_attributes"] = summary
    write_scores(out, scores)
    return scores
