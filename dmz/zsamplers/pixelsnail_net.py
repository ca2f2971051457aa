"""Autoregressive PixelSNAIL prior over discrete DMZ codes: the network, its exact bits, sampling and fitting.

The released DMZ code (``pixelsnail_train.py``, a copy of rosinality/vq-vae-2-pytorch's PixelSNAIL) lays a binary
code vector of length L = |z| out as an (L/8) x 8 grid of n_class=2 tokens and fits a PixelSNAIL to it (channel 64,
kernel 3, 2 blocks, 2 res-blocks, res_channel 64, dropout 0.1, attention on; Adam lr 1e-4, wd 1e-5, batch 64,
<= 500 epochs, early stop after 10 epochs without *training* token-accuracy improvement).  See docs/PAPER.md 1.5.

This is an independent implementation of the same model family (not a copy of the release):

* **Layout.** Code vector (N, L) -> grid (N, L/width, width), row-major ("raster order").  ``width`` defaults to 8 as
  released; ``width=L`` is a single row (a plain 1-D autoregressive model).  L must be divisible by width.
* **Causality invariant.** Every feature map inside the network satisfies: the feature at raster position p depends
  only on codes at positions < p.  The input stage establishes it ("mask A" convolution that sees the rows above and
  the tokens to the left, plus a 1x1 term on the *previous token in raster order*, so that the first column of a
  row sees the last token of the row above); the gated residual blocks keep it ("mask B" convolutions that may also
  see the current position's features); 1x1 convolutions keep it trivially.
* **Causal attention.** Queries come from the current features (codes < i); keys/values come from
  [one-hot input, block input, block features, positional background], so key j depends on codes <= j.  The mask is
  therefore *strict*: query i attends only to keys j < i (``scaled_dot_product_attention`` with an explicit boolean
  mask).  Position 0 has nothing to attend to; it is allowed to attend to itself inside the kernel (so the softmax
  is never over an empty set, hence no NaN) and its attention output is then multiplied by zero.  Because the key
  contains the raw token, attention gives every position access to *all* earlier tokens (no PixelCNN blind spot).
  Without attention (``attention=False``) the convolutional receptive field has the usual upper-right blind spot.
* **Positional background.** Two coordinate channels (row, column in [-0.5, 0.5)) added at the input and
  concatenated into the attention queries and keys, as in PixelSNAIL.
* Convolutions are weight-normalised (as the release's ``WNConv2d``), re-implemented here with an explicit mask so
  masked taps are exact zeros.

Other differences from the release, on purpose: no AMP; our early stopping is on held-out NLL (the released rule,
training-accuracy patience, is still evaluated and recorded in the history); samples are drawn by inverse CDF from
uniforms drawn up front, so a sample set does not depend on ``batch_size``.

This module is the network only: ``nll_bits`` / ``sample`` / ``fit_network`` / ``save_network`` / ``load_network``
work on flat codes (N, L). Fitting it to a run's codes and the one wrapper that makes a fitted network a z-sampler
and code model (``sample(n, rng, device)``, ``nll_bits(codes)``) are :mod:`dmz.zsamplers.pixelsnail`; the uniform and
empirical code models and ``code_diagnostics`` are :mod:`dmz.zsamplers.codemodels`.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from dmz.zsamplers.codemodels import as_codes as _as_codes

__all__ = [
    "PixelSNAIL",
    "PixelSNAILCheckpointError",
    "grid_shape",
    "codes_to_grid",
    "grid_to_codes",
    "nll_bits",
    "sample",
    "fit_network",
    "save_network",
    "load_network",
]

_LN2 = math.log(2.0)
REFIT_HINT = "refit it with `python -m dmz.zsamplers fit --run DIR`"
CHECKPOINT_FORMAT = "dmz.pixelsnail"
CHECKPOINT_VERSION = 1


# ---------------------------------------------------------------------------------------------------------------
# layout helpers
# ---------------------------------------------------------------------------------------------------------------

def grid_shape(L: int, width: int) -> tuple[int, int]:
    """(height, width) of the grid a length-L code vector is laid out on. ValueError unless width divides L."""
    L, width = int(L), int(width)
    if width <= 0 or L <= 0:
        raise ValueError(f"code length L={L} and grid width={width} must both be positive")
    if L % width != 0:
        raise ValueError(
            f"code length L={L} is not divisible by the grid width {width}; choose a width that divides L "
            f"(e.g. width=L for a single row)")
    return L // width, width


def codes_to_grid(codes: torch.Tensor, width: int) -> torch.Tensor:
    """(N, L) -> (N, L/width, width), row-major."""
    h, w = grid_shape(codes.shape[-1], width)
    return codes.reshape(*codes.shape[:-1], h, w)


def grid_to_codes(grid: torch.Tensor) -> torch.Tensor:
    """(N, H, W) -> (N, H*W), row-major."""
    return grid.reshape(*grid.shape[:-2], grid.shape[-2] * grid.shape[-1])


# ---------------------------------------------------------------------------------------------------------------
# layers
# ---------------------------------------------------------------------------------------------------------------

class _MaskedWNConv2d(nn.Module):
    """Weight-normalised convolution whose output at (r, c) sees only allowed input positions.

    ``mode``:
      * ``"1x1"``: pointwise.
      * ``"A"``: rows r-k//2 .. r-1 (columns c-k//2 .. c+k//2) and row r columns c-k//2 .. c-1 (strictly before).
      * ``"B"``: as "A" plus the position (r, c) itself.
    The kernel has k//2 + 1 rows (only rows above and the current row); the input is padded k//2 rows at the top and
    k//2 columns on each side, none at the bottom, so the output has the input's height and width and cropping the
    input's bottom rows never changes the outputs of the rows kept.
    """

    def __init__(self, cin: int, cout: int, kernel_size: int = 1, mode: str = "1x1"):
        super().__init__()
        if mode == "1x1":
            kh, kw = 1, 1
        elif mode in ("A", "B"):
            if kernel_size < 1 or kernel_size % 2 == 0:
                raise ValueError(f"kernel_size must be a positive odd integer; got {kernel_size}")
            kh, kw = kernel_size // 2 + 1, kernel_size
        else:
            raise ValueError(f"unknown conv mode {mode!r}")
        self.mode, self.kh, self.kw = mode, kh, kw
        mask = torch.ones(1, 1, kh, kw)
        if mode in ("A", "B"):
            centre = kw // 2
            first_blocked = centre if mode == "A" else centre + 1
            mask[..., kh - 1, first_blocked:] = 0.0
        self.register_buffer("mask", mask, persistent=False)
        ref = nn.Conv2d(cin, cout, (kh, kw))  # only for PyTorch's default initialisation
        v = ref.weight.detach() * mask
        self.v = nn.Parameter(v.clone())
        self.g = nn.Parameter(v.flatten(1).norm(dim=1).clamp_min(1e-8).clone())
        self.bias = nn.Parameter(ref.bias.detach().clone())

    def weight(self) -> torch.Tensor:
        v = self.v * self.mask
        norm = v.flatten(1).norm(dim=1).clamp_min(1e-12)
        return v * (self.g / norm).view(-1, 1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode != "1x1":
            x = F.pad(x, (self.kw // 2, self.kw // 2, self.kh - 1, 0))
        return F.conv2d(x, self.weight(), self.bias)


class _GatedResBlock(nn.Module):
    """x + GLU(conv2(dropout(elu(conv1(elu(x)) + aux_conv(elu(aux)))))); convs masked with ``mode``."""

    def __init__(self, channel: int, res_channel: int, kernel_size: int, mode: str, dropout: float,
                 aux_channel: int = 0):
        super().__init__()
        self.conv1 = _MaskedWNConv2d(channel, res_channel, kernel_size, mode)
        self.aux_conv = _MaskedWNConv2d(aux_channel, res_channel) if aux_channel > 0 else None
        self.dropout = nn.Dropout(dropout)
        self.conv2 = _MaskedWNConv2d(res_channel, 2 * channel, kernel_size, mode)

    def forward(self, x: torch.Tensor, aux: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.elu(x))
        if self.aux_conv is not None:
            if aux is None:
                raise ValueError("this block needs an auxiliary input")
            h = h + self.aux_conv(F.elu(aux))
        h = self.conv2(self.dropout(F.elu(h)))
        return x + F.glu(h, dim=1)


class _CausalSelfAttention(nn.Module):
    """Multi-head attention over the raster-flattened grid; query i attends to keys j < i only."""

    def __init__(self, query_channel: int, key_channel: int, attn_channel: int, n_head: int, dropout: float):
        super().__init__()
        if attn_channel % n_head != 0:
            raise ValueError(f"attention width {attn_channel} (channel // 2) is not divisible by n_head={n_head}")
        self.n_head, self.dropout = n_head, float(dropout)
        self.q = nn.Linear(query_channel, attn_channel)
        self.k = nn.Linear(key_channel, attn_channel)
        self.v = nn.Linear(key_channel, attn_channel)
        self._masks: dict[tuple[int, str], torch.Tensor] = {}

    def _mask(self, n: int, device: torch.device) -> torch.Tensor:
        key = (n, str(device))
        m = self._masks.get(key)
        if m is None:
            m = torch.ones(n, n, dtype=torch.bool, device=device).tril(-1)  # strict: j < i
            m[0, 0] = True  # position 0 would attend to nothing: let it see itself, its output is zeroed below
            self._masks[key] = m
        return m

    def forward(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        b, _, h, w = query.shape
        n = h * w
        q_in = query.flatten(2).transpose(1, 2)  # (B, N, Cq)
        k_in = key.flatten(2).transpose(1, 2)
        heads = lambda t: t.view(b, n, self.n_head, -1).transpose(1, 2)  # noqa: E731
        q, k, v = heads(self.q(q_in)), heads(self.k(k_in)), heads(self.v(k_in))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=self._mask(n, query.device),
                                             dropout_p=self.dropout if self.training else 0.0)
        keep = torch.ones(n, 1, device=query.device, dtype=out.dtype)
        keep[0] = 0.0
        out = out * keep  # position 0 attends to nothing
        return out.transpose(1, 2).reshape(b, n, -1).transpose(1, 2).reshape(b, -1, h, w)


class _PixelBlock(nn.Module):
    def __init__(self, *, n_class: int, channel: int, res_channel: int, kernel_size: int, n_res_block: int,
                 attention: bool, dropout: float, n_head: int):
        super().__init__()
        self.res = nn.ModuleList(
            _GatedResBlock(channel, res_channel, kernel_size, "B", dropout) for _ in range(n_res_block))
        self.attention = attention
        if attention:
            attn_channel = max(channel // 2, n_head)
            q_ch = channel + 2
            k_ch = n_class + 2 * channel + 2
            self.query_res = _GatedResBlock(q_ch, q_ch, 1, "1x1", dropout)
            self.key_res = _GatedResBlock(k_ch, k_ch, 1, "1x1", dropout)
            self.attn = _CausalSelfAttention(q_ch, k_ch, attn_channel, n_head, dropout)
            self.out_res = _GatedResBlock(channel, res_channel, 1, "1x1", dropout, aux_channel=attn_channel)
        else:
            self.out_conv = _MaskedWNConv2d(channel, channel)

    def forward(self, x: torch.Tensor, onehot: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
        out = x
        for block in self.res:
            out = block(out)
        if self.attention:
            query = self.query_res(torch.cat([out, background], 1))
            key = self.key_res(torch.cat([onehot, x, out, background], 1))
            return self.out_res(out, self.attn(query, key))
        return self.out_conv(F.elu(out))


# ---------------------------------------------------------------------------------------------------------------
# model
# ---------------------------------------------------------------------------------------------------------------

class PixelSNAIL(nn.Module):
    """PixelSNAIL over an (height x width) grid of ``n_class`` tokens; logits at raster position i depend only on
    tokens at positions < i.  Defaults are the release's (channel 64, kernel 3, 2 blocks x 2 res-blocks,
    res_channel 64, dropout 0.1, attention on); ``n_head`` 8 as in rosinality's port (attention width channel//2).
    """

    def __init__(self, *, height: int, width: int, n_class: int = 2, channel: int = 64, kernel_size: int = 3,
                 n_block: int = 2, n_res_block: int = 2, res_channel: int = 64, attention: bool = True,
                 dropout: float = 0.1, n_head: int = 8):
        super().__init__()
        if height < 1 or width < 1:
            raise ValueError(f"grid must be at least 1x1; got {height}x{width}")
        if n_class < 2:
            raise ValueError(f"n_class must be >= 2; got {n_class}")
        if kernel_size % 2 == 0:
            kernel_size += 1  # as the release: even kernels are widened to the next odd size
        self.config = dict(height=int(height), width=int(width), n_class=int(n_class), channel=int(channel),
                           kernel_size=int(kernel_size), n_block=int(n_block), n_res_block=int(n_res_block),
                           res_channel=int(res_channel), attention=bool(attention), dropout=float(dropout),
                           n_head=int(n_head))
        self.height, self.width, self.n_class = int(height), int(width), int(n_class)
        self.L = self.height * self.width
        self.input_conv = _MaskedWNConv2d(n_class, channel, kernel_size, "A")
        self.prev_token = _MaskedWNConv2d(n_class, channel)  # previous token in raster order
        self.background_in = _MaskedWNConv2d(2, channel)
        self.blocks = nn.ModuleList(
            _PixelBlock(n_class=n_class, channel=channel, res_channel=res_channel, kernel_size=kernel_size,
                        n_res_block=n_res_block, attention=attention, dropout=dropout, n_head=n_head)
            for _ in range(n_block))
        self.out = _MaskedWNConv2d(channel, n_class)
        rows = (torch.arange(height, dtype=torch.float32) + 0.5) / height - 0.5
        cols = (torch.arange(width, dtype=torch.float32) + 0.5) / width - 0.5
        bg = torch.stack([rows.view(height, 1).expand(height, width), cols.view(1, width).expand(height, width)])
        self.register_buffer("background", bg.unsqueeze(0), persistent=False)

    def forward_onehot(self, onehot: torch.Tensor) -> torch.Tensor:
        """Logits (B, n_class, H', W) from a (possibly relaxed) one-hot input (B, n_class, H', W), H' <= height.

        Feeding only the first H' rows gives exactly the logits of those rows (used by ``sample``)."""
        b, k, h, w = onehot.shape
        if k != self.n_class or w != self.width or not 1 <= h <= self.height:
            raise ValueError(f"expected one-hot input (B, {self.n_class}, <= {self.height}, {self.width}); "
                             f"got {tuple(onehot.shape)}")
        bg = self.background[:, :, :h].expand(b, 2, h, w).to(onehot.dtype)
        flat = onehot.flatten(2)
        prev = F.pad(flat, (1, 0))[..., :-1].reshape(b, k, h, w)  # token at raster position i-1
        x = self.input_conv(onehot) + self.prev_token(prev) + self.background_in(bg)
        for block in self.blocks:
            x = block(x, onehot, bg)
        return self.out(F.elu(x))

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        """codes LongTensor (B, H', W) with H' <= height -> logits (B, n_class, H', W)."""
        if codes.dim() != 3:
            raise ValueError(f"codes must be (B, H, W); got {tuple(codes.shape)} (use codes_to_grid for flat codes)")
        onehot = F.one_hot(codes.long(), self.n_class).permute(0, 3, 1, 2).to(self.background.dtype)
        return self.forward_onehot(onehot)


