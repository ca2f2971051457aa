"""The released image encoder: strided conv + BatchNorm + LeakyReLU per width, then one Linear head (PAPER.md 1.4)."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F


def default_encoder_channels(resolution: int) -> tuple[int, ...]:
    """The released rule: widths 32, 64, 128, ... until the feature map is 2x2 (32 px -> 4 convs, 64 px -> 5)."""
    if resolution < 4 or resolution & (resolution - 1):
        raise ValueError(f"encoder needs a power-of-two resolution >= 4, got {resolution}")
    n = resolution.bit_length() - 2  # log2(resolution) - 1 stride-2 convs reach 2x2
    return tuple(32 * 2**i for i in range(n))


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes whose backward is the sum of the processes' gradients (each process's loss depends on
    the reduced value)."""

    @staticmethod
    def forward(ctx, x):
        y = x.clone()
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        g = grad.clone()
        dist.all_reduce(g)
        return g


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics cover the whole global batch under torch.distributed.

    ``nn.SyncBatchNorm`` only runs on accelerators; this one also runs on CPU (gloo), so that a DDP step with world
    size k equals one process on the same global batch. Without an initialised process group it is plain BatchNorm.
    Assumes the same local batch size on every process.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        xf = x.float()
        n_local = x.numel() // x.shape[1]
        stats = torch.cat([xf.sum(dim=(0, 2, 3)), (xf * xf).sum(dim=(0, 2, 3))])
        stats = _AllReduceSum.apply(stats)  # differentiable sum over processes
        n = n_local * dist.get_world_size()
        mean, sq = stats[: x.shape[1]] / n, stats[x.shape[1]:] / n
        var = sq - mean * mean
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * n / max(n - 1, 1), alpha=m)
        y = (xf - mean[None, :, None, None]) * torch.rsqrt(var[None, :, None, None] + self.eps)
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y.to(x.dtype)


class ConvEncoder(nn.Module):
    """x (B, C, H, W) -> (B, out_dim) raw outputs (logits or Gaussian parameters; the prior decides)."""

    def __init__(self, in_channels: int, resolution: int, out_dim: int, channels: tuple[int, ...] | None = None):
        super().__init__()
        channels = tuple(channels) if channels else default_encoder_channels(resolution)
        layers: list[nn.Module] = []
        c_in, size = in_channels, resolution
        for c in channels:
            layers += [nn.Conv2d(c_in, c, kernel_size=3, stride=2, padding=1), GlobalBatchNorm2d(c), nn.LeakyReLU()]
            c_in, size = c, (size + 1) // 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Linear(c_in * size * size, out_dim)
        self.out_dim = out_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.features(x)
        # BatchNorm statistics stay fp32 under autocast, as in the release (encoder BN is never cast to fp16)
        return self.head(torch.flatten(h, 1))


def gumbel_softmax(logits: torch.Tensor, tau: float, hard: bool, uniform: torch.Tensor | None = None) -> torch.Tensor:
    """``F.gumbel_softmax`` with optional pre-drawn uniform noise (so DDP ranks can share one global draw)."""
    if uniform is None:
        return F.gumbel_softmax(logits, tau=tau, hard=hard, dim=-1)
    g = -torch.log(-torch.log(uniform.clamp(1e-10, 1.0 - 1e-7)))
    y = ((logits + g) / tau).softmax(dim=-1)
    if not hard:
        return y
    y_hard = F.one_hot(y.argmax(dim=-1), y.shape[-1]).to(y.dtype)
    return y_hard - y.detach() + y
