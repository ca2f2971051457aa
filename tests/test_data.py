"""Tests of the dmz/data package: the registry (dmz/data/__init__.py), digits, cifar10 and celeba64 (the paired
datasets: tests/test_paired_data.py). CIFAR-10 and CelebA are exercised on tiny stand-ins written to tmp dirs."""
import os
import pickle
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dmz.data import (
    CELEBA_ATTRIBUTES, DATASETS, DatasetInfo, DatasetNotFoundError, build_dataset, dataset_fingerprint,
    dataset_info, dataset_names, from_uint8, random_flip, to_uint8,
)


# ------------------------------------------------------------------------------------------------ helpers

def numpy_bilinear(img: np.ndarray, out: int) -> np.ndarray:
    """Half-pixel-centre bilinear resize (align_corners=False, no antialias), written independently."""
    n = img.shape[0]

    def weights(o):
        src = max((o + 0.5) * n / out - 0.5, 0.0)
        i0 = int(np.floor(src))
        i1 = min(i0 + 1, n - 1)
        return i0, i1, src - i0

    res = np.zeros((out, out), dtype=np.float64)
    for r in range(out):
        r0, r1, wr = weights(r)
        for c in range(out):
            c0, c1, wc = weights(c)
            top = img[r0, c0] * (1 - wc) + img[r0, c1] * wc
            bot = img[r1, c0] * (1 - wc) + img[r1, c1] * wc
            res[r, c] = top * (1 - wr) + bot * wr
    return res


def sklearn_digits():
    from sklearn.datasets import load_digits
    d = load_digits()
    return d.images, d.target


# ------------------------------------------------------------------------------------------------ registry

def test_registry_names_and_info():
    assert dataset_names() == ["digits", "cifar10", "celeba64", "celebahq256", "digits_edges", "edges2handbags_edges",
                               "edges2handbags", "edges2shoes_edges", "edges2shoes"]  # paired: dmz/data/paired.py
    assert set(DATASETS) == set(dataset_names())
    d = dataset_info("digits")
    assert d == DatasetInfo("digits", 1, 16, "class", 10, None, 1437)
    assert dataset_info("digits", resolution=32).resolution == 32
    c = dataset_info("cifar10", root="/nowhere", split="test")
    assert (c.channels, c.resolution, c.label_kind, c.num_classes, c.train_size) == (3, 32, "class", 10, 50_000)
    a = dataset_info("celeba64")
    assert (a.channels, a.resolution, a.label_kind, a.num_classes, a.train_size) == (3, 64, "attributes", None,
                                                                                    162_770)
    assert len(a.attribute_names) == 40 and a.attribute_names[0] == "5_o_Clock_Shadow"
    assert a.attribute_names[20] == "Male" and a.attribute_names[-1] == "Young"


def test_unknown_name_and_split_list_valid_ones():
    with pytest.raises(ValueError) as e:
        build_dataset("mnist")
    assert all(n in str(e.value) for n in ("digits", "cifar10", "celeba64"))
    with pytest.raises(ValueError) as e:
        dataset_info("mnist")
    assert "celeba64" in str(e.value)
    with pytest.raises(ValueError) as e:
        build_dataset("digits", "val")
    assert "train" in str(e.value) and "test" in str(e.value)
    with pytest.raises(ValueError) as e:
        build_dataset("celeba64", "valid", root="/nowhere")
    assert all(s in str(e.value) for s in ("train", "val", "test", "valtest"))
    with pytest.raises(ValueError):
        build_dataset("digits", resolution=12)
    with pytest.raises(ValueError):
        build_dataset("digits", center_crop=True)
    with pytest.raises(ValueError):
        build_dataset("cifar10", resolution=64, root="/nowhere")


# ------------------------------------------------------------------------------------------------ digits

def test_digits_shapes_range_labels():
    _, y = sklearn_digits()
    tr, te = build_dataset("digits", "train"), build_dataset("digits", "test")
    assert len(tr) == 1437 == dataset_info("digits").train_size and len(te) == 360
    assert tr.images.shape == (1437, 1, 16, 16) and tr.images.dtype == torch.float32
    assert te.images.shape == (360, 1, 16, 16)
    for ds in (tr, te):
        assert ds.images.min() >= -1.0 and ds.images.max() <= 1.0
        assert ds.images.min() == -1.0 and ds.images.max() == 1.0   # digits have 0 and 16 pixels
        assert ds.labels.dtype == torch.long and set(ds.labels.tolist()) == set(range(10))
    img, lab = tr[5]
    assert img.shape == (1, 16, 16) and img.dtype == torch.float32
    assert lab.dtype == torch.long and lab.dim() == 0 and int(lab) == y[tr.indices[5]]
    counts = torch.bincount(tr.labels, minlength=10) + torch.bincount(te.labels, minlength=10)
    assert counts.tolist() == np.bincount(y, minlength=10).tolist()
    for res in (8, 32):
        assert build_dataset("digits", resolution=res).images.shape == (1437, 1, res, res)


