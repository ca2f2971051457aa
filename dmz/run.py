"""A trained run, loaded for generation and evaluation: config + EMA weights + cached encodings of its data."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from dmz.config import Config
from dmz.data import build_dataset, dataset_fingerprint
from dmz.distributed import resolve_device
from dmz.model import DMZModel, build_model
from dmz.runio import CHECKPOINT, CONFIG, CheckpointError, atomic_torch_save, load_checkpoint


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


@torch.no_grad()
def encode_split(run: LoadedRun, split: str = "train", *, seed: int = 0, batch_size: int = 512,
                 cache: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes of a split (hard samples from q(z|x), Gumbel noise from a generator seeded by ``seed``) and labels.

    Cached in ``<run>/codes/`` keyed by split, checkpoint step, seed and the dataset's content fingerprint, so a
    retrained run or changed data never reuses stale codes.
    """
    ds = run.dataset(split)
    key = f"{split}-step{run.step}-seed{seed}-{dataset_fingerprint(ds)[:12]}"
    path = run.path / "codes" / f"{key}.pt"
    if cache and path.exists():
        blob = torch.load(path, map_location="cpu")
        return blob["codes"], blob["labels"]
    prior = run.model.prior
    spec = prior.noise_spec()
    g = torch.Generator().manual_seed(seed)
    codes, labels = [], []
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False)
    for x, y in loader:
        noise = None if spec is None else spec.draw(x.shape[0], g).to(run.device)
        codes.append(prior.encode(x.to(run.device), noise=noise).cpu())
        labels.append(y)
    out = torch.cat(codes), torch.cat(labels)
    if cache:
        atomic_torch_save({"codes": out[0], "labels": out[1]}, path)
    return out


@torch.no_grad()
def representations(run: LoadedRun, split: str, mode: str, *, seed: int = 0,
                    batch_size: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Features for downstream probes (``mode`` is one of the prior's ``representation_modes``) and labels."""
    prior = run.model.prior
    prior.check_mode(mode)
    ds = run.dataset(split)
    spec = prior.noise_spec()
    g = torch.Generator().manual_seed(seed)
    feats, labels = [], []
    for x, y in torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False):
        noise = None if spec is None else spec.draw(x.shape[0], g).to(run.device)
        feats.append(prior.representation(x.to(run.device), mode, noise=noise).float().cpu())
        labels.append(y)
    return torch.cat(feats), torch.cat(labels)
