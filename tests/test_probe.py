import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, roc_auc_score
from sklearn.model_selection import KFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from evaluation.probe import probe_cv, probe_heldout


def _direct_fit(xtr, ytr):
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(xtr, ytr)


def test_separable_latents_give_full_accuracy():
    rng = np.random.default_rng(0)
    n, d = 400, 8
    y = rng.integers(0, 3, n)
    centres = rng.normal(size=(3, d)) * 10
    x = centres[y] + rng.normal(size=(n, d)) * 0.3
    r = probe_cv(x, y, metric="accuracy")
    assert r["mean"] > 0.99
    assert len(r["per_fold"]) == 5 and r["n"] == n
    assert r["std"] == pytest.approx(np.std(r["per_fold"]))
    # multi-class AUROC (one-vs-rest macro) also ~1
    assert probe_cv(x, y, metric="auroc")["mean"] > 0.99


def test_random_latents_give_chance_auroc():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(600, 8))
    y = rng.integers(0, 2, 600)
    r = probe_cv(x, y, metric="auroc")
    assert abs(r["mean"] - 0.5) < 0.1
    ra = probe_cv(x, y, metric="accuracy")
    assert abs(ra["mean"] - 0.5) < 0.1


def test_cv_matches_direct_sklearn_protocol():
    rng = np.random.default_rng(2)
    n = 300
    x = rng.normal(size=(n, 5))
    y = (x[:, 0] + 0.8 * rng.normal(size=n) > 0).astype(int)
    r = probe_cv(x, y, metric="auroc")
    direct = []
    for tr, te in KFold(5, shuffle=True, random_state=0).split(x):
        clf = _direct_fit(x[tr], y[tr])
        direct.append(roc_auc_score(y[te], clf.predict_proba(x[te])[:, 1]))
    np.testing.assert_allclose(r["per_fold"], direct, rtol=1e-10)
    assert 0.7 < r["mean"] < 0.95


def test_attributes_are_averaged_per_fold_and_constant_ones_skipped():
    rng = np.random.default_rng(3)
    n = 400
    x = rng.normal(size=(n, 6))
    a0 = (x[:, 0] > 0).astype(int)                                # perfectly predictable
    a1 = rng.integers(0, 2, n)                                     # unpredictable
    a2 = (x[:, 1] + 1.0 * rng.normal(size=n) > 0).astype(int)      # partly predictable
    a3 = np.zeros(n, dtype=int)                                    # constant: skipped in every fold
    y = np.stack([a0, a1, a2, a3], axis=1)
    r = probe_cv(x, y, metric="auroc")
    assert r["label_kind"] == "attributes"
    assert r["n_skipped"] == 5 and all(a == 3 for _, a in r["skipped"])
    pa = r["per_attribute"]
    assert pa[0] > 0.97 and abs(pa[1] - 0.5) < 0.1 and 0.6 < pa[2] < 0.95 and pa[3] is None
    # the reported mean is the mean over folds of the attribute-averaged fold score
    expected = []
    for tr, te in KFold(5, shuffle=True, random_state=0).split(x):
        s = [roc_auc_score(y[te, a], _direct_fit(x[tr], y[tr, a]).predict_proba(x[te])[:, 1]) for a in range(3)]
        expected.append(np.mean(s))
    np.testing.assert_allclose(r["per_fold"], expected, rtol=1e-10)
    assert r["mean"] == pytest.approx(np.mean(expected))
    assert r["std"] == pytest.approx(np.std(expected))


def test_rare_attribute_skipped_only_in_folds_where_constant():
    rng = np.random.default_rng(4)
    n = 100
    x = rng.normal(size=(n, 3))
    rare = np.zeros(n, dtype=int)
    rare[:2] = 1                      # two positives: at most two test folds contain one
    y = np.stack([(x[:, 0] > 0).astype(int), rare], axis=1)
    r = probe_cv(x, y, metric="auroc")
    folds_with_pos = sum(rare[te].any() and rare[tr].any()
                         for tr, te in KFold(5, shuffle=True, random_state=0).split(x))
    assert r["n_skipped"] == 5 - folds_with_pos
    assert len(r["per_fold"]) == 5


def test_heldout_agrees_with_direct_sklearn_fit():
    rng = np.random.default_rng(5)
    xtr, xte = rng.normal(size=(300, 4)), rng.normal(size=(100, 4))
    w = np.array([1.0, -2.0, 0.5, 0.0])
    ytr = (xtr @ w + rng.normal(size=300) > 0).astype(int)
    yte = (xte @ w + rng.normal(size=100) > 0).astype(int)
    clf = _direct_fit(xtr, ytr)
    acc = probe_heldout(xtr, ytr, xte, yte, metric="accuracy")
    assert acc["value"] == pytest.approx(accuracy_score(yte, clf.predict(xte)), abs=1e-12)
    auc = probe_heldout(xtr, ytr, xte, yte, metric="auroc")
    assert auc["value"] == pytest.approx(roc_auc_score(yte, clf.predict_proba(xte)[:, 1]), abs=1e-12)
    assert auc["n_train"] == 300 and auc["n_test"] == 100
    # multi-class macro AUROC equals sklearn's one-vs-rest macro when all classes are present
    y3tr, y3te = rng.integers(0, 3, 300), rng.integers(0, 3, 100)
    xtr3 = xtr + y3tr[:, None]
    xte3 = xte + y3te[:, None]
    clf3 = _direct_fit(xtr3, y3tr)
    ref = roc_auc_score(y3te, clf3.predict_proba(xte3), multi_class="ovr", average="macro")
    assert probe_heldout(xtr3, y3tr, xte3, y3te, metric="auroc")["value"] == pytest.approx(ref, abs=1e-12)


def test_bad_arguments():
    x = np.zeros((10, 2))
    with pytest.raises(ValueError):
        probe_cv(x, np.zeros(10), metric="f1")
    with pytest.raises(ValueError):
        probe_cv(x, np.zeros(9))


@pytest.mark.parametrize("kind", ["class", "attributes"])
def test_all_metrics_from_one_fit_equal_separate_calls_with_half_the_fits(kind, monkeypatch):
    import evaluation.probe as probe

    rng = np.random.default_rng(3)
    x = rng.normal(size=(200, 5))
    if kind == "class":
        y = (x[:, 0] + 0.5 * x[:, 1] + rng.normal(size=200) > 0).astype(int) + (x[:, 2] > 1)
    else:
        y = np.stack([(x[:, a] + rng.normal(size=200) > 0).astype(int) for a in range(3)], 1)
    fits = []
    real = probe.make_probe
    monkeypatch.setattr(probe, "make_probe", lambda *a, **k: fits.append(1) or real(*a, **k))
    both = probe.probe_cv_all(x, y, metrics=("accuracy", "auroc"))
    n_both = len(fits)
    separate = {m: probe.probe_cv(x, y, metric=m) for m in ("accuracy", "auroc")}
    assert both == separate
    assert n_both * 2 == len(fits) - n_both  # one classifier per fold (and attribute) serves both metrics
    ho = probe.probe_heldout_all(x[:150], y[:150], x[150:], y[150:])
    assert ho == {m: probe.probe_heldout(x[:150], y[:150], x[150:], y[150:], metric=m) for m in ("accuracy", "auroc")}
    assert ho["accuracy"]["value"] != ho["auroc"]["value"]