def test_digits_split_stratified_disjoint_and_stable():
    _, y = sklearn_digits()
    tr, te = build_dataset("digits", "train"), build_dataset("digits", "test")
    assert len(set(tr.indices) & set(te.indices)) == 0
    assert sorted(set(tr.indices) | set(te.indices)) == list(range(1797))
    assert (tr.labels.numpy() == y[tr.indices]).all() and (te.labels.numpy() == y[te.indices]).all()
    frac = len(tr) / 1797
    for c in range(10):
        n_c = int((y == c).sum())
        n_tr = int((tr.labels == c).sum())
        n_te = int((te.labels == c).sum())
        assert n_tr + n_te == n_c
        assert abs(n_tr - n_c * frac) <= 1 and abs(n_te - n_c * (1 - frac)) <= 1
    tr2 = build_dataset("digits", "train")
    assert (tr2.indices == tr.indices).all() and torch.equal(tr2.images, tr.images)
    assert torch.equal(tr2.labels, tr.labels)


def test_digits_resize_matches_independent_bilinear():
    x, _ = sklearn_digits()
    tr = build_dataset("digits", "train")
    for i in (0, 7, 1000):
        raw = x[tr.indices[i]]
        expected = numpy_bilinear(raw / 16.0, 16) * 2 - 1
        np.testing.assert_allclose(tr.images[i, 0].numpy(), expected, atol=1e-6)
    # resolution 8 is the raw image, just rescaled
    tr8 = build_dataset("digits", "train", resolution=8)
    np.testing.assert_allclose(tr8.images[3, 0].numpy(), x[tr8.indices[3]] / 8.0 - 1.0, atol=1e-6)
    te32 = build_dataset("digits", "test", resolution=32)
    np.testing.assert_allclose(te32.images[2, 0].numpy(), numpy_bilinear(x[te32.indices[2]] / 16.0, 32) * 2 - 1,
                               atol=1e-6)


def test_dataset_objects_do_not_share_storage():
    a = build_dataset("digits", "test")
    a.images[0, 0, 0, 0] = 0.123
    b = build_dataset("digits", "test")
    assert b.images[0, 0, 0, 0] != 0.123


def test_flip_option_flips():
    ds = build_dataset("digits", "train", flip=True)
    plain = build_dataset("digits", "train")
    assert ds.flip and not plain.flip
    i = next(i for i in range(len(plain)) if not torch.equal(plain.images[i], plain.images[i].flip(-1)))
    torch.manual_seed(0)
    seen = set()
    for _ in range(40):
        img, _ = ds[i]
        if torch.equal(img, plain[i][0]):
            seen.add("same")
        elif torch.equal(img, plain[i][0].flip(-1)):
            seen.add("flipped")
        else:
            raise AssertionError("flip produced something that is neither the image nor its mirror")
    assert seen == {"same", "flipped"}
    for _ in range(5):  # no flip without the option
        assert torch.equal(plain[i][0], plain.images[i])
    # batch helper
    g = torch.Generator().manual_seed(1)
    batch = plain.images[:64]
    out = random_flip(batch, generator=g)
    same = [torch.equal(out[k], batch[k]) for k in range(64)]
    flipped = [torch.equal(out[k], batch[k].flip(-1)) for k in range(64)]
    assert all(s or f for s, f in zip(same, flipped))
    assert 10 < sum(f and not s for s, f in zip(same, flipped)) < 54


def test_fingerprint_digits():
    a = build_dataset("digits", "train")
    fa = dataset_fingerprint(a)
    assert len(fa) == 64 and int(fa, 16) >= 0
    assert dataset_fingerprint(a) == fa
    b = build_dataset("digits", "train")
    t0 = time.perf_counter()
    fb = dataset_fingerprint(b)
    assert time.perf_counter() - t0 < 0.1
    assert fb == fa
    assert dataset_fingerprint(build_dataset("digits", "train", flip=True)) == fa   # flip is not content
    assert dataset_fingerprint(build_dataset("digits", "test")) != fa
    assert dataset_fingerprint(build_dataset("digits", "train", resolution=8)) != fa
    # one pixel changed in place on the same object -> new digest (the per-object cache must notice)
    old = b.images[10, 0, 3, 4].item()
    b.images[10, 0, 3, 4] = old + 0.5
    fb2 = dataset_fingerprint(b)
    assert fb2 != fa
    b.images[10, 0, 3, 4] = old
    assert dataset_fingerprint(b) == fa
    # a label changed
    b.labels[0] = (b.labels[0] + 1) % 10
    assert dataset_fingerprint(b) != fa
    # subsets
    s1 = torch.utils.data.Subset(a, [0, 1, 2])
    s2 = torch.utils.data.Subset(a, [0, 1, 3])
    assert dataset_fingerprint(s1) != dataset_fingerprint(s2)
    assert dataset_fingerprint(s1) == dataset_fingerprint(torch.utils.data.Subset(a, [0, 1, 2]))


