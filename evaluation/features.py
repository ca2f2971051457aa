"""Feature extractors for generation metrics (FID / KID / precision-recall).

Every extractor has a ``name`` that every result row must carry, because FIDs computed with different
extractors are not comparable:

* ``"inception-v3-compat"`` -- torch-fidelity's TF-compatible InceptionV3, 2048-d pool3 features
  (the pytorch-fid / TTUR network; the paper's FIDs use this one). Weights are never downloaded
  implicitly: they are looked up at ``weights_path`` / ``$DMZ_INCEPTION_WEIGHTS`` / torch-fidelity's
  torch.hub cache file, and :class:`FeatureExtractorUnavailable` names the expected path otherwise.
* ``"digits-classifier-v1"`` -- NOT Inception: a small CNN trained on the ``digits`` TRAIN split at 16x16;
  its 64-d penultimate layer (pre-activation, standardised with fixed per-dimension mean/std of the training
  set, stored with the weights) is the feature. Its weights ship with the package
  (``evaluation/assets/digits-classifier-v1.pt``) and their sha256 is pinned and checked at load, so digits-FIDs
  are in one feature space on every machine. ``python -m evaluation.features --retrain`` runs the recipe on this
  machine and says whether it reproduces the pinned weights (another CPU need not).

Both are registered in torch-fidelity's feature-extractor registry, so the FID value itself is
computed by torch-fidelity (see :mod:`evaluation.fid`). Inputs are uint8 (N, C, H, W) tensors, exactly
what torch-fidelity passes to a feature extractor.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import torch_fidelity
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
from torch_fidelity.utils import create_feature_extractor

from dmz.runio import file_sha256

from evaluation.extractor_names import (DIGITS_CLASSIFIER_NAME, EXTRACTOR_NAMES, INCEPTION_NAME,  # noqa: F401
                                       PINNED_WEIGHTS_SHA256, default_feature_extractor)

INCEPTION_FEATURE_LAYER = "2048"
DIGITS_FEATURE_LAYER = "penultimate64"
DIGITS_LOGITS_LAYER = "logits"

ENV_CACHE_DIR = "DMZ_CACHE_DIR"
ENV_INCEPTION_WEIGHTS = "DMZ_INCEPTION_WEIGHTS"

# Bump when the classifier's architecture or training recipe changes: it is part of the cache key.
DIGITS_ARCH_VERSION = "digits-cnn-v1"
DIGITS_TRAIN_HPARAMS = {
    "seed": 0,
    "epochs": 5,
    "batch_size": 32,
    "lr": 3e-3,
    "optimizer": "adam",
    "width": (16, 32, 64),
    "feature_dim": 64,
}


class FeatureExtractorUnavailable(RuntimeError):
    """The requested feature extractor cannot be built here (typically: missing weights, no network)."""


# ----------------------------------------------------------------------------------------------------
# cache helpers


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """``cache_dir`` or ``$DMZ_CACHE_DIR`` or ``~/.cache/dmz``."""
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get(ENV_CACHE_DIR)
    if env:
        return Path(env)
    return Path.home() / ".cache" / "dmz"


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp file in the same directory + os.replace)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _atomic_torch_save(obj: Any, path: Path) -> None:
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def state_dict_sha256(state_dict: dict[str, torch.Tensor]) -> str:
    """Content hash of a state dict (sorted keys, dtype, shape and raw bytes)."""
    h = hashlib.sha256()
    for k in sorted(state_dict):
        t = state_dict[k].detach().cpu().contiguous()
        h.update(k.encode())
        h.update(str(t.dtype).encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()




# ----------------------------------------------------------------------------------------------------
# the digits classifier


class DigitsCNN(nn.Module):
    """Small CNN: 3 conv layers, 2 max-pools, adaptive 4x4 pool, Linear -> 64 (features), Linear -> classes."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width=(16, 32, 64), feature_dim: int = 64):
        super().__init__()
        w1, w2, w3 = width
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, w1, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(w1, w2, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(w2, w3, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(4),
            nn.Flatten(),
        )
        self.fc = nn.Linear(w3 * 16, feature_dim)
        self.head = nn.Linear(feature_dim, num_classes)
        # fixed affine standardisation of the feature output, set from the training set after training,
        # so feature magnitudes are O(1) like Inception's pool3 (KID's cubic kernel assumes that).
        self.register_buffer("feat_mean", torch.zeros(feature_dim))
        self.register_buffer("feat_std", torch.ones(feature_dim))

    def forward(self, x):
        """Returns (standardised penultimate features, logits)."""
        raw = self.fc(self.body(x))  # penultimate layer, pre-activation
        logits = self.head(F.relu(raw))
        return (raw - self.feat_mean) / self.feat_std, logits


def uint8_to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float32 [-1, 1] (same affine map as ``dmz.data.from_uint8``)."""
    return x.to(torch.float32) / 127.5 - 1.0


def _adapt_channels(x: torch.Tensor, channels: int) -> torch.Tensor:
    c = x.shape[1]
    if c == channels:
        return x
    if c == 1:
        return x.expand(-1, channels, -1, -1)
    if channels == 1 and c == 3:
        if torch.is_floating_point(x):
            return x.mean(dim=1, keepdim=True)
        return x.float().mean(dim=1, keepdim=True).round().to(x.dtype)
    raise ValueError(f"cannot adapt {c}-channel images to {channels} channels")


class DigitsClassifierFeatureExtractor(FeatureExtractorBase):
    """torch-fidelity feature extractor wrapping a trained :class:`DigitsCNN` checkpoint.

    torch-fidelity instantiates it as ``cls(name, features_list, **calculate_metrics_kwargs)``; the
    checkpoint is given by ``feature_extractor_weights_path`` (written by :func:`get_feature_extractor`).
    Accepts uint8 (B, C, H, W): greyscale/RGB are adapted to the trained channel count and images are
    resized (bilinear, antialiased) to the training resolution.
    """

    def __init__(self, name, features_list, feature_extractor_weights_path=None, **kwargs):
        super().__init__(name, features_list)
        if feature_extractor_weights_path is None:
            raise FeatureExtractorUnavailable(
                f"{DIGITS_CLASSIFIER_NAME} needs feature_extractor_weights_path (a checkpoint written by "
                "evaluation.features.get_feature_extractor); it cannot be downloaded"
            )
        ckpt = torch.load(feature_extractor_weights_path, map_location="cpu", weights_only=True)
        cfg = ckpt["config"]
        self.resolution = int(cfg["resolution"])
        self.in_channels = int(cfg["in_channels"])
        self.net = DigitsCNN(
            in_channels=self.in_channels,
            num_classes=int(cfg["num_classes"]),
            width=tuple(cfg["width"]),
            feature_dim=int(cfg["feature_dim"]),
        )
        self.net.load_state_dict(ckpt["state_dict"])
        self.requires_grad_(False)
        self.eval()

    @staticmethod
    def get_provided_features_list():
        return (DIGITS_FEATURE_LAYER, DIGITS_LOGITS_LAYER)

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {
            "isc": DIGITS_LOGITS_LAYER,
            "fid": DIGITS_FEATURE_LAYER,
            "kid": DIGITS_FEATURE_LAYER,
            "prc": DIGITS_FEATURE_LAYER,
        }[metric]

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 1, 16, 16, dtype=torch.uint8)

    def forward(self, x):
        if not (torch.is_tensor(x) and x.dtype == torch.uint8 and x.dim() == 4):
            raise ValueError("Expecting a uint8 tensor (B, C, H, W)")
        x = _adapt_channels(uint8_to_unit(x), self.in_channels)
        if tuple(x.shape[-2:]) != (self.resolution, self.resolution):
            x = F.interpolate(
                x, size=(self.resolution, self.resolution), mode="bilinear", align_corners=False, antialias=True
            )
        feats, logits = self.net(x)
        out = {DIGITS_FEATURE_LAYER: feats, DIGITS_LOGITS_LAYER: logits}
        return tuple(out[k].float() for k in self.features_list)


if DIGITS_CLASSIFIER_NAME not in FEATURE_EXTRACTORS_REGISTRY:
    torch_fidelity.register_feature_extractor(DIGITS_CLASSIFIER_NAME, DigitsClassifierFeatureExtractor)


@contextmanager
def deterministic_torch(seed: int):
    """Single thread, deterministic algorithms, seeded global RNG; everything restored on exit."""
    prev_threads = torch.get_num_threads()
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    prev_rng = torch.get_rng_state()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.set_rng_state(prev_rng)
        torch.use_deterministic_algorithms(prev_det, warn_only=prev_warn)
        torch.set_num_threads(prev_threads)


def _images_labels(ds) -> tuple[torch.Tensor, torch.Tensor]:
    if hasattr(ds, "images") and hasattr(ds, "labels"):
        x, y = ds.images, ds.labels
    else:
        items = [ds[i] for i in range(len(ds))]
        x = torch.stack([torch.as_tensor(a) for a, _ in items])
        y = [b for _, b in items]
    x = torch.as_tensor(x, dtype=torch.float32)
    y = torch.as_tensor(np.asarray(y), dtype=torch.long)
    return x, y


def _quantise(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float -> uint8 -> float, so training sees exactly what the uint8 extractor input gives."""
    from dmz.data import to_uint8

    return uint8_to_unit(to_uint8(x))


def train_digits_classifier(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    hparams: dict | None = None,
) -> tuple[dict, dict]:
    """Deterministic training on CPU (single thread). Inputs are float [-1, 1] (N, C, H, W).

    Returns ``(checkpoint, meta)``; ``checkpoint`` holds ``config`` and ``state_dict``.
    """
    hp = dict(DIGITS_TRAIN_HPARAMS if hparams is None else hparams)
    n, c, h, w = train_x.shape
    if h != w:
        raise ValueError(f"square images expected, got {h}x{w}")
    num_classes = int(max(int(train_y.max()), int(test_y.max())) + 1)
    t0 = time.perf_counter()
    with deterministic_torch(hp["seed"]):
        net = DigitsCNN(c, num_classes, tuple(hp["width"]), hp["feature_dim"])
        opt = torch.optim.Adam(net.parameters(), lr=hp["lr"])
        gen = torch.Generator().manual_seed(hp["seed"])
        xq = _quantise(train_x)
        net.train()
        for _ in range(hp["epochs"]):
            perm = torch.randperm(n, generator=gen)
            for s in range(0, n, hp["batch_size"]):
                idx = perm[s : s + hp["batch_size"]]
                _, logits = net(xq[idx])
                loss = F.cross_entropy(logits, train_y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        net.eval()
        with torch.no_grad():
            _, logits = net(_quantise(test_x))
            test_acc = float((logits.argmax(1) == test_y).float().mean())
            feats, logits = net(xq)
            train_acc = float((logits.argmax(1) == train_y).float().mean())
            net.feat_mean.copy_(feats.mean(0))
            net.feat_std.copy_(feats.std(0).clamp_min(1e-6))
    seconds = time.perf_counter() - t0
    state = {k: v.detach().clone() for k, v in net.state_dict().items()}
    config = {
        "arch_version": DIGITS_ARCH_VERSION,
        "resolution": int(h),
        "in_channels": int(c),
        "num_classes": num_classes,
        "width": list(hp["width"]),
        "feature_dim": int(hp["feature_dim"]),
    }
    meta = {
        "test_accuracy": test_acc,
        "train_accuracy": train_acc,
        "train_seconds": seconds,
        "n_train": int(n),
        "n_test": int(len(test_x)),
        "hparams": {k: (list(v) if isinstance(v, tuple) else v) for k, v in hp.items()},
        "weights_sha256": state_dict_sha256(state),
    }
    return {"config": config, "state_dict": state}, meta


#: the one ``digits-classifier-v1``: its weights ship with the package and their state-dict sha256 is pinned here,
#: so every machine computes digits FIDs in the same feature space (the recipe above, retrained, gives other float
#: weights on another CPU). Made by :func:`train_digits_classifier` (``digits-cnn-v1``, 5 epochs, seed 0) on an
#: Intel Xeon; test accuracy 0.978; every seed-0 table of ``results/`` was evaluated with it.
DIGITS_CLASSIFIER_FILE = Path(__file__).resolve().parent / "assets" / f"{DIGITS_CLASSIFIER_NAME}.pt"
DIGITS_CLASSIFIER_SHA256 = PINNED_WEIGHTS_SHA256[DIGITS_CLASSIFIER_NAME]
DIGITS_CLASSIFIER_RESOLUTION = 16


class PinnedWeightsError(FeatureExtractorUnavailable):
    """The shipped extractor file is missing or its weights are not the pinned ones."""


def digits_classifier_checkpoint(path: str | os.PathLike | None = None) -> tuple[Path, dict]:
    """``(path, meta)`` of the pinned ``digits-classifier-v1`` checkpoint (:data:`DIGITS_CLASSIFIER_FILE`), after
    checking its state-dict sha256 against :data:`DIGITS_CLASSIFIER_SHA256`. Raises :class:`PinnedWeightsError`
    naming the file when it is missing or holds other weights. It serves digits at every resolution (inputs are
    resized to its 16x16), so there is one digits feature space."""
    path = Path(path or DIGITS_CLASSIFIER_FILE)
    if not path.is_file():
        raise PinnedWeightsError(f"{DIGITS_CLASSIFIER_NAME}: the pinned weights file {path} is missing; it ships with "
                                 "the package (git checkout evaluation/assets/ or reinstall)")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        sha = state_dict_sha256(ckpt["state_dict"])
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same error for the user
        raise PinnedWeightsError(f"{DIGITS_CLASSIFIER_NAME}: cannot read {path} ({type(e).__name__}: {e}); restore "
                                 "it with git checkout evaluation/assets/") from e
    if sha != DIGITS_CLASSIFIER_SHA256:
        raise PinnedWeightsError(f"{DIGITS_CLASSIFIER_NAME}: {path} holds weights {sha[:16]}..., not the pinned "
                                 f"{DIGITS_CLASSIFIER_SHA256[:16]}...; restore it with git checkout evaluation/assets/")
    meta = json.loads(ckpt.get("meta_json", "{}"))
    meta["weights_sha256"] = sha
    return path, meta


def retrain_digits_classifier(out: str | os.PathLike | None = None, *, root=None) -> dict:
    """Run the recipe (:func:`train_digits_classifier` on the digits splits at 16x16) on this machine and compare
    its weights with the pinned ones. Returns a report dict (``reproduced``, shas, max |difference| of the weights,
    test accuracy); writes the checkpoint to ``out`` when given. The pinned weights stay the feature space either
    way: a CPU whose kernels round differently gives other weights, which is why they are pinned."""
    from dmz.data import build_dataset

    train_x, train_y = _images_labels(build_dataset("digits", "train", root=root,
                                                    resolution=DIGITS_CLASSIFIER_RESOLUTION))
    test_x, test_y = _images_labels(build_dataset("digits", "test", root=root,
                                                  resolution=DIGITS_CLASSIFIER_RESOLUTION))
    ckpt, meta = train_digits_classifier(train_x, train_y, test_x, test_y)
    pinned = torch.load(DIGITS_CLASSIFIER_FILE, map_location="cpu", weights_only=True)["state_dict"]
    diff = max(float((ckpt["state_dict"][k].double() - v.double()).abs().max()) for k, v in pinned.items())
    if out is not None:
        ckpt["meta_json"] = json.dumps(meta, sort_keys=True)
        _atomic_torch_save(ckpt, Path(out))
    return {"reproduced": meta["weights_sha256"] == DIGITS_CLASSIFIER_SHA256, "weights_sha256": meta["weights_sha256"],
            "pinned_sha256": DIGITS_CLASSIFIER_SHA256, "max_abs_weight_difference": diff,
            "test_accuracy": meta["test_accuracy"], "train_seconds": meta["train_seconds"]}


# ----------------------------------------------------------------------------------------------------
# inception weights


def inception_weights_default_path() -> Path:
    """Where torch-fidelity (torch.hub) caches its Inception weights: ``<torch hub dir>/checkpoints/<file>``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(URL_INCEPTION_V3)


def resolve_inception_weights(weights_path=None, *, allow_download: bool = False) -> Path:
    """``weights_path`` > ``$DMZ_INCEPTION_WEIGHTS`` > torch-fidelity's hub cache file; optional download."""
    default = inception_weights_default_path()
    candidates = []
    if weights_path is not None:
        candidates.append(Path(weights_path))
    elif os.environ.get(ENV_INCEPTION_WEIGHTS):
        candidates.append(Path(os.environ[ENV_INCEPTION_WEIGHTS]))
    else:
        candidates.append(default)
    for p in candidates:
        if p.is_file():
            return p
    hint = (
        f"Inception weights for {INCEPTION_NAME} not found (looked at: {', '.join(str(p) for p in candidates)}). "
        f"Put torch-fidelity's file {os.path.basename(URL_INCEPTION_V3)} (from {URL_INCEPTION_V3}) at {default} "
        f"(torch.hub cache dir; set TORCH_HOME to move it), or pass weights_path=... / set ${ENV_INCEPTION_WEIGHTS}."
    )
    if not allow_download or weights_path is not None or os.environ.get(ENV_INCEPTION_WEIGHTS):
        raise FeatureExtractorUnavailable(hint + " Downloading was not requested (allow_download=False).")
    try:
        default.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(URL_INCEPTION_V3, str(default), progress=False)
    except Exception as e:  # no network, proxy, ...
        raise FeatureExtractorUnavailable(hint + f" Download failed: {type(e).__name__}: {e}") from e
    return default


# ----------------------------------------------------------------------------------------------------
# public handle


@dataclass
class FeatureExtractor:
    """Handle on a registered torch-fidelity extractor plus the information result rows need."""

    name: str  # row name == torch-fidelity registry name
    feature_layer: str
    dim: int
    weights_path: str
    weights_sha256: str
    input_channels: int | None  # channels the network wants (None: adapts itself)
    device: str = "cpu"
    meta: dict = field(default_factory=dict)
    _module: Any = field(default=None, repr=False)

    @property
    def identity(self) -> str:
        """Name + weights hash: what a cached statistic must be keyed by."""
        return f"{self.name}@{self.weights_sha256[:16]}"

    def module(self) -> FeatureExtractorBase:
        if self._module is None:
            m = create_feature_extractor(
                self.name,
                [self.feature_layer],
                cuda=False,
                feature_extractor_weights_path=self.weights_path,
                verbose=False,
            )
            self._module = m.to(self.device)
        return self._module

    def torch_fidelity_kwargs(self) -> dict:
        return {
            "feature_extractor": self.name,
            "feature_layer_fid": self.feature_layer,
            "feature_layer_kid": self.feature_layer,
            "feature_layer_prc": self.feature_layer,
            "feature_extractor_weights_path": self.weights_path,
        }

    def row_fields(self) -> dict:
        return {"feature_extractor": self.name, "feature_extractor_weights_sha256": self.weights_sha256}


def get_feature_extractor(
    name: str,
    *,
    dataset=None,
    device: str = "cpu",
    weights_path=None,
    allow_download: bool = False,
) -> FeatureExtractor:
    """Build a :class:`FeatureExtractor` by name (see :data:`EXTRACTOR_NAMES`).

    ``dataset`` (digits classifier only): ``None``/``"digits"`` or a digits dataset object. The digits classifier
    is always the pinned one (:func:`digits_classifier_checkpoint`; ``weights_path`` may point at a copy of it).
    """
    if name == INCEPTION_NAME:
        path = resolve_inception_weights(weights_path, allow_download=allow_download)
        return FeatureExtractor(
            name=INCEPTION_NAME,
            feature_layer=INCEPTION_FEATURE_LAYER,
            dim=2048,
            weights_path=str(path),
            weights_sha256=file_sha256(path),
            input_channels=3,
            device=device,
            meta={"source": URL_INCEPTION_V3},
        )
    if name == DIGITS_CLASSIFIER_NAME:
        if isinstance(dataset, str) and dataset != "digits":
            raise ValueError(f"{DIGITS_CLASSIFIER_NAME} is only defined for the digits dataset, not {dataset!r}")
        path, meta = digits_classifier_checkpoint(weights_path)
        sha = meta["weights_sha256"]
        return FeatureExtractor(
            name=DIGITS_CLASSIFIER_NAME,
            feature_layer=DIGITS_FEATURE_LAYER,
            dim=int(DIGITS_TRAIN_HPARAMS["feature_dim"]),
            weights_path=str(path),
            weights_sha256=sha,
            input_channels=None,
            device=device,
            meta=meta,
        )
    raise ValueError(f"unknown feature extractor {name!r}; valid names: {', '.join(EXTRACTOR_NAMES)}")


def prepare_uint8(images, input_channels: int | None) -> torch.Tensor:
    """Validate a uint8 (N, C, H, W) batch and repeat greyscale to RGB when the network needs 3 channels."""
    x = torch.as_tensor(images)
    if x.dtype != torch.uint8 or x.dim() != 4:
        raise ValueError(f"expected uint8 (N, C, H, W) images, got {x.dtype} {tuple(x.shape)}")
    if input_channels is not None and x.shape[1] != input_channels:
        x = _adapt_channels(x, input_channels)
    return x


@torch.no_grad()
def extract_features(extractor: FeatureExtractor, images_uint8, batch_size: int = 256) -> np.ndarray:
    """Features (N, D) float32 of uint8 images (N, C, H, W) through the extractor's torch-fidelity module."""
    m = extractor.module()
    x = prepare_uint8(images_uint8, extractor.input_channels)
    out = []
    for s in range(0, len(x), batch_size):
        b = x[s : s + batch_size].to(extractor.device)
        (f,) = m(b)
        out.append(f.detach().cpu().float())
    if not out:
        return np.zeros((0, extractor.dim), np.float32)
    return torch.cat(out).numpy()


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m evaluation.features", description="Check the pinned "
                                f"{DIGITS_CLASSIFIER_NAME} weights, or retrain them with the recipe and compare.")
    p.add_argument("--retrain", action="store_true", help=f"run the {DIGITS_ARCH_VERSION} recipe on this machine "
                   "(about 3 s) and say whether it reproduces the pinned weights")
    p.add_argument("--out", type=Path, help="with --retrain: also write the retrained checkpoint here")
    args = p.parse_args(argv)
    try:
        path, meta = digits_classifier_checkpoint()
    except PinnedWeightsError as e:
        print(f"error: {e}")
        return 2
    print(f"pinned {DIGITS_CLASSIFIER_NAME}: {path} (weights {DIGITS_CLASSIFIER_SHA256[:16]}..., test accuracy "
          f"{meta.get('test_accuracy', float('nan')):.3f}): ok")
    if not args.retrain:
        return 0
    r = retrain_digits_classifier(args.out)
    verdict = ("reproduces the pinned weights bit for bit" if r["reproduced"] else
               f"gives other weights ({r['weights_sha256'][:16]}...; largest |difference| "
               f"{r['max_abs_weight_difference']:.3g}): this CPU's kernels round differently. FIDs keep using the "
               "pinned weights, so they are unaffected")
    print(f"retrained in {r['train_seconds']:.1f} s, test accuracy {r['test_accuracy']:.3f}: this machine {verdict}"
          + (f"; written to {args.out}" if args.out else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
