"""``digits``: scikit-learn's bundled ``load_digits`` (1797 8x8 images with values 0..16, 10 classes), so it needs no
download.

Pixels are scaled to [0, 1] (``x / 16``), resized with ``torch.nn.functional.interpolate(mode="bilinear",
align_corners=False, antialias=False)`` to ``resolution`` (8, 16 (default) or 32), then mapped to [-1, 1]
(``2 y - 1``). No quantisation. Split: ``train_test_split(arange(1797), test_size=0.2, stratify=y, random_state=0)``,
giving 1437 train / 360 test images; each split keeps the original sklearn order (its indices sorted, exposed as
``ds.indices``). :func:`digits_raw` and :func:`digits_images` are shared with ``digits_edges``
(:mod:`dmz.data.paired`).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dmz.data.base import DatasetInfo, TensorImageDataset

__all__ = ["DIGITS_TEST_SIZE", "DIGITS_RESOLUTIONS", "digits_raw", "digits_images", "digits_info", "build_digits"]

DIGITS_TEST_SIZE = 0.2
DIGITS_RESOLUTIONS = (8, 16, 32)


@lru_cache(maxsize=None)
def digits_raw() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(images (1797, 8, 8) float32 0..16, labels, train indices, test indices)``, the indices sorted."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = np.asarray(d.images, dtype=np.float32)           # (1797, 8, 8), values 0..16
    y = np.asarray(d.target, dtype=np.int64)
    tr, te = train_test_split(np.arange(len(y)), test_size=DIGITS_TEST_SIZE, stratify=y, random_state=0)
    return x, y, np.sort(tr), np.sort(te)


@lru_cache(maxsize=None)
def digits_images(resolution: int) -> Tensor:
    """All 1797 digits as float (1797, 1, R, R) in [-1, 1] (computed once per process and resolution)."""
    x, _, _, _ = digits_raw()
    t = torch.from_numpy(x).unsqueeze(1) / 16.0
    t = F.interpolate(t, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=False)
    return t * 2.0 - 1.0


def digits_info(resolution: int | None = None) -> DatasetInfo:
    res = 16 if resolution is None else resolution
    if res not in DIGITS_RESOLUTIONS:
        raise ValueError(f"digits: resolution must be one of {DIGITS_RESOLUTIONS}, got {res}")
    n_test = int(np.ceil(DIGITS_TEST_SIZE * 1797))
    return DatasetInfo("digits", 1, res, "class", 10, None, 1797 - n_test)


def build_digits(split, *, root, resolution, flip, center_crop, download) -> TensorImageDataset:
    info = digits_info(resolution)
    _, y, tr, te = digits_raw()
    idx = tr if split == "train" else te
    idx_t = torch.from_numpy(idx)
    ds = TensorImageDataset("digits", split, info.resolution, torch.from_numpy(y)[idx_t].clone(),
                            images=digits_images(info.resolution)[idx_t].clone(), flip=flip,
                            preprocessing="x/16,bilinear-noantialias,2y-1")
    ds.indices = idx.copy()
    return ds
