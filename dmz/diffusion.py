"""Gaussian diffusion (I-DDPM, Nichol & Dhariwal 2021) as used by DMZ.

Our own typed implementation of the process described in PAPER.md sections 1.3 and 1.9:

* beta schedules (``linear`` DDPM, ``cosine`` I-DDPM);
* the forward process, the true posterior, the learned-range variance;
* the hybrid loss ``mse + vb`` where the VLB term trains only the variance (stop-gradient mean,
  "frozen_out") and is rescaled by ``num_timesteps / 1000`` (I-DDPM ``RESCALED_MSE``);
* DDPM-IP input perturbation;
* timestep respacing (:func:`space_timesteps`, :class:`SpacedDiffusion`), ancestral and DDIM sampling loops;
* per-sample random generators (:class:`PerSampleRNG`) so that a sample never depends on the batch it is in;
* timestep samplers for training (uniform, loss-second-moment importance sampling).

Conventions (docs/architecture.md): images are float32 (B, C, H, W) in [-1, 1]; the model is called as
``model(x_t, t, **model_kwargs)`` with ``t`` a LongTensor (B,) of *original* timesteps; with a learned variance
it returns (B, 2C, H, W) = (eps, v). Only epsilon prediction is supported.
"""

from __future__ import annotations

import math
from enum import Enum
from typing import Any, Callable, Sequence

import numpy as np
import torch

__all__ = [
    "ModelVarType",
    "LossType",
    "get_named_beta_schedule",
    "betas_for_alpha_bar",
    "space_timesteps",
    "normal_kl",
    "approx_standard_normal_cdf",
    "discretized_gaussian_log_likelihood",
    "mean_flat",
    "PerSampleRNG",
    "GaussianDiffusion",
    "SpacedDiffusion",
    "create_diffusion",
    "ScheduleSampler",
    "UniformSampler",
    "LossSecondMomentResampler",
    "create_named_schedule_sampler",
    "SCHEDULE_SAMPLERS",
]

ModelFn = Callable[..., torch.Tensor]


class ModelVarType(str, Enum):
    """How the reverse-process variance is obtained."""

    LEARNED_RANGE = "learned_range"  # model outputs v in [-1, 1] interpolating log(beta_t) and log(posterior var)
    FIXED_SMALL = "fixed_small"  # posterior variance beta~_t
    FIXED_LARGE = "fixed_large"  # beta_t (with beta~_1 at t=0, as I-DDPM)


class LossType(str, Enum):
    """Training loss."""

    HYBRID = "hybrid"  # mse(eps) + vb * T/1000 (I-DDPM RESCALED_MSE with a learned variance)
    MSE = "mse"  # mse(eps) only; a learned variance (if any) receives no training signal


def _parse_enum(enum_cls: type[Enum], value: Any, what: str) -> Any:
    """Convert a str (or enum member) into ``enum_cls``; unknown values raise ValueError listing valid ones."""
    try:
        return enum_cls(value)
    except ValueError:
        valid = ", ".join(repr(m.value) for m in enum_cls)
        raise ValueError(f"unknown {what} {value!r}; valid: {valid}") from None


# ----------------------------------------------------------------------------------------------------------------------
# Schedules and respacing
# ----------------------------------------------------------------------------------------------------------------------

BETA_SCHEDULES = ("linear", "cosine")


def betas_for_alpha_bar(num_timesteps: int, alpha_bar: Callable[[float], float], max_beta: float = 0.999) -> np.ndarray:
    """Discretise a continuous cumulative-alpha function into betas.

    :param num_timesteps: number of diffusion steps.
    :param alpha_bar: function of t in [0, 1] giving the cumulative product of (1 - beta) up to t.
    :param max_beta: upper clip of each beta (avoids singularities near t = 1).
    :return: float64 array of shape (num_timesteps,), beta_i = min(1 - abar((i+1)/T) / abar(i/T), max_beta).
    """
    betas = []
    for i in range(num_timesteps):
        t1 = i / num_timesteps
        t2 = (i + 1) / num_timesteps
        betas.append(min(1.0 - alpha_bar(t2) / alpha_bar(t1), max_beta))
    return np.array(betas, dtype=np.float64)


def get_named_beta_schedule(name: str, num_timesteps: int) -> np.ndarray:
    """Named beta schedule.

    :param name: ``"linear"`` (DDPM, 1e-4..0.02 scaled by 1000/T so that any T approximates the 1000-step process) or
        ``"cosine"`` (I-DDPM, s = 0.008, betas clipped at 0.999).
    :param num_timesteps: number of diffusion steps T.
    :return: float64 array of betas, shape (T,).
    """
    if num_timesteps < 1:
        raise ValueError(f"num_timesteps must be >= 1, got {num_timesteps}")
    if name == "linear":
        scale = 1000.0 / num_timesteps
        return np.linspace(scale * 0.0001, scale * 0.02, num_timesteps, dtype=np.float64)
    if name == "cosine":
        return betas_for_alpha_bar(
            num_timesteps, lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2, max_beta=0.999
        )
    raise ValueError(f"unknown beta schedule {name!r}; valid: {', '.join(map(repr, BETA_SCHEDULES))}")


def space_timesteps(num_timesteps: int, section_counts: str | list[int]) -> set[int]:
    """Timesteps to keep from the original process (I-DDPM ``space_timesteps``).

    The original steps are cut into ``len(section_counts)`` equal sections (the first ``num_timesteps % n`` sections
    one step longer); section ``i`` keeps ``section_counts[i]`` steps with a fractional stride
    ``(size - 1) / (count - 1)``, rounded, so that both ends of every section are kept. E.g. 1000 steps and ``[10]``
    give {0, 111, 222, ..., 888, 999}.

    :param num_timesteps: number of steps of the original process.
    :param section_counts: list of per-section counts, or a comma-separated string of them (``"10"``,
        ``"10,15,20"``), or ``"ddimN"``: the DDIM fixed stride, the smallest integer stride giving exactly N steps
        (``range(0, num_timesteps, stride)``).
    :return: set of kept original timesteps.
    """
    if isinstance(section_counts, str):
        if section_counts.startswith("ddim"):
            desired_count = int(section_counts[len("ddim") :])
            for stride in range(1, num_timesteps):
                if len(range(0, num_timesteps, stride)) == desired_count:
                    return set(range(0, num_timesteps, stride))
            if desired_count == num_timesteps:
                return set(range(num_timesteps))
            raise ValueError(f"cannot create exactly {desired_count} steps with an integer stride over {num_timesteps}")
        section_counts = [int(x) for x in section_counts.split(",")]
    section_counts = [int(c) for c in section_counts]
    if not section_counts:
        raise ValueError("section_counts must not be empty")
    size_per = num_timesteps // len(section_counts)
    extra = num_timesteps % len(section_counts)
    start_idx = 0
    all_steps: list[int] = []
    for i, section_count in enumerate(section_counts):
        size = size_per + (1 if i < extra else 0)
        if size < section_count:
            raise ValueError(f"cannot divide section of {size} steps into {section_count}")
        if section_count < 1:
            raise ValueError(f"section counts must be >= 1, got {section_count}")
        frac_stride = 1.0 if section_count <= 1 else (size - 1) / (section_count - 1)
        cur_idx = 0.0
        for _ in range(section_count):
            all_steps.append(start_idx + round(cur_idx))  # accumulated float stride, as I-DDPM
            cur_idx += frac_stride
        start_idx += size
    return set(all_steps)


