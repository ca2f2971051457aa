"""train.seeding=crn: two arms of one seed share every random draw they have in common (dmz.seeding)."""

import pytest
import torch

from dmz.config import ConfigError, resolve
from dmz.seeding import derive
from dmz.trainer import Trainer, train


def _init(tiny, tmp_path, seeding, **sets):
    return Trainer(resolve("digits", tiny(seeding=seeding, **sets)), tmp_path / "unused", progress=False).model


def _shared(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return [k for k in sa if k in sb and sa[k].shape == sb[k].shape and sa[k].is_floating_point()]


def test_crn_gives_shared_modules_the_same_initial_weights(tmp_path, tiny):
    dmz = _init(tiny, tmp_path, "crn", prior="bernoulli")
    ddpm = _init(tiny, tmp_path, "crn", prior="none")
    shared = _shared(dmz, ddpm)
    assert len(shared) > 20  # the UNet's resnets, time embedding, in/out convolutions
    sa, sb = dmz.state_dict(), ddpm.state_dict()
    random = [k for k in shared if sa[k].numel() > 1 and sa[k].std() > 0]
    assert random and all(torch.equal(sa[k], sb[k]) for k in shared)
    # under v1 the encoder built first shifts every later module's draw: the same names differ
    v1a, v1b = _init(tiny, tmp_path, "v1", prior="bernoulli"), _init(tiny, tmp_path, "v1", prior="none")
    assert not all(torch.equal(v1a.state_dict()[k], v1b.state_dict()[k]) for k in random)


def test_crn_init_keeps_each_module_at_its_own_distribution(tmp_path, tiny):
    # the re-drawn weights are the module's own init (reset_parameters), not another distribution: sds per tensor
    # agree with the builder's draw, constants (norm weights, zeros) stay constants
    v1 = _init(tiny, tmp_path, "v1", base_channels=16).state_dict()
    crn = _init(tiny, tmp_path, "crn", base_channels=16).state_dict()
    assert v1.keys() == crn.keys()
    moved = 0
    for k, a in v1.items():
        b = crn[k]
        if not a.is_floating_point() or a.numel() < 2:
            continue
        const = bool((a == a.reshape(-1)[0]).all())
        assert const == bool((b == b.reshape(-1)[0]).all()), k
        if const:
            assert torch.equal(a, b), k
        elif a.numel() >= 1000:
            assert b.std() == pytest.approx(a.std(), rel=0.1), k
            moved += not torch.equal(a, b)
    assert moved > 5


def test_crn_step_randomness_and_data_order_are_shared_between_arms(tmp_path, tiny):
    arms = [Trainer(resolve("digits", tiny(seeding="crn", prior=p, flip=True)), tmp_path / p, progress=False)
            for p in ("bernoulli", "none")]
    shape = (1, 16, 16)
    for step in (0, 5):
        ra, rb = (t.step_randomness(step, shape) for t in arms)
        for k in ("flip", "noise", "perturbation"):
            assert torch.equal(ra[k], rb[k]), k
        assert ra["prior_noise"] is not None and rb["prior_noise"] is None
        assert torch.equal(arms[0].global_batch_indices(step), arms[1].global_batch_indices(step))
    assert not torch.equal(arms[0].step_randomness(0, shape)["noise"], arms[0].step_randomness(1, shape)["noise"])


def test_crn_run_repeats_resumes_and_differs_from_v1(tmp_path, tiny):
    sets = tiny(seeding="crn", steps=4, dropout=0.1)
    full = train(resolve("digits", sets), tmp_path / "full", progress=False)
    again = train(resolve("digits", sets), tmp_path / "again", progress=False)
    train(resolve("digits", {**sets, "steps": 2}), tmp_path / "split", progress=False)
    resumed = train(resolve("digits", sets), tmp_path / "split", progress=False)
    v1 = train(resolve("digits", {**sets, "seeding": "v1"}), tmp_path / "v1", progress=False)
    assert full["loss"] == again["loss"] == resumed["loss"] != v1["loss"]


def test_seeding_is_in_the_run_id_only_when_it_is_not_v1(tiny):
    base = resolve("digits", tiny())
    assert base.train.seeding == "v1"
    assert resolve("digits", tiny(seeding="v1")).run_id() == base.run_id()  # every old run keeps its id
    assert resolve("digits", tiny(seeding="crn")).run_id() != base.run_id()
    with pytest.raises(ConfigError, match="unknown train.seeding 'paired'; valid: crn, v1"):
        resolve("digits", tiny(seeding="paired"))


@pytest.mark.parametrize("sets", [["conditioning=concat"], ["conditioning=cross_attention+add"], ["z_tokens=4"],
                                  ["prior=categorical"], ["prior=normal"], ["prior=none", "baseline_attention=dummy_token"]])
def test_every_module_of_the_digits_variants_has_its_own_init(sets):
    from dmz.model import build_model
    from dmz.seeding import init_by_name

    assert init_by_name(build_model(resolve("digits", sets)), 0) == []  # none keeps an order-dependent draw


def test_derive_is_fixed_and_separates_purposes():
    assert derive(0, "init", "unet.conv_in") == derive(0, "init", "unet.conv_in")
    assert len({derive(s, p, k) for s in (0, 1) for p in ("noise", "t") for k in (0, 1)}) == 8
    assert 0 <= derive(123, "noise", 7) < 2 ** 63
