"""Tests for dmz/zsamplers/pixelsnail_net.py (the PixelSNAIL network): causality, exact normalisation, sampling, fitting,
checkpoints; and the code models of dmz/zsamplers/codemodels.py (uniform, empirical, code_diagnostics)."""

import itertools
import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dmz.diffusion import PerSampleRNG
from dmz.zsamplers.codemodels import EmpiricalCodes, UniformCodes, code_diagnostics
from dmz.zsamplers.pixelsnail import PixelSNAILZSampler
from dmz.zsamplers.pixelsnail_net import (
    PixelSNAIL,
    PixelSNAILCheckpointError,
    codes_to_grid,
    fit_network,
    grid_shape,
    grid_to_codes,
    load_network,
    nll_bits,
    sample,
    save_network,
)

torch.set_num_threads(1)

TINY = dict(channel=16, res_channel=16, n_block=2, n_res_block=1, n_head=4)


def tiny_model(height, width, n_class=2, seed=0, **kw):
    torch.manual_seed(seed)
    return PixelSNAIL(height=height, width=width, n_class=n_class, **{**TINY, **kw}).eval()


def all_codes(L, n_class=2):
    return torch.tensor(list(itertools.product(range(n_class), repeat=L)), dtype=torch.long)


def pattern_codes(n, patterns, flip, gen):
    k = torch.randint(0, patterns.shape[0], (n,), generator=gen)
    flips = (torch.rand(n, patterns.shape[1], generator=gen) < flip).long()
    return patterns[k] ^ flips


# ------------------------------------------------------------------------------------------------ layout

def test_grid_layout_row_major_and_divisibility():
    assert grid_shape(256, 8) == (32, 8)
    assert grid_shape(16, 16) == (1, 16)
    codes = torch.arange(12).view(1, 12)
    grid = codes_to_grid(codes, 4)
    assert grid.shape == (1, 3, 4)
    assert grid[0, 1].tolist() == [4, 5, 6, 7]  # row-major
    assert torch.equal(grid_to_codes(grid), codes)
    with pytest.raises(ValueError, match="not divisible"):
        grid_shape(12, 5)
    with pytest.raises(ValueError, match="not divisible"):
        fit_network(torch.zeros(4, 12, dtype=torch.long), None, width=5, epochs=1, progress=False)


# ------------------------------------------------------------------------------------------------ causality

def _input_grads(model, onehot, i, weights):
    """Gradient of a random projection of logits at raster position i (sample 0) wrt the whole one-hot input."""
    onehot = onehot.clone().requires_grad_(True)
    logits = model.forward_onehot(onehot)
    r, c = divmod(i, model.width)
    (g,) = torch.autograd.grad((logits[0, :, r, c] * weights).sum(), onehot)
    return g


@pytest.mark.parametrize("attention", [True, False])
def test_causality_exact_zero_gradient_for_current_and_future_positions(attention):
    H, W, K = 4, 5, 3
    model = tiny_model(H, W, n_class=K, attention=attention, dropout=0.3)  # eval mode: dropout off
    assert not model.training
    gen = torch.Generator().manual_seed(0)
    codes = torch.randint(0, K, (2, H, W), generator=gen)
    onehot = F.one_hot(codes, K).permute(0, 3, 1, 2).float()
    weights = torch.randn(K, generator=gen)
    L = H * W
    for i in [0, 1, 4, W, W + 2, 2 * W - 1, L - 1]:  # first, row ends, row starts, last
        g = _input_grads(model, onehot, i, weights)
        per_pos = g[0].abs().sum(0).flatten()  # (L,)
        assert torch.all(per_pos[i:] == 0), f"logits at {i} depend on positions >= {i}: {per_pos.tolist()}"
        assert torch.all(g[1] == 0), "samples in a batch must not interact"
        if i > 0:
            assert torch.any(per_pos[:i] != 0), f"logits at {i} ignore all earlier positions"
            # the previous token in raster order is always seen (including across a row break)
            assert per_pos[i - 1] != 0, f"logits at {i} ignore position {i - 1}"
        if attention:
            # keys carry the raw token, so attention removes every blind spot: all earlier positions matter
            assert torch.all(per_pos[:i] != 0), f"blind spot at {i}: {per_pos.tolist()}"


