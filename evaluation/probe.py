"""Linear probes on latents (PAPER.md 3.4, the released ``downstream_task_eval.py`` protocol).

Classifier: scikit-learn ``LogisticRegression`` with its released defaults (L2 penalty, C=1, lbfgs) except
``max_iter``, raised from 100 to 1000 (the default often stops before convergence on latents), inside a
``Pipeline`` whose ``StandardScaler`` is fit on each training part only. The release fits raw latents;
the scaler is our addition (it only changes the optimisation path / effective regularisation, not the model
class).

* :func:`probe_cv` -- the released protocol: ``KFold(5, shuffle=True, random_state=0)`` over pooled features
  (the caller concatenates train and test latents). Labels are either (N,) classes (``metric="accuracy"``, or
  ``"auroc"`` = one-vs-rest macro AUROC) or (N, A) binary attributes (one binary problem per attribute,
  AUROC from ``predict_proba[:, 1]`` or accuracy, averaged over attributes within a fold). Reported: mean and
  std (numpy's default, ddof=0) over folds of the per-fold score, as "AVG mean +- std" in the release.
  Attributes (or, for macro AUROC, classes) that are constant within a fold's train or test part are
  skipped for that fold and counted in ``n_skipped`` / ``skipped``.
* :func:`probe_heldout` -- the same classifier fit on a train split and scored on a test split.
* :func:`probe_cv_all` / :func:`probe_heldout_all` -- several metrics (accuracy and AUROC) from the same fitted
  classifiers, with the same results as one call per metric at half the fits (what ``evaluation.run`` uses).
"""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.model_selection import KFold
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

METRICS = ("accuracy", "auroc")
DEFAULT_MAX_ITER = 1000


def make_probe(max_iter: int = DEFAULT_MAX_ITER) -> Pipeline:
    """StandardScaler + LogisticRegression (sklearn defaults: L2, C=1, lbfgs; ``max_iter`` raised)."""
    return Pipeline([("scale", StandardScaler()), ("logreg", LogisticRegression(max_iter=max_iter))])


def probe_description(max_iter: int = DEFAULT_MAX_ITER) -> str:
    return f"StandardScaler+LogisticRegression(L2,C=1,lbfgs,max_iter={max_iter})"


def _check(features, labels):
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels)
    if x.ndim != 2:
        raise ValueError(f"features must be (N, D), got {x.shape}")
    if y.ndim not in (1, 2) or y.shape[0] != x.shape[0]:
        raise ValueError(f"labels must be (N,) or (N, A) with N={x.shape[0]}, got {y.shape}")
    if not np.isfinite(x).all():
        raise ValueError("features contain NaN/inf")
    return x, y


def _score_classes(xtr, ytr, xte, yte, metrics, max_iter) -> dict:
    """{metric: (score, n_skipped)} for one multi-class problem, all from one fitted classifier; n_skipped counts
    classes left out of macro AUROC."""
    if np.unique(ytr).size < 2:
        return {m: (None, 1) for m in metrics}
    clf = make_probe(max_iter).fit(xtr, ytr)
    out = {}
    if "accuracy" in metrics:
        out["accuracy"] = (float(accuracy_score(yte, clf.predict(xte))), 0)
    if "auroc" in metrics:
        out["auroc"] = _macro_auroc(clf, xte, yte)
    return out


def _macro_auroc(clf, xte, yte):
    proba = clf.predict_proba(xte)
    classes = clf.classes_
    if classes.size == 2:
        if np.unique(yte).size < 2:
            return None, 1
        return float(roc_auc_score(yte == classes[1], proba[:, 1])), 0
    aucs, skipped = [], 0
    for j, c in enumerate(classes):
        pos = yte == c
        if pos.all() or not pos.any():
            skipped += 1
            continue
        aucs.append(roc_auc_score(pos, proba[:, j]))
    skipped += int(np.setdiff1d(np.unique(yte), classes).size)  # test classes never seen in training
    return (float(np.mean(aucs)) if aucs else None), skipped


def _score_attributes(xtr, ytr, xte, yte, metrics, max_iter) -> dict:
    """{metric: per-attribute scores (NaN where skipped)} for (N, A) binary labels; one classifier per attribute."""
    scores = {m: np.full(ytr.shape[1], np.nan) for m in metrics}
    for a in range(ytr.shape[1]):
        tr, te = ytr[:, a], yte[:, a]
        if np.unique(tr).size < 2 or np.unique(te).size < 2:
            continue
        clf = make_probe(max_iter).fit(xtr, tr)
        if "auroc" in metrics:
            scores["auroc"][a] = roc_auc_score(te, clf.predict_proba(xte)[:, 1])
        if "accuracy" in metrics:
            scores["accuracy"][a] = accuracy_score(te, clf.predict(xte))
    return scores


def _check_metrics(metrics) -> tuple[str, ...]:
    metrics = tuple(metrics)
    bad = [m for m in metrics if m not in METRICS]
    if bad or not metrics:
        raise ValueError(f"metric must be one of {METRICS}, got {bad[0] if bad else metrics!r}")
    return metrics


