"""Start DMZ's UNet from a pretrained diffusers UNet (the release's CelebA-HQ 256 fine-tune, PAPER.md 1.6).

    python -m dmz.train --preset celebahq256 --set init_from=ckpt/ddpm-ema-celebahq-256 --out runs/celebahq-dmz
    python -m dmz.train --preset celebahq256 --set init_from=DIR --set finetune=new ...   # the release's --finetune_attention
    python -m dmz.finetune export --run runs/digits-ddpm --out runs/digits-ddpm-diffusers  # a DDPM run as a diffusers folder

``init_from`` names a diffusers UNet folder: ``config.json`` + ``diffusion_pytorch_model.safetensors`` (or ``.bin``),
the layout of ``google/ddpm-ema-celebahq-256`` (``huggingface-cli download google/ddpm-ema-celebahq-256 --local-dir
DIR``), or a pipeline folder with that in ``unet/``. It is read with diffusers' own ``from_pretrained`` (so checkpoints
written with diffusers' older attention names load). Every parameter and buffer of DMZ's UNet whose name and shape
match one of the source's is copied; the rest (the cross-attention transformer blocks that take z, an output layer of
another width) keep their fresh initialisation; source tensors DMZ has no place for are dropped. The three lists are
logged and written to ``<run>/init_from.json``. ``finetune=all`` (released default) trains everything; ``finetune=new``
trains only the fresh parameters (and the encoder), the copied ones frozen.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import torch

INIT_REPORT = "init_from.json"
WEIGHT_FILES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
HOW_TO_GET = ("a diffusers UNet folder (config.json + diffusion_pytorch_model.safetensors), e.g. "
              "`huggingface-cli download google/ddpm-ema-celebahq-256 --local-dir DIR`, or "
              "`python -m dmz.finetune export --run RUN --out DIR` for one of your runs")


class InitFromError(ValueError):
    """An ``init_from`` folder that cannot start a run: one line naming the path and what to give instead."""


def unet_folder(path: str | Path) -> Path:
    """The folder holding the UNet's config.json and weights (``path`` itself or ``path/unet``)."""
    p = Path(path).expanduser()
    if not p.is_dir():
        raise InitFromError(f"init_from={path}: no such folder; expected {HOW_TO_GET}")
    for d in (p, p / "unet"):
        if (d / "config.json").is_file():
            if not any((d / w).is_file() for w in WEIGHT_FILES):
                raise InitFromError(f"init_from={path}: {d / 'config.json'} has no weights beside it "
                                    f"({' or '.join(WEIGHT_FILES)}); expected {HOW_TO_GET}")
            return d
    raise InitFromError(f"init_from={path} is not a diffusers UNet folder (no config.json in it or in unet/); "
                        f"expected {HOW_TO_GET}")


