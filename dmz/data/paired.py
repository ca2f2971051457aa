"""Paired datasets for image-to-image translation (PAPER.md 1.10, 3.1): two domains whose items correspond by index.

A translation pair is two datasets registered in :mod:`dmz.data`, one per domain, with the same splits and the same
order, so item i of one split is paired with item i of the same split of the other:

``digits_edges`` <-> ``digits``
    The edge map of every digits image, made deterministically (no download): the 16x16 digit (values in [0, 1]) gets
    a morphological gradient, 3x3 grey dilation minus 3x3 grey erosion, which is thresholded at
    :data:`EDGE_THRESHOLD` into a binary outline and mapped to [-1, 1] (edges +1 on a -1 background, like the
    digits). Same resolutions (8, 16, 32), labels and split as ``digits`` (``ds.indices`` equal).
``edges2handbags_edges`` <-> ``edges2handbags``, ``edges2shoes_edges`` <-> ``edges2shoes``
    pix2pix's folder format: ``<root>/<name>/train/*.jpg`` and ``<root>/<name>/val/*.jpg`` (``test/`` is read
    instead of ``val/`` when present), each file one side-by-side pair: the left half is the edge map (converted to
    greyscale, 1 channel: ``*_edges``), the right half the photo (RGB, 3 channels: the bare name). Each half is
    resized to 64x64 as released, bilinear with half-pixel centres and no antialiasing (cv2's default
    ``INTER_LINEAR``, assumed: the release's preprocessing script is not public) and rounded to uint8. Files are read
    in sorted name order; split ``test`` is pix2pix's ``val``. There are no labels (``label_kind == "none"``; each
    item's label is -1). edges2handbags' train split has 138,567 pairs.

:func:`paired_with` names the other domain of a dataset; :func:`check_pair` is what ``python -m dmz.apps translate``
uses to refuse two runs whose datasets are not the two sides of one pair.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from dmz.data.base import (DatasetInfo, DatasetNotFoundError, TensorImageDataset, UInt8FileDataset, files_fingerprint,
                           resize_uint8)
from dmz.data.digits import digits_images, digits_info, digits_raw

__all__ = ["EDGE_THRESHOLD", "PIX2PIX_NAMES", "PIX2PIX_RESOLUTION", "IMAGE_SUFFIXES", "PAIRS", "paired_with",
           "check_pair", "edge_map", "digits_edges_info", "build_digits_edges", "Pix2PixFolder", "pix2pix_info",
           "pix2pix_build"]

EDGE_THRESHOLD = 0.4  # on the [0, 1] morphological gradient of the digit
PIX2PIX_NAMES = ("edges2handbags", "edges2shoes")
PIX2PIX_RESOLUTION = 64
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")

#: domain -> its partner (both directions)
PAIRS: dict[str, str] = {"digits_edges": "digits"}
for _n in PIX2PIX_NAMES:
    PAIRS[f"{_n}_edges"] = _n
PAIRS.update({v: k for k, v in list(PAIRS.items())})


def paired_with(name: str) -> str | None:
    """The dataset paired with ``name`` by index, or None."""
    return PAIRS.get(name)


def check_pair(source: str, target: str) -> None:
    """ValueError (one line) unless ``source`` and ``target`` are the two domains of one paired dataset."""
    if paired_with(source) != target:
        pairs = sorted({" <-> ".join(sorted((a, b))) for a, b in PAIRS.items()})
        raise ValueError(f"datasets {source!r} and {target!r} are not paired (item i of one is not the translation "
                         f"of item i of the other); paired datasets: {', '.join(pairs)}")


# ---------------------------------------------------------------------------------------------------------------
# digits_edges


def edge_map(images01: Tensor, threshold: float = EDGE_THRESHOLD) -> Tensor:
    """Binary edge maps {0, 1} of (N, 1, H, W) images in [0, 1]: 3x3 grey dilation minus erosion > threshold."""
    dil = F.max_pool2d(images01, 3, stride=1, padding=1)
    ero = -F.max_pool2d(-images01, 3, stride=1, padding=1)
    return ((dil - ero) > threshold).float()


def digits_edges_info(resolution: int | None = None) -> DatasetInfo:
    d = digits_info(resolution)
    return DatasetInfo("digits_edges", 1, d.resolution, "class", 10, None, d.train_size)


def build_digits_edges(split, *, root, resolution, flip, center_crop, download) -> TensorImageDataset:
    info = digits_edges_info(resolution)
    _, y, tr, te = digits_raw()
    idx = tr if split == "train" else te
    idx_t = torch.from_numpy(idx)
    digits01 = (digits_images(info.resolution)[idx_t] + 1.0) / 2.0
    edges = edge_map(digits01) * 2.0 - 1.0
    ds = TensorImageDataset("digits_edges", split, info.resolution, torch.from_numpy(y)[idx_t].clone(),
                            images=edges, flip=flip,
                            preprocessing=f"digits,morph-gradient3x3>{EDGE_THRESHOLD},2e-1")
    ds.indices = idx.copy()
    return ds


# ---------------------------------------------------------------------------------------------------------------
# pix2pix folders


class Pix2PixFolder(UInt8FileDataset):
    """One side (``edges`` or ``photo``) of a pix2pix paired folder (see the module docstring)."""

    def __init__(self, root: str, name: str, split: str, side: str, resolution: int = PIX2PIX_RESOLUTION,
                 flip: bool = False):
        if side not in ("edges", "photo"):
            raise ValueError(f"side must be 'edges' or 'photo', not {side!r}")
        self.base, self.side, self.split, self.resolution, self.flip = name, side, split, int(resolution), flip
        self.name = f"{name}_edges" if side == "edges" else name
        self.channels = 1 if side == "edges" else 3
        self.preprocessing = f"pix2pix-{side}-half,bilinear-noantialias"
        self.folder = _pix2pix_split_dir(root, name, split)
        self.filenames = sorted(e.name for e in os.scandir(self.folder)
                                if e.is_file() and e.name.lower().endswith(IMAGE_SUFFIXES))
        if not self.filenames:
            raise DatasetNotFoundError(f"{self.folder} holds no .jpg/.png pairs; {_pix2pix_hint(root, name)}")
        self.labels = torch.full((len(self.filenames),), -1, dtype=torch.long)
        self._fingerprint_cache: str | None = None

    def __len__(self) -> int:
        return len(self.filenames)

    def load_uint8(self, index: int) -> Tensor:
        """The preprocessed half of pair ``index`` as uint8 (C, R, R), no flip."""
        from PIL import Image

        with Image.open(os.path.join(self.folder, self.filenames[index])) as im:
            w, h = im.size
            box = (0, 0, w // 2, h) if self.side == "edges" else (w // 2, 0, w, h)
            half = im.convert("RGB").crop(box).convert("L" if self.side == "edges" else "RGB")
            arr = np.asarray(half)
        img = torch.from_numpy(arr.copy())
        img = img.unsqueeze(0) if img.dim() == 2 else img.permute(2, 0, 1)
        return resize_uint8(img, self.resolution, antialias=False)

    def fingerprint(self) -> str:
        """File names, sizes and mtimes in order (as ``celeba64``'s file mode), cached per object."""
        if self._fingerprint_cache is None:
            self._fingerprint_cache = files_fingerprint(self, self.folder, f"files\0{self.side}\0".encode())
        return self._fingerprint_cache

    def __repr__(self) -> str:
        return f"Pix2PixFolder({self.folder}, side={self.side}, n={len(self)}, res={self.resolution})"


def _pix2pix_hint(root: str, name: str) -> str:
    return (f"put pix2pix's {name}.tar.gz (efrosgans.eecs.berkeley.edu/pix2pix/datasets/{name}.tar.gz) unpacked "
            f"under {root} (so that {os.path.join(root, name, 'train')} holds the side-by-side pairs), or pass "
            f"--set data_root=DIR (or set $DMZ_DATA_ROOT)")


def _pix2pix_split_dir(root: str, name: str, split: str) -> str:
    candidates = ["train"] if split == "train" else ["test", "val"]
    for c in candidates:
        d = os.path.join(root, name, c)
        if os.path.isdir(d):
            return d
    expected = " or ".join(os.path.join(root, name, c) for c in candidates)
    raise DatasetNotFoundError(f"{name} ({split} split) not found: expected the folder {expected}; "
                               f"{_pix2pix_hint(root, name)}")


def pix2pix_info(name: str, side: str):
    def info(resolution: int | None = None) -> DatasetInfo:
        res = PIX2PIX_RESOLUTION if resolution is None else int(resolution)
        if res < 8:
            raise ValueError(f"{name}: resolution must be >= 8, got {res}")
        return DatasetInfo(f"{name}_edges" if side == "edges" else name, 1 if side == "edges" else 3, res, "none",
                           None, None, 138_567 if name == "edges2handbags" else None)
    return info


def pix2pix_build(name: str, side: str):
    def build(split, *, root, resolution, flip, center_crop, download) -> Pix2PixFolder:
        info = pix2pix_info(name, side)(resolution)
        if download:
            raise DatasetNotFoundError(f"{name} cannot be downloaded by this harness; {_pix2pix_hint(root, name)}")
        return Pix2PixFolder(root, name, split, side, info.resolution, flip=flip)
    return build

