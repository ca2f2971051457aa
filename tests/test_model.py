import pytest
import torch

from dmz.config import resolve
from dmz.conditioning import CONDITIONING, build_conditioning
from dmz.data import build_dataset
from dmz.model import build_diffusion, build_model
from dmz.priors import PRIORS
from dmz.trainer import DiffusionLoss

# PAPER.md 1.6: parameter counts of the released configs (diffusers 0.32.0)
PAPER_COUNTS = [
    ("cifar10", [], 68.58e6, 0.42e6),
    ("cifar10", ["prior=none"], 50.84e6, 0.0),
    ("celeba64", [], 409.08e6, 1.83e6),
    ("edges64", [], 328.0e6, 2.62e6),  # Edges/Handbags, one cross-attention level, |z| = 256, 1-channel edges
]


@pytest.mark.parametrize("preset, sets, unet, encoder", PAPER_COUNTS)
def test_paper_presets_reproduce_released_parameter_counts(preset, sets, unet, encoder):
    with torch.device("meta"):
        counts = build_model(resolve(preset, sets)).param_counts()
    assert counts["params_unet"] == pytest.approx(unet, rel=0.005)
    # the encoder counts are published to two decimals (0.42 M): allow the rounding
    assert counts["params_encoder"] == pytest.approx(encoder, abs=0.005e6)


def test_dummy_token_baseline_keeps_transformer_blocks():
    with torch.device("meta"):
        plain = build_model(resolve("cifar10", ["prior=none"])).param_counts()["params_unet"]
        dummy = build_model(resolve("cifar10", ["prior=none", "baseline_attention=dummy_token"])).param_counts()
    # same transformer blocks as DMZ (68.58 M) less the K/V projections from a 32-d instead of a 1-d token
    assert dummy["params_unet"] > plain + 17e6


COMBOS = [(p, c) for p in sorted(PRIORS) if p != "none" for c in
          ["cross_attention", "concat", "add", "cross_attention+add", "cross_attention+concat"]]


@pytest.mark.parametrize("prior, cond", COMBOS + [("none", "cross_attention")])
def test_every_prior_and_conditioning_trains_a_step_and_the_encoder_learns(prior, cond, tiny):
    torch.manual_seed(0)
    cfg = resolve("digits", tiny(prior=prior, conditioning=cond, dropout=0.0))
    model = build_model(cfg)
    loss_fn = DiffusionLoss(model, build_diffusion(cfg))
    x0 = build_dataset("digits", "train").images[:8]
    t = torch.randint(0, 1000, (8,))
    losses, aux, _ = loss_fn(x0, t, torch.randn_like(x0), torch.randn_like(x0), None)
    loss = losses["loss"].mean() + aux
    assert torch.isfinite(loss)
    loss.backward()
    unet_grad = sum(p.grad.abs().sum() for p in model.unet.parameters() if p.grad is not None)
    assert unet_grad > 0
    if prior == "none":
        assert model.latent.code_dim == 0 and not list(model.latent.parameters())
        return
    enc_grads = [p.grad for p in model.latent.encoder.parameters()]
    assert all(g is not None for g in enc_grads)
    assert sum(g.abs().sum() for g in enc_grads) > 0, "encoder received no gradient"
    assert model.latent.code_dim == 4


def test_checkpoints_with_the_old_prior_keys_load(tiny):
    """The latent type's module was called ``prior``: a state dict of that layout (and one nested in a wrapper, as
    the EMA's and DDP's are) loads into ``latent`` with every tensor in place; a current one still loads strictly."""
    cfg = resolve("digits", tiny())
    torch.manual_seed(0)
    src = build_model(cfg)
    old = {k.replace("latent.", "prior.", 1): v for k, v in src.state_dict().items()}
    assert any(k.startswith("prior.encoder.") for k in old) and not any(k.startswith("latent.") for k in old)
    torch.manual_seed(1)
    dst = build_model(cfg)
    assert not torch.equal(dst.latent.encoder.head.weight, src.latent.encoder.head.weight)
    dst.load_state_dict(old)  # strict: nothing missing, nothing unexpected
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k
    wrapped = torch.nn.Sequential(build_model(cfg))
    wrapped.load_state_dict({f"0.{k}": v for k, v in old.items()})
    assert torch.equal(wrapped[0].latent.encoder.head.weight, src.latent.encoder.head.weight)
    dst.load_state_dict(src.state_dict())


