"""Dataset registry: the face of the datasets package. It owns :data:`DATASETS`, registers every dataset (one line
each, below) and re-exports the shared helpers; each family lives in its own module:

* :mod:`dmz.data.digits`   ``digits`` (scikit-learn's embedded digits, no download);
* :mod:`dmz.data.cifar10`  ``cifar10``;
* :mod:`dmz.data.celeba`   ``celeba64`` (the aligned CelebA folder, :class:`CelebAFolder`);
* :mod:`dmz.data.paired`   the paired translation datasets (``digits_edges``, ``edges2handbags``, ``edges2shoes`` and
  their ``*_edges`` sides), :func:`~dmz.data.paired.check_pair`;
* :mod:`dmz.data.base`     what they share: :class:`DatasetInfo`, :class:`DatasetNotFoundError`, the pixel
  conversions, :class:`TensorImageDataset` / :class:`UInt8FileDataset` and the fingerprints.

A family module imports only :mod:`dmz.data.base` (and, for ``digits_edges``, :mod:`dmz.data.digits`), never this
face. Adding a dataset: a new module with its ``info`` and ``build`` functions, and one :class:`DatasetEntry` line in
:data:`DATASETS`.

Every dataset yields ``(image, label)`` items:

* ``image``: float32 (C, H, W) in [-1, 1];
* ``label``: a LongTensor scalar (``label_kind == "class"``; -1 for ``label_kind == "none"``) or a LongTensor (40,)
  of 0/1 (``label_kind == "attributes"``).

``flip=True`` adds a random horizontal flip with probability 1/2 per item (the released training augmentation,
PAPER.md 3.1); evaluation and latent extraction use ``flip=False``. The in-memory datasets (``digits``,
``digits_edges``, ``cifar10``) also expose ``.images`` (N, C, H, W) float in [-1, 1] and ``.labels``, for callers
that batch by indexing; such callers apply :func:`random_flip` themselves when ``ds.flip`` is set.

Each family module's docstring gives its files, splits and preprocessing; :mod:`dmz.data.base` says what
:func:`dataset_fingerprint` hashes for each kind of dataset.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

from torch.utils.data import Dataset

from dmz.data.base import (DatasetInfo, DatasetNotFoundError, dataset_fingerprint, default_data_root, from_uint8,
                           random_flip, to_uint8)
from dmz.data.base import TensorImageDataset, UInt8FileDataset, files_fingerprint  # noqa: F401  (re-exported)
from dmz.data.celeba import CELEBA_ATTRIBUTES, build_celeba64, celeba64_info
from dmz.data.celeba import CelebAFolder  # noqa: F401  (re-exported)
from dmz.data.celebahq import build_celebahq256, celebahq256_info
from dmz.data.cifar10 import build_cifar10, cifar10_info
from dmz.data.digits import build_digits, digits_info
from dmz.data.digits import DIGITS_RESOLUTIONS, DIGITS_TEST_SIZE  # noqa: F401  (re-exported)
from dmz.data.paired import PIX2PIX_NAMES, build_digits_edges, digits_edges_info, pix2pix_build, pix2pix_info

__all__ = [
    "DatasetInfo", "DatasetNotFoundError", "DATASETS", "CELEBA_ATTRIBUTES", "dataset_names", "dataset_info",
    "build_dataset", "dataset_fingerprint", "to_uint8", "from_uint8", "random_flip", "default_data_root",
]


@dataclass(frozen=True)
class DatasetEntry:
    """A registry entry. Calling it builds the dataset (same arguments as :func:`build_dataset` less the name).
    ``center_crop``: whether the dataset accepts ``center_crop=True``."""
    name: str
    splits: tuple[str, ...]
    info: Callable[..., DatasetInfo]
    build: Callable[..., Dataset]
    needs_root: bool
    center_crop: bool = False

    def __call__(self, split: str = "train", **kwargs) -> Dataset:
        return build_dataset(self.name, split, **kwargs)


_TRAIN_TEST = ("train", "test")

#: name -> entry, in this order (``dataset_names()``, error messages). One line per dataset.
DATASETS: dict[str, DatasetEntry] = {e.name: e for e in (
    DatasetEntry("digits", _TRAIN_TEST, digits_info, build_digits, False),
    DatasetEntry("cifar10", _TRAIN_TEST, cifar10_info, build_cifar10, True),
    DatasetEntry("celeba64", ("train", "val", "test", "valtest"), celeba64_info, build_celeba64, True,
                 center_crop=True),
    DatasetEntry("celebahq256", _TRAIN_TEST, celebahq256_info, build_celebahq256, True),
    # paired (dmz.data.paired): item i of one side is the translation of item i of the other
    DatasetEntry("digits_edges", _TRAIN_TEST, digits_edges_info, build_digits_edges, False),
    # edges2handbags_edges, edges2handbags, edges2shoes_edges, edges2shoes (the pix2pix folders, both sides)
    *(DatasetEntry(f"{name}_edges" if side == "edges" else name, _TRAIN_TEST, pix2pix_info(name, side),
                   pix2pix_build(name, side), True)
      for name in PIX2PIX_NAMES for side in ("edges", "photo")),
)}


def dataset_names() -> list[str]:
    return list(DATASETS)


def _entry(name: str) -> DatasetEntry:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid datasets: {', '.join(DATASETS)}")
    return DATASETS[name]


def _check_center_crop(name: str, entry: DatasetEntry) -> None:
    if not entry.center_crop:
        croppable = ", ".join(n for n, e in DATASETS.items() if e.center_crop)
        raise ValueError(f"center_crop is only defined for {croppable}, not {name!r}")


_IGNORED_INFO_OPTIONS = ("split", "root", "flip", "download")


def dataset_info(name: str, **options) -> DatasetInfo:
    """Static facts about a dataset; ``options`` are ``build_dataset`` keywords (``resolution`` and, for
    celeba64, ``center_crop`` matter; ``split``/``root``/``flip``/``download`` are accepted and ignored)."""
    entry = _entry(name)
    opts = {k: v for k, v in options.items() if k not in _IGNORED_INFO_OPTIONS}
    if opts.get("center_crop"):
        _check_center_crop(name, entry)
    if not entry.center_crop:
        opts.pop("center_crop", None)
    try:
        return entry.info(**opts)
    except TypeError as e:
        raise TypeError(f"dataset_info({name!r}): unsupported options {sorted(opts)}") from e


def build_dataset(name: str, split: str = "train", *, root: str | None = None, resolution: int | None = None,
                  flip: bool = False, center_crop: bool = False, download: bool = False) -> Dataset:
    """Build dataset ``name``'s ``split``. ``root`` defaults to :func:`default_data_root` (ignored by digits)."""
    entry = _entry(name)
    if split not in entry.splits:
        raise ValueError(f"unknown split {split!r} for dataset {name!r}; valid splits: {', '.join(entry.splits)}")
    if center_crop:
        _check_center_crop(name, entry)
    root = os.fspath(root) if root is not None else default_data_root()
    return entry.build(split, root=root, resolution=resolution, flip=bool(flip), center_crop=bool(center_crop),
                       download=bool(download))
