"""How a run executes fast on its device: mixed precision and ``torch.compile``, for training and for sampling.

Both are execution choices (``train.precision`` aside, they stay out of run ids): the trainer reads ``train.precision``
and ``train.compile``, sampling (``dmz.sample``, ``evaluation.run``) reads ``train.sampling_precision`` and
``train.sampling_compile``. Which ones pay off depends on the machine: ``python benchmarks/speed.py --compare``
measures them side by side (``benchmarks/results/``).
"""

from __future__ import annotations

import weakref
from contextlib import nullcontext

import torch

PRECISIONS = ("fp32", "fp16", "bf16", "auto")
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def bf16_supported(device: torch.device) -> bool:
    """bf16 arithmetic in hardware: CUDA devices that support it, CPUs with AVX512-BF16 or AMX (oneDNN's check)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def amp_dtype(precision: str, device: torch.device) -> tuple[torch.dtype | None, str | None]:
    """The autocast dtype for ``precision`` on ``device`` (None = fp32) and, when the request cannot be honoured,
    why. ``auto`` is bf16 on CUDA devices that support it and fp32 elsewhere (on CPUs bf16 is a measured choice:
    ``precision=bf16``); fp16 is CUDA only (it needs loss scaling); bf16 on a CPU without bf16 hardware would be
    emulated, many times slower, so it falls back to fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return None, None
    if precision == "auto":
        return (torch.bfloat16, None) if device.type == "cuda" and bf16_supported(device) else (None, None)
    if precision == "fp16" and device.type != "cuda":
        return None, f"precision=fp16 runs in fp32 on {device} (fp16 with loss scaling is for CUDA)"
    if precision == "bf16" and not bf16_supported(device):
        return None, f"precision=bf16 runs in fp32 on {device}: no bf16 hardware there"
    return DTYPES[precision], None


def autocast(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` for ``dtype`` on ``device``, or a no-op for fp32."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def precision_name(dtype: torch.dtype | None) -> str:
    return {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, "fp32")


_COMPILED: "weakref.WeakKeyDictionary[torch.nn.Module, torch.nn.Module]" = weakref.WeakKeyDictionary()


def compiled(module: torch.nn.Module) -> torch.nn.Module:
    """``torch.compile(module)``, made once per module and reused (every ``generate`` call of an evaluation shares
    one compiled denoiser; it recompiles only for a new input shape). Inductor's on-disk cache makes a second
    process compile in seconds instead of minutes."""
    c = _COMPILED.get(module)
    if c is None:
        c = _COMPILED[module] = torch.compile(module)
    return c


# ----------------------------------------------------------------------------------------------------------------
# micro-batching: per-sample results that do not depend on the caller's batch
# ----------------------------------------------------------------------------------------------------------------
MICRO_BATCH = {"cpu": 32, "cuda": 256}  # default denoiser call size per device type (CPU saturates near 32)


def default_micro_batch(device: torch.device | str) -> int:
    return MICRO_BATCH.get(torch.device(device).type, 256)


class MicroBatched:
    """Call ``fn`` on fixed-size micro-batches: every tensor argument whose first dimension is the batch is cut
    into pieces of exactly ``size`` rows (the last piece padded by repeating its last row); outputs are
    concatenated with the padding removed. Makes ``fn``'s per-sample results independent of the caller's batch."""

    def __init__(self, fn, size: int):
        if size < 1:
            raise ValueError(f"micro_batch must be >= 1, got {size}")
        self.fn, self.size = fn, int(size)

    def __call__(self, *args, **kwargs):
        n = args[0].shape[0]

        def piece(v, s, e):
            if not (torch.is_tensor(v) and v.dim() > 0 and v.shape[0] == n):
                return v
            v = v[s:e]
            pad = self.size - (e - s)
            return torch.cat([v, v[-1:].expand(pad, *v.shape[1:])]) if pad else v

        outs = []
        for s in range(0, n, self.size):
            e = min(s + self.size, n)
            out = self.fn(*(piece(a, s, e) for a in args), **{k: piece(v, s, e) for k, v in kwargs.items()})
            outs.append(out[: e - s])
        return torch.cat(outs)
