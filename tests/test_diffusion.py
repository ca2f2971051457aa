"""Tests of dmz.diffusion against independent closed-form / scipy computations."""

from __future__ import annotations

import io
import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from scipy import integrate
from scipy.stats import norm

from dmz.diffusion import (
    GaussianDiffusion,
    LossSecondMomentResampler,
    PerSampleRNG,
    SpacedDiffusion,
    UniformSampler,
    approx_standard_normal_cdf,
    create_diffusion,
    create_named_schedule_sampler,
    discretized_gaussian_log_likelihood,
    get_named_beta_schedule,
    normal_kl,
    space_timesteps,
)

torch.set_num_threads(1)


# ----------------------------------------------------------------------------------------------------------------------
# independent reference helpers (float64 numpy, written from the formulas, not from the module)
# ----------------------------------------------------------------------------------------------------------------------


def cosine_f(t: float, T: int, s: float = 0.008) -> float:
    return math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2


def abar_np(betas: np.ndarray) -> np.ndarray:
    out, acc = [], 1.0
    for b in betas:
        acc *= 1.0 - b
        out.append(acc)
    return np.array(out)


def bayes_posterior(x0, xt, abar_prev, alpha_t):
    """q(x_{t-1}|x_t,x_0) by multiplying q(x_{t-1}|x_0) with the likelihood q(x_t|x_{t-1})."""
    beta_t = 1.0 - alpha_t
    prec = 1.0 / (1.0 - abar_prev) + alpha_t / beta_t
    var = 1.0 / prec
    mean = var * (math.sqrt(abar_prev) * x0 / (1.0 - abar_prev) + math.sqrt(alpha_t) * xt / beta_t)
    return mean, var


def kl_gauss_np(m1, v1, m2, v2):
    return 0.5 * np.log(v2 / v1) + (v1 + (m1 - m2) ** 2) / (2 * v2) - 0.5


def tanh_cdf_np(x):
    return 0.5 * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x**3)))


def disc_loglik_np(x, m, s, cdf=tanh_cdf_np):
    """Discretised Gaussian on 256 bins of [-1, 1], elementwise loop."""
    out = np.empty_like(x)
    for i, (xi, mi, si) in enumerate(zip(x.ravel(), m.ravel(), s.ravel())):
        hi = cdf((xi - mi + 1 / 255) / si)
        lo = cdf((xi - mi - 1 / 255) / si)
        if xi < -0.999:
            p = hi
        elif xi > 0.999:
            p = 1.0 - lo
        else:
            p = hi - lo
        out.ravel()[i] = np.log(max(p, 1e-12))
    return out


# ----------------------------------------------------------------------------------------------------------------------
# schedules and respacing
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("T", [10, 20, 50, 100])
def test_space_timesteps_matches_iddpm_rule(T):
    # I-DDPM rule for a single section of 1000 steps: stride (1000-1)/(T-1), step i = round(i * stride)
    stride = Fraction(999, T - 1)
    expected = {round(i * stride) for i in range(T)}  # exact rational rounding
    got = space_timesteps(1000, [T])
    assert got == expected
    assert got == space_timesteps(1000, str(T))
    assert len(got) == T and min(got) == 0 and max(got) == 999


def test_space_timesteps_paper_values():
    assert sorted(space_timesteps(1000, [10])) == [0, 111, 222, 333, 444, 555, 666, 777, 888, 999]
    s20 = sorted(space_timesteps(1000, [20]))
    assert s20[:3] == [0, 53, 105] and s20[-2:] == [946, 999]
    s50 = sorted(space_timesteps(1000, [50]))
    assert s50[:3] == [0, 20, 41] and s50[-2:] == [979, 999]
    s100 = sorted(space_timesteps(1000, [100]))
    assert s100[:3] == [0, 10, 20] and s100[-2:] == [989, 999]


def test_space_timesteps_ddim_and_sections():
    assert space_timesteps(1000, "ddim10") == set(range(0, 1000, 100))
    assert space_timesteps(1000, "ddim50") == set(range(0, 1000, 20))
    # two sections of 500 steps: 10 then 20 steps, each with its own fractional stride
    exp = {round(i * Fraction(499, 9)) for i in range(10)} | {500 + round(i * Fraction(499, 19)) for i in range(20)}
    assert space_timesteps(1000, "10,20") == exp
    # uneven split: 10 steps into 3 sections of sizes 4, 3, 3
    assert space_timesteps(10, [2, 1, 3]) == {0, 3, 4, 7, 8, 9}
    with pytest.raises(ValueError):
        space_timesteps(10, [20])


