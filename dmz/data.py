"""Dataset registry: ``digits`` (embedded), ``cifar10`` and ``celeba64``; the paired translation datasets
(``digits_edges``, ``edges2handbags``, ``edges2shoes`` and their ``*_edges`` sides) live in :mod:`dmz.paired_data`.

Every dataset yields ``(image, label)`` items:

* ``image``: float32 (C, H, W) in [-1, 1];
* ``label``: a LongTensor scalar (``label_kind == "class"``) or a LongTensor (40,) of 0/1
  (``label_kind == "attributes"``).

``flip=True`` adds a random horizontal flip with probability 1/2 per item (the released training augmentation,
PAPER.md 3.1); evaluation and latent extraction use ``flip=False``. The in-memory datasets (``digits``,
``cifar10``) also expose ``.images`` (N, C, H, W) float in [-1, 1] and ``.labels``, for callers that batch by
indexing; such callers apply :func:`random_flip` themselves when ``ds.flip`` is set.

Datasets and preprocessing
--------------------------
``digits``  scikit-learn's bundled ``load_digits`` (1797 8x8 images with values 0..16, 10 classes), so it needs no
    download. Pixels are scaled to [0, 1] (``x / 16``), resized with ``torch.nn.functional.interpolate(mode=
    "bilinear", align_corners=False, antialias=False)`` to ``resolution`` (8, 16 (default) or 32), then mapped to
    [-1, 1] (``2 y - 1``). No quantisation. Split: ``train_test_split(arange(1797), test_size=0.2, stratify=y,
    random_state=0)``, giving 1437 train / 360 test images; each split keeps the original sklearn order (its
    indices sorted, exposed as ``ds.indices``).
``cifar10`` ``torchvision.datasets.CIFAR10`` under ``<root>/cifar-10-batches-py`` (md5-checked by torchvision);
    train 50,000 / test 10,000, 3x32x32, ``u8 / 127.5 - 1``.
``celeba64`` the aligned CelebA images ``<root>/celeba/img_align_celeba/*.jpg`` (178x218), the 40 attributes of
    ``list_attr_celeba.txt`` (-1/1 mapped to 0/1, as torchvision does) and the official partition of
    ``list_eval_partition.txt``. The files are read directly with PIL (torchvision's ``CelebA`` class also
    demands the identity/bbox/landmark files and their md5s; it is used only for ``download=True``).
    Splits: ``train`` (162,770), ``val`` (19,867), ``test`` (19,962) and ``valtest`` (val + test in file order,
    39,829 images: the released ``celeba64_val_test``).
    Preprocessing, default (``center_crop=False``), as released: the whole 178x218 frame is resized directly to
    64x64, aspect ratio distorted (PAPER.md 3.1). The release calls ``cv2.resize`` with its default
    ``INTER_LINEAR``, which does *not* antialias; we reproduce it with torch bilinear, ``align_corners=False``
    (the same half-pixel sampling grid as cv2), ``antialias=False``, and round to uint8 as the release's stored
    PNGs are (cv2's fixed-point arithmetic may differ by one grey level). ``center_crop=True``: the centre
    148x148 square (offsets 15 left, 35 top) is cut out, then resized with antialiased bilinear
    (torchvision ``Resize``-style), the crop used by much of the face-generation literature; it is not the
    release's protocol. ``resolution`` may be changed from 64 (any size >= 8).

Fingerprints (:func:`dataset_fingerprint`)
------------------------------------------
A sha256 hex digest of a header (name, split, resolution, preprocessing; not ``flip``, an augmentation rather than
content) followed by

* in-memory datasets (``digits``, ``cifar10``): the exact bytes of the stored images (float32 for ``digits``,
  uint8 for ``cifar10``) and of the labels. Cached per dataset object and recomputed whenever the tensors are
  replaced or modified in place (tracked through the tensors' version counters);
* ``celeba64`` ("file mode", since hashing 200k JPEGs would take minutes): each image's file name, size and
  mtime (ns) in split order, plus the label bytes. Cached per dataset object: a file edited while that object
  lives goes unnoticed by it, a fresh object sees the new size/mtime.

``torch.utils.data.Subset`` of these is fingerprinted as the parent's digest plus the subset indices.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import Dataset, Subset

__all__ = [
    "DatasetInfo", "DatasetNotFoundError", "DATASETS", "CELEBA_ATTRIBUTES", "dataset_names", "dataset_info",
    "build_dataset", "dataset_fingerprint", "to_uint8", "from_uint8", "random_flip", "default_data_root",
]


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    channels: int
    resolution: int
    label_kind: str                                  # "class" or "attributes"
    num_classes: int | None                          # for "class"
    attribute_names: tuple[str, ...] | None          # for "attributes"
    train_size: int | None = None


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's files are missing (or failed their integrity check); the message says what was expected
    where and how to get it."""


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