def _model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


class _EvalMode:
    def __init__(self, model: nn.Module):
        self.model = model

    def __enter__(self):
        self.was_training = self.model.training
        self.model.eval()

    def __exit__(self, *exc):
        self.model.train(self.was_training)


def nll_bits(model: PixelSNAIL, codes: torch.Tensor, *, temperature: float = 1.0,
             batch_size: int = 1024) -> torch.Tensor:
    """Negative log-likelihood of each flat code (N, L) in bits (summed over positions), eval mode -> (N,) float64.

    ``temperature`` (> 0) scores under the logits divided by it, the distribution ``sample`` draws from at that
    temperature (1: the fitted model itself, computed without the division)."""
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0; got {temperature!r}")
    codes = _as_codes(codes, n_class=model.n_class, L=model.L)
    device = _model_device(model)
    out = []
    with _EvalMode(model), torch.no_grad():
        for start in range(0, codes.shape[0], batch_size):
            grid = codes_to_grid(codes[start:start + batch_size].to(device), model.width)
            logits = model(grid).float()
            if temperature != 1:
                logits = logits / temperature
            ce = F.cross_entropy(logits, grid, reduction="none")  # nats, (B, H, W)
            out.append(ce.flatten(1).sum(1).double().cpu() / _LN2)
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


