"""Image-to-image translation with a bit-mapping MLP between two DMZ models' codes (PAPER.md 1.10; Table 3).

Two runs trained independently on the two domains of a paired dataset (``dmz.data.paired``: ``digits_edges`` ->
``digits``, ``edges2handbags_edges`` -> ``edges2handbags``, ...). The paired training images are encoded by their own
model (hard codes, ``dmz.run.encode_split``), and the released mapping MLP, 4 x [Linear(., 256) -> BatchNorm1d ->
ReLU] then Linear -> Sigmoid, is trained with BCE (Adam 1e-3, batch 256, <= 100 epochs) to predict the target codes
from the source codes. Early stopping (ours): 10 epochs without bit-accuracy gain on a held-out 10% of the *training*
pairs (the release stopped on the test pairs); the best weights are kept. Test source codes are mapped, thresholded at
0.5 and decoded by the target model at T = 40 (released).

Scores on the test pairs, beside two references decoded the same way: ``oracle`` (the target model's own codes of the
paired target images: the best a code mapping can do) and ``prior`` (Bernoulli(0.5) codes: no information from the
source), and the paired target images themselves (``real``: the floor of each score at this N). FID of each set
against the target domain's training split in the target run's FID feature space (digits: digits-classifier-v1; few
samples, so compare rows, not papers), pixel MSE to the paired target image, bit accuracy of
the mapped codes, and for digits the share of translations that the digits classifier labels as the source's digit
(needs no LPIPS weights).
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dmz.apps.common import AppError, DigitsLabeller, decode, load_binary_run, save_rows, write_scores
from dmz.data.paired import check_pair
from dmz.run import encode_split, split_images
from dmz.runio import repo_relative

HIDDEN = 256  # released width
SPLIT_SEED = 0


class BitMapper(nn.Module):
    """The released mapping: 4 x [Linear -> BatchNorm1d -> ReLU], Linear -> Sigmoid (returns logits; sigmoid in
    :meth:`probs`)."""

    def __init__(self, d_in: int, d_out: int, hidden: int = HIDDEN, depth: int = 4):
        super().__init__()
        layers, d = [], d_in
        for _ in range(depth):
            layers += [nn.Linear(d, hidden), nn.BatchNorm1d(hidden), nn.ReLU()]
            d = hidden
        layers.append(nn.Linear(d, d_out))
        self.net = nn.Sequential(*layers)

    def forward(self, z):
        return self.net(z.float())

    @torch.no_grad()
    def probs(self, z):
        self.eval()
        return torch.sigmoid(self(z))


def fit_mapper(src: torch.Tensor, tgt: torch.Tensor, *, epochs: int = 100, patience: int = 10, batch_size: int = 256,
               lr: float = 1e-3, val_fraction: float = 0.1, seed: int = 0,
               hidden: int = HIDDEN) -> tuple[BitMapper, dict]:
    """Train :class:`BitMapper` on paired codes; returns the best model (held-out bit accuracy) and its history."""
    n = len(src)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    n_val = max(1, int(round(val_fraction * n)))
    val, fit = perm[:n_val], perm[n_val:]
    torch.manual_seed(seed)
    model = BitMapper(src.shape[1], tgt.shape[1], hidden)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = nn.BCEWithLogitsLoss()
    best, best_state, best_epoch, hist = -1.0, None, 0, []
    for epoch in range(1, epochs + 1):
        model.train()
        order = fit[torch.randperm(len(fit), generator=g)]
        for s in range(0, len(order), batch_size):
            idx = order[s:s + batch_size]
            if len(idx) < 2:  # BatchNorm needs two rows
                continue
            loss = loss_fn(model(src[idx]), tgt[idx].float())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        acc = float(((model.probs(src[val]) > 0.5).long() == tgt[val]).float().mean())
        hist.append({"epoch": epoch, "loss": float(loss.detach()), "val_bit_accuracy": acc})
        if acc > best:
            best, best_epoch = acc, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        elif epoch - best_epoch >= patience:
            break
    model.load_state_dict(best_state)
    model.eval()
    return model, {"best_epoch": best_epoch, "stopped_epoch": hist[-1]["epoch"], "val_bit_accuracy": best,
                   "n_fit": len(fit), "n_val": n_val, "history": hist}


def _fid(images: torch.Tensor, target_run, device: str) -> dict:
    from dmz.data import to_uint8
    from evaluation.features import FeatureExtractorUnavailable, default_feature_extractor, get_feature_extractor
    from evaluation.fid import metrics_against_reference, reference_stats

    d = target_run.cfg.data
    try:
        ext = get_feature_extractor(default_feature_extractor(d.dataset), dataset=d.dataset, device=device)
    except (FeatureExtractorUnavailable, ValueError) as e:
        raise AppError(f"no FID feature space for dataset {d.dataset!r}: {str(e).splitlines()[0]}") from None
    ref = reference_stats(d.dataset, "train", extractor=ext, root=d.data_root, resolution=d.resolution,
                          device=device)
    return metrics_against_reference(to_uint8(images), ref, ext)


def translate(source_dir, target_dir, out: Path, *, steps: int = 40, num: int | None = None, seed: int = 0,
              epochs: int = 100, device: str = "cpu", log=print) -> dict:
    """Fit the mapping, translate the test split (or its first ``num`` pairs); writes ``<out>/translations.png`` and
    ``<out>/scores.json``."""
    source = load_binary_run(source_dir, device)
    target = load_binary_run(target_dir, device)
    sd, td = source.cfg.data, target.cfg.data
    try:
        check_pair(sd.dataset, td.dataset)
    except ValueError as e:
        raise AppError(f"source run {source.path} and target run {target.path}: {e}") from None
    if (sd.resolution, sd.data_root) != (td.resolution, td.data_root):
        raise AppError(f"source and target runs read their paired datasets differently (resolution "
                       f"{sd.resolution} vs {td.resolution}, data_root {sd.data_root} vs {td.data_root})")
    n_test = len(source.dataset("test"))
    if num is not None and not 1 <= num <= n_test:
        raise AppError(f"--num {num}: the test split has {n_test} pairs")
    t0 = time.perf_counter()
    zs_train, _ = encode_split(source, "train")
    zt_train, _ = encode_split(target, "train")
    if len(zs_train) != len(zt_train):
        raise AppError(f"the paired training splits differ in size ({len(zs_train)} vs {len(zt_train)})")
    mapper, fit = fit_mapper(zs_train, zt_train, epochs=epochs, seed=seed)
    log(f"translate: mapping MLP best epoch {fit['best_epoch']} (stopped {fit['stopped_epoch']}), held-out bit "
        f"accuracy {fit['val_bit_accuracy']:.3f} ({time.perf_counter() - t0:.0f} s)")
    zs_test, src_labels = encode_split(source, "test")
    zt_test, _ = encode_split(target, "test")
    x_src, _ = split_images(source)
    x_tgt, _ = split_images(target)
    n = n_test if num is None else num
    mapped = (mapper.probs(zs_test[:n]) > 0.5).long()
    g = torch.Generator().manual_seed(seed + 1)
    prior_codes = (torch.rand(n, zt_test.shape[1], generator=g) < 0.5).long()
    seeds = list(range(seed * 1_000_000, seed * 1_000_000 + n))
    sets = {"mapped": mapped, "oracle": zt_test[:n], "prior": prior_codes}
    labeller = DigitsLabeller(target.model.resolution) if td.dataset == "digits" else None
    scores = {"app": "translate", "source": repo_relative(source.path), "target": repo_relative(target.path),
              "source_dataset": sd.dataset, "target_dataset": td.dataset, "source_run_id": source.cfg.run_id(),
              "target_run_id": target.cfg.run_id(), "T": steps, "n": n, "seed": seed,
              "mapper": {k: v for k, v in fit.items() if k != "history"}, "mapper_history": fit["history"],
              "test_bit_accuracy": float((mapped == zt_test[:n]).float().mean()), "sets": {}}
    images = {}
    for name, codes in [*sets.items(), ("real", None)]:
        t1 = time.perf_counter()
        imgs = x_tgt[:n] if codes is None else decode(target, codes, steps=steps, seeds=seeds)
        images[name] = imgs
        row = {"bit_accuracy": None if codes is None else float((codes == zt_test[:n]).float().mean()),
               "mse_to_paired_target": float(((imgs - x_tgt[:n]) ** 2).mean())}
        fid = _fid(imgs, target, device)
        row.update(fid=fid["fid"], fid_n_ref=fid["n_ref"], feature_extractor=fid["feature_extractor"],
                   feature_extractor_weights_sha256=fid["feature_extractor_weights_sha256"])
        if labeller is not None and src_labels.dim() == 1:
            p = labeller(imgs)
            row["labelled_as_source_digit"] = float((p.argmax(1) == src_labels[:n].numpy()).mean())
            row["p_source_digit"] = float(p[np.arange(n), src_labels[:n].numpy()].mean())
        row["seconds"] = time.perf_counter() - t1
        scores["sets"][name] = row
        log(f"translate {name:7s} FID {row['fid']:.3f}  MSE {row['mse_to_paired_target']:.3f}"
            + (f"  labelled as the source digit {row['labelled_as_source_digit']:.3f}" if "labelled_as_source_digit"
               in row else "") + f"  ({row['seconds']:.0f} s)")
    show = min(n, 16)
    save_rows([x_src[:show], images["mapped"][:show], images["oracle"][:show], x_tgt[:show]],
              Path(out) / "translations.png")
    write_scores(Path(out), scores)
    return scores