def test_uint8_round_trip_and_rounding():
    u = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16).repeat(2, 3, 1, 1)
    x = from_uint8(u)
    assert x.dtype == torch.float32 and x.shape == (2, 3, 16, 16)
    assert x.min() == -1.0 and x.max() == 1.0
    assert torch.equal(to_uint8(x), u)
    v = torch.tensor([-1.0, 1.0, 0.0, -5.0, 7.0, -1 + 0.49 / 127.5, -1 + 0.51 / 127.5, 1 - 0.4 / 127.5,
                      float("inf"), float("-inf")]).view(1, 1, 1, -1)
    assert to_uint8(v).flatten().tolist() == [0, 255, 128, 0, 255, 0, 1, 255, 255, 0]
    assert to_uint8(v).dtype == torch.uint8
    with pytest.raises(ValueError):
        to_uint8(torch.tensor([[[[float("nan")]]]]))
    with pytest.raises(TypeError):
        from_uint8(torch.zeros(1, 1, 2, 2))


# ------------------------------------------------------------------------------------------------ cifar10

def write_fake_cifar(root, n_train_per_batch=2, n_test=3, seed=0):
    rng = np.random.default_rng(seed)
    folder = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(folder)
    batches = {}
    for name, n in [(f"data_batch_{i}", n_train_per_batch) for i in range(1, 6)] + [("test_batch", n_test)]:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=n)]
        # the real (Python 2) files load with str keys under encoding="latin1"
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump({"data": data, "labels": labels, "batch_label": name}, f)
        batches[name] = (data, labels)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    with open(os.path.join(folder, "batches.meta"), "wb") as f:
        pickle.dump({"label_names": names, "num_cases_per_batch": n_train_per_batch}, f)
    return folder, batches


@pytest.fixture
def no_md5(monkeypatch):
    """The stand-in's md5s differ from the real files'; keep torchvision's loader but only check existence."""
    import torchvision.datasets.cifar as tv_cifar
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda fpath, md5=None: os.path.isfile(fpath))


def test_cifar_stand_in_loads_with_scaling_and_labels(tmp_path, no_md5):
    _, batches = write_fake_cifar(str(tmp_path))
    tr = build_dataset("cifar10", "train", root=str(tmp_path))
    te = build_dataset("cifar10", "test", root=str(tmp_path))
    assert len(tr) == 10 and len(te) == 3
    data, labels = batches["data_batch_3"]
    k = 2 * 2 + 1                                          # batch 3, second image
    img, lab = tr[k]
    assert img.shape == (3, 32, 32) and img.dtype == torch.float32
    assert lab.dtype == torch.long and lab.dim() == 0 and int(lab) == labels[1]
    row = data[1].astype(np.float64)
    for c, h, w in [(0, 0, 0), (1, 5, 7), (2, 31, 30), (0, 17, 3)]:
        assert img[c, h, w].item() == pytest.approx(row[c * 1024 + h * 32 + w] / 127.5 - 1.0, abs=1e-6)
    assert torch.equal(tr.images_uint8[k], torch.from_numpy(data[1].reshape(3, 32, 32)))
    assert tr.images.shape == (10, 3, 32, 32) and tr.images.min() >= -1 and tr.images.max() <= 1
    test_data, test_labels = batches["test_batch"]
    assert te.labels.tolist() == test_labels
    assert torch.equal(to_uint8(te.images), torch.from_numpy(test_data.reshape(3, 3, 32, 32)))
    assert tr.classes[0] == "airplane"
    # fingerprint: stable, and sensitive to one pixel
    f = dataset_fingerprint(tr)
    assert dataset_fingerprint(build_dataset("cifar10", "train", root=str(tmp_path))) == f
    assert dataset_fingerprint(te) != f
    tr.images_uint8[0, 0, 0, 0] ^= 1
    assert dataset_fingerprint(tr) != f