# ----------------------------------------------------------------------------------------------------------------------
# Likelihood helpers
# ----------------------------------------------------------------------------------------------------------------------


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    """Mean over all non-batch dimensions.

    :param x: tensor (B, ...).
    :return: tensor (B,).
    """
    return x.mean(dim=list(range(1, x.ndim))) if x.ndim > 1 else x


def normal_kl(mean1: Any, logvar1: Any, mean2: Any, logvar2: Any) -> torch.Tensor:
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) elementwise, in nats (broadcasting; at least one argument
    must be a tensor).

    :param mean1: mean of the first Gaussian.
    :param logvar1: log-variance of the first Gaussian.
    :param mean2: mean of the second Gaussian.
    :param logvar2: log-variance of the second Gaussian.
    :return: elementwise KL tensor.
    """
    ref = next((a for a in (mean1, logvar1, mean2, logvar2) if isinstance(a, torch.Tensor)), None)
    if ref is None:
        raise TypeError("normal_kl needs at least one tensor argument")
    logvar1, logvar2 = (
        v if isinstance(v, torch.Tensor) else torch.tensor(v, dtype=ref.dtype, device=ref.device) for v in (logvar1, logvar2)
    )
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def approx_standard_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    """Fast tanh approximation of the standard normal CDF (as I-DDPM / PixelCNN++).

    :param x: input tensor.
    :return: approximately Phi(x).
    """
    return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3))))


def discretized_gaussian_log_likelihood(x: torch.Tensor, *, means: torch.Tensor, log_scales: torch.Tensor) -> torch.Tensor:
    """Log-likelihood of a Gaussian discretised to 256 bins of width 2/255 on [-1, 1] (edge bins open-ended).

    :param x: targets in [-1, 1] (assumed to be uint8 images rescaled).
    :param means: Gaussian means.
    :param log_scales: Gaussian log standard deviations.
    :return: elementwise log-probabilities in nats.
    """
    if not (x.shape == means.shape == log_scales.shape):
        raise ValueError(f"shape mismatch: x {tuple(x.shape)}, means {tuple(means.shape)}, log_scales {tuple(log_scales.shape)}")
    centered_x = x - means
    inv_stdv = torch.exp(-log_scales)
    cdf_plus = approx_standard_normal_cdf(inv_stdv * (centered_x + 1.0 / 255.0))
    cdf_min = approx_standard_normal_cdf(inv_stdv * (centered_x - 1.0 / 255.0))
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    cdf_delta = cdf_plus - cdf_min
    return torch.where(
        x < -0.999,
        log_cdf_plus,
        torch.where(x > 0.999, log_one_minus_cdf_min, torch.log(cdf_delta.clamp(min=1e-12))),
    )


def _extract(arr: np.ndarray, t: torch.Tensor, broadcast_shape: Sequence[int]) -> torch.Tensor:
    """Gather ``arr[t]`` (float64 numpy) as a float32 tensor on ``t.device``, broadcastable to ``broadcast_shape``."""
    res = torch.from_numpy(arr).to(device=t.device)[t].float()
    while res.ndim < len(broadcast_shape):
        res = res[..., None]
    return res.expand(broadcast_shape)


# ----------------------------------------------------------------------------------------------------------------------
# Per-sample randomness
# ----------------------------------------------------------------------------------------------------------------------


class PerSampleRNG:
    """One ``torch.Generator`` per sample, so that the randomness of sample ``i`` depends on its seed only.

    Noise is generated on CPU generators and then moved to ``device``; this makes a sample set identical whatever
    the batch size and also across devices (CPU vs CUDA), at the cost of a host-to-device copy per draw.
    """

    def __init__(self, seeds: Sequence[int], device: torch.device | str = "cpu") -> None:
        """
        :param seeds: one integer seed per sample (the batch dimension).
        :param device: device the drawn tensors are moved to.
        """
        self.seeds = [int(s) for s in seeds]
        if not self.seeds:
            raise ValueError("PerSampleRNG needs at least one seed")
        self.device = torch.device(device)
        self.generators = [torch.Generator(device="cpu").manual_seed(s) for s in self.seeds]

    def __len__(self) -> int:
        return len(self.seeds)

    def randn(self, *shape_per_sample: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """Draw standard normal noise, sample ``i`` from generator ``i``.

        :param shape_per_sample: shape of one sample's noise (e.g. C, H, W).
        :param dtype: floating dtype of the result.
        :return: tensor (len(seeds), *shape_per_sample) on ``self.device``.
        """
        if len(shape_per_sample) == 1 and isinstance(shape_per_sample[0], (tuple, list, torch.Size)):
            shape_per_sample = tuple(shape_per_sample[0])
        out = torch.stack([torch.randn(shape_per_sample, generator=g, dtype=dtype) for g in self.generators])
        return out.to(self.device)

    def state_dict(self) -> dict[str, Any]:
        """:return: the seeds and each generator's state (to resume a stream exactly)."""
        return {"seeds": list(self.seeds), "states": [g.get_state() for g in self.generators]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """:param state: output of :meth:`state_dict` for the same seeds."""
        if list(state["seeds"]) != self.seeds:
            raise ValueError("PerSampleRNG state was saved for different seeds")
        for g, s in zip(self.generators, state["states"]):
            g.set_state(s)


def _check_rng(rng: PerSampleRNG | None, batch: int) -> None:
    if rng is not None and len(rng) != batch:
        raise ValueError(f"PerSampleRNG has {len(rng)} seeds but the batch has {batch} samples")


def _randn_like(x: torch.Tensor, rng: PerSampleRNG | None) -> torch.Tensor:
    if rng is None:
        return torch.randn_like(x)
    _check_rng(rng, x.shape[0])
    return rng.randn(*x.shape[1:]).to(device=x.device, dtype=x.dtype)


def _resolve_device(model: Any, noise: torch.Tensor | None, device: torch.device | str | None) -> torch.device:
    if device is not None:
        return torch.device(device)
    if noise is not None:
        return noise.device
    if isinstance(model, torch.nn.Module):
        for p in model.parameters():
            return p.device
    return torch.device("cpu")


def _progress(indices: list[int], progress: bool):
    if not progress:
        return indices
    from tqdm.auto import tqdm  # lazy: optional at import time

    return tqdm(indices)


# ----------------------------------------------------------------------------------------------------------------------
# Gaussian diffusion
# ----------------------------------------------------------------------------------------------------------------------


class GaussianDiffusion:
    """I-DDPM Gaussian diffusion with epsilon prediction.

    All schedule arrays are float64 numpy of shape (num_timesteps,) and are gathered per batch as float32 tensors.
    """

    def __init__(
        self,
        *,
        betas: np.ndarray | Sequence[float],
        model_var_type: str | ModelVarType = "learned_range",
        loss_type: str | LossType = "hybrid",
        input_perturbation: float = 0.0,
    ) -> None:
        """
        :param betas: 1-D beta schedule, values in (0, 1].
        :param model_var_type: ``"learned_range"``, ``"fixed_small"`` or ``"fixed_large"``.
        :param loss_type: ``"hybrid"`` (mse + rescaled vb; the vb term needs a learned variance) or ``"mse"``.
        :param input_perturbation: DDPM-IP gamma (0 disables it).
        """
        self.model_var_type: ModelVarType = _parse_enum(ModelVarType, model_var_type, "model_var_type")
        self.loss_type: LossType = _parse_enum(LossType, loss_type, "loss_type")
        self.input_perturbation = float(input_perturbation)
        if self.input_perturbation < 0:
            raise ValueError(f"input_perturbation must be >= 0, got {input_perturbation}")

        betas = np.array(betas, dtype=np.float64)
        if betas.ndim != 1 or len(betas) == 0:
            raise ValueError("betas must be a non-empty 1-D array")
        if not ((betas > 0).all() and (betas <= 1).all()):
            raise ValueError("betas must lie in (0, 1]")
        self.betas = betas
        self.num_timesteps = int(betas.shape[0])

        alphas = 1.0 - betas
        self.alphas_cumprod = np.cumprod(alphas, axis=0)
        self.alphas_cumprod_prev = np.append(1.0, self.alphas_cumprod[:-1])
        self.alphas_cumprod_next = np.append(self.alphas_cumprod[1:], 0.0)

        self.sqrt_alphas_cumprod = np.sqrt(self.alphas_cumprod)
        self.sqrt_one_minus_alphas_cumprod = np.sqrt(1.0 - self.alphas_cumprod)
        self.log_one_minus_alphas_cumprod = np.log(1.0 - self.alphas_cumprod)
        self.sqrt_recip_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod)
        self.sqrt_recipm1_alphas_cumprod = np.sqrt(1.0 / self.alphas_cumprod - 1)

        # q(x_{t-1} | x_t, x_0)
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # the posterior variance is 0 at t=0: clip the log by using the t=1 value there
        if self.num_timesteps > 1:
            self.posterior_log_variance_clipped = np.log(np.append(self.posterior_variance[1], self.posterior_variance[1:]))
        else:
            self.posterior_log_variance_clipped = np.log(np.maximum(self.posterior_variance, 1e-20))
        self.posterior_mean_coef1 = betas * np.sqrt(self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * np.sqrt(alphas) / (1.0 - self.alphas_cumprod)

    # -- model calls ---------------------------------------------------------------------------------------------------

    @property
    def learns_sigma(self) -> bool:
        """Whether the model must output (eps, v) with 2C channels."""
        return self.model_var_type == ModelVarType.LEARNED_RANGE

    def wrap_model(self, model: ModelFn) -> ModelFn:
        """Return the callable actually invoked with this process' timestep indices (identity here; respaced
        processes map indices back to original timesteps).

        :param model: the denoiser.
        """
        return model

    def _call_model(self, model: ModelFn, x: torch.Tensor, t: torch.Tensor, model_kwargs: dict | None) -> torch.Tensor:
        out = self.wrap_model(model)(x, t, **(model_kwargs or {}))
        if out.dtype in (torch.float16, torch.bfloat16):
            out = out.float()
        return out

    # -- forward process -----------------------------------------------------------------------------------------------

    def q_mean_variance(self, x0: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Distribution q(x_t | x_0).

        :param x0: clean images (B, ...).
        :param t: timestep indices (B,).
        :return: (mean, variance, log_variance).
        """
        mean = _extract(self.sqrt_alphas_cumprod, t, x0.shape) * x0
        variance = _extract(1.0 - self.alphas_cumprod, t, x0.shape)
        log_variance = _extract(self.log_one_minus_alphas_cumprod, t, x0.shape)
        return mean, variance, log_variance

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """Sample x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) noise.

        :param x0: clean images (B, ...).
        :param t: timestep indices (B,).
        :param noise: the Gaussian noise (drawn from the global torch RNG if None).
        :return: x_t.
        """
        if noise is None:
            noise = torch.randn_like(x0)
        if noise.shape != x0.shape:
            raise ValueError(f"noise shape {tuple(noise.shape)} != x0 shape {tuple(x0.shape)}")
        return _extract(self.sqrt_alphas_cumprod, t, x0.shape) * x0 + _extract(
            self.sqrt_one_minus_alphas_cumprod, t, x0.shape
        ) * noise

    def q_posterior_mean_variance(
        self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """True posterior q(x_{t-1} | x_t, x_0).

        :param x0: clean images.
        :param x_t: noisy images at step t.
        :param t: timestep indices (B,).
        :return: (mean, variance, log_variance_clipped).
        """
        if x0.shape != x_t.shape:
            raise ValueError(f"x0 shape {tuple(x0.shape)} != x_t shape {tuple(x_t.shape)}")
        mean = _extract(self.posterior_mean_coef1, t, x_t.shape) * x0 + _extract(self.posterior_mean_coef2, t, x_t.shape) * x_t
        variance = _extract(self.posterior_variance, t, x_t.shape)
        log_variance = _extract(self.posterior_log_variance_clipped, t, x_t.shape)
        return mean, variance, log_variance

    def predict_xstart_from_eps(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """:return: x_0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar).

        :param x_t: noisy images. :param t: timestep indices. :param eps: predicted noise.
        """
        return _extract(self.sqrt_recip_alphas_cumprod, t, x_t.shape) * x_t - _extract(
            self.sqrt_recipm1_alphas_cumprod, t, x_t.shape
        ) * eps

    def predict_eps_from_xstart(self, x_t: torch.Tensor, t: torch.Tensor, pred_xstart: torch.Tensor) -> torch.Tensor:
        """:return: eps = (x_t / sqrt(abar) - x_0) / sqrt(1 / abar - 1).

        :param x_t: noisy images. :param t: timestep indices. :param pred_xstart: predicted x_0.
        """
        return (_extract(self.sqrt_recip_alphas_cumprod, t, x_t.shape) * x_t - pred_xstart) / _extract(
            self.sqrt_recipm1_alphas_cumprod, t, x_t.shape
        )

    # -- reverse process -----------------------------------------------------------------------------------------------

    def mean_variance_from_output(
        self, model_output: torch.Tensor, x: torch.Tensor, t: torch.Tensor, clip_denoised: bool = True
    ) -> dict[str, torch.Tensor]:
        """Turn a raw model output into p(x_{t-1} | x_t) (no model call).

        :param model_output: (B, 2C, ...) for learned_range, else (B, C, ...).
        :param x: x_t (B, C, ...).
        :param t: timestep indices (B,).
        :param clip_denoised: clip the predicted x_0 to [-1, 1] before forming the mean.
        :return: dict with mean, variance, log_variance, pred_xstart, eps.
        """
        B, C = x.shape[:2]
        if t.shape != (B,):
            raise ValueError(f"t must have shape ({B},), got {tuple(t.shape)}")
        if self.learns_sigma:
            if model_output.shape != (B, 2 * C, *x.shape[2:]):
                raise ValueError(
                    f"learned_range needs a model output of shape {(B, 2 * C, *x.shape[2:])}, got {tuple(model_output.shape)}"
                )
            eps, v = torch.split(model_output, C, dim=1)
            min_log = _extract(self.posterior_log_variance_clipped, t, x.shape)
            max_log = _extract(np.log(self.betas), t, x.shape)
            frac = (v + 1) / 2
            log_variance = frac * max_log + (1 - frac) * min_log
            variance = torch.exp(log_variance)
        else:
            if model_output.shape != x.shape:
                raise ValueError(f"fixed variance needs a model output of shape {tuple(x.shape)}, got {tuple(model_output.shape)}")
            eps = model_output
            if self.model_var_type == ModelVarType.FIXED_LARGE:
                if self.num_timesteps > 1:
                    var_arr = np.append(self.posterior_variance[1], self.betas[1:])
                else:
                    var_arr = self.betas
                variance = _extract(var_arr, t, x.shape)
                log_variance = _extract(np.log(var_arr), t, x.shape)
            else:
                variance = _extract(self.posterior_variance, t, x.shape)
                log_variance = _extract(self.posterior_log_variance_clipped, t, x.shape)
        pred_xstart = self.predict_xstart_from_eps(x, t, eps)
        if clip_denoised:
            pred_xstart = pred_xstart.clamp(-1, 1)
        mean, _, _ = self.q_posterior_mean_variance(pred_xstart, x, t)
        return {"mean": mean, "variance": variance, "log_variance": log_variance, "pred_xstart": pred_xstart, "eps": eps}

    def p_mean_variance(
        self,
        model: ModelFn,
        x: torch.Tensor,
        t: torch.Tensor,
        model_kwargs: dict | None = None,
        clip_denoised: bool = True,
    ) -> dict[str, torch.Tensor]:
        """Apply the model to get p(x_{t-1} | x_t).

        :param model: denoiser ``model(x, t, **model_kwargs)``.
        :param x: x_t (B, C, ...).
        :param t: timestep indices of this process (B,).
        :param model_kwargs: extra keyword arguments for the model (e.g. ``{"cond": z}``).
        :param clip_denoised: clip the predicted x_0 to [-1, 1].
        :return: dict with mean, variance, log_variance, pred_xstart, eps.
        """
        out = self._call_model(model, x, t, model_kwargs)
        return self.mean_variance_from_output(out, x, t, clip_denoised)

    # -- variational bound ---------------------------------------------------------------------------------------------

    def vb_terms_from_output(
        self, model_output: torch.Tensor, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, clip_denoised: bool = True
    ) -> dict[str, torch.Tensor]:
        """VLB term in bits/dim from a given model output: decoder NLL at t == 0, else KL(q posterior || p).

        :param model_output: raw model output at (x_t, t).
        :param x0: clean images. :param x_t: noisy images. :param t: timestep indices (B,).
        :param clip_denoised: clip the predicted x_0.
        :return: dict with ``output`` (B,) in bits and ``pred_xstart``.
        """
        true_mean, _, true_log_var = self.q_posterior_mean_variance(x0, x_t, t)
        out = self.mean_variance_from_output(model_output, x_t, t, clip_denoised)
        kl = mean_flat(normal_kl(true_mean, true_log_var, out["mean"], out["log_variance"])) / math.log(2.0)
        decoder_nll = -discretized_gaussian_log_likelihood(x0, means=out["mean"], log_scales=0.5 * out["log_variance"])
        decoder_nll = mean_flat(decoder_nll) / math.log(2.0)
        return {"output": torch.where(t == 0, decoder_nll, kl), "pred_xstart": out["pred_xstart"]}

    def vb_terms_bpd(
        self,
        model: ModelFn,
        x0: torch.Tensor,
        x_t: torch.Tensor,
        t: torch.Tensor,
        model_kwargs: dict | None = None,
        clip_denoised: bool = True,
    ) -> dict[str, torch.Tensor]:
        """VLB term in bits/dim, calling the model (see :meth:`vb_terms_from_output`).

        :param model: denoiser. :param x0: clean images. :param x_t: noisy images. :param t: timestep indices (B,).
        :param model_kwargs: model keyword arguments. :param clip_denoised: clip the predicted x_0.
        :return: dict with ``output`` (B,) and ``pred_xstart``.
        """
        out = self._call_model(model, x_t, t, model_kwargs)
        return self.vb_terms_from_output(out, x0, x_t, t, clip_denoised)

    def prior_bpd(self, x0: torch.Tensor) -> torch.Tensor:
        """KL(q(x_T | x_0) || N(0, I)) in bits/dim (B,).

        :param x0: clean images.
        """
        t = torch.full((x0.shape[0],), self.num_timesteps - 1, dtype=torch.long, device=x0.device)
        mean, _, log_var = self.q_mean_variance(x0, t)
        return mean_flat(normal_kl(mean, log_var, 0.0, 0.0)) / math.log(2.0)

    @torch.no_grad()
    def calc_bpd_loop(
        self,
        model: ModelFn,
        x0: torch.Tensor,
        model_kwargs: dict | None = None,
        clip_denoised: bool = True,
        rng: PerSampleRNG | None = None,
        progress: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Full variational bound in bits/dim (one model call per timestep).

        :param model: denoiser. :param x0: clean images (B, ...). :param model_kwargs: model keyword arguments.
        :param clip_denoised: clip the predicted x_0. :param rng: optional per-sample noise source.
        :param progress: show a tqdm bar.
        :return: dict: total_bpd (B,), prior_bpd (B,), vb (B, T), xstart_mse (B, T), mse (B, T).
        """
        B = x0.shape[0]
        vb, xstart_mse, mse = [], [], []
        for i in _progress(list(range(self.num_timesteps))[::-1], progress):
            t = torch.full((B,), i, dtype=torch.long, device=x0.device)
            noise = _randn_like(x0, rng)
            x_t = self.q_sample(x0, t, noise)
            out = self.vb_terms_bpd(model, x0, x_t, t, model_kwargs, clip_denoised)
            vb.append(out["output"])
            xstart_mse.append(mean_flat((out["pred_xstart"] - x0) ** 2))
            eps = self.predict_eps_from_xstart(x_t, t, out["pred_xstart"])
            mse.append(mean_flat((eps - noise) ** 2))
        vb_t = torch.stack(vb[::-1], dim=1)  # column j = timestep j
        prior = self.prior_bpd(x0)
        return {
            "total_bpd": vb_t.sum(dim=1) + prior,
            "prior_bpd": prior,
            "vb": vb_t,
            "xstart_mse": torch.stack(xstart_mse[::-1], dim=1),
            "mse": torch.stack(mse[::-1], dim=1),
        }

    # -- training ------------------------------------------------------------------------------------------------------

    def training_losses(
        self,
        model: ModelFn,
        x0: torch.Tensor,
        t: torch.Tensor,
        model_kwargs: dict | None = None,
        noise: torch.Tensor | None = None,
        perturbation: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Per-sample training losses for one batch; the model is called once.

        ``mse`` = mean over non-batch dims of (noise - eps_pred)^2. With ``loss_type="hybrid"`` and a learned
        variance, ``vb`` = VLB term (bits) computed with a detached mean and the learned variance, times
        ``num_timesteps / 1000``, and ``loss = mse + vb``; otherwise ``loss = mse`` and no ``vb`` key.
        With input perturbation gamma > 0, x_t = q_sample(x0, t, noise + gamma * xi) where
        ``xi = torch.randn_like(noise)`` (global torch RNG), and the target stays ``noise``.

        :param model: denoiser. :param x0: clean images (B, C, ...). :param t: timestep indices (B,).
        :param model_kwargs: model keyword arguments (e.g. ``{"cond": z}``).
        :param noise: the Gaussian noise (global torch RNG if None).
        :param perturbation: the DDPM-IP perturbation noise xi (``torch.randn_like(noise)`` from the global torch RNG
            when None; ignored when gamma = 0).
        :return: dict of (B,) tensors: loss, mse, and vb when it is part of the loss.
        """
        if noise is None:
            noise = torch.randn_like(x0)
        if self.input_perturbation > 0:
            xi = torch.randn_like(noise) if perturbation is None else perturbation
            x_t = self.q_sample(x0, t, noise + self.input_perturbation * xi)
        else:
            x_t = self.q_sample(x0, t, noise)
        model_output = self._call_model(model, x_t, t, model_kwargs)

        C = x0.shape[1]
        if self.learns_sigma:
            if model_output.shape != (x0.shape[0], 2 * C, *x0.shape[2:]):
                raise ValueError(f"learned_range needs a model output with {2 * C} channels, got {tuple(model_output.shape)}")
            eps_pred, v = torch.split(model_output, C, dim=1)
        else:
            if model_output.shape != x0.shape:
                raise ValueError(f"model output shape {tuple(model_output.shape)} != x0 shape {tuple(x0.shape)}")
            eps_pred, v = model_output, None

        terms: dict[str, torch.Tensor] = {"mse": mean_flat((noise - eps_pred) ** 2)}
        if self.loss_type == LossType.HYBRID and v is not None:
            frozen_out = torch.cat([eps_pred.detach(), v], dim=1)  # vb trains the variance only
            vb = self.vb_terms_from_output(frozen_out, x0, x_t, t, clip_denoised=False)["output"]
            terms["vb"] = vb * (self.num_timesteps / 1000.0)
            terms["loss"] = terms["mse"] + terms["vb"]
        else:
            terms["loss"] = terms["mse"]
        return terms

    # -- ancestral sampling --------------------------------------------------------------------------------------------

    def p_sample(
        self,
        model: ModelFn,
        x: torch.Tensor,
        t: torch.Tensor,
        model_kwargs: dict | None = None,
        clip_denoised: bool = True,
        rng: PerSampleRNG | None = None,
    ) -> dict[str, torch.Tensor]:
        """One ancestral step x_t -> x_{t-1} (no noise where t == 0).

        :param model: denoiser. :param x: x_t. :param t: timestep indices (B,).
        :param model_kwargs: model keyword arguments. :param clip_denoised: clip the predicted x_0.
        :param rng: per-sample noise source (global torch RNG if None).
        :return: dict with ``sample`` and ``pred_xstart``.
        """
        out = self.p_mean_variance(model, x, t, model_kwargs, clip_denoised)
        noise = _randn_like(x, rng)
        nonzero_mask = (t != 0).float().view(-1, *([1] * (x.ndim - 1)))
        sample = out["mean"] + nonzero_mask * torch.exp(0.5 * out["log_variance"]) * noise
        return {"sample": sample, "pred_xstart": out["pred_xstart"]}

    def _initial_noise(
        self, shape: Sequence[int], noise: torch.Tensor | None, rng: PerSampleRNG | None, device: torch.device
    ) -> torch.Tensor:
        shape = tuple(shape)
        _check_rng(rng, shape[0])
        if noise is not None:
            if tuple(noise.shape) != shape:
                raise ValueError(f"noise shape {tuple(noise.shape)} != requested shape {shape}")
            return noise.to(device)
        if rng is not None:
            return rng.randn(*shape[1:]).to(device)
        return torch.randn(shape, device=device)

    def _run_loop(self, step, model, shape, noise, rng, device, progress, start_step=None) -> torch.Tensor:
        """x_T (or ``noise`` = x_t at step ``start_step - 1``), then ``step(x, t)["sample"]`` for t = start - 1 ... 0
        (shared by the DDPM and DDIM loops; ``start_step`` None = every step of this process)."""
        dev = _resolve_device(model, noise, device)
        x = self._initial_noise(shape, noise, rng, dev)
        start = self.num_timesteps if start_step is None else int(start_step)
        if not 1 <= start <= self.num_timesteps:
            raise ValueError(f"start_step must lie in 1..{self.num_timesteps}, got {start_step}")
        for i in _progress(list(range(start))[::-1], progress):
            t = torch.full((x.shape[0],), i, dtype=torch.long, device=dev)
            x = step(x, t)["sample"]
        return x

    @torch.no_grad()
    def p_sample_loop(
        self,
        model: ModelFn,
        shape: Sequence[int],
        *,
        noise: torch.Tensor | None = None,
        model_kwargs: dict | None = None,
        clip_denoised: bool = True,
        progress: bool = False,
        rng: PerSampleRNG | None = None,
        device: torch.device | str | None = None,
        start_step: int | None = None,
    ) -> torch.Tensor:
        """Ancestral sampling from x_T ~ N(0, I) over all steps of this process (or, with ``start_step`` = k and
        ``noise`` = x at respaced step k - 1, over the last k steps).

        :param model: denoiser. :param shape: (B, C, H, W).
        :param noise: x_T (drawn from ``rng`` or the global torch RNG if None).
        :param model_kwargs: model keyword arguments, fixed across steps. :param clip_denoised: clip predicted x_0.
        :param progress: show a tqdm bar. :param rng: per-sample randomness for x_T and every step.
        :param device: device (default: noise's, else the model's parameters', else CPU).
        :return: samples x_0 (B, C, H, W).
        """
        step = lambda x, t: self.p_sample(model, x, t, model_kwargs, clip_denoised, rng)  # noqa: E731
        return self._run_loop(step, model, shape, noise, rng, device, progress, start_step)

    # -- DDIM ----------------------------------------------------------------------------------------------------------

    def ddim_sample(
        self,
        model: ModelFn,
        x: torch.Tensor,
        t: torch.Tensor,
        model_kwargs: dict | None = None,
        clip_denoised: bool = True,
        eta: float = 0.0,
        rng: PerSampleRNG | None = None,
    ) -> dict[str, torch.Tensor]:
        """One DDIM step x_t -> x_{t-1} (eps re-derived from the (clipped) predicted x_0, as I-DDPM).

        :param model: denoiser. :param x: x_t. :param t: timestep indices (B,).
        :param model_kwargs: model keyword arguments. :param clip_denoised: clip the predicted x_0.
        :param eta: stochasticity (0 = deterministic DDIM, 1 ~ DDPM).
        :param rng: per-sample noise source when eta > 0.
        :return: dict with ``sample`` and ``pred_xstart``.
        """
        out = self.p_mean_variance(model, x, t, model_kwargs, clip_denoised)
        eps = self.predict_eps_from_xstart(x, t, out["pred_xstart"])
        alpha_bar = _extract(self.alphas_cumprod, t, x.shape)
        alpha_bar_prev = _extract(self.alphas_cumprod_prev, t, x.shape)
        sigma = eta * torch.sqrt((1 - alpha_bar_prev) / (1 - alpha_bar)) * torch.sqrt(1 - alpha_bar / alpha_bar_prev)
        mean_pred = out["pred_xstart"] * torch.sqrt(alpha_bar_prev) + torch.sqrt(1 - alpha_bar_prev - sigma**2) * eps
        sample = mean_pred
        if eta > 0:
            noise = _randn_like(x, rng)
            nonzero_mask = (t != 0).float().view(-1, *([1] * (x.ndim - 1)))
            sample = mean_pred + nonzero_mask * sigma * noise
        return {"sample": sample, "pred_xstart": out["pred_xstart"]}

    @torch.no_grad()
    def ddim_sample_loop(
        self,
        model: ModelFn,
        shape: Sequence[int],
        *,
        noise: torch.Tensor | None = None,
        model_kwargs: dict | None = None,
        clip_denoised: bool = True,
        eta: float = 0.0,
        progress: bool = False,
        rng: PerSampleRNG | None = None,
        device: torch.device | str | None = None,
        start_step: int | None = None,
    ) -> torch.Tensor:
        """DDIM sampling over all steps of this process (respace with ``"ddimN"`` or ``N``; ``start_step`` as in
        :meth:`p_sample_loop`).

        :param model: denoiser. :param shape: (B, C, H, W). :param noise: x_T (drawn if None).
        :param model_kwargs: model keyword arguments. :param clip_denoised: clip predicted x_0.
        :param eta: DDIM eta. :param progress: show a tqdm bar. :param rng: per-sample randomness.
        :param device: device (default as :meth:`p_sample_loop`).
        :return: samples x_0.
        """
        step = lambda x, t: self.ddim_sample(model, x, t, model_kwargs, clip_denoised, eta, rng)  # noqa: E731
        return self._run_loop(step, model, shape, noise, rng, device, progress, start_step)


# ----------------------------------------------------------------------------------------------------------------------
# Respacing
# ----------------------------------------------------------------------------------------------------------------------


class _WrappedModel:
    """Calls ``model`` with original timesteps ``timestep_map[t]`` (never rescaled)."""

    def __init__(self, model: ModelFn, timestep_map: torch.Tensor) -> None:
        self.model = model
        self.timestep_map = timestep_map

    def __call__(self, x: torch.Tensor, t: torch.Tensor, **kwargs: Any) -> torch.Tensor:
        return self.model(x, self.timestep_map.to(t.device)[t], **kwargs)


class SpacedDiffusion(GaussianDiffusion):
    """A diffusion process that keeps only some steps of a base process.

    The betas are re-derived from the base ``alphas_cumprod`` at the kept steps, so ``alphas_cumprod`` of this process
    equals the base one at those steps. The model always receives the original integer timesteps, so one trained
    model serves every number of sampling steps.
    """

    def __init__(self, use_timesteps: set[int] | Sequence[int], *, betas: np.ndarray | Sequence[float], **kwargs: Any) -> None:
        """
        :param use_timesteps: original timesteps to keep.
        :param betas: the base (original) beta schedule.
        :param kwargs: other :class:`GaussianDiffusion` arguments.
        """
        base = GaussianDiffusion(betas=betas, **kwargs)
        self.original_num_steps = base.num_timesteps
        self.use_timesteps = {int(s) for s in use_timesteps}
        if not self.use_timesteps:
            raise ValueError("use_timesteps must not be empty")
        bad = [s for s in self.use_timesteps if not 0 <= s < base.num_timesteps]
        if bad:
            raise ValueError(f"timesteps {sorted(bad)} outside [0, {base.num_timesteps})")
        last = 1.0
        new_betas, kept = [], []
        for i, abar in enumerate(base.alphas_cumprod):
            if i in self.use_timesteps:
                new_betas.append(1.0 - abar / last)
                last = abar
                kept.append(i)
        self.timestep_map = torch.tensor(kept, dtype=torch.long)
        super().__init__(betas=np.array(new_betas, dtype=np.float64), **kwargs)

    def wrap_model(self, model: ModelFn) -> ModelFn:
        """:param model: the denoiser. :return: a callable mapping respaced indices to original timesteps."""
        if isinstance(model, _WrappedModel):
            return model
        return _WrappedModel(model, self.timestep_map)


def create_diffusion(
    *,
    noise_schedule: str = "cosine",
    steps: int = 1000,
    learn_sigma: bool = True,
    sigma_small: bool = False,
    loss: str = "hybrid",
    input_perturbation: float = 0.0,
    timestep_respacing: str | int | None = None,
) -> SpacedDiffusion:
    """Build the (respaced) diffusion process.

    :param noise_schedule: ``"cosine"`` or ``"linear"``.
    :param steps: number of steps of the trained process.
    :param learn_sigma: learned-range variance (model outputs 2C channels); otherwise fixed.
    :param sigma_small: with a fixed variance, use the posterior variance (else beta_t).
    :param loss: ``"hybrid"`` or ``"mse"``.
    :param input_perturbation: DDPM-IP gamma.
    :param timestep_respacing: None or "" = all steps; int T or "T" (or "a,b,c" sections) = I-DDPM spacing;
        ``"ddimT"`` = DDIM fixed stride.
    :return: a :class:`SpacedDiffusion`.
    """
    betas = get_named_beta_schedule(noise_schedule, steps)
    if timestep_respacing is None or timestep_respacing == "":
        use = set(range(steps))
    elif isinstance(timestep_respacing, int):
        use = space_timesteps(steps, [timestep_respacing])
    else:
        use = space_timesteps(steps, str(timestep_respacing))
    if learn_sigma:
        var_type = ModelVarType.LEARNED_RANGE
    else:
        var_type = ModelVarType.FIXED_SMALL if sigma_small else ModelVarType.FIXED_LARGE
    return SpacedDiffusion(
        use, betas=betas, model_var_type=var_type, loss_type=_parse_enum(LossType, loss, "loss"),
        input_perturbation=input_perturbation,
    )


# ----------------------------------------------------------------------------------------------------------------------
# Timestep samplers
# ----------------------------------------------------------------------------------------------------------------------


class ScheduleSampler:
    """Distribution over timesteps for training; samples are importance-weighted so the loss stays unbiased.

    Everything a training step needs stays on the sampler's device (:meth:`to`): timesteps are drawn by inverse-CDF
    lookup of uniforms that come from a CPU generator, so a step never waits for the device (no host sync) and the
    draws depend only on the generator and the weights, on any device.
    """

    def __init__(self, diffusion: GaussianDiffusion) -> None:
        """:param diffusion: the process whose timesteps are sampled."""
        self.diffusion = diffusion
        self.num_timesteps = diffusion.num_timesteps
        self.device = torch.device("cpu")

    def to(self, device: torch.device | str) -> "ScheduleSampler":
        """Keep the sampler's state on ``device`` (where :meth:`sample` returns its tensors). :return: self."""
        self.device = torch.device(device)
        return self

    def weights_tensor(self) -> torch.Tensor:
        """:return: unnormalised positive float64 weights (num_timesteps,) on the sampler's device."""
        return torch.ones(self.num_timesteps, dtype=torch.float64, device=self.device)

    def weights(self) -> np.ndarray:
        """:return: :meth:`weights_tensor` as numpy (for inspection; reads the device)."""
        return self.weights_tensor().cpu().numpy()

    def sample(
        self, batch_size: int, device: torch.device | str | None = None, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw timesteps with probability p ∝ weights().

        :param batch_size: number of timesteps.
        :param device: device of the returned tensors (default: the sampler's).
        :param generator: CPU torch generator for the uniforms (global torch RNG if None).
        :return: (t LongTensor (B,), weights FloatTensor (B,) = 1 / (num_timesteps * p[t])).
        """
        u = torch.rand(batch_size, generator=generator, dtype=torch.float64)
        w = self.weights_tensor()
        p = w / w.sum()
        cdf = torch.cumsum(p, 0)
        u = u.to(cdf.device, non_blocking=True) * cdf[-1]
        idx = torch.searchsorted(cdf, u, right=True).clamp_(max=self.num_timesteps - 1)
        weights = 1.0 / (self.num_timesteps * p[idx])
        dev = self.device if device is None else torch.device(device)
        return idx.to(device=dev, dtype=torch.long), weights.to(device=dev, dtype=torch.float32)

    def update_with_local_losses(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        """Record per-sample losses (no-op for loss-agnostic samplers).

        :param t: timesteps (B,). :param losses: per-sample losses (B,).
        """

    def state_dict(self) -> dict[str, Any]:
        """:return: the sampler state (torch-loadable with ``weights_only=True``)."""
        return {"num_timesteps": self.num_timesteps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """:param state: output of :meth:`state_dict`."""
        if int(state["num_timesteps"]) != self.num_timesteps:
            raise ValueError(f"sampler state is for {state['num_timesteps']} timesteps, not {self.num_timesteps}")


class UniformSampler(ScheduleSampler):
    """Uniform over timesteps (all weights 1)."""


class LossSecondMomentResampler(ScheduleSampler):
    """I-DDPM importance sampling: p_t ∝ sqrt(E[L_t^2]) over the last ``history_per_term`` losses of each t, mixed with
    ``uniform_prob`` of the uniform distribution; uniform until every t has a full history.

    The history is a ring buffer per timestep on the sampler's device: ``_written[t]`` counts every loss ever
    recorded for t and the next one goes to slot ``_written[t] % history_per_term``, overwriting the oldest. The weights
    depend only on which losses are in the buffer, so this keeps the release's "drop the oldest" rule exactly.
    """

    def __init__(self, diffusion: GaussianDiffusion, history_per_term: int = 10, uniform_prob: float = 0.001) -> None:
        """
        :param diffusion: the process.
        :param history_per_term: losses remembered per timestep.
        :param uniform_prob: weight of the uniform mixture component.
        """
        super().__init__(diffusion)
        self.history_per_term = int(history_per_term)
        self.uniform_prob = float(uniform_prob)
        # one spare column: where losses go that a batch overwrites again before the step ends (never read)
        self._history = torch.zeros(self.num_timesteps, self.history_per_term + 1, dtype=torch.float64)
        self._written = torch.zeros(self.num_timesteps, dtype=torch.int64)

    def to(self, device):
        super().to(device)
        self._history, self._written = self._history.to(self.device), self._written.to(self.device)
        return self

    def warmed_up(self) -> bool:
        """:return: whether every timestep has a full loss history (reads the device)."""
        return bool((self._written >= self.history_per_term).all())

    def weights_tensor(self) -> torch.Tensor:
        """:return: sampling weights (uniform before warm-up, or if the history is not finite/positive)."""
        # sorted per row: the weights depend only on which losses are held, not on their slots (so a state restored
        # in the oldest-first layout gives bit-identical weights)
        h = self._history[:, : self.history_per_term].sort(dim=-1).values
        rms = torch.sqrt(torch.mean(h * h, dim=-1))
        total = rms.sum()
        w = rms / total * (1.0 - self.uniform_prob) + self.uniform_prob / self.num_timesteps
        ok = (self._written >= self.history_per_term).all() & torch.isfinite(w).all() & (total > 0)
        return torch.where(ok, w, torch.ones_like(w))

    def update_with_all_losses(self, ts: torch.Tensor, losses: torch.Tensor) -> None:
        """Record the losses of all processes, in order (as if one at a time), without leaving the device.

        :param ts: timesteps (N,). :param losses: matching per-sample losses (N,).
        """
        ts = torch.as_tensor(ts, device=self.device).long().reshape(-1)
        losses = torch.as_tensor(losses, device=self.device).to(torch.float64).reshape(-1)
        H = self.history_per_term
        same = ts[:, None] == ts[None, :]
        before = torch.tril(same, diagonal=-1).sum(1)  # earlier entries of the same t in this batch
        after = torch.triu(same, diagonal=1).sum(1)  # later ones: an entry followed by >= H of them is overwritten
        slot = torch.where(after < H, (self._written[ts] + before) % H, H)
        self._history.index_put_((ts, slot), losses)  # (t, slot) pairs are unique except in the spare column
        self._written.index_add_(0, ts, torch.ones_like(ts))

    def update_with_local_losses(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        """Gather (t, loss) pairs from all processes (``torch.distributed`` when initialised) in rank order and
        record them, so every rank keeps the same history. Every process must pass the same number of losses.

        :param t: local timesteps (B,). :param losses: local per-sample losses (B,), detached here.
        """
        t = t.detach().long().reshape(-1)
        losses = losses.detach().float().reshape(-1)
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            world = dist.get_world_size()
            t_all = [torch.zeros_like(t) for _ in range(world)]
            l_all = [torch.zeros_like(losses) for _ in range(world)]
            dist.all_gather(t_all, t)
            dist.all_gather(l_all, losses)
            t, losses = torch.cat(t_all), torch.cat(l_all)
        self.update_with_all_losses(t, losses)

    def _ordered_history(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(num_timesteps, H) oldest-to-newest histories and per-t counts (<= H), the release's layout."""
        H = self.history_per_term
        full = self._written >= H
        shift = torch.where(full, self._written % H, torch.zeros_like(self._written))
        idx = (torch.arange(H, device=self.device)[None, :] + shift[:, None]) % H
        return torch.gather(self._history[:, :H], 1, idx), torch.clamp(self._written, max=H)

    def state_dict(self) -> dict[str, Any]:
        """:return: histories as tensors (loadable with ``torch.load(weights_only=True)``), oldest loss first."""
        hist, counts = self._ordered_history()
        return {
            "num_timesteps": self.num_timesteps,
            "history_per_term": self.history_per_term,
            "uniform_prob": self.uniform_prob,
            "loss_history": hist.cpu(),
            "loss_counts": counts.cpu(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """:param state: output of :meth:`state_dict` for the same configuration."""
        super().load_state_dict(state)
        if int(state["history_per_term"]) != self.history_per_term:
            raise ValueError("sampler state has a different history_per_term")
        self.uniform_prob = float(state["uniform_prob"])
        hist = torch.as_tensor(state["loss_history"]).to(torch.float64)
        counts = torch.as_tensor(state["loss_counts"]).long()
        if hist.shape != (self.num_timesteps, self.history_per_term) or counts.shape != (self.num_timesteps,):
            raise ValueError("sampler state has the wrong shape")
        # oldest first with count c <= H is a ring whose next slot is c % H: written = c continues it exactly
        self._history = torch.cat([hist, torch.zeros(self.num_timesteps, 1, dtype=torch.float64)], 1).to(self.device)
        self._written = counts.to(self.device)


SCHEDULE_SAMPLERS: dict[str, type[ScheduleSampler]] = {
    "uniform": UniformSampler,
    "loss-second-moment": LossSecondMomentResampler,
}


def create_named_schedule_sampler(name: str, diffusion: GaussianDiffusion) -> ScheduleSampler:
    """Build a timestep sampler by name.

    :param name: ``"uniform"`` or ``"loss-second-moment"``.
    :param diffusion: the process.
    :return: the sampler.
    """
    if name not in SCHEDULE_SAMPLERS:
        raise ValueError(f"unknown schedule sampler {name!r}; valid: {', '.join(map(repr, SCHEDULE_SAMPLERS))}")
    return SCHEDULE_SAMPLERS[name](diffusion)