def test_conditioning_changes_the_denoiser_output(tiny):
    torch.manual_seed(0)
    cfg = resolve("digits", tiny(conditioning="cross_attention+add", dropout=0.0))
    model = build_model(cfg).eval()
    x = torch.randn(2, 1, 16, 16)
    t = torch.tensor([500, 500])
    z0 = model.latent.code_to_cond(torch.zeros(2, 4, dtype=torch.long))
    z1 = model.latent.code_to_cond(torch.ones(2, 4, dtype=torch.long))
    out0, out1 = model(x, t, cond=z0), model(x, t, cond=z1)
    assert out0.shape == (2, 2, 16, 16)  # learned variance: 2*C channels
    assert not torch.allclose(out0, out1)


def test_bernoulli_codes_and_conditioning_layout(tiny):
    cfg = resolve("digits", tiny())
    prior = build_model(cfg).latent.eval()
    codes = torch.tensor([[0, 1, 1, 0]])
    # each bit b becomes (1-b, b), interleaved, as released
    assert prior.code_to_cond(codes).tolist() == [[1, 0, 0, 1, 0, 1, 1, 0]]
    x = build_dataset("digits", "train").images[:5]
    enc = prior.encode(x)
    assert enc.dtype == torch.long and set(enc.unique().tolist()) <= {0, 1} and enc.shape == (5, 4)
    # generation prior: Bernoulli(0.5)
    s = prior.sample_prior(4000, device="cpu").float()
    assert abs(s.mean().item() - 0.5) < 0.02
    # training path: relaxed sample (released) vs straight-through (hard values)
    prior.train()
    soft = prior(x).cond
    assert ((soft > 0.01) & (soft < 0.99)).any()
    st = build_model(resolve("digits", tiny(estimator="straight_through"))).latent.train()(x).cond
    assert set(st.detach().unique().tolist()) <= {0.0, 1.0}


def test_conditioning_registry_rejects_conflicts():
    assert set(CONDITIONING) == {"cross_attention", "concat", "add"}
    with pytest.raises(ValueError, match="choose one"):
        build_conditioning("add+concat")
    with pytest.raises(ValueError, match="valid: add, concat, cross_attention"):
        build_conditioning("film")


# train.cross_attention_shortcut: the single z token's cross-attention as its value projection
def _pair(sets):
    """The same weights built with diffusers' cross-attention processor and with the single-token shortcut."""
    torch.manual_seed(0)
    plain = build_model(resolve("digits", [*sets, "cross_attention_shortcut=false"]))
    fast = build_model(resolve("digits", sets))
    fast.load_state_dict(plain.state_dict())
    return plain.train(), fast.train()


def _shortcut_layers(model):
    return [m for m in model.modules() if type(getattr(m, "processor", None)).__name__ == "SingleTokenCrossAttention"]


