"""A trained run, loaded for generation and evaluation: config + EMA weights + cached encodings of its data.

    python -m dmz.run restore-config RUN     # rewrite a damaged RUN/config.json from the config in its checkpoint
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import torch

from dmz.accel import MicroBatched
from dmz.config import Config
from dmz.data import build_dataset, dataset_fingerprint
from dmz.distributed import resolve_device
from dmz.model import DMZModel, build_model
from dmz.runio import CHECKPOINT, CONFIG, CheckpointError, atomic_torch_save, atomic_write_json, load_checkpoint


@dataclass
class LoadedRun:
    path: Path
    cfg: Config
    model: DMZModel  # eval mode, EMA weights unless asked otherwise
    step: int
    device: torch.device

    def dataset(self, split: str = "train"):
        d = self.cfg.data
        return build_dataset(d.dataset, split, root=d.data_root, resolution=d.resolution, flip=False,
                             center_crop=d.center_crop)


def load_run(run_dir: str | os.PathLike, device: str = "auto", weights: str = "ema") -> LoadedRun:
    """:param weights: ``ema`` (what the release generates with) or ``model`` (the raw weights)."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG).exists():
        raise CheckpointError(f"{run_dir} is not a run folder (no {CONFIG}); train one with "
                              f"python -m dmz.train --preset digits --out {run_dir}")
    if weights not in ("ema", "model"):
        raise ValueError(f"weights must be 'ema' or 'model', not {weights!r}")
    cfg = Config.load(run_dir / CONFIG)
    dev = resolve_device(device)
    state = load_checkpoint(run_dir / CHECKPOINT, map_location="cpu")
    model = build_model(cfg)
    model.load_state_dict(state[weights])
    return LoadedRun(run_dir, cfg, model.to(dev).eval(), int(state["step"]), dev)


def split_images(run: LoadedRun, split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
    """All images (N, C, H, W) in [-1, 1] and labels of a split of the run's dataset (no flip)."""
    ds = run.dataset(split)
    if hasattr(ds, "images"):
        return ds.images, ds.labels
    xs, ys = zip(*(ds[i] for i in range(len(ds))))
    return torch.stack(xs), torch.stack(ys)


@torch.no_grad()
def encode_images(run: LoadedRun, batches: Iterable[torch.Tensor], *, seed: int = 0, mode: str | None = None,
                  micro_batch: int | None = None) -> torch.Tensor:
    """The one encoding of images in the project: ``batches`` of images (in order) through the run's EMA encoder.

    Returns hard codes (``mode=None``: a sample of q(z|x): Bernoulli hard bits, one category per group, a
    reparameterised Normal sample) or the representation ``mode`` (one of the latent type's
    ``representation_modes``, as float). **The seeding rule**: the encoder noise (Gumbel / Gaussian) of the i-th image
    is row i of one stream drawn batch after batch from a CPU generator seeded ``seed``; torch's CPU generator gives
    the same rows in one draw or in pieces, so the noise does not depend on how the images are batched.
    ``micro_batch``: run the encoder on pieces of exactly that many rows (:class:`dmz.accel.MicroBatched`), so its
    float results do not depend on the batching either; None encodes each batch as given."""
    latent = run.model.latent
    if latent.code_dim == 0:
        raise ValueError("this run has no latent (prior=none): nothing to encode")
    if mode is not None:
        latent.check_mode(mode)
    spec = latent.noise_spec()
    g = torch.Generator().manual_seed(int(seed))

    def one(x: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        return latent.encode(x, noise=noise) if mode is None else latent.representation(x, mode, noise=noise).float()

    fn = one if micro_batch is None else MicroBatched(one, micro_batch)
    out = []
    for x in batches:
        noise = None if spec is None else spec.draw(x.shape[0], g).to(run.device)
        out.append(fn(x.to(run.device), noise=noise).cpu())
    return torch.cat(out)


def _batches(ds, batch_size: int, labels: list[torch.Tensor]) -> Iterator[torch.Tensor]:
    """The images of a dataset in order, ``batch_size`` at a time; their labels appended to ``labels``."""
    for x, y in torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False):
        labels.append(y)
        yield x


def encode_split(run: LoadedRun, split: str = "train", *, seed: int = 0, batch_size: int = 512,
                 cache: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Hard codes (:func:`encode_images`, noise stream seeded ``seed``) and labels of a split, in the split's order.

    Cached in ``<run>/codes/`` keyed by split, checkpoint step, seed and the dataset's content fingerprint, so a
    retrained run or changed data never reuses stale codes.
    """
    ds = run.dataset(split)
    key = f"{split}-step{run.step}-seed{seed}-{dataset_fingerprint(ds)[:12]}"
    path = run.path / "codes" / f"{key}.pt"
    if cache and path.exists():
        blob = torch.load(path, map_location="cpu")
        return blob["codes"], blob["labels"]
    labels: list[torch.Tensor] = []
    codes = encode_images(run, _batches(ds, batch_size, labels), seed=seed)
    out = codes, torch.cat(labels)
    if cache:
        atomic_torch_save({"codes": out[0], "labels": out[1]}, path)
    return out


def representations(run: LoadedRun, split: str, mode: str, *, seed: int = 0,
                    batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Features for downstream probes (:func:`encode_images` with ``mode``, one of the latent type's
    ``representation_modes``) and labels of a split."""
    labels: list[torch.Tensor] = []
    feats = encode_images(run, _batches(run.dataset(split), batch_size, labels), seed=seed, mode=mode)
    return feats, torch.cat(labels)


def restore_config(run_dir: str | os.PathLike) -> Path:
    """Rewrite ``<run>/config.json`` from the config the trainer stored in ``checkpoint.pt``; returns its path."""
    run_dir = Path(run_dir)
    state = load_checkpoint(run_dir / CHECKPOINT, map_location="cpu")
    if not isinstance(state.get("config"), dict):
        raise CheckpointError(f"{run_dir / CHECKPOINT} holds no config; retrain the run (python -m dmz.train ... "
                              f"--out {run_dir}) with the settings it was trained with")
    cfg = Config.from_dict(state["config"])
    atomic_write_json(run_dir / CONFIG, cfg.to_dict())
    return run_dir / CONFIG


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dmz.run", description="Run-folder maintenance.")
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("restore-config", help="rewrite RUN/config.json from the config stored in RUN/checkpoint.pt")
    r.add_argument("run", help="run folder")
    args = p.parse_args(argv)
    try:
        path = restore_config(args.run)
    except (CheckpointError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {path} from {Path(args.run) / CHECKPOINT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