def test_space_timesteps_ddim7_consistency():
    # independent brute force over strides: the first stride giving exactly N steps, else error
    for n in (7, 13, 250):
        strides = [s for s in range(1, 1000) if len(range(0, 1000, s)) == n]
        if strides:
            assert space_timesteps(1000, f"ddim{n}") == set(range(0, 1000, strides[0]))
        else:
            with pytest.raises(ValueError):
                space_timesteps(1000, f"ddim{n}")


def test_linear_schedule():
    b = get_named_beta_schedule("linear", 1000)
    assert b.dtype == np.float64 and b.shape == (1000,)
    assert b[0] == pytest.approx(1e-4) and b[-1] == pytest.approx(0.02)
    assert np.allclose(np.diff(b), (0.02 - 1e-4) / 999)
    b500 = get_named_beta_schedule("linear", 500)
    assert b500[0] == pytest.approx(2e-4) and b500[-1] == pytest.approx(0.04)


@pytest.mark.parametrize("T", [1000, 50])
def test_cosine_schedule_closed_form(T):
    betas = get_named_beta_schedule("cosine", T)
    abar = abar_np(betas)
    closed = np.array([cosine_f(i + 1, T) / cosine_f(0, T) for i in range(T)])
    unclipped = betas < 0.999
    # clipping happens only at the very end of the schedule
    first_clipped = np.argmin(unclipped) if not unclipped.all() else T
    assert unclipped[:first_clipped].all() and first_clipped >= T - 2
    np.testing.assert_allclose(abar[:first_clipped], closed[:first_clipped], rtol=1e-9, atol=1e-15)
    assert betas.max() <= 0.999


def test_unknown_schedule_lists_valid():
    with pytest.raises(ValueError, match="cosine"):
        get_named_beta_schedule("quadratic", 10)
    with pytest.raises(ValueError, match="fixed_small"):
        GaussianDiffusion(betas=get_named_beta_schedule("cosine", 10), model_var_type="learned")
    with pytest.raises(ValueError, match="hybrid"):
        GaussianDiffusion(betas=get_named_beta_schedule("cosine", 10), loss_type="kl")


# ----------------------------------------------------------------------------------------------------------------------
# forward process and posterior
# ----------------------------------------------------------------------------------------------------------------------