def sample(model: PixelSNAIL, n: int, *, temperature: float = 1.0, generator: torch.Generator | None = None,
           device: str | torch.device | None = None, batch_size: int = 512,
           uniforms: torch.Tensor | None = None) -> torch.Tensor:
    """Ancestral samples in raster order -> LongTensor (n, L) on the CPU.

    Logits are divided by ``temperature`` (> 0).  Token i of sample k is the inverse CDF of its conditional at
    ``uniforms[k, i]``; the (n, L) uniforms are drawn up front from ``generator`` (on the generator's device), so the
    result is deterministic given the generator and independent of ``batch_size``.  Pass ``uniforms`` (n, L) in
    [0, 1) instead of a generator to control each sample's randomness yourself (e.g. one generator per sample).
    ``device``: where to run the model (default: the model's device; a different device runs on a copy).
    """
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0; got {temperature!r}")
    n = int(n)
    if n < 0:
        raise ValueError(f"n must be >= 0; got {n}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    device = torch.device(device) if device is not None else _model_device(model)
    if device != _model_device(model):
        model = copy.deepcopy(model).to(device)
    if uniforms is not None:
        if generator is not None:
            raise ValueError("pass either uniforms or generator, not both")
        u = torch.as_tensor(uniforms).detach().to("cpu", torch.float64)
        if u.shape != (n, model.L):
            raise ValueError(f"uniforms must have shape ({n}, {model.L}); got {tuple(u.shape)}")
        if u.numel() and (float(u.min()) < 0.0 or float(u.max()) >= 1.0):
            raise ValueError("uniforms must lie in [0, 1)")
    else:
        gen_device = generator.device if generator is not None else torch.device("cpu")
        u = torch.rand(n, model.L, generator=generator, device=gen_device, dtype=torch.float64).cpu()
    out = torch.empty(n, model.L, dtype=torch.long)
    H, W, K = model.height, model.width, model.n_class
    with _EvalMode(model), torch.no_grad():
        for start in range(0, n, batch_size):
            ub = u[start:start + batch_size].to(device)
            b = ub.shape[0]
            grid = torch.zeros(b, H, W, dtype=torch.long, device=device)
            for pos in range(H * W):
                r, c = divmod(pos, W)
                logits = model(grid[:, :r + 1])[:, :, r, c].double() / temperature
                cdf = logits.softmax(-1).cumsum(-1)
                tok = (ub[:, pos:pos + 1] > cdf).sum(-1).clamp_max(K - 1)
                grid[:, r, c] = tok
            out[start:start + b] = grid.reshape(b, H * W).cpu()
    return out


# ---------------------------------------------------------------------------------------------------------------
# fitting
# ---------------------------------------------------------------------------------------------------------------

def _epoch_bar(total: int, progress: bool):
    if not progress:
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a declared dependency
        warnings.warn("tqdm is not installed; fitting without a progress bar", stacklevel=3)
        return None
    return tqdm(total=total, desc="pixelsnail", unit="epoch", leave=False)


def fit_network(train_codes: Any, val_codes: Any = None, *, width: int = 8, epochs: int = 500,
                   batch_size: int = 64, lr: float = 1e-4, weight_decay: float = 1e-5, patience: int = 10,
                   released_patience: int = 10, seed: int = 0, device: str | torch.device = "cpu",
                   progress: bool = True, log_fn: Callable[[dict], None] | None = None,
                   **model_kwargs) -> tuple[PixelSNAIL, dict]:
    """Fit a PixelSNAIL prior to flat codes (N, L) (LongTensor, bool or 0/1 floats).

    Adam(lr, weight_decay) as released (1e-4, 1e-5), batches of ``batch_size``, at most ``epochs`` epochs.
    Epochs are numbered from 1.  Stopping rule (ours): stop once ``patience`` consecutive epochs bring no
    improvement of the held-out NLL, then restore the weights of the best epoch.  If ``val_codes`` is None the
    released rule is used instead (stop after ``released_patience`` epochs without training-accuracy improvement,
    keep the final weights).

    The released rule is always evaluated alongside: ``history["released_rule_stop_epoch"]`` is the epoch at which
    it would have stopped, or None if it did not fire before training stopped.  Training NLL / accuracy are
    averaged over the epoch's training batches in train mode (dropout on), as the release measures accuracy.

    history keys: ``epoch``, ``train_nll_bits``, ``train_acc``, ``val_nll_bits``, ``val_acc``, ``epoch_seconds``
    (lists, one entry per epoch); ``best_epoch``, ``best_val_nll_bits``, ``released_rule_stop_epoch``,
    ``stopped_epoch``, ``stop_reason`` ("val_nll_patience" | "released_rule" | "max_epochs"), ``n_params``,
    ``model_kwargs``, ``width``, ``L``, ``n_train``, ``n_val``, ``seed``, ``lr``, ``weight_decay``, ``batch_size``.
    Deterministic given ``seed`` (on a given device); the global RNG state is left untouched.
    """
    n_class = int(model_kwargs.get("n_class", 2))
    train = _as_codes(train_codes, n_class=n_class, name="train_codes")
    if train.shape[0] == 0:
        raise ValueError("train_codes is empty")
    L = train.shape[1]
    height, width = grid_shape(L, width)
    val = None
    if val_codes is not None:
        val = _as_codes(val_codes, n_class=n_class, L=L, name="val_codes")
        if val.shape[0] == 0:
            raise ValueError("val_codes is empty (pass None to use the released training-accuracy rule)")
    if epochs < 1 or batch_size < 1 or patience < 1 or released_patience < 1:
        raise ValueError("epochs, batch_size, patience and released_patience must all be >= 1")
    device = torch.device(device)
    fork_devices = [device.index or 0] if device.type == "cuda" else []

    with torch.random.fork_rng(devices=fork_devices):
        torch.manual_seed(seed)
        model = PixelSNAIL(height=height, width=width, **model_kwargs).to(device)
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
        shuffle_gen = torch.Generator().manual_seed(seed)
        train_dev = codes_to_grid(train, width).to(device)

        hist: dict[str, Any] = dict(epoch=[], train_nll_bits=[], train_acc=[], val_nll_bits=[], val_acc=[],
                                    epoch_seconds=[])
        best_val, best_epoch, best_state, bad = math.inf, None, None, 0
        best_acc, acc_bad, released_stop = -math.inf, 0, None
        stop_reason, epoch = "max_epochs", 0
        bar = _epoch_bar(epochs, progress)
        try:
            for epoch in range(1, epochs + 1):
                t0 = time.perf_counter()
                model.train()
                perm = torch.randperm(train.shape[0], generator=shuffle_gen).to(device)
                sum_nats, sum_correct, n_seen = 0.0, 0, 0
                for start in range(0, train.shape[0], batch_size):
                    batch = train_dev[perm[start:start + batch_size]]
                    logits = model(batch)
                    loss = F.cross_entropy(logits, batch)  # mean nats per token
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    nb = batch.shape[0]
                    sum_nats += float(loss.detach()) * nb * L
                    sum_correct += int((logits.detach().argmax(1) == batch).sum())
                    n_seen += nb
                train_nll = sum_nats / n_seen / _LN2
                train_acc = sum_correct / (n_seen * L)

                val_nll = val_acc = None
                if val is not None:
                    val_nll = float(nll_bits(model, val).mean())
                    val_acc = _token_accuracy(model, val)

                # the released rule: patience on training accuracy
                if train_acc > best_acc:
                    best_acc, acc_bad = train_acc, 0
                else:
                    acc_bad += 1
                    if acc_bad >= released_patience and released_stop is None:
                        released_stop = epoch

                for key, value in (("epoch", epoch), ("train_nll_bits", train_nll), ("train_acc", train_acc),
                                   ("val_nll_bits", val_nll), ("val_acc", val_acc),
                                   ("epoch_seconds", time.perf_counter() - t0)):
                    hist[key].append(value)
                if log_fn is not None:
                    log_fn({k: hist[k][-1] for k in ("epoch", "train_nll_bits", "train_acc", "val_nll_bits",
                                                     "val_acc", "epoch_seconds")})
                if bar is not None:
                    post = {"train_bits": f"{train_nll:.3f}", "acc": f"{train_acc:.3f}"}
                    if val_nll is not None:
                        post["val_bits"] = f"{val_nll:.3f}"
                    bar.set_postfix(post)
                    bar.update(1)

                if val is not None:
                    if val_nll < best_val:
                        best_val, best_epoch, bad = val_nll, epoch, 0
                        best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                    else:
                        bad += 1
                        if bad >= patience:
                            stop_reason = "val_nll_patience"
                            break
                elif released_stop is not None:
                    stop_reason = "released_rule"
                    break
        finally:
            if bar is not None:
                bar.close()

    if best_state is not None:
        model.load_state_dict(best_state)
    if val is None:
        best_epoch = epoch
    model.eval()
    hist.update(best_epoch=best_epoch, best_val_nll_bits=(best_val if val is not None else None),
                released_rule_stop_epoch=released_stop, stopped_epoch=epoch, stop_reason=stop_reason,
                n_params=sum(p.numel() for p in model.parameters()), model_kwargs=dict(model.config),
                width=width, L=L, n_train=int(train.shape[0]), n_val=(int(val.shape[0]) if val is not None else 0),
                seed=seed, lr=lr, weight_decay=weight_decay, batch_size=batch_size)
    return model, hist


def _token_accuracy(model: PixelSNAIL, codes: torch.Tensor, batch_size: int = 1024) -> float:
    device = _model_device(model)
    correct = 0
    with _EvalMode(model), torch.no_grad():
        for start in range(0, codes.shape[0], batch_size):
            grid = codes_to_grid(codes[start:start + batch_size].to(device), model.width)
            correct += int((model(grid).argmax(1) == grid).sum())
    return correct / codes.numel()


# ---------------------------------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------------------------------

class PixelSNAILCheckpointError(RuntimeError):
    """A PixelSNAIL checkpoint could not be read (corrupt, truncated or not a PixelSNAIL checkpoint)."""


def save_network(path: str | os.PathLike, model: PixelSNAIL, meta: dict | None = None) -> Path:
    """Atomically write constructor kwargs + state_dict + ``meta`` (must be JSON-serialisable) to ``path``."""
    path = Path(path)
    meta_json = json.dumps(meta if meta is not None else {})
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "model_kwargs": dict(model.config),
               "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()}, "meta_json": meta_json}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            torch.save(payload, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def load_network(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> tuple[PixelSNAIL, dict]:
    """Load a checkpoint written by ``save_network`` -> (model in eval mode, meta)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"PixelSNAIL checkpoint {path} does not exist; {REFIT_HINT}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
        if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
            raise ValueError("not a dmz.pixelsnail checkpoint")
        if payload.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"unsupported checkpoint version {payload.get('version')!r}")
        model = PixelSNAIL(**payload["model_kwargs"])
        model.load_state_dict(payload["state_dict"])
        meta = json.loads(payload["meta_json"])
    except Exception as exc:  # noqa: BLE001 - any failure here means an unusable file
        raise PixelSNAILCheckpointError(
            f"could not read PixelSNAIL checkpoint {path} ({type(exc).__name__}: {exc}); the file is corrupt, "
            f"truncated or not a PixelSNAIL checkpoint: {REFIT_HINT}") from exc
    model.to(map_location).eval()
    return model, meta
