"""``celebahq256``: CelebA-HQ (30,000 faces) read from the CelebAMask-HQ folder, resized to 256x256 (PAPER.md 3.1).

Layout under ``<root>/celebahq/`` (the CelebAMask-HQ release): ``CelebA-HQ-img/<i>.jpg`` (1024x1024, i = 0..29999),
``CelebAMask-HQ-attribute-anno.txt`` (the 40 CelebA attributes per image, CelebA's own file format) and
``CelebA-HQ-to-CelebA-mapping.txt`` (``idx orig_idx orig_file``). Split as released, by each image's CelebA index:
an image whose CelebA file lies beyond CelebA's training partition (``orig_file`` > 162770.jpg) is ``test`` (5,817),
the others ``train`` (24,183). Images are resized with antialiased bilinear (the release resizes to 256 beforehand;
its resampling is not recorded). Fingerprint: file mode (names, sizes, mtimes, labels; :mod:`dmz.data.base`).
"""
from __future__ import annotations

import os

from torch import Tensor

from dmz.data.base import DatasetInfo, DatasetNotFoundError, ImageFolderDataset, resize_uint8
from dmz.data.celeba import CELEBA_ATTRIBUTES, read_celeba_attributes

__all__ = ["CelebAHQFolder", "celebahq256_info", "build_celebahq256", "CELEBA_TRAIN_LAST"]

CELEBA_TRAIN_LAST = 162_770  # CelebA's training partition is 000001.jpg .. 162770.jpg
IMAGE_DIR, ATTR_FILE, MAPPING_FILE = "CelebA-HQ-img", "CelebAMask-HQ-attribute-anno.txt", "CelebA-HQ-to-CelebA-mapping.txt"


class CelebAHQFolder(ImageFolderDataset):
    """CelebA-HQ read from ``<root>/celebahq`` (see the module docstring)."""

    def __init__(self, root: str, split: str, resolution: int = 256, flip: bool = False):
        self.name, self.split, self.resolution, self.flip = "celebahq256", split, resolution, flip
        self.folder = os.path.join(root, "celebahq")
        self.image_dir = os.path.join(self.folder, IMAGE_DIR)
        attr_path, map_path = os.path.join(self.folder, ATTR_FILE), os.path.join(self.folder, MAPPING_FILE)
        missing = [p for p, ok in ((self.image_dir, os.path.isdir(self.image_dir)),
                                   (attr_path, os.path.isfile(attr_path)), (map_path, os.path.isfile(map_path))) if not ok]
        if missing:
            raise DatasetNotFoundError(
                f"CelebA-HQ not found under {self.folder}: missing {', '.join(missing)}. Unzip CelebAMask-HQ.zip "
                f"(github.com/switchablenorms/CelebAMask-HQ) so that {IMAGE_DIR}/, {ATTR_FILE} and {MAPPING_FILE} "
                f"are in {self.folder}; pass --data-root DIR (or set $DMZ_DATA_ROOT) to the folder above it")
        names, attrs = read_celeba_attributes(attr_path)
        celeba_number = _read_mapping(map_path)
        row_of = {n: i for i, n in enumerate(names)}
        files = sorted(names, key=lambda f: int(os.path.splitext(f)[0]))
        unmapped = [f for f in files if int(os.path.splitext(f)[0]) not in celeba_number]
        if unmapped:
            raise ValueError(f"{map_path} has no CelebA file for {len(unmapped)} images, e.g. {unmapped[:3]}")
        test = {f for f in files if celeba_number[int(os.path.splitext(f)[0])] > CELEBA_TRAIN_LAST}
        self.filenames = [f for f in files if (f in test) == (split == "test")]
        self.labels = attrs[[row_of[f] for f in self.filenames]] if self.filenames else attrs[:0]
        present = {e.name for e in os.scandir(self.image_dir)}
        absent = [f for f in self.filenames if f not in present]
        if absent:
            raise DatasetNotFoundError(f"{len(absent)} images of CelebA-HQ split {split!r} are missing from "
                                       f"{self.image_dir} (e.g. {absent[:3]}); unzip the complete CelebAMask-HQ.zip")

    def load_uint8(self, index: int) -> Tensor:
        return resize_uint8(self.read_rgb(index), self.resolution, antialias=True)


def _read_mapping(path: str) -> dict[int, int]:
    """CelebA-HQ index -> CelebA file number (``orig_file`` 119614.jpg -> 119614)."""
    out = {}
    with open(path) as f:
        for lineno, line in enumerate(f, start=1):
            parts = line.split()
            if not parts or parts[0] == "idx":
                continue
            if len(parts) != 3 or not parts[0].isdigit() or not parts[2].endswith(".jpg"):
                raise ValueError(f"{path}:{lineno}: expected '<idx> <orig_idx> <orig_file>.jpg'")
            out[int(parts[0])] = int(os.path.splitext(parts[2])[0])
    return out


def celebahq256_info(resolution: int | None = None) -> DatasetInfo:
    res = 256 if resolution is None else int(resolution)
    if res < 8:
        raise ValueError(f"celebahq256: resolution must be >= 8, got {res}")
    return DatasetInfo("celebahq256", 3, res, "attributes", None, CELEBA_ATTRIBUTES, 24_183)


def build_celebahq256(split, *, root, resolution, flip, center_crop, download) -> CelebAHQFolder:
    if download:
        raise DatasetNotFoundError("CelebA-HQ has no download here: get CelebAMask-HQ.zip "
                                   "(github.com/switchablenorms/CelebAMask-HQ) and unzip it into <data root>/celebahq")
    return CelebAHQFolder(root, split, celebahq256_info(resolution).resolution, flip=flip)
