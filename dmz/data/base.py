"""What every dataset family of :mod:`dmz.data` shares: :class:`DatasetInfo`, :class:`DatasetNotFoundError`, the
pixel conversions, the two dataset classes (:class:`TensorImageDataset` in memory, :class:`UInt8FileDataset` on
disk), the uint8 resize and the content fingerprints. It imports nothing from the rest of :mod:`dmz.data`.

Fingerprints (:func:`dataset_fingerprint`)
------------------------------------------
A sha256 hex digest of a header (name, split, resolution, preprocessing; not ``flip``, an augmentation rather than
content) followed by

* in-memory datasets (``digits``, ``digits_edges``, ``cifar10``): the exact bytes of the stored images (float32 for
  ``digits``, uint8 for ``cifar10``) and of the labels. Cached per dataset object and recomputed whenever the tensors
  are replaced or modified in place (tracked through the tensors' version counters);
* on-disk datasets (``celeba64``, the pix2pix folders; "file mode", since hashing 200k JPEGs would take minutes):
  each image's file name, size and mtime (ns) in split order, plus the label bytes (:func:`files_fingerprint`).
  Cached per dataset object: a file edited while that object lives goes unnoticed by it, a fresh object sees the
  new size/mtime.

``torch.utils.data.Subset`` of these is fingerprinted as the parent's digest plus the subset indices. Any other
dataset is fingerprinted by its own ``fingerprint()`` method (every class here and in the family modules has one).
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset, Subset

__all__ = [
    "DatasetInfo", "DatasetNotFoundError", "to_uint8", "from_uint8", "random_flip", "default_data_root",
    "download_hint", "resize_uint8", "TensorImageDataset", "UInt8FileDataset", "fingerprint_header", "hash_tensor",
    "files_fingerprint", "dataset_fingerprint", "ImageFolderDataset",
]


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    channels: int
    resolution: int
    label_kind: str                                  # "class", "attributes" or "none"
    num_classes: int | None                          # for "class"
    attribute_names: tuple[str, ...] | None          # for "attributes"
    train_size: int | None = None


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's files are missing (or failed their integrity check); the message says what was expected
    where and how to get it."""


def download_hint() -> str:
    """The end of a :class:`DatasetNotFoundError` message for a dataset the harness can download."""
    return ("pass --data-root DIR (or set $DMZ_DATA_ROOT) to the folder that holds it, or use "
            "`--set data.download=true` where the network allows")


def default_data_root() -> str:
    """``$DMZ_DATA_ROOT`` if set, else ``./data``."""
    return os.environ.get("DMZ_DATA_ROOT") or "./data"


# ---------------------------------------------------------------------------------------------------------------
# pixel conversions


def to_uint8(images: Tensor) -> Tensor:
    """[-1, 1] float (B, C, H, W) -> uint8 (B, C, H, W): ``floor((x + 1) * 127.5 + 0.5)`` after clamping to
    [0, 255] (round to nearest, halves up). NaN raises ValueError rather than becoming an arbitrary byte."""
    if not torch.is_floating_point(images):
        raise TypeError(f"to_uint8 expects a floating-point tensor, got {images.dtype}")
    if torch.isnan(images).any():
        raise ValueError("to_uint8: images contain NaN")
    y = (images.float() + 1.0) * 127.5
    return y.clamp(0.0, 255.0).add(0.5).floor().clamp(0.0, 255.0).to(torch.uint8)


def from_uint8(images: Tensor) -> Tensor:
    """uint8 (B, C, H, W) -> float32 in [-1, 1]: ``u / 127.5 - 1`` (exact inverse of :func:`to_uint8` on uint8)."""
    if images.dtype != torch.uint8:
        raise TypeError(f"from_uint8 expects a uint8 tensor, got {images.dtype}")
    return images.float() / 127.5 - 1.0


def random_flip(images: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Flip each image of a batch (B, C, H, W) horizontally with probability 1/2 (returns a new tensor)."""
    mask = torch.rand(images.shape[0], generator=generator, device="cpu" if generator is None
                      else generator.device) < 0.5
    mask = mask.to(images.device).view(-1, *([1] * (images.dim() - 1)))
    return torch.where(mask, images.flip(-1), images)


def resize_uint8(img: Tensor, size: int, antialias: bool) -> Tensor:
    """uint8 (C, H, W) -> uint8 (C, size, size), bilinear with half-pixel centres, rounded to nearest."""
    y = F.interpolate(img.float().unsqueeze(0), size=(size, size), mode="bilinear", align_corners=False,
                      antialias=antialias)
    return y.squeeze(0).clamp(0.0, 255.0).add(0.5).floor().clamp(0.0, 255.0).to(torch.uint8)


# ---------------------------------------------------------------------------------------------------------------
# fingerprint pieces


def fingerprint_header(ds) -> bytes:
    """The bytes every fingerprint starts with: ``ds``'s name, split, resolution and preprocessing as JSON."""
    meta = {"name": ds.name, "split": ds.split, "resolution": ds.resolution, "preprocessing": ds.preprocessing}
    return json.dumps(meta, sort_keys=True).encode() + b"\0"


def hash_tensor(h, t: Tensor) -> None:
    """Feed tensor ``t`` (its dtype, shape, then its raw bytes) to the hash ``h``."""
    t = t.detach().cpu().contiguous()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.dtype != torch.bool
             else t.to(torch.uint8).numpy().tobytes())