def test_q_sample_and_posterior_closed_form():
    betas = get_named_beta_schedule("linear", 200)
    d = GaussianDiffusion(betas=betas)
    abar = abar_np(betas)
    rs = np.random.RandomState(0)
    x0 = rs.uniform(-1, 1, size=(4, 1, 2, 3))
    noise = rs.randn(4, 1, 2, 3)
    ts = [1, 7, 120, 199]
    t = torch.tensor(ts)
    xt = d.q_sample(torch.tensor(x0, dtype=torch.float32), t, torch.tensor(noise, dtype=torch.float32)).double().numpy()
    mean_t, var_t, logvar_t = d.q_mean_variance(torch.tensor(x0, dtype=torch.float32), t)
    pm, pv, plv = d.q_posterior_mean_variance(
        torch.tensor(x0, dtype=torch.float32), torch.tensor(xt, dtype=torch.float32), t
    )
    for b, ti in enumerate(ts):
        exp_xt = math.sqrt(abar[ti]) * x0[b] + math.sqrt(1 - abar[ti]) * noise[b]
        np.testing.assert_allclose(xt[b], exp_xt, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(mean_t[b].numpy(), math.sqrt(abar[ti]) * x0[b], rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(var_t[b].numpy(), 1 - abar[ti], rtol=1e-5)
        np.testing.assert_allclose(logvar_t[b].numpy(), math.log(1 - abar[ti]), rtol=1e-5)
        m, v = bayes_posterior(x0[b], xt[b], abar[ti - 1], 1 - betas[ti])
        np.testing.assert_allclose(pm[b].numpy(), m, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(pv[b].numpy(), v, rtol=1e-5)
        np.testing.assert_allclose(plv[b].numpy(), math.log(v), rtol=1e-5)


def test_posterior_at_t0_is_x0_and_log_variance_clipped():
    betas = get_named_beta_schedule("cosine", 100)
    d = GaussianDiffusion(betas=betas)
    x0 = torch.rand(2, 1, 2, 2) * 2 - 1
    xt = torch.randn(2, 1, 2, 2)
    t = torch.zeros(2, dtype=torch.long)
    m, v, lv = d.q_posterior_mean_variance(x0, xt, t)
    torch.testing.assert_close(m, x0, rtol=1e-5, atol=1e-6)
    assert torch.all(v == 0)
    abar = abar_np(betas)
    _, v1 = bayes_posterior(0.0, 0.0, abar[0], 1 - betas[1])
    torch.testing.assert_close(lv, torch.full_like(lv, math.log(v1)))


# ----------------------------------------------------------------------------------------------------------------------
# likelihood helpers
# ----------------------------------------------------------------------------------------------------------------------


def test_normal_kl_vs_numerical_integration():
    cases = [(0.0, 0.0, 0.0, 0.0), (0.3, -1.0, -0.2, 0.5), (1.5, 0.7, 0.0, -0.3), (-0.4, -2.0, 0.1, -1.5)]
    for m1, lv1, m2, lv2 in cases:
        s1, s2 = math.exp(0.5 * lv1), math.exp(0.5 * lv2)
        ref, _ = integrate.quad(
            lambda x: norm.pdf(x, m1, s1) * (norm.logpdf(x, m1, s1) - norm.logpdf(x, m2, s2)),
            m1 - 12 * s1,
            m1 + 12 * s1,
        )
        got = normal_kl(torch.tensor(m1, dtype=torch.float64), torch.tensor(lv1, dtype=torch.float64), m2, lv2)
        assert float(got) == pytest.approx(ref, abs=1e-7)


def test_approx_cdf_close_to_scipy():
    x = torch.linspace(-6, 6, 241, dtype=torch.float64)
    np.testing.assert_allclose(approx_standard_normal_cdf(x).numpy(), norm.cdf(x.numpy()), atol=1e-3)


def test_discretized_gaussian_log_likelihood():
    rs = np.random.RandomState(1)
    grid = np.arange(256) / 127.5 - 1.0
    x = np.concatenate([[-1.0, 1.0], rs.choice(grid, 30)])
    m = np.clip(x + rs.randn(32) * 0.02, -1, 1)
    s = np.exp(rs.uniform(np.log(0.01), np.log(0.05), 32))
    got = discretized_gaussian_log_likelihood(
        torch.tensor(x), means=torch.tensor(m), log_scales=torch.tensor(np.log(s))
    ).numpy()
    # same tanh CDF, written independently: tight
    np.testing.assert_allclose(got, disc_loglik_np(x, m, s), rtol=1e-10, atol=1e-10)
    # exact normal CDF (scipy): the tanh approximation is close on reasonably likely bins
    exact = disc_loglik_np(x, m, s, cdf=norm.cdf)
    likely = exact > np.log(0.05)
    assert likely.sum() > 10
    np.testing.assert_allclose(np.exp(got[likely]), np.exp(exact[likely]), atol=2e-3)
    # probabilities over all 256 bins sum to one
    mm, ss = torch.full((256,), 0.1, dtype=torch.float64), torch.full((256,), math.log(0.3), dtype=torch.float64)
    p = discretized_gaussian_log_likelihood(torch.tensor(grid), means=mm, log_scales=ss).exp().sum()
    assert float(p) == pytest.approx(1.0, abs=1e-9)


# ----------------------------------------------------------------------------------------------------------------------
# p_mean_variance
# ----------------------------------------------------------------------------------------------------------------------


def test_variance_types():
    betas = get_named_beta_schedule("cosine", 50)
    abar = abar_np(betas)
    post_var = lambda i: bayes_posterior(0.0, 0.0, abar[i - 1], 1 - betas[i])[1]  # noqa: E731
    x = torch.randn(3, 2, 2, 2)
    t = torch.tensor([0, 10, 49])
    eps = torch.randn(3, 2, 2, 2)
    for v_val, want in [(1.0, lambda i: betas[i]), (-1.0, lambda i: post_var(max(i, 1)))]:
        d = GaussianDiffusion(betas=betas, model_var_type="learned_range")
        out = d.p_mean_variance(lambda x_, t_: torch.cat([eps, torch.full_like(eps, v_val)], 1), x, t)
        for b, ti in enumerate(t.tolist()):
            np.testing.assert_allclose(out["variance"][b].numpy(), want(ti), rtol=1e-4)
    # v = 0: geometric mean of the two
    d = GaussianDiffusion(betas=betas, model_var_type="learned_range")
    out = d.p_mean_variance(lambda x_, t_: torch.cat([eps, torch.zeros_like(eps)], 1), x, t)
    np.testing.assert_allclose(out["log_variance"][1, 0, 0, 0].item(), 0.5 * (math.log(betas[10]) + math.log(post_var(10))), rtol=1e-5)
    d = GaussianDiffusion(betas=betas, model_var_type="fixed_small")
    out = d.p_mean_variance(lambda x_, t_: eps, x, t)
    assert out["variance"][0].abs().max() == 0  # posterior variance is 0 at t = 0
    np.testing.assert_allclose(out["variance"][1, 0, 0, 0].item(), post_var(10), rtol=1e-5)
    d = GaussianDiffusion(betas=betas, model_var_type="fixed_large")
    out = d.p_mean_variance(lambda x_, t_: eps, x, t)
    np.testing.assert_allclose(out["variance"][0, 0, 0, 0].item(), post_var(1), rtol=1e-5)
    np.testing.assert_allclose(out["variance"][2, 0, 0, 0].item(), betas[49], rtol=1e-5)
    torch.testing.assert_close(out["eps"], eps)
    with pytest.raises(ValueError):
        GaussianDiffusion(betas=betas).p_mean_variance(lambda x_, t_: eps, x, t)  # learned needs 2C channels


def test_clip_denoised():
    betas = get_named_beta_schedule("cosine", 100)
    abar = abar_np(betas)
    d = GaussianDiffusion(betas=betas, model_var_type="fixed_small")
    x = torch.full((2, 1, 2, 2), 3.0)
    t = torch.tensor([10, 60])
    eps = torch.zeros_like(x)  # pred_x0 = x / sqrt(abar) > 1
    raw = d.p_mean_variance(lambda x_, t_: eps, x, t, clip_denoised=False)
    clipped = d.p_mean_variance(lambda x_, t_: eps, x, t, clip_denoised=True)
    for b, ti in enumerate(t.tolist()):
        np.testing.assert_allclose(raw["pred_xstart"][b].numpy(), 3.0 / math.sqrt(abar[ti]), rtol=1e-5)
        m, _ = bayes_posterior(1.0, 3.0, abar[ti - 1], 1 - betas[ti])
        np.testing.assert_allclose(clipped["mean"][b].numpy(), m, rtol=1e-5)
    assert torch.all(clipped["pred_xstart"] == 1.0)


# ----------------------------------------------------------------------------------------------------------------------
# training losses
# ----------------------------------------------------------------------------------------------------------------------


def _fake_output(x, t):
    """Deterministic fake network: eps = 0.3 x + 0.05, v = 0.8 sin(3 x)."""
    return torch.cat([0.3 * x + 0.05, 0.8 * torch.sin(3 * x)], dim=1)


def test_hybrid_loss_equals_independent_computation():
    steps = 100  # vb rescale factor = 0.1
    d = create_diffusion(noise_schedule="cosine", steps=steps, learn_sigma=True, loss="hybrid")
    betas = get_named_beta_schedule("cosine", steps)
    abar = abar_np(betas)
    g = torch.Generator().manual_seed(3)
    B, C, H, W = 4, 2, 3, 3
    grid = torch.arange(256, dtype=torch.float64) / 127.5 - 1
    x0 = grid[torch.randint(0, 256, (B, C, H, W), generator=g)].float()
    noise = torch.randn(B, C, H, W, generator=g)
    ts = [0, 1, 37, 99]
    terms = d.training_losses(_fake_output, x0, torch.tensor(ts), noise=noise)
    assert set(terms) == {"loss", "mse", "vb"}
    assert all(v.shape == (B,) for v in terms.values())

    x0n, nn_ = x0.double().numpy(), noise.double().numpy()
    for b, ti in enumerate(ts):
        xt = math.sqrt(abar[ti]) * x0n[b] + math.sqrt(1 - abar[ti]) * nn_[b]
        eps = 0.3 * xt + 0.05
        v = 0.8 * np.sin(3 * xt)
        mse = np.mean((nn_[b] - eps) ** 2)
        pred_x0 = (xt - math.sqrt(1 - abar[ti]) * eps) / math.sqrt(abar[ti])  # no clipping inside vb
        if ti == 0:
            model_mean = pred_x0  # posterior mean at t=0 is x0
            post_var_clipped = bayes_posterior(0, 0, abar[0], 1 - betas[1])[1]
        else:
            model_mean, _ = bayes_posterior(pred_x0, xt, abar[ti - 1], 1 - betas[ti])
            true_mean, post_var_clipped = bayes_posterior(x0n[b], xt, abar[ti - 1], 1 - betas[ti])
        frac = (v + 1) / 2
        model_logvar = frac * math.log(betas[ti]) + (1 - frac) * math.log(post_var_clipped)
        if ti == 0:
            nats = -disc_loglik_np(x0n[b], model_mean, np.exp(0.5 * model_logvar))
        else:
            nats = kl_gauss_np(true_mean, post_var_clipped, model_mean, np.exp(model_logvar))
        vb = np.mean(nats) / math.log(2) * steps / 1000
        assert terms["mse"][b].item() == pytest.approx(mse, rel=1e-5)
        assert terms["vb"][b].item() == pytest.approx(vb, rel=2e-4, abs=1e-6)
        assert terms["loss"][b].item() == pytest.approx(mse + vb, rel=2e-4, abs=1e-6)


def test_vb_does_not_train_the_mean():
    B, C = 3, 2
    x0 = torch.rand(B, C, 4, 4) * 2 - 1
    noise = torch.randn(B, C, 4, 4)
    t = torch.tensor([0, 40, 95])
    init = torch.randn(B, 2 * C, 4, 4) * 0.5
    grads, losses = {}, {}
    for loss in ("mse", "hybrid"):
        d = create_diffusion(steps=100, learn_sigma=True, loss=loss)
        p = torch.nn.Parameter(init.clone())
        terms = d.training_losses(lambda x, t_: p + 0 * x.sum(), x0, t, noise=noise)
        terms["loss"].sum().backward()
        grads[loss], losses[loss] = p.grad.clone(), terms
    assert "vb" not in losses["mse"]
    torch.testing.assert_close(losses["mse"]["loss"], losses["mse"]["mse"])
    torch.testing.assert_close(grads["hybrid"][:, :C], grads["mse"][:, :C], rtol=0, atol=0)
    assert grads["mse"][:, C:].abs().max() == 0
    assert (grads["hybrid"][:, C:].abs().flatten(1).max(dim=1).values > 0).all()
    # eps-channel gradient is exactly the mse gradient: d/d eps mean((n - eps)^2) = -2 (n - eps) / numel
    exp = -2 * (noise - init[:, :C]) / (C * 16)
    torch.testing.assert_close(grads["hybrid"][:, :C], exp, rtol=1e-5, atol=1e-7)


def test_fixed_variance_loss_is_mse():
    d = create_diffusion(steps=100, learn_sigma=False, sigma_small=True, loss="hybrid")
    x0 = torch.rand(2, 1, 3, 3) * 2 - 1
    noise = torch.randn(2, 1, 3, 3)
    t = torch.tensor([0, 50])
    terms = d.training_losses(lambda x, t_: 0.5 * x, x0, t, noise=noise)
    assert "vb" not in terms
    xt = d.q_sample(x0, t, noise)
    exp = ((noise - 0.5 * xt) ** 2).mean(dim=(1, 2, 3))
    torch.testing.assert_close(terms["loss"], exp)


def test_model_called_once_with_kwargs():
    calls = []

    def model(x, t, cond=None):
        calls.append(cond)
        return _fake_output(x, t)

    d = create_diffusion(steps=100)
    cond = torch.ones(2, 5)
    d.training_losses(model, torch.zeros(2, 1, 2, 2), torch.tensor([3, 4]), model_kwargs={"cond": cond})
    assert len(calls) == 1 and calls[0] is cond


def test_input_perturbation():
    gamma = 0.15
    x0 = torch.rand(3, 2, 4, 4) * 2 - 1
    noise = torch.randn(3, 2, 4, 4)
    t = torch.tensor([5, 500, 900])
    seen = {}

    def model(x, t_):
        seen["x"] = x.clone()
        return _fake_output(x, t_)

    d = create_diffusion(steps=1000, input_perturbation=gamma)
    torch.manual_seed(123)
    terms = d.training_losses(model, x0, t, noise=noise)
    x_plain = d.q_sample(x0, t, noise)
    assert (seen["x"] - x_plain).abs().max() > 1e-3
    # the perturbation is gamma * xi with a fresh xi ~ N(0, I) from the global torch RNG, scaled by sqrt(1 - abar)
    torch.manual_seed(123)
    xi = torch.randn_like(noise)
    torch.testing.assert_close(seen["x"], d.q_sample(x0, t, noise + gamma * xi))
    abar = abar_np(get_named_beta_schedule("cosine", 1000))
    delta = (seen["x"] - x_plain) / torch.tensor(np.sqrt(1 - abar[t.numpy()]), dtype=torch.float32).view(-1, 1, 1, 1)
    torch.testing.assert_close(delta, gamma * xi, rtol=1e-4, atol=1e-5)
    # target is the unperturbed noise
    eps_pred = 0.3 * seen["x"] + 0.05
    torch.testing.assert_close(terms["mse"], ((noise - eps_pred) ** 2).mean(dim=(1, 2, 3)))
    # gamma = 0: x_t is exactly q_sample
    create_diffusion(steps=1000).training_losses(model, x0, t, noise=noise)
    torch.testing.assert_close(seen["x"], x_plain, rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------------------------------
# respacing
# ----------------------------------------------------------------------------------------------------------------------


def test_spaced_diffusion_timesteps_and_alphas():
    base_betas = get_named_beta_schedule("cosine", 1000)
    base_abar = abar_np(base_betas)
    d = create_diffusion(steps=1000, timestep_respacing=10)
    kept = sorted(space_timesteps(1000, [10]))
    assert d.num_timesteps == 10
    assert d.timestep_map.dtype == torch.long and d.timestep_map.tolist() == kept
    np.testing.assert_allclose(d.alphas_cumprod, base_abar[kept], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(d.betas[1:], 1 - base_abar[kept][1:] / base_abar[kept][:-1], rtol=1e-12)

    seen = []

    def model(x, t):
        seen.append(t.clone())
        assert t.dtype == torch.long
        return torch.cat([torch.zeros_like(x), torch.zeros_like(x)], 1)

    d.p_sample_loop(model, (2, 1, 2, 2))
    assert [s.tolist() for s in seen] == [[k, k] for k in kept[::-1]]
    seen.clear()
    d.training_losses(model, torch.zeros(3, 1, 2, 2), torch.tensor([0, 3, 9]))
    assert seen[0].tolist() == [0, 333, 999]
    seen.clear()
    d.ddim_sample_loop(model, (1, 1, 2, 2))
    assert [s.item() for s in seen] == kept[::-1]
    # same spacing given as str, and respacing None keeps everything
    assert create_diffusion(steps=1000, timestep_respacing="10").timestep_map.tolist() == kept
    assert create_diffusion(steps=1000, timestep_respacing="ddim10").timestep_map.tolist() == list(range(0, 1000, 100))
    full = create_diffusion(steps=50, timestep_respacing=None)
    np.testing.assert_allclose(full.betas, get_named_beta_schedule("cosine", 50), rtol=1e-10)
    assert create_diffusion(steps=50, timestep_respacing="").num_timesteps == 50


def test_spaced_direct_construction():
    betas = get_named_beta_schedule("linear", 1000)
    d = SpacedDiffusion({0, 500, 999}, betas=betas, model_var_type="fixed_large", loss_type="mse")
    abar = abar_np(betas)
    np.testing.assert_allclose(d.alphas_cumprod, abar[[0, 500, 999]], rtol=1e-12)
    assert d.timestep_map.tolist() == [0, 500, 999]


# ----------------------------------------------------------------------------------------------------------------------
# per-sample RNG and sampling loops
# ----------------------------------------------------------------------------------------------------------------------


def _elementwise_model(x, t):
    return torch.cat([0.5 * torch.tanh(x) + 1e-4 * t.view(-1, 1, 1, 1), 0.2 * torch.cos(x)], 1)


def test_per_sample_rng_draws():
    rng = PerSampleRNG([5, 9])
    assert len(rng) == 2
    a = rng.randn(2, 3)
    assert a.shape == (2, 2, 3)
    torch.testing.assert_close(a[0], torch.randn(2, 3, generator=torch.Generator().manual_seed(5)), rtol=0, atol=0)
    torch.testing.assert_close(a[1], torch.randn(2, 3, generator=torch.Generator().manual_seed(9)), rtol=0, atol=0)


@pytest.mark.parametrize("kind", ["ddpm", "ddim_eta1"])
def test_sample_independent_of_batching(kind):
    d = create_diffusion(steps=1000, timestep_respacing=10)
    shape = (1, 4, 4)
    seeds = [11, 12, 13, 14]

    def run(sds, global_seed):
        torch.manual_seed(global_seed)  # must not matter when rng is given
        rng = PerSampleRNG(sds)
        if kind == "ddpm":
            return d.p_sample_loop(_elementwise_model, (len(sds), *shape), rng=rng)
        return d.ddim_sample_loop(_elementwise_model, (len(sds), *shape), rng=rng, eta=1.0)

    full = run(seeds, 0)
    halves = torch.cat([run(seeds[:2], 1), run(seeds[2:], 2)])
    assert torch.equal(full, halves)
    reordered = run([13, 11], 3)
    assert torch.equal(reordered[0], full[2]) and torch.equal(reordered[1], full[0])
    other = run([21, 22, 23, 24], 0)
    assert (other - full).abs().flatten(1).max(dim=1).values.min() > 1e-3
    with pytest.raises(ValueError):
        d.p_sample_loop(_elementwise_model, (3, *shape), rng=PerSampleRNG(seeds))


def _oracle(x0, base_abar, learned=True):
    def model(x, t):
        a = torch.tensor(base_abar[t.numpy()], dtype=torch.float64).view(-1, 1, 1, 1)
        eps = ((x.double() - a.sqrt() * x0.double()) / (1 - a).sqrt()).float()
        return torch.cat([eps, torch.zeros_like(eps)], 1) if learned else eps

    return model


@pytest.mark.parametrize("solver", ["ddpm", "ddim"])
@pytest.mark.parametrize("learn_sigma", [True, False])
def test_oracle_model_recovers_x0(solver, learn_sigma):
    g = torch.Generator().manual_seed(0)
    x0 = (torch.rand(2, 3, 4, 4, generator=g) * 1.8 - 0.9)
    base_abar = abar_np(get_named_beta_schedule("cosine", 1000))
    d = create_diffusion(steps=1000, timestep_respacing="ddim10" if solver == "ddim" else 10, learn_sigma=learn_sigma)
    model = _oracle(x0, base_abar, learned=learn_sigma)
    if solver == "ddpm":
        out = d.p_sample_loop(model, x0.shape, rng=PerSampleRNG([1, 2]))
    else:
        noise = torch.randn(x0.shape, generator=g)
        out = d.ddim_sample_loop(model, x0.shape, noise=noise, eta=0.0)
        # deterministic DDIM with the oracle keeps eps fixed: one step from t=900 lands on the closed-form x_t
        x900 = math.sqrt(base_abar[900]) * x0 + math.sqrt(1 - base_abar[900]) * noise
        x800 = d.ddim_sample(model, x900, torch.full((2,), 9))["sample"]
        exp800 = math.sqrt(base_abar[800]) * x0 + math.sqrt(1 - base_abar[800]) * noise
        torch.testing.assert_close(x800, exp800, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(out, x0, rtol=1e-4, atol=1e-4)


def test_sampling_progress_and_device_default():
    d = create_diffusion(steps=100, timestep_respacing=5)
    out = d.p_sample_loop(_elementwise_model, (1, 1, 2, 2), progress=True)
    assert out.shape == (1, 1, 2, 2) and out.device.type == "cpu"


def test_calc_bpd_loop_consistency():
    d = create_diffusion(steps=20)
    x0 = torch.rand(2, 1, 3, 3) * 2 - 1
    out = d.calc_bpd_loop(_elementwise_model, x0, rng=PerSampleRNG([0, 1]))
    assert out["vb"].shape == (2, 20) and out["mse"].shape == (2, 20)
    torch.testing.assert_close(out["total_bpd"], out["vb"].sum(1) + out["prior_bpd"])
    assert (out["vb"][:, 1:] >= 0).all()  # KL terms
    abar_T = abar_np(get_named_beta_schedule("cosine", 20))[-1]
    x = x0.double().numpy().reshape(2, -1)
    prior = kl_gauss_np(math.sqrt(abar_T) * x, 1 - abar_T, 0.0, 1.0).mean(1) / math.log(2)
    np.testing.assert_allclose(out["prior_bpd"].numpy(), prior, rtol=1e-4, atol=1e-7)
    # column t is the vb term at timestep t: column 0 is the decoder NLL from the same x_t
    # (reproduce the noise of the last loop iteration: draws go t = 19 .. 0)
    rng = PerSampleRNG([0, 1])
    for _ in range(19):
        rng.randn(1, 3, 3)
    noise0 = rng.randn(1, 3, 3)
    t0 = torch.zeros(2, dtype=torch.long)
    ref = d.vb_terms_bpd(_elementwise_model, x0, d.q_sample(x0, t0, noise0), t0)["output"]
    torch.testing.assert_close(out["vb"][:, 0], ref)


# ----------------------------------------------------------------------------------------------------------------------
# timestep samplers
# ----------------------------------------------------------------------------------------------------------------------


def test_uniform_sampler():
    d = create_diffusion(steps=100)
    s = create_named_schedule_sampler("uniform", d)
    assert isinstance(s, UniformSampler)
    t, w = s.sample(4000, "cpu", generator=torch.Generator().manual_seed(0))
    assert t.dtype == torch.long and w.dtype == torch.float32
    assert t.min() >= 0 and t.max() < 100 and torch.all(w == 1)
    counts = torch.bincount(t, minlength=100).double()
    assert counts.std() / counts.mean() < 0.35  # ~Poisson(40): CV ~ 0.16
    t2, _ = s.sample(4000, "cpu", generator=torch.Generator().manual_seed(0))
    assert torch.equal(t, t2)
    with pytest.raises(ValueError, match="loss-second-moment"):
        create_named_schedule_sampler("importance", d)


def test_loss_second_moment_sampler():
    N, H = 10, 4
    d = create_diffusion(steps=N)
    s = LossSecondMomentResampler(d, history_per_term=H, uniform_prob=0.01)
    assert isinstance(create_named_schedule_sampler("loss-second-moment", d), LossSecondMomentResampler)
    rs = np.random.RandomState(0)
    hist = {i: [] for i in range(N)}
    for r in range(H + 3):
        if r < H:
            assert not s.warmed_up()
            np.testing.assert_allclose(s.weights(), np.ones(N))
            _, w = s.sample(8, "cpu")
            assert torch.all(w == 1)
        t = torch.randperm(N)
        losses = torch.tensor(rs.uniform(0.5, 1.5, N) * (t.numpy() + 1), dtype=torch.float32)
        for ti, li in zip(t.tolist(), losses.tolist()):
            hist[ti].append(li)
        s.update_with_local_losses(t, losses)
    # after warm-up: p ∝ sqrt(mean of the last H squared losses), mixed with uniform_prob of uniform
    rms = np.array([math.sqrt(np.mean(np.square(hist[i][-H:]))) for i in range(N)])
    exp_p = 0.99 * rms / rms.sum() + 0.01 / N
    w = s.weights()
    np.testing.assert_allclose(w / w.sum(), exp_p, rtol=1e-6)
    assert exp_p[-1] > 3 * exp_p[0]
    t, iw = s.sample(5000, "cpu", generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(iw, torch.tensor(1.0 / (N * exp_p[t.numpy()]), dtype=torch.float32), rtol=1e-5, atol=0)
    freq = torch.bincount(t, minlength=N).double().numpy() / 5000
    np.testing.assert_allclose(freq, exp_p, atol=0.03)

    # exact checkpoint round-trip, through torch.save / torch.load(weights_only=True)
    buf = io.BytesIO()
    torch.save(s.state_dict(), buf)
    buf.seek(0)
    s2 = LossSecondMomentResampler(d, history_per_term=H, uniform_prob=0.01)
    s2.load_state_dict(torch.load(buf, weights_only=True))
    np.testing.assert_array_equal(s2.weights(), s.weights())
    a = s.sample(16, "cpu", generator=torch.Generator().manual_seed(7))
    b = s2.sample(16, "cpu", generator=torch.Generator().manual_seed(7))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    s.update_with_local_losses(torch.tensor([0]), torch.tensor([100.0]))
    s2.update_with_local_losses(torch.tensor([0]), torch.tensor([100.0]))
    np.testing.assert_array_equal(s2.weights(), s.weights())
    with pytest.raises(ValueError):
        LossSecondMomentResampler(create_diffusion(steps=20)).load_state_dict(s.state_dict())
    u = UniformSampler(d)
    u.load_state_dict(u.state_dict())


def test_loss_second_moment_ring_buffer_equals_the_released_sequential_update():
    """The device-side update (whole batches at once, repeated timesteps included, more repeats of one t than the
    history holds) keeps exactly the losses the release's one-at-a-time "drop the oldest" loop keeps."""
    N, H = 6, 3
    d = create_diffusion(steps=N)
    s = LossSecondMomentResampler(d, history_per_term=H, uniform_prob=0.01)
    hist = {i: [] for i in range(N)}
    g = torch.Generator().manual_seed(0)
    for r in range(12):
        t = torch.randint(0, N, (10,), generator=g)
        if r == 3:
            t[:8] = 2  # 8 repeats of one t in a batch: only its last H losses survive
        losses = torch.rand(10, generator=g) * (t + 1)
        for ti, li in zip(t.tolist(), losses.tolist()):
            hist[ti] = (hist[ti] + [li])[-H:]
        s.update_with_local_losses(t, losses)
        assert s.warmed_up() == all(len(v) == H for v in hist.values())
        state = s.state_dict()
        for i in range(N):  # the checkpoint layout is the release's: oldest first, count <= H
            assert int(state["loss_counts"][i]) == len(hist[i])
            np.testing.assert_allclose(state["loss_history"][i, :len(hist[i])].numpy(), hist[i], rtol=1e-6)
    assert s.warmed_up()
    rms = np.array([math.sqrt(np.mean(np.square(hist[i]))) for i in range(N)])
    w = s.weights()
    np.testing.assert_allclose(w / w.sum(), 0.99 * rms / rms.sum() + 0.01 / N, rtol=1e-6)