def test_cifar_missing_root_names_expected_path(tmp_path):
    root = str(tmp_path / "nothing_here")
    with pytest.raises(DatasetNotFoundError) as e:
        build_dataset("cifar10", "train", root=root)
    msg = str(e.value)
    assert os.path.join(root, "cifar-10-batches-py") in msg
    assert "--data-root" in msg and "data.download=true" in msg
    assert isinstance(e.value, FileNotFoundError)


def test_cifar_default_root_from_env(tmp_path, monkeypatch, no_md5):
    write_fake_cifar(str(tmp_path))
    monkeypatch.setenv("DMZ_DATA_ROOT", str(tmp_path))
    assert len(build_dataset("cifar10", "test")) == 3
    monkeypatch.setenv("DMZ_DATA_ROOT", str(tmp_path / "elsewhere"))
    with pytest.raises(DatasetNotFoundError, match="elsewhere"):
        build_dataset("cifar10", "test")


def test_cifar_failed_integrity_is_reported(tmp_path):
    write_fake_cifar(str(tmp_path))   # real torchvision md5 check: the stand-in fails it
    with pytest.raises(DatasetNotFoundError, match="integrity"):
        build_dataset("cifar10", "train", root=str(tmp_path))


# ------------------------------------------------------------------------------------------------ celeba64

PARTITION = [("000001.jpg", 0), ("000002.jpg", 0), ("000003.jpg", 1), ("000004.jpg", 2)]


def write_fake_celeba(root, seed=0):
    rng = np.random.default_rng(seed)
    folder = os.path.join(root, "celeba")
    img_dir = os.path.join(folder, "img_align_celeba")
    os.makedirs(img_dir)
    for i, (name, _) in enumerate(PARTITION):
        arr = np.zeros((218, 178, 3), dtype=np.uint8)
        arr[:35] = (250, 10, 10)                       # a red band above the 148x148 centre crop
        arr[35:] = (10, 10, 200 - 30 * i)              # blue below, one shade per image
        arr[100:120, 20:60] = (10, 240, 10)            # a green patch on the left (makes flips visible)
        arr += rng.integers(0, 4, size=arr.shape, dtype=np.uint8)
        Image.fromarray(arr).save(os.path.join(img_dir, name), quality=95)
    attrs = rng.choice([-1, 1], size=(len(PARTITION), 40))
    with open(os.path.join(folder, "list_attr_celeba.txt"), "w") as f:
        f.write(f"{len(PARTITION)}\n")
        f.write(" ".join(CELEBA_ATTRIBUTES) + " \n")
        for (name, _), row in zip(PARTITION, attrs):
            f.write(name + " " + " ".join(f"{v:2d}" for v in row) + "\n")     # "000001.jpg -1  1 ..."
    with open(os.path.join(folder, "list_eval_partition.txt"), "w") as f:
        for name, p in PARTITION:
            f.write(f"{name} {p}\n")
    return folder, (attrs + 1) // 2


def decoded(folder, name):
    return torch.from_numpy(np.asarray(Image.open(os.path.join(folder, "img_align_celeba", name)).convert("RGB"))
                            .copy()).permute(2, 0, 1).float()


def test_celeba_stand_in_splits_attributes_and_preprocessing(tmp_path):
    folder, attrs01 = write_fake_celeba(str(tmp_path))
    root = str(tmp_path)
    sizes = {s: len(build_dataset("celeba64", s, root=root)) for s in ("train", "val", "test", "valtest")}
    assert sizes == {"train": 2, "val": 1, "test": 1, "valtest": 2}
    vt = build_dataset("celeba64", "valtest", root=root)
    assert vt.filenames == ["000003.jpg", "000004.jpg"]
    assert torch.equal(vt.labels, torch.from_numpy(attrs01[2:]).long())

    tr = build_dataset("celeba64", "train", root=root)
    img, lab = tr[1]
    assert img.shape == (3, 64, 64) and img.dtype == torch.float32
    assert img.min() >= -1 and img.max() <= 1
    assert lab.shape == (40,) and lab.dtype == torch.long and set(lab.tolist()) <= {0, 1}
    assert lab.tolist() == attrs01[1].tolist()

    # no crop: the whole 178x218 frame squeezed to 64x64 (bilinear, no antialias), rounded to uint8
    src = decoded(folder, "000002.jpg")
    exp = F.interpolate(src[None], size=(64, 64), mode="bilinear", align_corners=False, antialias=False)[0]
    assert (to_uint8(img[None])[0].float() - exp).abs().max() <= 0.5 + 1e-3
    # the red band (top 35 of 218 rows ~ 10 of 64 rows) is kept without crop
    assert img[0, :8].mean() > 0.8 and img[2, :8].mean() < -0.8

    crop = build_dataset("celeba64", "train", root=root, center_crop=True)
    cimg, clab = crop[1]
    assert cimg.shape == (3, 64, 64) and torch.equal(clab, lab)
    exp_c = F.interpolate(src[None, :, 35:183, 15:163], size=(64, 64), mode="bilinear", align_corners=False,
                          antialias=True)[0]
    assert (to_uint8(cimg[None])[0].float() - exp_c).abs().max() <= 0.5 + 1e-3
    assert cimg[0].max() < 0.0          # the crop removes the red band
    assert not torch.allclose(cimg, img, atol=0.1)
    assert dataset_fingerprint(crop) != dataset_fingerprint(tr)

    small = build_dataset("celeba64", "test", root=root, resolution=32)
    assert small[0][0].shape == (3, 32, 32)