def test_first_position_has_no_nan_and_does_not_depend_on_input():
    model = tiny_model(2, 3)
    gen = torch.Generator().manual_seed(1)
    codes = torch.randint(0, 2, (6, 2, 3), generator=gen)
    logits = model(codes)
    assert torch.isfinite(logits).all()
    first = logits[:, :, 0, 0]
    assert torch.allclose(first, first[:1].expand_as(first), atol=1e-6)
    # training mode (dropout on, attention dropout on) stays finite as well
    model.train()
    assert torch.isfinite(model(codes)).all()


def test_cropped_forward_matches_full_forward():
    model = tiny_model(4, 3)
    codes = torch.randint(0, 2, (5, 4, 3), generator=torch.Generator().manual_seed(2))
    full = model(codes)
    for rows in range(1, 5):
        assert torch.allclose(model(codes[:, :rows]), full[:, :, :rows], atol=1e-5)


@pytest.mark.parametrize("height,width,n_class", [(2, 3, 2), (1, 4, 2), (3, 1, 2), (1, 3, 3)])
def test_exact_normalisation_over_all_codes(height, width, n_class):
    """sum_x 2^-nll(x) = 1 over every possible code: only possible if the factorisation is causal."""
    model = tiny_model(height, width, n_class=n_class)
    with torch.no_grad():
        model.out.g.mul_(4.0)  # sharper conditionals
    probs = 2.0 ** -nll_bits(model, all_codes(height * width, n_class))
    assert abs(float(probs.sum()) - 1.0) < 1e-5
    assert float(probs.max()) > 2.0 * float(probs.min())  # not trivially uniform


# ------------------------------------------------------------------------------------------------ sampling

def _tempered_probs(model, codes, temperature):
    with torch.no_grad():
        grid = codes_to_grid(codes, model.width)
        logp = F.log_softmax(model(grid).double() / temperature, dim=1)
        return logp.gather(1, grid.unsqueeze(1)).flatten(1).sum(1).exp()


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_sampling_matches_exact_tempered_distribution(temperature):
    model = tiny_model(1, 3)
    with torch.no_grad():
        model.out.g.mul_(4.0)
    codes = all_codes(3)
    p = _tempered_probs(model, codes, temperature)
    # a causality leak would be off by ~0.1; the float32 convolutions leave ~1e-9 (1.2e-9 on an AMD EPYC's oneDNN)
    assert abs(float(p.sum()) - 1.0) < 1e-6
    n = 4000
    s = sample(model, n, temperature=temperature, generator=torch.Generator().manual_seed(3))
    assert s.dtype == torch.long and s.shape == (n, 3)
    idx = (s * torch.tensor([4, 2, 1])).sum(1)
    freq = torch.bincount(idx, minlength=8).double() / n
    sigma = (p * (1 - p) / n).sqrt()
    assert torch.all((freq - p).abs() <= 4.5 * sigma + 1e-3), (freq.tolist(), p.tolist())
    if temperature == 0.5:
        assert float(p.max()) > float(_tempered_probs(model, codes, 1.0).max())


