"""What the three applications share: loading a run with binary codes, decoding codes (from x_T or from a partly
noised image), the run's feature space, the digits labeller, PNG strips and ``scores.json``."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from dmz.data import to_uint8
from dmz.run import LoadedRun, load_run
from dmz.runio import CheckpointError, atomic_write_json
from dmz.sampling import generate

SCORES = "scores.json"


class AppError(ValueError):
    """Bad input to an application; the message is one line that says what to do instead."""


def load_binary_run(path, device: str = "cpu") -> LoadedRun:
    """:func:`dmz.run.load_run`, refusing runs without binary codes (prior other than ``bernoulli``)."""
    try:
        run = load_run(path, device=device)
    except (CheckpointError, FileNotFoundError, ValueError) as e:  # ValueError: a corrupt config.json
        raise AppError(str(e).splitlines()[0]) from None
    latent = run.model.latent
    if latent.name != "bernoulli":
        kind = "no latent" if latent.code_dim == 0 else ("continuous" if not latent.discrete else "categorical")
        raise AppError(f"run {run.path} has prior={latent.name!r} ({kind} codes): the applications flip, move and map "
                       "binary codes, so they need a prior=bernoulli run")
    return run


@torch.no_grad()
def soft_probs(run: LoadedRun, x: torch.Tensor) -> torch.Tensor:
    """q(b = 1 | x) per bit, (N, |z|) (no Gumbel noise)."""
    return run.model.latent.representation(x.to(run.device), "probs").float().cpu()


@torch.no_grad()
def decode(run: LoadedRun, codes: torch.Tensor, *, steps: int, seeds: Sequence[int], x0: torch.Tensor | None = None,
           start: float = 1.0, micro_batch: int | None = None) -> torch.Tensor:
    """Images (N, C, H, W) in [-1, 1] decoded from ``codes`` (hard bits, or relaxed probabilities in [0, 1]).

    ``x0=None``: from x_T ~ N(0, I) over all T respaced steps (:func:`dmz.sampling.generate`). Otherwise from x0 noised
    to the respaced step ``k - 1``, k = round(start * T), with ``q_sample`` (x_t, as the release's manipulation does at
    t = 0.9T), then k ancestral steps. Sample i's noise (of q_sample and of every step) comes from seed ``seeds[i]``,
    so rows that share a seed differ only by their codes.
    """
    if not 1 <= steps <= run.cfg.diffusion.diffusion_steps:
        raise AppError(f"T={steps} is out of range: 1..{run.cfg.diffusion.diffusion_steps} (the run's diffusion steps)")
    if x0 is None:
        return generate(run, steps=steps, seeds=list(seeds), codes=codes, micro_batch=micro_batch)
    if not 0.0 < start <= 1.0:
        raise AppError(f"start must lie in (0, 1] (a fraction of T), got {start}")
    # eager fp32, as the edits have always been decoded (the stored application outputs stay bit-identical)
    return generate(run, steps=steps, seeds=list(seeds), codes=codes, micro_batch=micro_batch, x0=x0,
                    start_step=max(1, int(round(start * steps))), precision="fp32", compile=False)


# ---------------------------------------------------------------------------------------------------------------
# feature space and labeller


class Features:
    """The run's FID feature space (``evaluation.features.default_feature_extractor``: digits-classifier-v1 for
    digits, Inception otherwise), for distances between images."""

    def __init__(self, dataset: str, resolution: int | None, root=None, device: str = "cpu"):
        from evaluation.features import (FeatureExtractorUnavailable, default_feature_extractor,
                                         get_feature_extractor)

        self.name = default_feature_extractor(dataset)
        try:
            self.extractor = get_feature_extractor(self.name, dataset=dataset, device=device)
        except (FeatureExtractorUnavailable, ValueError) as e:
            raise AppError(f"no feature space for dataset {dataset!r}: {str(e).splitlines()[0]}") from None

    def __call__(self, images: torch.Tensor) -> np.ndarray:
        from evaluation.features import extract_features

        return extract_features(self.extractor, to_uint8(images))

    def row_fields(self) -> dict:
        return self.extractor.row_fields()


def feature_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Euclidean distance per row (features are standardised per dimension by the digits classifier)."""
    return np.linalg.norm(a - b, axis=-1)


class DigitsLabeller:
    """P(class | image) from digits-classifier-v1 (the FID's own network, cached checkpoint)."""

    def __init__(self, resolution: int):
        from evaluation.features import (DIGITS_CLASSIFIER_NAME, DIGITS_LOGITS_LAYER,
                                         DigitsClassifierFeatureExtractor, digits_classifier_checkpoint)

        path, meta = digits_classifier_checkpoint()
        self.net = DigitsClassifierFeatureExtractor(DIGITS_CLASSIFIER_NAME, [DIGITS_LOGITS_LAYER],
                                                    feature_extractor_weights_path=str(path))
        self.weights_sha256 = meta["weights_sha256"]

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> np.ndarray:
        return self.net(to_uint8(images))[0].softmax(1).numpy()


# ---------------------------------------------------------------------------------------------------------------
# outputs


def save_rows(rows: list[torch.Tensor], path: Path, ncol: int | None = None) -> None:
    """A PNG with one row per tensor (N_i, C, H, W); shorter rows are padded with white; greyscale becomes RGB."""
    from PIL import Image
    from torchvision.utils import make_grid

    ncol = ncol or max(len(r) for r in rows)
    c = max(r.shape[1] for r in rows)
    h, w = rows[0].shape[-2:]
    grid = torch.ones(len(rows) * ncol, c, h, w)
    for i, r in enumerate(rows):
        grid[i * ncol:i * ncol + len(r)] = r.expand(-1, c, -1, -1)
    u8 = make_grid(to_uint8(grid), nrow=ncol, padding=1, pad_value=255)
    scale = max(1, 64 // h)  # digits are 16x16: enlarge so a strip is readable
    img = Image.fromarray(u8.permute(1, 2, 0).numpy())
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def write_scores(out: Path, scores: dict) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / SCORES
    atomic_write_json(path, _jsonable(scores))
    return path


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        return None if not math.isfinite(float(x)) else float(x)
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, Path):
        return str(x)
    return x


def read_scores(out: Path) -> dict:
    return json.loads((Path(out) / SCORES).read_text())
