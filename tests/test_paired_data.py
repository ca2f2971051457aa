"""dmz/data/paired.py: digits_edges, the pix2pix folder loaders (on small stand-ins written here), pairing checks, and
the edges64 preset."""

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from dmz.config import resolve
from dmz.data import DatasetNotFoundError, build_dataset, dataset_fingerprint, dataset_info, from_uint8
from dmz.data.paired import EDGE_THRESHOLD, check_pair, paired_with


# ------------------------------------------------------------------------------------------------ digits_edges

def test_digits_edges_has_digits_split_labels_and_order():
    for split in ("train", "test"):
        e, d = build_dataset("digits_edges", split), build_dataset("digits", split)
        assert len(e) == len(d) and np.array_equal(e.indices, d.indices)
        assert torch.equal(e.labels, d.labels)
        assert e.images.shape == d.images.shape == (len(d), 1, 16, 16)
    info = dataset_info("digits_edges")
    assert (info.channels, info.resolution, info.label_kind, info.num_classes) == (1, 16, "class", 10)


def test_digits_edges_is_the_thresholded_morphological_gradient():
    """Checked against scipy's grey dilation/erosion (3x3, edge values replicated at the border like max-pooling's
    padding, which never wins a max)."""
    d, e = build_dataset("digits", "test"), build_dataset("digits_edges", "test")
    x = ((d.images[:50, 0] + 1) / 2).numpy()
    grad = np.stack([ndimage.grey_dilation(a, size=(3, 3), mode="nearest")
                     - ndimage.grey_erosion(a, size=(3, 3), mode="nearest") for a in x])
    expected = np.where(grad > EDGE_THRESHOLD, 1.0, -1.0)
    assert np.array_equal(e.images[:50, 0].numpy(), expected)
    assert set(np.unique(e.images.numpy())) == {-1.0, 1.0}
    assert 0.2 < float((e.images > 0).float().mean()) < 0.6  # outlines, neither empty nor filled


def test_digits_edges_is_deterministic_and_fingerprinted_apart_from_digits():
    a, b = build_dataset("digits_edges", "train"), build_dataset("digits_edges", "train")
    assert dataset_fingerprint(a) == dataset_fingerprint(b) != dataset_fingerprint(build_dataset("digits", "train"))
    assert build_dataset("digits_edges", "train", resolution=32).images.shape[-1] == 32


# ------------------------------------------------------------------------------------------------ pix2pix folders

EDGE_GREY = [30, 140, 220]
PHOTO_RGB = [(200, 10, 60), (5, 90, 250), (120, 120, 0)]


