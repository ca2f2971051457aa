"""``celeba64``: the aligned CelebA images read from a folder (:class:`CelebAFolder`).

The images ``<root>/celeba/img_align_celeba/*.jpg`` (178x218), the 40 attributes of ``list_attr_celeba.txt`` (-1/1
mapped to 0/1, as torchvision does) and the official partition of ``list_eval_partition.txt``. The files are read
directly with PIL (torchvision's ``CelebA`` class also demands the identity/bbox/landmark files and their md5s; it is
used only for ``download=True``). Splits: ``train`` (162,770), ``val`` (19,867), ``test`` (19,962) and ``valtest``
(val + test in file order, 39,829 images: the released ``celeba64_val_test``).

Preprocessing, default (``center_crop=False``), as released: the whole 178x218 frame is resized directly to 64x64,
aspect ratio distorted (PAPER.md 3.1). The release calls ``cv2.resize`` with its default ``INTER_LINEAR``, which does
*not* antialias; we reproduce it with torch bilinear, ``align_corners=False`` (the same half-pixel sampling grid as
cv2), ``antialias=False``, and round to uint8 as the release's stored PNGs are (cv2's fixed-point arithmetic may
differ by one grey level). ``center_crop=True``: the centre 148x148 square (offsets 15 left, 35 top) is cut out, then
resized with antialiased bilinear (torchvision ``Resize``-style), the crop used by much of the face-generation
literature; it is not the release's protocol. ``resolution`` may be changed from 64 (any size >= 8).

Fingerprint: file mode (names, sizes, mtimes in split order, plus the labels; see :mod:`dmz.data.base`).
"""
from __future__ import annotations

import os

import torch
from torch import Tensor

from dmz.data.base import (DatasetInfo, DatasetNotFoundError, ImageFolderDataset, download_hint, resize_uint8)

__all__ = ["CELEBA_ATTRIBUTES", "CelebAFolder", "celeba64_info", "build_celeba64", "read_celeba_attributes"]

CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow", "Arched_Eyebrows", "Attractive", "Bags_Under_Eyes", "Bald", "Bangs", "Big_Lips",
    "Big_Nose", "Black_Hair", "Blond_Hair", "Blurry", "Brown_Hair", "Bushy_Eyebrows", "Chubby", "Double_Chin",
    "Eyeglasses", "Goatee", "Gray_Hair", "Heavy_Makeup", "High_Cheekbones", "Male", "Mouth_Slightly_Open",
    "Mustache", "Narrow_Eyes", "No_Beard", "Oval_Face", "Pale_Skin", "Pointy_Nose", "Receding_Hairline",
    "Rosy_Cheeks", "Sideburns", "Smiling", "Straight_Hair", "Wavy_Hair", "Wearing_Earrings", "Wearing_Hat",
    "Wearing_Lipstick", "Wearing_Necklace", "Wearing_Necktie", "Young",
)


class CelebAFolder(ImageFolderDataset):
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
        names, attrs = read_celeba_attributes(attr_path)
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

    def load_uint8(self, index: int) -> Tensor:
        """The preprocessed image ``index`` as uint8 (3, R, R), no flip."""
        img = self.read_rgb(index)
        if self.center_crop:
            h, w = img.shape[1:]
            side = min(148, h, w)
            top, left = round((h - side) / 2), round((w - side) / 2)
            img = img[:, top:top + side, left:left + side]
        return resize_uint8(img, self.resolution, antialias=self.center_crop)


def celeba64_info(resolution: int | None = None, center_crop: bool = False) -> DatasetInfo:
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
            f"{download_hint()} (torchvision's Google Drive download, needs gdown)")


def read_celeba_attributes(path: str) -> tuple[list[str], Tensor]:
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


def build_celeba64(split, *, root, resolution, flip, center_crop, download) -> CelebAFolder:
    info = celeba64_info(resolution, center_crop)
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
