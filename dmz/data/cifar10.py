"""``cifar10``: ``torchvision.datasets.CIFAR10`` under ``<root>/cifar-10-batches-py`` (md5-checked by torchvision);
train 50,000 / test 10,000, 3x32x32, ``u8 / 127.5 - 1``.
"""
from __future__ import annotations

import os

import numpy as np
import torch

from dmz.data.base import DatasetInfo, DatasetNotFoundError, TensorImageDataset, download_hint

__all__ = ["cifar10_info", "build_cifar10"]


def cifar10_info(resolution: int | None = None) -> DatasetInfo:
    if resolution not in (None, 32):
        raise ValueError(f"cifar10: resolution must be 32, got {resolution}")
    return DatasetInfo("cifar10", 3, 32, "class", 10, None, 50_000)


def build_cifar10(split, *, root, resolution, flip, center_crop, download) -> TensorImageDataset:
    cifar10_info(resolution)
    from torchvision.datasets import CIFAR10

    folder = os.path.join(root, "cifar-10-batches-py")
    if not download and not os.path.isdir(folder):
        raise DatasetNotFoundError(f"CIFAR-10 not found: expected {folder} (torchvision's "
                                   f"cifar-10-batches-py pickles); {download_hint()}")
    try:
        tv = CIFAR10(root, train=(split == "train"), download=download)
    except RuntimeError as e:   # torchvision: "Dataset not found or corrupted" / metadata md5 mismatch
        raise DatasetNotFoundError(f"CIFAR-10 at {folder} is missing files or failed torchvision's md5 integrity "
                                   f"check ({e}); {download_hint()}") from e
    except OSError as e:        # download failure
        raise DatasetNotFoundError(f"CIFAR-10 could not be downloaded to {folder} ({e}); "
                                   f"{download_hint()}") from e
    images = torch.from_numpy(np.ascontiguousarray(tv.data)).permute(0, 3, 1, 2).contiguous()
    labels = torch.as_tensor(tv.targets, dtype=torch.long)
    ds = TensorImageDataset("cifar10", split, 32, labels, images_uint8=images, flip=flip,
                            preprocessing="u8/127.5-1")
    ds.classes = tuple(tv.classes)
    return ds
