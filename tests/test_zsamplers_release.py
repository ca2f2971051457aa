"""The release's ``normal`` and ``const`` z-samplers (PAPER.md 1.5) and z as several cross-attention tokens."""

from __future__ import annotations

import pytest
import torch

import conftest
from dmz.config import ConfigError, resolve
from dmz.diffusion import PerSampleRNG
from dmz.model import build_model
from dmz.run import encode_split, load_run
from dmz.trainer import train
from dmz.zsamplers import build_zsampler


@pytest.fixture(scope="module")
def normal_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("normal")
    train(resolve("digits", conftest.tiny_overrides(prior="normal")), out, progress=False)
    return load_run(out)


@pytest.fixture(scope="module")
def bernoulli_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bern")
    train(resolve("digits", conftest.tiny_overrides()), out, progress=False)
    return load_run(out)


def _rng(n, seed=0):
    return PerSampleRNG(list(range(seed, seed + n)), "cpu")


def test_normal_sampler_is_gaussian_with_the_training_latents_mean_and_std(normal_run):
    codes = encode_split(normal_run, "train")[0].float()
    zs = build_zsampler("normal", normal_run)
    z = zs.sample(4000, _rng(4000), "cpu")
    assert z.shape == (4000, codes.shape[1])
    assert torch.allclose(z.mean(0), codes.mean(0), atol=4 * codes.std(0).max().item() / 4000 ** 0.5 + 1e-6)
    assert torch.allclose(z.std(0), codes.std(0), rtol=0.1)
    # Gaussian: about half the draws fall below the mean (the release's uniform draw never does)
    below = (z < codes.mean(0)).float().mean().item()
    assert 0.45 < below < 0.55
    rel = build_zsampler("normal:release_uniform=1", normal_run).sample(2000, _rng(2000), "cpu")
    assert (rel >= codes.mean(0) - 1e-6).all()  # the released draw: mean + std * U[0, 1)
    assert torch.equal(zs.sample(5, _rng(5, seed=7), "cpu"), zs.sample(5, _rng(5, seed=7), "cpu"))


def test_normal_sampler_refuses_discrete_latents(bernoulli_run):
    with pytest.raises(ValueError, match="continuous latent.*empirical"):
        build_zsampler("normal", bernoulli_run)


def test_const_sampler_repeats_one_training_code(bernoulli_run):
    codes = encode_split(bernoulli_run, "train")[0]
    z = build_zsampler("const", bernoulli_run).sample(6, _rng(6), "cpu")
    assert torch.equal(z, codes[0].expand(6, -1))
    z3 = build_zsampler("const:index=3", bernoulli_run).sample(2, _rng(2), "cpu")
    assert torch.equal(z3, codes[3].expand(2, -1))
    with pytest.raises(ValueError, match="outside"):
        build_zsampler(f"const:index={len(codes)}", bernoulli_run)


def test_z_tokens_split_the_code_into_tokens_that_the_unet_attends_to(tiny):
    torch.manual_seed(0)
    cfg = resolve("digits", tiny(z_tokens=2, dropout=0.0))
    model = build_model(cfg).eval()
    assert model.z_tokens is not None and model.param_counts()["params_z_tokens"] > 0
    assert "-tok2-" in cfg.run_id()
    cond = model.latent.code_to_cond(torch.tensor([[0, 1, 1, 0], [1, 1, 0, 0]]))
    tokens = model.z_tokens(cond)
    assert tokens.shape == (2, 2, cond.shape[1])
    # token 0 carries bits 0-1 only: changing bit 3 leaves it alone and changes token 1
    other = model.latent.code_to_cond(torch.tensor([[0, 1, 1, 1], [1, 1, 0, 0]]))
    t2 = model.z_tokens(other)
    assert torch.equal(t2[:, 0], tokens[:, 0]) and not torch.equal(t2[0, 1], tokens[0, 1])
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([500, 500])
    assert not torch.allclose(model(x, t, cond=cond), model(x, t, cond=other))
    # the released default is one token: no tokeniser, same run id as before the option existed
    assert build_model(resolve("digits", tiny())).z_tokens is None
    assert "-tok" not in resolve("digits", tiny()).run_id()


def test_z_tokens_errors_say_what_to_do(tiny):
    with pytest.raises(ConfigError, match="needs conditioning with cross_attention"):
        resolve("digits", tiny(z_tokens=2, conditioning="add"))
    with pytest.raises(ConfigError, match="must divide"):
        resolve("digits", tiny(z_tokens=3))
    with pytest.raises(ConfigError, match=">= 1"):
        resolve("digits", tiny(z_tokens=0))


def test_empirical_is_one_code_model_that_samples_and_scores(bernoulli_run):
    """The ``empirical`` z-sampler is the code model whose bits the ``empirical`` ``bits_per_code`` row reports, and
    its draws are those of the original sampler (category frequencies clamped at 1e-6, inverse CDF at one float32
    uniform per position from sample i's generator), bit for bit: recorded empirical FIDs do not move."""
    from dmz.zsamplers import CodeModel, EmpiricalCodes
    from dmz.zsamplers.pixelsnail import diagnose

    zs = build_zsampler("empirical", bernoulli_run)
    assert isinstance(zs, EmpiricalCodes) and isinstance(zs, CodeModel)
    train, test = encode_split(bernoulli_run, "train")[0], encode_split(bernoulli_run, "test")[0]
    probs = torch.nn.functional.one_hot(train.long(), 2).float().mean(0).clamp_min(1e-6)  # the original fit
    u = torch.stack([torch.rand(probs.shape[0], generator=g) for g in _rng(64).generators])
    old = (u[..., None] > probs.cumsum(-1)[None]).sum(-1).clamp_max(1).long()
    assert torch.equal(zs.sample(64, _rng(64), "cpu"), old)
    d = diagnose(bernoulli_run, write=False)
    assert d["bits_per_code"]["empirical"] == float(zs.nll_bits(test).mean())
    prior = build_zsampler("prior", bernoulli_run)
    assert isinstance(prior, CodeModel) and d["bits_per_code"]["uniform"] == float(prior.nll_bits(test).mean()) == 4


def test_empirical_of_continuous_codes_samples_but_has_no_bits(normal_run):
    zs = build_zsampler("empirical", normal_run)
    codes = encode_split(normal_run, "train")[0].float()
    eps = torch.stack([torch.randn(codes.shape[1], generator=g) for g in _rng(8).generators])
    assert torch.equal(zs.sample(8, _rng(8), "cpu"), codes.mean(0) + codes.std(0) * eps)  # the original draw
    with pytest.raises(ValueError, match="density"):
        zs.nll_bits(codes[:2])
    with pytest.raises(ValueError, match="continuous"):
        build_zsampler("prior", normal_run).nll_bits(codes[:2])