def _score_split(xtr, ytr, xte, yte, metrics, max_iter) -> dict:
    """{metric: {"value", "n_skipped", "per_attribute"}}: every metric from the same fitted classifier(s)."""
    if ytr.ndim == 1:
        return {m: {"value": v, "n_skipped": k, "per_attribute": None}
                for m, (v, k) in _score_classes(xtr, ytr, xte, yte, metrics, max_iter).items()}
    out = {}
    for m, per_attr in _score_attributes(xtr, ytr, xte, yte, metrics, max_iter).items():
        ok = ~np.isnan(per_attr)
        out[m] = {"value": float(per_attr[ok].mean()) if ok.any() else None, "n_skipped": int((~ok).sum()),
                  "per_attribute": per_attr}
    return out


def probe_cv(features, labels, *, metric: str = "accuracy", folds: int = 5, seed: int = 0,
             max_iter: int = DEFAULT_MAX_ITER) -> dict:
    """K-fold linear probe over pooled features (released protocol: 5 folds, shuffle, random_state 0).

    Returns ``{"mean", "std", "per_fold", "metric", "folds", "n", "label_kind", "n_skipped", "skipped",
    "per_attribute" (attributes only: mean over the folds where evaluated), "classifier"}``.
    """
    return probe_cv_all(features, labels, metrics=(metric,), folds=folds, seed=seed, max_iter=max_iter)[metric]


def probe_cv_all(features, labels, *, metrics=METRICS, folds: int = 5, seed: int = 0,
                 max_iter: int = DEFAULT_MAX_ITER) -> dict[str, dict]:
    """:func:`probe_cv` for several metrics from the same fitted classifiers: ``{metric: probe_cv result}``
    (accuracy and AUROC of one fold's classifier, so half the fits of two :func:`probe_cv` calls)."""
    x, y = _check(features, labels)
    metrics = _check_metrics(metrics)
    kf = KFold(n_splits=folds, shuffle=True, random_state=seed)
    per_fold = {m: [] for m in metrics}
    skipped = {m: [] for m in metrics}
    attr_rows = {m: [] for m in metrics}
    for k, (tr, te) in enumerate(kf.split(x)):
        for m, r in _score_split(x[tr], y[tr], x[te], y[te], metrics, max_iter).items():
            if r["per_attribute"] is not None:
                attr_rows[m].append(r["per_attribute"])
                skipped[m] += [(k, int(a)) for a in np.flatnonzero(np.isnan(r["per_attribute"]))]
            elif r["n_skipped"]:
                skipped[m] += [(k, None)] * r["n_skipped"]
            if r["value"] is not None:
                per_fold[m].append(r["value"])
    out = {}
    for m in metrics:
        if not per_fold[m]:
            raise ValueError("no fold could be scored (labels constant?)")
        res = {
            "mean": float(np.mean(per_fold[m])),
            "std": float(np.std(per_fold[m])),
            "per_fold": [float(v) for v in per_fold[m]],
            "metric": m,
            "folds": folds,
            "seed": seed,
            "n": int(x.shape[0]),
            "label_kind": "attributes" if y.ndim == 2 else "class",
            "n_skipped": len(skipped[m]),
            "skipped": skipped[m],
            "per_attribute": None,
            "classifier": probe_description(max_iter),
        }
        if attr_rows[m]:
            rows = np.vstack(attr_rows[m])
            with np.errstate(all="ignore"):
                cnt = (~np.isnan(rows)).sum(0)
                res["per_attribute"] = [float(np.nanmean(rows[:, a])) if cnt[a] else None
                                        for a in range(rows.shape[1])]
        out[m] = res
    return out


def probe_heldout(train_x, train_y, test_x, test_y, *, metric: str = "accuracy",
                  max_iter: int = DEFAULT_MAX_ITER) -> dict:
    """Fit on (train_x, train_y), score on (test_x, test_y). Returns ``{"value", "metric", "n_train",
    "n_test", "n_skipped", "per_attribute", "classifier"}``."""
    return probe_heldout_all(train_x, train_y, test_x, test_y, metrics=(metric,), max_iter=max_iter)[metric]


def probe_heldout_all(train_x, train_y, test_x, test_y, *, metrics=METRICS,
                      max_iter: int = DEFAULT_MAX_ITER) -> dict[str, dict]:
    """:func:`probe_heldout` for several metrics from the same fitted classifier(s): ``{metric: result}``."""
    xtr, ytr = _check(train_x, train_y)
    xte, yte = _check(test_x, test_y)
    metrics = _check_metrics(metrics)
    if ytr.ndim != yte.ndim or xtr.shape[1] != xte.shape[1]:
        raise ValueError("train and test features/labels have incompatible shapes")
    out = {}
    for m, r in _score_split(xtr, ytr, xte, yte, metrics, max_iter).items():
        pa = r["per_attribute"]
        out[m] = {
            "value": r["value"],
            "metric": m,
            "n_train": int(xtr.shape[0]),
            "n_test": int(xte.shape[0]),
            "n_skipped": r["n_skipped"],
            "per_attribute": None if pa is None else [None if np.isnan(v) else float(v) for v in pa],
            "classifier": probe_description(max_iter),
        }
    return out