def _write_pairs(folder, n, size=(128, 64), offset=0):
    """Side-by-side pairs: left half one grey level (the edges), right half one colour (the photo)."""
    folder.mkdir(parents=True)
    w, h = size
    for i in range(n):
        arr = np.zeros((h, w, 3), np.uint8)
        arr[:, : w // 2] = EDGE_GREY[(i + offset) % 3]
        arr[:, w // 2:] = PHOTO_RGB[(i + offset) % 3]
        Image.fromarray(arr).save(folder / f"{i + 1:03d}_AB.png")  # png: lossless


@pytest.fixture
def pix2pix_root(tmp_path):
    _write_pairs(tmp_path / "edges2handbags" / "train", 3)
    _write_pairs(tmp_path / "edges2handbags" / "val", 2, offset=1)
    return tmp_path


def test_pix2pix_halves_channels_resolution_and_order(pix2pix_root):
    edges = build_dataset("edges2handbags_edges", "train", root=pix2pix_root)
    photo = build_dataset("edges2handbags", "train", root=pix2pix_root)
    assert len(edges) == len(photo) == 3
    for i in range(3):
        e, y = edges[i]
        p, _ = photo[i]
        assert e.shape == (1, 64, 64) and p.shape == (3, 64, 64) and int(y) == -1
        assert torch.equal(e, from_uint8(torch.full((1, 64, 64), EDGE_GREY[i], dtype=torch.uint8)))
        want = torch.tensor(PHOTO_RGB[i], dtype=torch.uint8).view(3, 1, 1).expand(3, 64, 64)
        assert torch.equal(p, from_uint8(want.contiguous()))
    info = dataset_info("edges2handbags_edges")
    assert (info.channels, info.resolution, info.label_kind) == (1, 64, "none")
    assert dataset_info("edges2shoes").channels == 3


def test_pix2pix_test_split_reads_val_and_resolution_option(pix2pix_root):
    test = build_dataset("edges2handbags", "test", root=pix2pix_root, resolution=32)
    assert len(test) == 2 and test[0][0].shape == (3, 32, 32)
    want = torch.tensor(PHOTO_RGB[1], dtype=torch.uint8).view(3, 1, 1).expand(3, 32, 32).contiguous()
    assert torch.equal(test[0][0], from_uint8(want))


def test_pix2pix_missing_folder_names_the_expected_path(tmp_path):
    with pytest.raises(DatasetNotFoundError) as e:
        build_dataset("edges2shoes_edges", "train", root=tmp_path)
    assert str(tmp_path / "edges2shoes" / "train") in str(e.value) and "pix2pix" in str(e.value)
    (tmp_path / "edges2shoes" / "train").mkdir(parents=True)
    with pytest.raises(DatasetNotFoundError, match="no .jpg/.png pairs"):
        build_dataset("edges2shoes", "train", root=tmp_path)
    with pytest.raises(DatasetNotFoundError, match="val"):
        build_dataset("edges2shoes", "test", root=tmp_path)


def test_pix2pix_fingerprint_follows_the_files(pix2pix_root):
    a = dataset_fingerprint(build_dataset("edges2handbags", "train", root=pix2pix_root))
    e = dataset_fingerprint(build_dataset("edges2handbags_edges", "train", root=pix2pix_root))
    assert a != e  # the two sides of the same files are different data
    (pix2pix_root / "edges2handbags" / "train" / "001_AB.png").unlink()
    assert dataset_fingerprint(build_dataset("edges2handbags", "train", root=pix2pix_root)) != a


def test_pix2pix_trains_through_the_data_loader(pix2pix_root):
    ds = build_dataset("edges2handbags_edges", "train", root=pix2pix_root, flip=True)
    x, y = next(iter(torch.utils.data.DataLoader(ds, batch_size=3)))
    assert x.shape == (3, 1, 64, 64) and y.tolist() == [-1, -1, -1]


# ------------------------------------------------------------------------------------------------ pairs and preset

def test_pairs_are_symmetric_and_mismatches_are_one_line_errors():
    assert paired_with("digits_edges") == "digits" and paired_with("digits") == "digits_edges"
    assert paired_with("edges2shoes_edges") == "edges2shoes" and paired_with("cifar10") is None
    check_pair("digits_edges", "digits")
    check_pair("edges2handbags_edges", "edges2handbags")
    for a, b in [("digits", "digits"), ("edges2shoes_edges", "edges2handbags"), ("cifar10", "digits")]:
        with pytest.raises(ValueError, match="not paired") as e:
            check_pair(a, b)
        assert "\n" not in str(e.value) and "digits <-> digits_edges" in str(e.value)


def test_edges64_preset_is_the_released_one_cross_attention_model():
    from dmz.backbone import unet_kwargs
    from dmz.conditioning import build_conditioning

    cfg = resolve("edges64")
    assert cfg.data.dataset == "edges2handbags_edges" and cfg.model.latent_dim == 256
    kw = unet_kwargs(cfg.model, 1, 64, 512, build_conditioning(cfg.model.conditioning))
    assert kw["down_block_types"] == ("DownBlock2D", "AttnDownBlock2D", "CrossAttnDownBlock2D", "AttnDownBlock2D")
    assert kw["mid_block_type"] == "UNetMidBlock2DCrossAttn" and kw["in_channels"] == 1
    assert resolve("edges64", ["dataset=edges2handbags"]).data.dataset == "edges2handbags"