def files_fingerprint(ds, folder: str, tag: bytes) -> str:
    """An on-disk dataset's content key: its header, ``tag``, then each file's name, size and mtime in order, then
    its labels (not the pixels: cheap to recompute, and any rewritten file changes its mtime)."""
    h = hashlib.sha256(fingerprint_header(ds) + tag)
    for f in ds.filenames:
        st = os.stat(os.path.join(folder, f))
        h.update(f"{f}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    hash_tensor(h, ds.labels)
    return h.hexdigest()


def dataset_fingerprint(ds) -> str:
    """sha256 hex digest of a dataset's content (see the module docstring for what each kind hashes)."""
    if isinstance(ds, Subset):
        h = hashlib.sha256(b"subset\0" + dataset_fingerprint(ds.dataset).encode())
        h.update(np.asarray(ds.indices, dtype=np.int64).tobytes())
        return h.hexdigest()
    if callable(getattr(ds, "fingerprint", None)):
        return ds.fingerprint()
    raise TypeError(f"dataset_fingerprint: unsupported dataset type {type(ds).__name__}")


# ---------------------------------------------------------------------------------------------------------------
# dataset classes


class TensorImageDataset(Dataset):
    """A whole split held in memory. ``images`` is float (N, C, H, W) in [-1, 1], or derived lazily from
    ``images_uint8`` (N, C, H, W) when the split is stored as bytes (``cifar10``)."""

    def __init__(self, name: str, split: str, resolution: int, labels: Tensor, *, images: Tensor | None = None,
                 images_uint8: Tensor | None = None, flip: bool = False, preprocessing: str = ""):
        if (images is None) == (images_uint8 is None):
            raise ValueError("give exactly one of images, images_uint8")
        self.name, self.split, self.resolution = name, split, resolution
        self.flip, self.preprocessing = flip, preprocessing
        self.labels = labels
        self.images_uint8 = images_uint8
        self._images = images
        self._fingerprint_cache: tuple | None = None

    @property
    def images(self) -> Tensor:
        if self._images is None:
            self._images = from_uint8(self.images_uint8)
        return self._images

    @images.setter
    def images(self, value: Tensor) -> None:
        if self.images_uint8 is not None:
            raise AttributeError("this split is stored as images_uint8; replace that instead")
        self._images = value

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        if self._images is not None:
            img = self._images[index]
        else:
            img = from_uint8(self.images_uint8[index])
        if self.flip and torch.rand(()) < 0.5:
            img = img.flip(-1)
        return img, self.labels[index]

    def _content_tensor(self) -> Tensor:
        return self.images_uint8 if self.images_uint8 is not None else self._images

    def fingerprint(self) -> str:
        """Header, then the stored image bytes and the label bytes; cached until a tensor is replaced or edited."""
        img, lab = self._content_tensor(), self.labels
        c = self._fingerprint_cache
        if c is not None and c[0] is img and c[1] == img._version and c[2] is lab and c[3] == lab._version:
            return c[4]
        h = hashlib.sha256(fingerprint_header(self))
        hash_tensor(h, img)
        hash_tensor(h, lab)
        digest = h.hexdigest()
        self._fingerprint_cache = (img, img._version, lab, lab._version, digest)
        return digest

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name}, split={self.split}, n={len(self)}, res={self.resolution})"


class UInt8FileDataset(Dataset):
    """An on-disk dataset whose subclass reads image ``index`` as uint8 (C, H, W) (``load_uint8``) and holds
    ``labels`` and ``flip``: items are the image in [-1, 1] (flipped with probability 1/2 when ``flip``) and its label."""

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        img = from_uint8(self.load_uint8(index))
        if self.flip and torch.rand(()) < 0.5:
            img = img.flip(-1)
        return img, self.labels[index]


class ImageFolderDataset(UInt8FileDataset):
    """Image files ``filenames`` in ``image_dir`` (the CelebA folders): a subclass sets them, ``folder``, ``split``,
    ``resolution``, ``labels`` and ``flip``, and turns :meth:`read_rgb` into its ``load_uint8``. Fingerprint: file
    names, sizes and mtimes in split order, plus the labels; cached per object."""

    _fingerprint_cache: str | None = None

    def __len__(self) -> int:
        return len(self.filenames)

    def read_rgb(self, index: int) -> Tensor:
        """File ``index`` as uint8 (3, H, W), as stored."""
        from PIL import Image

        with Image.open(os.path.join(self.image_dir, self.filenames[index])) as im:
            arr = np.asarray(im.convert("RGB"))
        return torch.from_numpy(arr.copy()).permute(2, 0, 1)

    def fingerprint(self) -> str:
        if self._fingerprint_cache is None:
            self._fingerprint_cache = files_fingerprint(self, self.image_dir, b"files\0")
        return self._fingerprint_cache

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.folder}, split={self.split}, n={len(self)}, res={self.resolution})"