def default_data_root() -> str:
    """``$DMZ_DATA_ROOT`` if set, else ``./data``."""
    return os.environ.get("DMZ_DATA_ROOT") or "./data"


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


class CelebAFolder(UInt8FileDataset):
    """CelebA read from ``<root>/celeba`` (see the module docstring for the preprocessing)."""

    def __init__(self, root: str, split: str, resolution: int = 64, center_crop: bool = False, flip: bool = False):
        self.name, self.split, self.resolution = "celeba64", split, resolution
        self.center_crop, self.flip = center_crop, flip
        self.preprocessing = ("crop148+bilinear-antialias" if center_crop else "full-frame+bilinear-noantialias")
        self.folder = os.path.join(root, "celeba")
        self.image_dir = os.path.join(self.folder, "img_align_celeba")
        attr_path = os.path.join(self.folder, "list_attr_celeba.txt")
        part_path = os.path.join(self.folder, "list_eval_partition.txt")
        _check_celeba_files(root, self.image_dir, attr_path, part_path)
        names, attrs = _read_celeba_attributes(attr_path)
        partition = _read_celeba_partition(part_path)
        wanted = {"train": (0,), "val": (1,), "test": (2,), "valtest": (1, 2)}[split]
        row_of = {n: i for i, n in enumerate(names)}
        self.filenames = [f for f, p in partition if p in wanted]
        missing_attr = [f for f in self.filenames if f not in row_of]
        if missing_attr:
            raise ValueError(f"{attr_path} has no attributes for {len(missing_attr)} images of "
                             f"{part_path}, e.g. {missing_attr[:3]}")
        self.labels = attrs[[row_of[f] for f in self.filenames]]
        present = {e.name for e in os.scandir(self.image_dir)}
        absent = [f for f in self.filenames if f not in present]
        if absent:
            raise DatasetNotFoundError(
                f"{len(absent)} images of CelebA split {split!r} are missing from {self.image_dir} "
                f"(e.g. {absent[:3]}); unzip the complete img_align_celeba.zip there")
        self._fingerprint_cache: str | None = None

    def __len__(self) -> int:
        return len(self.filenames)

    def load_uint8(self, index: int) -> Tensor:
        """The preprocessed image ``index`` as uint8 (3, R, R), no flip."""
        from PIL import Image

        with Image.open(os.path.join(self.image_dir, self.filenames[index])) as im:
            arr = np.asarray(im.convert("RGB"))
        img = torch.from_numpy(arr.copy()).permute(2, 0, 1)
        if self.center_crop:
            h, w = img.shape[1:]
            side = min(148, h, w)
            top, left = round((h - side) / 2), round((w - side) / 2)
            img = img[:, top:top + side, left:left + side]
        return _resize_uint8(img, self.resolution, antialias=self.center_crop)

    def __repr__(self) -> str:
        return f"CelebAFolder({self.folder}, split={self.split}, n={len(self)}, res={self.resolution})"


def _resize_uint8(img: Tensor, size: int, antialias: bool) -> Tensor:
    """uint8 (C, H, W) -> uint8 (C, size, size), bilinear with half-pixel centres, rounded to nearest."""
    y = F.interpolate(img.float().unsqueeze(0), size=(size, size), mode="bilinear", align_corners=False,
                      antialias=antialias)
    return y.squeeze(0).clamp(0.0, 255.0).add(0.5).floor().clamp(0.0, 255.0).to(torch.uint8)


