"""FID (and optionally KID / precision-recall) against cached reference statistics.

Which code computes the numbers
-------------------------------
* The reported metric values come from **torch-fidelity's own code path**: :func:`metrics_against_reference`
  calls ``torch_fidelity.calculate_metrics(input1=<samples>, input2=<reference>, ...)`` with our registered
  feature extractor. The reference side is handed to torch-fidelity through its cache: we write our cached
  reference statistics (``{"mu", "sigma"}``, and the reference features when KID / PRC are requested) into a
  private temporary ``cache_root`` under the names torch-fidelity looks up, and ``input2`` is a dataset that
  raises if it is ever read, so the reference can only come from that cache. torch-fidelity extracts the
  sample features itself and computes FID with ``fid_statistics_to_metric`` (trace of the matrix square root
  via the eigenvalues of ``sigma1 @ sigma2``).
* :func:`frechet_distance` is an independent scipy implementation (``scipy.linalg.sqrtm``, pytorch-fid's
  ``eps`` offset fallback), used to cross-check torch-fidelity in the tests and for callers holding
  features already.

Reference statistics are computed once and cached as ``.npz`` (atomic write) under
``<cache>/fid_stats/<extractor>/<key>.npz``, ``<cache>`` = ``cache_dir`` / ``$DMZ_CACHE_DIR`` / ``~/.cache/dmz``.
The key hashes the dataset's content fingerprint (``dmz.data.dataset_fingerprint``; for
:func:`reference_stats_for_images` the sha256 of the image bytes), split, resolution, subset size and seed,
and the extractor's name plus weights hash, so changed data or changed weights can never hit a stale entry.

PAPER.md 3.3: the release scores 10k samples against the whole training set (``n=None``) with pytorch-fid's
Inception; ``inception-v3-compat`` is torch-fidelity's port of that network. Digits uses the digits classifier
(see :mod:`evaluation.features`), whose FIDs are not comparable to Inception FIDs.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import time
from typing import Any, Callable, Iterator, NamedTuple

import numpy as np
import scipy.linalg
import torch
from torch.utils.data import Dataset

import torch_fidelity

from evaluation.features import (
    FeatureExtractor,
    atomic_write_bytes,
    cache_root,
    default_feature_extractor,
    get_feature_extractor,
    prepare_uint8,
)

STATS_FORMAT_VERSION = 1


class ReferenceStats(NamedTuple):
    """Unpacks as ``mu, sigma, meta``. ``meta["cache_path"]`` is the npz (it may hold ``features`` too)."""

    mu: np.ndarray
    sigma: np.ndarray
    meta: dict


# ----------------------------------------------------------------------------------------------------
# plain numerics


def stats_from_features(feats) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) (unbiased, rows = samples), both float64."""
    f = np.asarray(feats, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise ValueError(f"need features (N >= 2, D), got {f.shape}")
    return f.mean(axis=0), np.atleast_2d(np.cov(f, rowvar=False))


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)), with scipy's sqrtm (pytorch-fid's recipe)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape:
        raise ValueError("mean vectors / covariances have different shapes")
    diff = mu1 - mu2
    covmean = scipy.linalg.sqrtm(s1.dot(s2))
    if not np.isfinite(covmean).all():
        offset = np.eye(s1.shape[0]) * eps
        covmean = scipy.linalg.sqrtm((s1 + offset).dot(s2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f"sqrtm: imaginary component {np.max(np.abs(covmean.imag))}")
        covmean = covmean.real
    return float(diff.dot(diff) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


# ----------------------------------------------------------------------------------------------------
# reference statistics


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def images_sha256(images_uint8: torch.Tensor) -> str:
    x = torch.as_tensor(images_uint8).detach().cpu().contiguous()
    h = hashlib.sha256(f"{x.dtype}{tuple(x.shape)}".encode())
    h.update(x.numpy().tobytes())
    return h.hexdigest()


def _stats_path(extractor: FeatureExtractor, key: str, cache_dir):
    return cache_root(cache_dir) / "fid_stats" / extractor.name / f"{key}.npz"


def _load_npz(path) -> dict | None:
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError):
        return None
    out["meta"] = json.loads(str(out["meta"]))
    return out


def _save_npz(path, mu, sigma, meta: dict, features: np.ndarray | None) -> None:
    buf = io.BytesIO()
    arrays = {"mu": mu, "sigma": sigma, "meta": np.array(json.dumps(meta, sort_keys=True))}
    if features is not None:
        arrays["features"] = features
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def _compute_reference(
    extractor: FeatureExtractor, batches: Callable[[], Iterator[torch.Tensor]]
) -> np.ndarray:
    """Features (N, D) float32 of the uint8 batches (the single place reference features are computed)."""
    m = extractor.module()
    out = []
    with torch.no_grad():
        for b in batches():
            b = prepare_uint8(b, extractor.input_channels).to(extractor.device)
            (f,) = m(b)
            out.append(f.detach().cpu().float())
    return torch.cat(out).numpy()


def _cached_stats(
    key_src: dict,
    extractor: FeatureExtractor,
    batches: Callable[[], Iterator[torch.Tensor]],
    cache_dir,
    keep_features: bool,
) -> ReferenceStats:
    key_src = dict(key_src, extractor=extractor.name, extractor_weights_sha256=extractor.weights_sha256,
                   feature_layer=extractor.feature_layer, format=STATS_FORMAT_VERSION)
    key = _sha(key_src)[:32]
    path = _stats_path(extractor, key, cache_dir)
    if path.exists():
        z = _load_npz(path)
        if z is not None and z["meta"].get("key") == key and (not keep_features or "features" in z):
            meta = dict(z["meta"], cache_path=str(path), cache_hit=True)
            return ReferenceStats(z["mu"], z["sigma"], meta)
    t0 = time.perf_counter()
    feats = _compute_reference(extractor, batches)
    mu, sigma = stats_from_features(feats)
    meta = {
        "key": key,
        "key_source": key_src,
        "n_images": int(feats.shape[0]),
        "feature_dim": int(feats.shape[1]),
        "feature_extractor": extractor.name,
        "feature_extractor_weights_sha256": extractor.weights_sha256,
        "extractor": extractor.identity,
        "seconds": time.perf_counter() - t0,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    _save_npz(path, mu, sigma, meta, feats if keep_features else None)
    return ReferenceStats(mu, sigma, dict(meta, cache_path=str(path), cache_hit=False))


def reference_stats_for_images(
    images_uint8,
    *,
    key_extra: dict | str | None = None,
    extractor: FeatureExtractor,
    cache_dir=None,
    batch_size: int = 256,
    keep_features: bool = True,
) -> ReferenceStats:
    """Cached statistics of an explicit uint8 (N, C, H, W) image tensor; keyed by the sha256 of its bytes."""
    x = torch.as_tensor(images_uint8)
    if x.dtype != torch.uint8 or x.dim() != 4:
        raise ValueError(f"expected uint8 (N, C, H, W), got {x.dtype} {tuple(x.shape)}")
    key_src = {"source": "images", "images_sha256": images_sha256(x), "extra": key_extra}

    def batches():
        for s in range(0, len(x), batch_size):
            yield x[s : s + batch_size]

    return _cached_stats(key_src, extractor, batches, cache_dir, keep_features)


def _dataset_uint8_batches(ds, indices: np.ndarray, batch_size: int, num_workers: int):
    """uint8 batches of ``ds`` at ``indices`` (no flip), whatever the dataset kind."""
    from dmz.data import to_uint8

    u8 = getattr(ds, "images_uint8", None)
    imgs = getattr(ds, "images", None) if u8 is None else None
    if u8 is not None or imgs is not None:
        for s in range(0, len(indices), batch_size):
            idx = torch.from_numpy(indices[s : s + batch_size])
            yield u8[idx] if u8 is not None else to_uint8(imgs[idx])
        return

    class _Items(Dataset):
        def __len__(self):
            return len(indices)

        def __getitem__(self, i):
            j = int(indices[i])
            if hasattr(ds, "load_uint8"):
                return ds.load_uint8(j)
            return to_uint8(torch.as_tensor(ds[j][0])[None])[0]

    loader = torch.utils.data.DataLoader(_Items(), batch_size=batch_size, num_workers=num_workers)
    yield from loader


def reference_stats(
    dataset_name: str,
    split: str = "train",
    *,
    n: int | None = None,
    extractor_name: str | None = None,
    extractor: FeatureExtractor | None = None,
    root=None,
    resolution: int | None = None,
    center_crop: bool = False,
    cache_dir=None,
    seed: int = 0,
    device: str = "cpu",
    batch_size: int = 256,
    num_workers: int = 0,
    keep_features: bool = False,
) -> ReferenceStats:
    """Statistics of ``dataset_name``/``split`` (``n=None``: the whole split, as the release; else a random
    subset of ``n`` images drawn with ``seed``), computed once and cached. Returns ``(mu, sigma, meta)``.

    ``keep_features=True`` also stores the features (needed for KID / precision-recall).
    """
    from dmz.data import build_dataset, dataset_fingerprint

    if extractor is None:
        extractor = get_feature_extractor(
            extractor_name or default_feature_extractor(dataset_name),
            dataset=dataset_name, device=device,
        )
    elif extractor_name is not None and extractor_name != extractor.name:
        raise ValueError(f"extractor_name={extractor_name!r} but extractor is {extractor.name!r}")
    kw = {"center_crop": True} if center_crop else {}
    ds = build_dataset(dataset_name, split, root=root, resolution=resolution, **kw)
    total = len(ds)
    if n is not None and n > total:
        raise ValueError(f"n={n} > {total} images in {dataset_name}/{split}")
    if n is None or n == total:
        n_eff, indices = None, np.arange(total)
    else:
        n_eff = int(n)
        indices = np.sort(np.random.default_rng(seed).choice(total, size=n_eff, replace=False))
    key_src = {
        "source": "dataset",
        "dataset": dataset_name,
        "split": split,
        "fingerprint": dataset_fingerprint(ds),
        "resolution": int(getattr(ds, "resolution", -1)),
        "preprocessing": getattr(ds, "preprocessing", None),
        "n": n_eff,
        "seed": seed if n_eff is not None else None,
    }
    ref = _cached_stats(
        key_src, extractor,
        lambda: _dataset_uint8_batches(ds, indices, batch_size, num_workers),
        cache_dir, keep_features,
    )
    ref.meta.update({"dataset": dataset_name, "split": split, "n": n_eff, "seed": key_src["seed"]})
    return ref


# ----------------------------------------------------------------------------------------------------
# metrics through torch-fidelity


class _UInt8Images(Dataset):
    def __init__(self, x: torch.Tensor):
        self.x = x

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i]


class _CacheOnly(Dataset):
    """Stands in for the reference in torch-fidelity; reading it means the cache was missed (a bug)."""

    def __init__(self, n: int):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        raise RuntimeError("torch-fidelity tried to read the reference images instead of its cache")


def _ref_features(ref: ReferenceStats) -> np.ndarray | None:
    path = ref.meta.get("cache_path")
    if path and os.path.exists(path):
        z = _load_npz(path)
        if z is not None and "features" in z and z["meta"].get("key") == ref.meta.get("key"):
            return z["features"]
    return None


def metrics_against_reference(
    samples_uint8,
    ref: ReferenceStats,
    extractor: FeatureExtractor,
    *,
    kid: bool = False,
    prc: bool = False,
    kid_subset_size: int | None = None,
    kid_subsets: int = 100,
    prc_neighborhood: int = 3,
    ref_features: np.ndarray | None = None,
    batch_size: int = 256,
    seed: int = 2020,
) -> dict:
    """FID (and KID / precision / recall) of uint8 samples (N, C, H, W) against ``ref``, by torch-fidelity.

    Returns ``{"fid", ["kid_mean", "kid_std"], ["precision", "recall", "f_score"], "n_samples", "n_ref",
    "feature_extractor", "feature_extractor_weights_sha256", "kid_subset_size"?}``. KID / PRC need the
    reference features (``reference_stats(..., keep_features=True)`` or ``ref_features=``). KID's subset
    size defaults to min(1000, n_samples, n_ref); PRC follows torch-fidelity (k = ``prc_neighborhood``,
    samples are torch-fidelity's "generated" input1, the reference its "real" input2).
    """
    mu, sigma, meta = ref
    if meta.get("extractor") not in (None, extractor.identity):
        raise ValueError(f"reference statistics were computed with {meta.get('extractor')}, not {extractor.identity}")
    x = prepare_uint8(samples_uint8, extractor.input_channels).cpu().contiguous()
    n_samples, n_ref = len(x), int(meta.get("n_images", 0))
    layer = extractor.feature_layer
    ref_name = f"dmzref-{meta.get('key', 'x')[:16]}"
    kwargs = dict(
        input1=_UInt8Images(x),
        input2=_CacheOnly(n_ref),
        input2_cache_name=ref_name,
        cache=True,
        fid=True,
        kid=kid,
        prc=prc,
        cuda=str(extractor.device).startswith("cuda"),
        batch_size=batch_size,
        save_cpu_ram=True,  # DataLoader num_workers=0
        verbose=False,
        rng_seed=seed,
        **extractor.torch_fidelity_kwargs(),
    )
    if kid or prc:
        feats = ref_features if ref_features is not None else _ref_features(ref)
        if feats is None:
            raise ValueError("KID / precision-recall need the reference features: use "
                             "reference_stats(..., keep_features=True) or pass ref_features=")
        feats = np.asarray(feats, np.float32)
        n_ref = len(feats)
    if kid:
        kid_subset_size = kid_subset_size or min(1000, n_samples, n_ref)
        if kid_subset_size > min(n_samples, n_ref):
            raise ValueError(f"kid_subset_size={kid_subset_size} > min(n_samples={n_samples}, n_ref={n_ref})")
        kwargs.update(kid_subset_size=kid_subset_size, kid_subsets=kid_subsets)
    if prc:
        kwargs.update(prc_neighborhood=prc_neighborhood)
    with tempfile.TemporaryDirectory(prefix="dmz-tf-cache-") as tf_cache:
        # torch-fidelity computes input1's statistics from float32 features: mean float32, cov float64;
        # it asserts equal dtypes on both sides.
        torch.save(
            {"mu": np.asarray(mu, np.float32), "sigma": np.asarray(sigma, np.float64)},
            os.path.join(tf_cache, f"{ref_name}-{extractor.name}-stat-fid-{layer}.pt"),
        )
        if kid or prc:
            torch.save(torch.from_numpy(feats), os.path.join(tf_cache, f"{ref_name}-{extractor.name}-features-{layer}.pt"))
        out = torch_fidelity.calculate_metrics(cache_root=tf_cache, **kwargs)
    res = {"fid": float(out[torch_fidelity.KEY_METRIC_FID])}
    if kid:
        res["kid_mean"] = float(out[torch_fidelity.KEY_METRIC_KID_MEAN])
        res["kid_std"] = float(out[torch_fidelity.KEY_METRIC_KID_STD])
        res["kid_subset_size"] = int(kid_subset_size)
    if prc:
        res["precision"] = float(out[torch_fidelity.KEY_METRIC_PRECISION])
        res["recall"] = float(out[torch_fidelity.KEY_METRIC_RECALL])
        res["f_score"] = float(out[torch_fidelity.KEY_METRIC_F_SCORE])
    res.update(n_samples=n_samples, n_ref=n_ref, **extractor.row_fields())
    return res


def fid_against_reference(samples_uint8, ref: ReferenceStats, extractor: FeatureExtractor, **kwargs) -> float:
    """FID of uint8 samples against ``ref`` (torch-fidelity's value); see :func:`metrics_against_reference`."""
    return metrics_against_reference(samples_uint8, ref, extractor, **kwargs)["fid"]