@pytest.mark.parametrize("sets", [[], ["prior=none", "baseline_attention=dummy_token"]])
def test_single_token_cross_attention_is_bit_identical_and_its_dead_projections_frozen(sets):
    plain, fast = _pair(sets)
    layers = _shortcut_layers(fast)
    assert len(layers) == 4 and not _shortcut_layers(plain)  # down, mid and two up transformer blocks
    assert plain.param_counts() == fast.param_counts()
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(6, 1, 16, 16, generator=g), torch.randint(0, 1000, (6,), generator=g)
    cond = torch.rand(6, plain.latent.cond_dim, generator=g)
    out_plain, out_fast = plain(x, t, cond=cond), fast(x, t, cond=cond)
    assert torch.equal(out_plain, out_fast)  # the forward pass: bit for bit
    out_plain.square().mean().backward()
    out_fast.square().mean().backward()
    grads = {n: p for n, p in plain.named_parameters() if p.grad is not None}  # the UNet's (cond is given)
    scale = max(p.grad.abs().max().item() for p in grads.values())
    frozen = {n for n, p in fast.named_parameters() if not p.requires_grad}
    # per layer: the queries' LayerNorm (weight, bias) and projection, the keys' projection (no biases)
    assert len(frozen) == 4 * 4 and all(".attn2.to_q." in n or ".attn2.to_k." in n or ".norm2." in n for n in frozen)
    assert {n for n, p in fast.named_parameters() if p.grad is not None} == set(grads) - frozen
    for name, p in fast.named_parameters():
        if name not in grads:
            continue
        if name in frozen:  # dead under diffusers too: its gradient there is float noise
            assert p.grad is None
            assert grads[name].grad.abs().max().item() < 1e-5 * scale, name
        else:
            torch.testing.assert_close(p.grad, grads[name].grad, rtol=1e-4, atol=1e-5 * scale, msg=name)


@pytest.mark.parametrize("sets", [["z_tokens=2"], ["conditioning=add"], ["prior=none"]])
def test_single_token_cross_attention_only_where_z_is_one_token(sets):
    _, fast = _pair(sets)
    assert not _shortcut_layers(fast)
    assert all(p.requires_grad for p in fast.parameters())


def test_single_token_cross_attention_refuses_several_tokens():
    _, fast = _pair([])
    layer = next(m for n, m in fast.named_modules() if n.endswith("attn2"))
    with pytest.raises(RuntimeError, match="cross_attention_shortcut=false"):
        layer(torch.randn(2, 64, 64), encoder_hidden_states=torch.randn(2, 3, 32))


def test_prior_mmd_penalty_detects_what_matching_marginals_misses():
    """The batch MMD^2 to Bernoulli(0.5) (model.prior_mmd, beyond the paper): about 0 for two fair batches, large for
    a batch collapsed onto a few codes (whose every marginal is still about 0.5), and it reaches the encoder."""
    from dmz.priors.bernoulli import prior_mmd_penalty

    g = torch.Generator().manual_seed(0)
    fair = lambda: (torch.rand(64, 16, generator=g) < 0.5).float()  # noqa: E731
    null = torch.stack([prior_mmd_penalty(fair(), fair()) for _ in range(200)])
    assert abs(float(null.mean())) < 0.003 and float(null.std()) < 0.02  # unbiased, small spread
    collapsed = torch.cat([torch.zeros(32, 16), torch.ones(32, 16)])  # marginals exactly 0.5, two codes
    assert float(prior_mmd_penalty(collapsed, fair())) > 0.3
    soft = torch.full((64, 16), 0.9, requires_grad=True)
    prior_mmd_penalty(soft, fair()).backward()
    assert soft.grad is not None and float(soft.grad.abs().sum()) > 0


def test_prior_mmd_off_keeps_the_run_id_and_on_adds_to_the_loss():
    from dmz.config import resolve
    from dmz.model import build_model

    assert resolve("digits", {"prior_mmd": 0.0}).run_id() == resolve("digits").run_id()
    cfg = resolve("digits", {"prior_mmd": 1.0, "base_channels": 8, "attention_head_dim": 2})
    torch.manual_seed(0)
    prior = build_model(cfg).latent
    x = torch.rand(8, 1, 16, 16) * 2 - 1
    u = torch.rand(8, 16, 2, generator=torch.Generator().manual_seed(1))
    out = prior(x, noise=u)
    assert float(out.aux_loss) != 0.0
    with pytest.raises(Exception, match="prior_mmd must be >= 0"):
        resolve("digits", {"prior_mmd": -1.0})
