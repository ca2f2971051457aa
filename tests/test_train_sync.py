"""The training step never reads a value back from the device (issue 9): the loss, the NaN check and the statistics
are accumulated there and read only at log steps and before checkpoints. On a GPU each such read is a host
synchronisation that stalls the queue; on the CPU we count the reads themselves, through a TorchFunctionMode that
sees every ``item``/``tolist``/``numpy``/``__bool__``/``__float__``/``__int__``/``__index__``/``cpu`` call."""

from __future__ import annotations

import pytest
from torch.overrides import TorchFunctionMode

from dmz.config import resolve
from dmz.trainer import Trainer

READS = {"item", "tolist", "numpy", "__bool__", "__float__", "__int__", "__index__", "cpu"}


class HostReads(TorchFunctionMode):
    """Records (trainer step, op) for every host read of a tensor value while active."""

    def __init__(self, trainer):
        super().__init__()
        self.trainer, self.reads = trainer, []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", "")
        if name in READS:
            self.reads.append((self.trainer.step, name))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("sets", [
    # 4 diffusion steps: the loss-second-moment sampler warms up after ~5 steps and then samples from its history
    dict(diffusion_steps=4, grad_clip=1.0),
    dict(diffusion_steps=4, prior="normal", kl_weight=0.1, schedule_sampler="uniform"),
    dict(diffusion_steps=4, prior="categorical", latent_dim=2, flip=True),
    dict(prior="none"),
], ids=["bernoulli", "normal", "categorical", "ddpm"])
def test_steps_between_log_steps_read_nothing_from_the_device(tmp_path, tiny, sets):
    steps = 12
    cfg = resolve("digits", tiny(steps=steps, log_every=steps, ckpt_every=10_000, **sets))
    trainer = Trainer(cfg, tmp_path / "r", progress=False)
    with HostReads(trainer) as mode:
        trainer.train()
    assert trainer.step == steps
    if cfg.diffusion.schedule_sampler == "loss-second-moment" and cfg.diffusion.diffusion_steps == 4:
        assert trainer.t_sampler.warmed_up()  # the importance-sampling path ran
    during_steps = [r for r in mode.reads if r[0] < steps]
    assert during_steps == [], f"host reads inside training steps: {during_steps[:5]}"
    # the counter works: the one log step (and the final checkpoint) read the accumulated numbers
    assert any(name in ("tolist", "__int__", "item", "__float__") for _, name in mode.reads)


def test_a_step_that_reads_the_loss_is_caught(tmp_path, tiny, monkeypatch):
    """The check can fail: the pre-issue-9 trainer converted the loss with float() every step."""
    cfg = resolve("digits", tiny(steps=3, log_every=3))
    trainer = Trainer(cfg, tmp_path / "r", progress=False)
    step = Trainer.train_step

    def syncing_step(self, x0, r):
        step(self, x0, r)
        float(self.meter.sums["loss"])

    monkeypatch.setattr(Trainer, "train_step", syncing_step)
    with HostReads(trainer) as mode:
        trainer.train()
    assert [s for s, name in mode.reads if name == "__float__" and s < 3]