# ---------------------------------------------------------------------------------------------------------------
# digits


DIGITS_TEST_SIZE = 0.2
DIGITS_RESOLUTIONS = (8, 16, 32)


@lru_cache(maxsize=None)
def _digits_raw() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = np.asarray(d.images, dtype=np.float32)           # (1797, 8, 8), values 0..16
    y = np.asarray(d.target, dtype=np.int64)
    tr, te = train_test_split(np.arange(len(y)), test_size=DIGITS_TEST_SIZE, stratify=y, random_state=0)
    return x, y, np.sort(tr), np.sort(te)


@lru_cache(maxsize=None)
def _digits_images(resolution: int) -> Tensor:
    """All 1797 digits as float (1797, 1, R, R) in [-1, 1] (computed once per process and resolution)."""
    x, _, _, _ = _digits_raw()
    t = torch.from_numpy(x).unsqueeze(1) / 16.0
    t = F.interpolate(t, size=(resolution, resolution), mode="bilinear", align_corners=False, antialias=False)
    return t * 2.0 - 1.0


def _digits_info(resolution: int | None = None) -> DatasetInfo:
    res = 16 if resolution is None else resolution
    if res not in DIGITS_RESOLUTIONS:
        raise ValueError(f"digits: resolution must be one of {DIGITS_RESOLUTIONS}, got {res}")
    n_test = int(np.ceil(DIGITS_TEST_SIZE * 1797))
    return DatasetInfo("digits", 1, res, "class", 10, None, 1797 - n_test)


def _build_digits(split, *, root, resolution, flip, center_crop, download) -> TensorImageDataset:
    info = _digits_info(resolution)
    _, y, tr, te = _digits_raw()
    idx = tr if split == "train" else te
    idx_t = torch.from_numpy(idx)
    ds = TensorImageDataset("digits", split, info.resolution, torch.from_numpy(y)[idx_t].clone(),
                            images=_digits_images(info.resolution)[idx_t].clone(), flip=flip,
                            preprocessing="x/16,bilinear-noantialias,2y-1")
    ds.indices = idx.copy()
    return ds


# ---------------------------------------------------------------------------------------------------------------
# cifar10


def _cifar_info(resolution: int | None = None) -> DatasetInfo:
    if resolution not in (None, 32):
        raise ValueError(f"cifar10: resolution must be 32, got {resolution}")
    return DatasetInfo("cifar10", 3, 32, "class", 10, None, 50_000)


def _how_to_get() -> str:
    return ("pass --data-root DIR (or set $DMZ_DATA_ROOT) to the folder that holds it, or use "
            "`--set data.download=true` where the network allows")


def _build_cifar10(split, *, root, resolution, flip, center_crop, download) -> TensorImageDataset:
    _cifar_info(resolution)
    from torchvision.datasets import CIFAR10

    folder = os.path.join(root, "cifar-10-batches-py")
    if not download and not os.path.isdir(folder):
        raise DatasetNotFoundError(f"CIFAR-10 not found: expected {folder} (torchvision's "
                                   f"cifar-10-batches-py pickles); {_how_to_get()}")
    try:
        tv = CIFAR10(root, train=(split == "train"), download=download)
    except RuntimeError as e:   # torchvision: "Dataset not found or corrupted" / metadata md5 mismatch
        raise DatasetNotFoundError(f"CIFAR-10 at {folder} is missing files or failed torchvision's md5 integrity "
                                   f"check ({e}); {_how_to_get()}") from e
    except OSError as e:        # download failure
        raise DatasetNotFoundError(f"CIFAR-10 could not be downloaded to {folder} ({e}); "
                                   f"{_how_to_get()}") from e
    images = torch.from_numpy(np.ascontiguousarray(tv.data)).permute(0, 3, 1, 2).contiguous()
    labels = torch.as_tensor(tv.targets, dtype=torch.long)
    ds = TensorImageDataset("cifar10", split, 32, labels, images_uint8=images, flip=flip,
                            preprocessing="u8/127.5-1")
    ds.classes = tuple(tv.classes)
    return ds


# ---------------------------------------------------------------------------------------------------------------
# celeba64


CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips",
    "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin",
    "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open",
    "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
    "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat",
    "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)


def _celeba_info(resolution: int | None = None, center_crop: bool = False) -> DatasetInfo:
    res = 64 if resolution is None else int(resolution)
    if res < 8:
        raise ValueError(f"celeba64: resolution must be >= 8, got {res}")
    return DatasetInfo("celeba64", 3, res, "attributes", None, CELEBA_ATTRIBUTES, 162_770)


def _check_celeba_files(root: str, image_dir: str, attr_path: str, part_path: str) -> None:
    missing = [p for p, ok in ((image_dir, os.path.isdir(image_dir)), (attr_path, os.path.isfile(attr_path)),
                               (part_path, os.path.isfile(part_path))) if not ok]
    if missing:
        raise DatasetNotFoundError(
            f"CelebA not found under {os.path.join(root, 'celeba')}: missing {', '.join(missing)}. Put the aligned "
            f"images (img_align_celeba.zip, unzipped to img_align_celeba/), list_attr_celeba.txt and "
            f"list_eval_partition.txt from the CelebA site (mmlab.ie.cuhk.edu.hk/projects/CelebA.html) there; "
            f"{_how_to_get()} (torchvision's Google Drive download, needs gdown)")


def _read_celeba_attributes(path: str) -> tuple[list[str], Tensor]:
    with open(path) as f:
        lines = f.read().splitlines()
    if len(lines) < 2:
        raise ValueError(f"{path}: expected a count line and a header line")
    header = tuple(lines[1].split())
    if header != CELEBA_ATTRIBUTES:
        raise ValueError(f"{path}: header is not the 40 CelebA attributes: {header[:5]}...")
    names, rows = [], []
    for lineno, line in enumerate(lines[2:], start=3):
        parts = line.split()
        if not parts:
            continue
        vals = parts[1:]
        if len(vals) != 40 or any(v not in ("1", "-1") for v in vals):
            raise ValueError(f"{path}:{lineno}: expected a file name and 40 values in {{-1, 1}}")
        names.append(parts[0])
        rows.append([v == "1" for v in vals])
    expected = lines[0].strip()
    if expected.isdigit() and int(expected) != len(names):
        raise ValueError(f"{path}: count line says {expected} rows, found {len(names)}")
    return names, torch.tensor(rows, dtype=torch.long).reshape(-1, 40)


