"""TensorBoard logging of a run: ``<run>/tb/``, next to ``metrics.jsonl`` (which stays the source of truth).

    logger = RunLogger(run_dir, enabled=cfg.train.logger == "tensorboard" and is_main_process)
    logger.scalars(step, {"loss": 0.1, "lr": 1e-3})             # train/loss, train/lr
    logger.images(step, "samples/ema_T10", images)               # (N, C, H, W): uint8, or float in [-1, 1]
    logger.close()

    tensorboard --logdir results/runs       # every run of every grid side by side (one tb/ per run folder)

``tensorboard`` is imported in the constructor, only when enabled, so importing this module (and the trainer that
imports it) costs nothing. A disabled logger is a no-op. The trainer's EMA sample grids are drawn by
:func:`dmz.sampling.sample_grid`. Evaluation adds its result rows to the same ``tb/`` with
:func:`log_result_rows` (``eval/fid_T10/prior`` at the checkpoint's step; ``eval_vs_T/fid/prior`` with T on the
x-axis).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

TB_DIR = "tb"
LOGGERS = ("tensorboard", "none")


class LoggerUnavailable(RuntimeError):
    """``train.logger=tensorboard`` but the ``tensorboard`` package is not installed; the message says what to do."""


def _tag(text: str) -> str:
    """A TensorBoard-safe tag: letters, digits and ``_ . / -`` (z-sampler specs hold ``:`` and ``=``)."""
    return re.sub(r"[^A-Za-z0-9_./-]", "_", text)


class RunLogger:
    """TensorBoard writer for one run folder. :param run_dir: the run folder (events go to ``<run_dir>/tb/``).
    :param enabled: False makes every method a no-op (``train.logger=none``, or a DDP rank other than 0)."""

    def __init__(self, run_dir: str | os.PathLike, enabled: bool = True):
        self.log_dir = Path(run_dir) / TB_DIR
        self.enabled = bool(enabled)
        self._writer = None
        if not self.enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:  # torch.utils.tensorboard raises ImportError when tensorboard is missing
            raise LoggerUnavailable(f"train.logger=tensorboard needs the tensorboard package ({e}); install it with "
                                    "`pip install tensorboard`, or turn logging off with --set train.logger=none "
                                    "(metrics.jsonl is written either way)") from None
        self._writer = SummaryWriter(log_dir=str(self.log_dir))

    def scalars(self, step: int, values: Mapping[str, Any], prefix: str = "train/") -> None:
        """One scalar per entry, tag ``prefix + name``; None and non-finite values are left out."""
        if self._writer is None:
            return
        for name, value in values.items():
            if value is None or isinstance(value, (str, bytes, bool)):
                continue
            v = float(value)
            if math.isfinite(v):
                self._writer.add_scalar(_tag(prefix + name), v, int(step))

    def images(self, step: int, tag: str, images, nrow: int | None = None) -> None:
        """A grid of ``images`` (N, C, H, W): uint8 in [0, 255], or float in [-1, 1] (the model's range)."""
        if self._writer is None:
            return
        import torch
        from torchvision.utils import make_grid

        x = torch.as_tensor(images).detach().cpu()
        if x.dim() != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(x.shape)}")
        if x.dtype != torch.uint8:
            from dmz.data import to_uint8

            x = to_uint8(x)
        nrow = nrow or max(1, math.ceil(math.sqrt(len(x))))
        grid = make_grid(x, nrow=nrow, padding=1, pad_value=255)  # uint8 (3, H', W')
        self._writer.add_image(_tag(tag), grid, int(step), dataformats="CHW")

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def __enter__(self) -> "RunLogger":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def log_result_rows(run_dir: str | os.PathLike, rows: Iterable[Mapping[str, Any]], *, enabled: bool = True,
                    log: Callable[[str], None] | None = None) -> int:
    """Add evaluation rows (``evaluation.run`` result rows) to ``<run_dir>/tb/``; returns how many were logged.

    A row with a T (FID, KID, reconstruction) gives ``eval/<metric>_T<T>/<sampler>`` at its ``checkpoint_step``
    (compare runs and checkpoints at one T) and ``eval_vs_T/<metric>/<sampler>`` at step T (the FID-vs-T curve of
    this checkpoint); a row without T (probes, code bits) gives ``eval/<metric>[/<sampler>]`` at its
    ``checkpoint_step``. A missing ``tensorboard`` package is reported through ``log`` and skipped: evaluation rows
    are in ``results.jsonl`` either way.
    """
    rows = [r for r in rows if isinstance(r.get("value"), (int, float)) and not isinstance(r.get("value"), bool)]
    if not enabled or not rows:
        return 0
    try:
        logger = RunLogger(run_dir, enabled=True)
    except LoggerUnavailable as e:
        if log is not None:
            log(f"tensorboard: skipped ({e})")
        return 0
    with logger:
        for r in rows:
            step = int(r.get("checkpoint_step") or 0)
            metric = str(r["metric"])
            zsampler = f"/{r['sampler']}" if r.get("sampler") else ""
            if r.get("T") is not None:
                logger.scalars(step, {f"{metric}_T{int(r['T'])}{zsampler}": r["value"]}, prefix="eval/")
                logger.scalars(int(r["T"]), {f"{metric}{zsampler}": r["value"]}, prefix="eval_vs_T/")
            else:
                logger.scalars(step, {f"{metric}{zsampler}": r["value"]}, prefix="eval/")
    return len(rows)