def load_source_state(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(state dict, config) of the diffusers UNet in ``path``, on the CPU."""
    import diffusers

    d = unet_folder(path)
    try:
        cfg = json.loads((d / "config.json").read_text())
    except json.JSONDecodeError as e:
        raise InitFromError(f"init_from={path}: {d / 'config.json'} is not JSON ({e}); expected {HOW_TO_GET}") from None
    name = cfg.get("_class_name", "")
    cls = getattr(diffusers, name, None) if name.startswith("UNet2D") else None
    if cls is None:
        raise InitFromError(f"init_from={path}: {d / 'config.json'} describes {name or 'no diffusers class'!r}, not "
                            f"a UNet2DModel or UNet2DConditionModel; expected {HOW_TO_GET}")
    try:
        with torch.random.fork_rng(devices=[]):  # building the source draws an init: keep the run's RNG as it was
            model = cls.from_pretrained(str(d), local_files_only=True, low_cpu_mem_usage=False)
    except Exception as e:  # a corrupt or foreign weights file: diffusers raises many kinds
        raise InitFromError(f"init_from={path}: diffusers could not load {d} ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:200]}); expected {HOW_TO_GET}") from None
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}, dict(model.config)


@torch.no_grad()
def init_unet_from(model, path: str | Path) -> dict[str, Any]:
    """Copy into ``model.unet`` (a :class:`dmz.model.DMZModel`) every tensor of the diffusers UNet in ``path`` whose
    name and shape match; returns ``{"source", "copied", "fresh", "dropped", "mismatched"}`` (names; ``fresh`` holds
    the mismatched ones too). Raises :class:`InitFromError` when nothing matches (another resolution, channel count or
    architecture): nothing is half-copied then."""
    src, src_cfg = load_source_state(path)
    ours = model.unet.state_dict()
    copied = [k for k, v in ours.items() if k in src and src[k].shape == v.shape]
    mismatched = [k for k, v in ours.items() if k in src and src[k].shape != v.shape]
    if not copied:
        raise InitFromError(
            f"init_from={path}: no tensor of its UNet matches DMZ's by name and shape ({len(mismatched)} names match "
            f"with other shapes; source sample_size={src_cfg.get('sample_size')}, in_channels="
            f"{src_cfg.get('in_channels')}, block_out_channels={src_cfg.get('block_out_channels')}): pick a preset "
            "and resolution of the same UNet layout")
    for k in copied:
        ours[k].copy_(src[k].to(ours[k].dtype))
    copied_set = set(copied)
    fresh = [k for k in ours if k not in copied_set]
    return {"source": str(Path(path)), "source_class": src_cfg.get("_class_name"),
            "copied": copied, "fresh": fresh, "mismatched": mismatched, "dropped": [k for k in src if k not in ours],
            "copied_params": int(sum(ours[k].numel() for k in copied)),
            "fresh_params": int(sum(ours[k].numel() for k in fresh))}


def freeze_copied(model, report: dict[str, Any]) -> int:
    """``finetune=new``: the copied UNet parameters stop training (``requires_grad`` off); returns how many."""
    copied = set(report["copied"])
    n = 0
    for name, p in model.unet.named_parameters():
        if name in copied:
            p.requires_grad_(False)
            n += 1
    return n


def summary(report: dict[str, Any]) -> str:
    return (f"init_from {report['source']} ({report['source_class']}): copied {len(report['copied'])} tensors "
            f"({report['copied_params'] / 1e6:.2f} M values), fresh {len(report['fresh'])} "
            f"({report['fresh_params'] / 1e6:.2f} M; {len(report['mismatched'])} of them shape-mismatched), "
            f"dropped {len(report['dropped'])} of the source's")


# ----------------------------------------------------------------------------------------------------------------
# a run's UNet as a diffusers folder (plain DDPM runs: the starting point of a fine-tune)


def export_unet(run_dir: str | Path, out: str | Path, weights: str = "ema") -> Path:
    """Write run ``run_dir``'s UNet (a diffusers ``UNet2DConditionModel``) with ``save_pretrained``: ``config.json``
    + ``diffusion_pytorch_model.safetensors``, the layout ``init_from`` reads. Only an unconditional run
    (``prior=none``, plain self-attention) is exported: it is what a DMZ fine-tune starts from (PAPER.md 1.6). It is
    a ``UNet2DConditionModel`` rather than a ``UNet2DModel`` because the release's unconditional UNet has a mid
    block of one ResNet and no attention, which ``UNet2DModel`` cannot hold."""
    from dmz.run import load_run

    run = load_run(run_dir, device="cpu", weights=weights)
    m = run.cfg.model
    if m.prior != "none" or m.baseline_attention != "plain":
        raise InitFromError(f"{run_dir}: only a plain DDPM run (prior=none, baseline_attention=plain) is exported as "
                            f"a starting point; this one has prior={m.prior}, baseline_attention={m.baseline_attention}")
    out = Path(out)
    run.model.unet.save_pretrained(str(out), safe_serialization=True)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dmz.finetune", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("export", help="write a plain DDPM run's UNet as a diffusers UNet folder")
    e.add_argument("--run", required=True)
    e.add_argument("--out", required=True)
    e.add_argument("--weights", default="ema", choices=["ema", "model"])
    args = p.parse_args(argv)
    from dmz.runio import CheckpointError

    try:
        out = export_unet(args.run, args.out, args.weights)
    except (InitFromError, CheckpointError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"wrote {out} (a diffusers UNet folder; start a DMZ run from it with --set init_from={out})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