def _read_celeba_partition(path: str) -> list[tuple[str, int]]:
    out = []
    with open(path) as f:
        for lineno, line in enumerate(f, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise ValueError(f"{path}:{lineno}: expected '<file> <0|1|2>'")
            out.append((parts[0], int(parts[1])))
    return out


def _build_celeba64(split, *, root, resolution, flip, center_crop, download) -> CelebAFolder:
    info = _celeba_info(resolution, center_crop)
    folder = os.path.join(root, "celeba")
    have = all(os.path.exists(os.path.join(folder, p))
               for p in ("img_align_celeba", "list_attr_celeba.txt", "list_eval_partition.txt"))
    if download and not have:
        from torchvision.datasets import CelebA
        try:
            CelebA(root, split="all", target_type="attr", download=True)
        except Exception as e:  # gdown missing, Drive quota, no network, ...
            raise DatasetNotFoundError(f"CelebA download to {folder} failed ({type(e).__name__}: {e}); "
                                       f"download the files by hand into {folder}") from e
    return CelebAFolder(root, split, info.resolution, center_crop=center_crop, flip=flip)


# ---------------------------------------------------------------------------------------------------------------
# registry


@dataclass(frozen=True)
class DatasetEntry:
    """A registry entry. Calling it builds the dataset (same arguments as :func:`build_dataset` less the name)."""
    name: str
    splits: tuple[str, ...]
    info: Callable[..., DatasetInfo]
    build: Callable[..., Dataset]
    needs_root: bool

    def __call__(self, split: str = "train", **kwargs) -> Dataset:
        return build_dataset(self.name, split, **kwargs)


DATASETS: dict[str, DatasetEntry] = {
    "digits": DatasetEntry("digits", ("train", "test"), _digits_info, _build_digits, False),
    "cifar10": DatasetEntry("cifar10", ("train", "test"), _cifar_info, _build_cifar10, True),
    "celeba64": DatasetEntry("celeba64", ("train", "val", "test", "valtest"), _celeba_info, _build_celeba64, True),
}


def dataset_names() -> list[str]:
    return list(DATASETS)


def _entry(name: str) -> DatasetEntry:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; valid datasets: {', '.join(DATASETS)}")
    return DATASETS[name]


_IGNORED_INFO_OPTIONS = ("split", "root", "flip", "download")


def dataset_info(name: str, **options) -> DatasetInfo:
    """Static facts about a dataset; ``options`` are ``build_dataset`` keywords (``resolution`` and, for
    celeba64, ``center_crop`` matter; ``split``/``root``/``flip``/``download`` are accepted and ignored)."""
    entry = _entry(name)
    opts = {k: v for k, v in options.items() if k not in _IGNORED_INFO_OPTIONS}
    if opts.get("center_crop") and name != "celeba64":
        raise ValueError(f"center_crop is only defined for celeba64, not {name!r}")
    if name != "celeba64":
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
    if center_crop and name != "celeba64":
        raise ValueError(f"center_crop is only defined for celeba64, not {name!r}")
    root = os.fspath(root) if root is not None else default_data_root()
    return entry.build(split, root=root, resolution=resolution, flip=bool(flip), center_crop=bool(center_crop),
                       download=bool(download))


# ---------------------------------------------------------------------------------------------------------------
# fingerprints


def _header(ds) -> bytes:
    meta = {"name": ds.name, "split": ds.split, "resolution": ds.resolution, "preprocessing": ds.preprocessing}
    return json.dumps(meta, sort_keys=True).encode() + b"\0"


def _tensor_bytes(h, t: Tensor) -> None:
    t = t.detach().cpu().contiguous()
    h.update(f"{t.dtype}{tuple(t.shape)}".encode())
    h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.dtype != torch.bool
             else t.to(torch.uint8).numpy().tobytes())


def files_fingerprint(ds, folder: str, tag: bytes) -> str:
    """An on-disk dataset's content key: its header, ``tag``, then each file's name, size and mtime in order, then
    its labels (not the pixels: cheap to recompute, and any rewritten file changes its mtime)."""
    h = hashlib.sha256(_header(ds) + tag)
    for f in ds.filenames:
        st = os.stat(os.path.join(folder, f))
        h.update(f"{f}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
    _tensor_bytes(h, ds.labels)
    return h.hexdigest()


def dataset_fingerprint(ds) -> str:
    """sha256 hex digest of a dataset's content (see the module docstring for what each kind hashes)."""
    if isinstance(ds, Subset):
        h = hashlib.sha256(b"subset\0" + dataset_fingerprint(ds.dataset).encode())
        h.update(np.asarray(ds.indices, dtype=np.int64).tobytes())
        return h.hexdigest()
    if isinstance(ds, TensorImageDataset):
        img, lab = ds._content_tensor(), ds.labels
        c = ds._fingerprint_cache
        if c is not None and c[0] is img and c[1] == img._version and c[2] is lab and c[3] == lab._version:
            return c[4]
        h = hashlib.sha256(_header(ds))
        _tensor_bytes(h, img)
        _tensor_bytes(h, lab)
        digest = h.hexdigest()
        ds._fingerprint_cache = (img, img._version, lab, lab._version, digest)
        return digest
    if isinstance(ds, CelebAFolder):
        if ds._fingerprint_cache is None:
            ds._fingerprint_cache = files_fingerprint(ds, ds.image_dir, b"files\0")
        return ds._fingerprint_cache
    if callable(getattr(ds, "fingerprint", None)):  # datasets defined elsewhere (dmz.paired_data) hash themselves
        return ds.fingerprint()
    raise TypeError(f"dataset_fingerprint: unsupported dataset type {type(ds).__name__}")


# paired datasets for translation (digits_edges, edges2handbags(_edges), edges2shoes(_edges)): dmz/paired_data.py
from dmz import paired_data as _paired_data  # noqa: E402  (after everything it imports from here)

_paired_data.register(DATASETS, DatasetEntry)