def test_celeba_flip_and_fingerprint(tmp_path):
    folder, _ = write_fake_celeba(str(tmp_path))
    root = str(tmp_path)
    plain = build_dataset("celeba64", "train", root=root)
    flipping = build_dataset("celeba64", "train", root=root, flip=True)
    torch.manual_seed(0)
    outs = {("flipped" if torch.equal(flipping[0][0], plain[0][0].flip(-1)) else "same") for _ in range(30)}
    assert outs == {"same", "flipped"}

    f = dataset_fingerprint(plain)
    assert dataset_fingerprint(build_dataset("celeba64", "train", root=root)) == f
    assert dataset_fingerprint(build_dataset("celeba64", "test", root=root)) != f
    path = os.path.join(folder, "img_align_celeba", "000001.jpg")
    st = os.stat(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    assert dataset_fingerprint(build_dataset("celeba64", "train", root=root)) != f


def test_celeba_missing_files(tmp_path):
    root = str(tmp_path)
    with pytest.raises(DatasetNotFoundError) as e:
        build_dataset("celeba64", "train", root=root)
    msg = str(e.value)
    assert os.path.join(root, "celeba", "img_align_celeba") in msg
    assert "list_attr_celeba.txt" in msg and "list_eval_partition.txt" in msg
    # images listed in the partition but absent from the folder
    folder, _ = write_fake_celeba(str(tmp_path / "partial"))
    os.remove(os.path.join(folder, "img_align_celeba", "000004.jpg"))
    assert len(build_dataset("celeba64", "train", root=str(tmp_path / "partial"))) == 2
    with pytest.raises(DatasetNotFoundError, match="000004.jpg"):
        build_dataset("celeba64", "test", root=str(tmp_path / "partial"))


def test_celebahq256_stand_in_splits_by_the_celeba_index(tmp_path):
    """A 6-image stand-in in the CelebAMask-HQ layout: images whose CelebA file lies beyond CelebA's training
    partition (> 162770.jpg) are the test split; attributes come from the HQ annotation file."""
    import numpy as np
    from PIL import Image

    from dmz.data import CELEBA_ATTRIBUTES, DatasetNotFoundError, build_dataset

    folder = tmp_path / "celebahq"
    (folder / "CelebA-HQ-img").mkdir(parents=True)
    rng = np.random.default_rng(0)
    orig = [119614, 200001, 1, 162770, 162771, 5]
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(folder / "CelebA-HQ-img" / f"{i}.jpg")
    (folder / "CelebAMask-HQ-attribute-anno.txt").write_text(
        "6\n" + " ".join(CELEBA_ATTRIBUTES) + "\n"
        + "".join(f"{i}.jpg " + " ".join("1" if (j + i) % 3 == 0 else "-1" for j in range(40)) + "\n" for i in range(6)))
    (folder / "CelebA-HQ-to-CelebA-mapping.txt").write_text(
        "idx orig_idx orig_file\n" + "".join(f"{i} {o - 1} {o:06d}.jpg\n" for i, o in enumerate(orig)))
    train = build_dataset("celebahq256", "train", root=str(tmp_path), resolution=16)
    test = build_dataset("celebahq256", "test", root=str(tmp_path), resolution=16)
    assert train.filenames == ["0.jpg", "2.jpg", "3.jpg", "5.jpg"] and test.filenames == ["1.jpg", "4.jpg"]
    x, y = test[1]
    assert x.shape == (3, 16, 16) and -1 <= float(x.min()) and float(x.max()) <= 1
    assert y.tolist() == [1 if (j + 4) % 3 == 0 else 0 for j in range(40)]
    with pytest.raises(DatasetNotFoundError, match="CelebAMask-HQ"):
        build_dataset("celebahq256", "train", root=str(tmp_path / "nowhere"))