def test_sample_shapes_values_determinism_and_temperature_validation():
    model = tiny_model(2, 3, n_class=3)
    for t in (0.5, 1.0, 2.0):
        s = sample(model, 10, temperature=t, generator=torch.Generator().manual_seed(0))
        assert s.dtype == torch.long and s.shape == (10, 6)
        assert int(s.min()) >= 0 and int(s.max()) <= 2
    a = sample(model, 20, generator=torch.Generator().manual_seed(5), batch_size=7)
    b = sample(model, 20, generator=torch.Generator().manual_seed(5), batch_size=64)
    c = sample(model, 20, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b)  # same seed -> identical, whatever the batch size
    assert not torch.equal(a, c)
    assert len({tuple(r) for r in a.tolist()}) > 5  # all 3 classes in play, not a constant
    assert set(a.flatten().tolist()) == {0, 1, 2}
    # explicit uniforms (e.g. one generator per sample) reproduce the generator path exactly
    u = torch.rand(20, 6, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    assert torch.equal(sample(model, 20, uniforms=u, batch_size=3), a)
    with pytest.raises(ValueError, match="uniforms"):
        sample(model, 20, uniforms=u[:, :5])
    for bad in (0, 0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature"):
            sample(model, 2, temperature=bad)
    assert model.training is False


# ------------------------------------------------------------------------------------------------ baselines

def _rng(n, start=0):
    return PerSampleRNG(range(start, start + n))


def test_uniform_codes_are_exactly_L_log2_K_bits_and_draw_as_the_priors_do():
    u = UniformCodes(16)
    codes = torch.randint(0, 2, (7, 16), generator=torch.Generator().manual_seed(0))
    assert torch.equal(u.nll_bits(codes), torch.full((7,), 16.0, dtype=torch.float64))
    s = u.sample(4000, _rng(4000), "cpu")
    assert s.shape == (4000, 16) and s.dtype == torch.long
    assert abs(float(s.double().mean()) - 0.5) < 0.01
    with pytest.raises(ValueError):
        u.nll_bits(torch.full((2, 16), 2))
    u4 = UniformCodes(3, 4)
    assert float(u4.nll_bits(torch.zeros(2, 3, dtype=torch.long))[0]) == 6.0
    c = u4.sample(4000, _rng(4000), "cpu")
    assert c.shape == (4000, 3) and torch.bincount(c.flatten(), minlength=4).min() > 2700  # ~3000 each
    # the same draws as the priors' own sample_prior (the ``prior`` z-sampler), seed for seed
    from types import SimpleNamespace

    from dmz.priors.base import LatentPrior
    from dmz.priors.bernoulli import BernoulliLatent
    from dmz.priors.categorical import CategoricalLatent

    bern = SimpleNamespace(code_dim=16, _draw=LatentPrior._draw)
    cat = SimpleNamespace(code_dim=3, k=4, _draw=LatentPrior._draw)
    assert torch.equal(u.sample(5, _rng(5, 9), "cpu"), BernoulliLatent.sample_prior(bern, 5, _rng(5, 9), "cpu"))
    assert torch.equal(u4.sample(5, _rng(5, 9), "cpu"), CategoricalLatent.sample_prior(cat, 5, _rng(5, 9), "cpu"))


def test_empirical_codes_match_numpy_and_clamp_at_1e_6():
    rng = np.random.default_rng(0)
    train = (rng.random((200, 10)) < np.linspace(0.05, 0.9, 10)).astype(np.int64)
    train[:, 3] = 0  # a dead bit: P(1) clamped to 1e-6
    train[:, 7] = 1  # a stuck bit: P(0) clamped to 1e-6
    test = (rng.random((30, 10)) < 0.5).astype(np.int64)
    eb = EmpiricalCodes(torch.from_numpy(train), 2)
    m = train.mean(0)
    q = np.maximum(np.stack([1 - m, m], 1), 1e-6)
    q /= q.sum(1, keepdims=True)  # clamped and renormalised
    expected = -(test * np.log2(q[:, 1]) + (1 - test) * np.log2(q[:, 0])).sum(1)
    got = eb.nll_bits(torch.from_numpy(test)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    assert eb.distribution()[3, 1] == pytest.approx(1e-6, rel=1e-5) and eb.distribution()[7, 0] == pytest.approx(1e-6, rel=1e-5)
    assert eb.probs.dtype == torch.float32 and float(eb.probs[3, 1]) == pytest.approx(1e-6)  # the sampling table
    # float 0/1 and bool inputs are accepted
    np.testing.assert_allclose(eb.nll_bits(torch.from_numpy(test).bool()).numpy(), expected)
    np.testing.assert_allclose(eb.nll_bits(torch.from_numpy(test).double()).numpy(), expected)
    s = eb.sample(5000, _rng(5000), "cpu")
    np.testing.assert_allclose(s.double().mean(0).numpy(), q[:, 1], atol=0.03)
    assert torch.equal(s, eb.sample(5000, _rng(5000), "cpu"))
    assert torch.equal(s[100:110], eb.sample(10, _rng(10, 100), "cpu"))  # sample i depends on its seed only
    with pytest.raises(ValueError, match="values must lie"):
        eb.nll_bits(torch.full((1, 10), 2))
    with pytest.raises(ValueError, match="length"):
        eb.nll_bits(torch.zeros(1, 9, dtype=torch.long))


def test_empirical_codes_sample_and_score_one_distribution():
    """The ``empirical`` z-sampler's draws and its bits come from one distribution: draw frequencies match
    ``distribution()``, and the mean bits of its own samples approach its entropy (a scorer fitted or clamped
    differently would give the cross-entropy, which is larger)."""
    g = torch.Generator().manual_seed(0)
    K, L, N = 5, 6, 400
    logits = torch.randn(L, K, generator=g) * 2
    train = torch.distributions.Categorical(logits=logits).sample((N,))  # (N, L) over K classes
    train[:, 0] = 3  # a constant position: four categories at the 1e-6 clamp
    train[:2, 1], train[2:, 1] = 0, 1  # a rare category (2 of 400)
    em = EmpiricalCodes(train, K)
    dist = em.distribution()
    assert torch.allclose(dist.sum(1), torch.ones(L, dtype=torch.float64))
    assert torch.allclose(em.probs.double(), dist, atol=(K - 1) * em.EPS)  # the sampling table, up to the clamp
    n = 20000
    s = em.sample(n, _rng(n), "cpu")
    freq = torch.nn.functional.one_hot(s, K).double().mean(0)
    assert (freq - dist).abs().max() < 4 * (0.25 / n) ** 0.5  # 4 sigma of the worst case
    bits = em.nll_bits(s)
    H = em.entropy_bits()
    assert bits.dtype == torch.float64 and bits.shape == (n,)
    assert abs(float(bits.mean()) - H) < 4 * float(bits.std()) / n ** 0.5, (float(bits.mean()), H)
    # bits are exact: -log2 of the product of the per-position probabilities
    assert torch.allclose(bits[:5], -dist.log2().gather(1, s[:5].T).sum(0))


def test_empirical_bits_move_only_where_a_frequency_was_below_1e_4():
    """The old ``bits_per_code`` fit clamped at 1e-4; the one empirical model clamps at 1e-6 (its sampler's clamp).
    A dead bit (never 1 in training) costs -log2(1e-6) = 19.93 bits when a held-out code has it on, not 13.29;
    unclamped bits are scored as before."""
    train = torch.tensor([[0, 0, 1, 1], [0, 1, 0, 1], [0, 1, 1, 0], [0, 0, 0, 1]])  # bit 0 dead; means 0, .5, .5, .75
    em = EmpiricalCodes(train, 2)
    rest = 1 + 1 - math.log2(0.75)  # bits 1-3 of the held-out code 0011 / 1011: unchanged
    on, off = torch.tensor([[1, 0, 1, 1]]), torch.tensor([[0, 0, 1, 1]])
    assert float(em.nll_bits(on)) == pytest.approx(-math.log2(1e-6 / (1 + 1e-6)) + rest, rel=1e-12)  # was 13.29 + rest
    assert float(em.nll_bits(off)) == pytest.approx(math.log2(1 + 1e-6) + rest, rel=1e-12)  # was -log2(1 - 1e-4) + rest
    # everything else (no frequency below 1e-4) scores exactly as the per-bit Bernoulli formula
    live = torch.tensor([[0, 1, 1, 0], [1, 1, 0, 1], [1, 0, 1, 1]])
    p = live.double().mean(0)
    codes = torch.tensor([[1, 0, 0, 1], [0, 1, 1, 1]])
    assert torch.allclose(EmpiricalCodes(live, 2).nll_bits(codes),
                          -(codes * p.log2() + (1 - codes) * (1 - p).log2()).sum(1), rtol=1e-14, atol=0)


# ------------------------------------------------------------------------------------------------ fitting

def test_pixelsnail_learns_dependent_bits_far_better_than_independent_bits():
    gen = torch.Generator().manual_seed(1)
    L = 16
    patterns = torch.randint(0, 2, (8, L), generator=gen)
    train, val = pattern_codes(1500, patterns, 0.02, gen), pattern_codes(500, patterns, 0.02, gen)
    model, hist = fit_network(train, val, width=8, epochs=6, lr=1e-2, batch_size=64, patience=3, seed=0,
                                 progress=False, channel=32, res_channel=32, n_block=1, n_res_block=1, n_head=4,
                                 dropout=0.0)
    true_entropy = 3 + L * -(0.02 * math.log2(0.02) + 0.98 * math.log2(0.98))  # ~5.26 bits
    ps = PixelSNAILZSampler.from_model(model)
    eb, ub = EmpiricalCodes(train, 2), UniformCodes(L)
    ps_bits = float(ps.nll_bits(val).mean())
    eb_bits, ub_bits = float(eb.nll_bits(val).mean()), float(ub.nll_bits(val).mean())
    assert ub_bits == L
    assert eb_bits <= ub_bits
    assert ps_bits < 0.6 * eb_bits, (ps_bits, eb_bits)
    assert ps_bits > true_entropy - 0.5  # cannot beat the true entropy by more than sampling noise
    assert ps_bits == pytest.approx(hist["best_val_nll_bits"], abs=1e-4)  # best weights are the ones returned
    # samples look like the data (~99% of data codes are within Hamming distance 2 of a pattern; independent bits
    # put ~10% there): most PixelSNAIL samples are, although the briefly fitted model is not converged
    def near_fraction(s):
        dist = (s.unsqueeze(1) != patterns.unsqueeze(0)).sum(-1).min(1).values
        return float((dist <= 2).double().mean())

    ps_near = near_fraction(ps.sample(200, _rng(200), "cpu"))
    eb_near = near_fraction(eb.sample(200, _rng(200), "cpu"))
    assert ps_near > 0.5 and ps_near > 3 * eb_near, (ps_near, eb_near)
    # the wrapper's draws are the network's inverse-CDF samples at per-sample uniforms, on fixed micro-batches
    u = torch.stack([torch.rand(L, generator=g, dtype=torch.float64) for g in _rng(10).generators])
    assert torch.equal(ps.sample(10, _rng(10), "cpu"), sample(model, 10, uniforms=u))
    hot = PixelSNAILZSampler.from_model(model, temperature=2.0)  # scored at the temperature it samples at
    assert float(hot.nll_bits(val).mean()) != pytest.approx(ps_bits)
    assert torch.allclose(hot.nll_bits(val[:4]), nll_bits(model, val[:4], temperature=2.0))
    with pytest.raises(ValueError, match="temperature"):
        PixelSNAILZSampler.from_model(model, temperature=0.0)


def _fit_small(**kw):
    gen = torch.Generator().manual_seed(4)
    patterns = torch.randint(0, 2, (4, 8), generator=gen)
    train, val = pattern_codes(256, patterns, 0.05, gen), pattern_codes(64, patterns, 0.05, gen)
    args = dict(width=4, epochs=6, batch_size=32, lr=1e-2, patience=2, released_patience=2, seed=3, progress=False,
                channel=16, res_channel=16, n_block=1, n_res_block=1, n_head=4)
    args.update(kw)
    return fit_network(train, args.pop("val", val), **args), train, val


def test_fit_is_deterministic_and_history_is_consistent():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    logs = []
    (m1, h1), train, val = _fit_small(log_fn=logs.append, progress=True)
    assert torch.rand(1) == before  # fitting leaves the global RNG untouched
    (m2, h2), _, _ = _fit_small()
    for k in ("train_nll_bits", "val_nll_bits", "train_acc", "best_epoch", "stopped_epoch",
              "released_rule_stop_epoch"):
        assert h1[k] == h2[k], k
    for (k1, v1), (k2, v2) in zip(m1.state_dict().items(), m2.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    n_ep = len(h1["epoch"])
    assert h1["epoch"] == list(range(1, n_ep + 1)) and h1["stopped_epoch"] == n_ep
    assert [d["epoch"] for d in logs] == h1["epoch"]
    assert all(0.0 <= a <= 1.0 for a in h1["train_acc"])
    # our rule: best epoch = argmin of held-out NLL; stopping after `patience` epochs without improvement
    vals = h1["val_nll_bits"]
    assert h1["best_epoch"] == int(np.argmin(vals)) + 1
    if h1["stop_reason"] == "val_nll_patience":
        assert h1["stopped_epoch"] - h1["best_epoch"] == 2
    else:
        assert h1["stop_reason"] == "max_epochs" and n_ep == 6
    assert float(nll_bits(m1, val).mean()) == pytest.approx(min(vals), abs=1e-4)
    # the released rule recomputed from the recorded accuracies
    best, bad, expected = -1.0, 0, None
    for e, a in enumerate(h1["train_acc"], start=1):
        if a > best:
            best, bad = a, 0
        else:
            bad += 1
            if bad >= 2 and expected is None:
                expected = e
    assert h1["released_rule_stop_epoch"] == expected
    assert h1["L"] == 8 and h1["width"] == 4 and h1["model_kwargs"]["height"] == 2


def test_fit_without_validation_uses_released_rule():
    (model, hist), _, _ = _fit_small(val=None, epochs=40, lr=3e-2)
    assert hist["val_nll_bits"] == [None] * len(hist["epoch"])
    if hist["stop_reason"] == "released_rule":
        assert hist["stopped_epoch"] == hist["released_rule_stop_epoch"]
    else:
        assert hist["stop_reason"] == "max_epochs" and hist["released_rule_stop_epoch"] is None


def test_fit_rejects_bad_codes():
    with pytest.raises(ValueError):
        fit_network(torch.full((4, 8), 2), None, width=4, epochs=1, progress=False)
    with pytest.raises(ValueError):
        fit_network(torch.full((4, 8), 0.5), None, width=4, epochs=1, progress=False)


# ------------------------------------------------------------------------------------------------ checkpoints

def test_save_load_round_trip_and_corrupt_file(tmp_path):
    model = tiny_model(2, 4, n_class=3, attention=True)
    codes = torch.randint(0, 3, (5, 2, 4), generator=torch.Generator().manual_seed(0))
    meta = {"width": 4, "history": {"val_nll_bits": [3.5, 3.25]}, "note": "x"}
    path = tmp_path / "sub" / "pixelsnail.pt"
    save_network(path, model, meta)
    assert sorted(os.listdir(path.parent)) == ["pixelsnail.pt"]  # no temporary file left behind
    loaded, meta2 = load_network(path)
    assert meta2 == meta
    assert loaded.config == model.config and not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded(codes), model(codes))

    data = path.read_bytes()
    bad = tmp_path / "truncated.pt"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(PixelSNAILCheckpointError) as err:
        load_network(bad)
    msg = str(err.value)
    assert str(bad) in msg and "python -m dmz.zsamplers fit --run DIR" in msg
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(PixelSNAILCheckpointError, match="junk.pt"):
        load_network(junk)
    with pytest.raises(FileNotFoundError, match="dmz.zsamplers fit"):
        load_network(tmp_path / "missing.pt")


# ------------------------------------------------------------------------------------------------ diagnostics

def test_code_diagnostics_constructed_example():
    train = torch.tensor([[0, 0, 0, 1],
                          [0, 1, 0, 1],
                          [1, 1, 0, 1],
                          [0, 1, 0, 1]])
    held = torch.tensor([[0, 1, 0, 1],   # duplicate
                         [1, 1, 1, 1],
                         [0, 0, 0, 1],   # duplicate
                         [0, 1, 0, 1],   # duplicate (again)
                         [1, 0, 1, 0]])
    d = code_diagnostics(train, held, {"uniform": UniformCodes(4), "empirical": EmpiricalCodes(train, 2)})
    assert d["heldout_duplicate_fraction"] == pytest.approx(3 / 5)
    assert d["bit_mean"] == pytest.approx([0.25, 0.75, 0.0, 1.0])
    assert d["n_unbalanced_bits"] == 2  # bits 2 and 3 are constant over the training codes
    assert d["bits_per_code"]["uniform"] == 4.0
    assert d["bits_per_code"]["empirical"] == pytest.approx(
        float(EmpiricalCodes(train, 2).nll_bits(held).mean()))
    assert d["n_unique_train"] == 3 and d["n_unique_heldout"] == 4 and d["L"] == 4
    none = code_diagnostics(train, torch.tensor([[1, 0, 1, 0]]), {})
    assert none["heldout_duplicate_fraction"] == 0.0 and none["bits_per_code"] == {}
