import json
import socket
import subprocess
import sys

import pytest
import torch
import torch.multiprocessing as mp

from dmz.config import Config, ConfigError, resolve
from dmz.runio import CheckpointError, read_jsonl
from dmz.trainer import NonFiniteLossError, Trainer, train


def _state(path):
    return torch.load(path, map_location="cpu", weights_only=False)


def _assert_same_tensors(a, b, exact=True, atol=0.0):
    assert a.keys() == b.keys()
    for k in a:
        if exact:
            assert torch.equal(a[k], b[k]), k
        else:
            torch.testing.assert_close(a[k], b[k], rtol=0, atol=atol, msg=k)


def test_resumed_run_equals_uninterrupted_run(tmp_path, tiny):
    # dropout on, loss-second-moment sampler, EMA, warm-up: all their states must survive the restart
    sets = tiny(steps=6, dropout=0.1, warmup_steps=4, flip=True)
    full = train(resolve("digits", sets), tmp_path / "full", progress=False)
    half = train(resolve("digits", {**sets, "steps": 3}), tmp_path / "split", progress=False)
    assert half["step"] == 3
    resumed = train(resolve("digits", sets), tmp_path / "split", progress=False)
    assert resumed["step"] == full["step"] == 6 and resumed["finished"]
    a, b = _state(tmp_path / "full" / "checkpoint.pt"), _state(tmp_path / "split" / "checkpoint.pt")
    _assert_same_tensors(a["model"], b["model"])
    _assert_same_tensors(a["ema"], b["ema"])
    assert a["sampler"].keys() == b["sampler"].keys()
    # and the run is not trivially constant: the parameters moved
    fresh = _state(tmp_path / "split" / "checkpoint.pt")["model"]
    init = Trainer(resolve("digits", sets), tmp_path / "unused", progress=False).model.state_dict()
    assert any(not torch.equal(fresh[k], init[k]) for k in init if init[k].is_floating_point())


def test_same_seed_repeats_and_other_seed_differs(tmp_path, tiny):
    a = train(resolve("digits", tiny()), tmp_path / "a", progress=False)
    b = train(resolve("digits", tiny()), tmp_path / "b", progress=False)
    c = train(resolve("digits", tiny(seed=1)), tmp_path / "c", progress=False)
    assert a["loss"] == b["loss"] != c["loss"]


def test_run_folder_holds_config_metrics_and_summary(tmp_path, tiny):
    cfg = resolve("digits", tiny())
    train(cfg, tmp_path / "r", progress=False)
    assert Config.load(tmp_path / "r" / "config.json") == cfg
    rows = read_jsonl(tmp_path / "r" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert all({"loss", "mse", "vb", "images_per_s", "lr"} <= set(r) for r in rows)
    run = json.loads((tmp_path / "r" / "run.json").read_text())
    assert run["run_id"] == cfg.run_id() and run["params_total"] > 0


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, tiny, monkeypatch):
    cfg = resolve("digits", tiny(steps=5, ckpt_every=1))
    original = Trainer._load_images

    def poisoned(self, idx):
        x = original(self, idx)
        return x * float("nan") if self.step == 2 else x

    monkeypatch.setattr(Trainer, "_load_images", poisoned)
    with pytest.raises(NonFiniteLossError) as e:
        train(cfg, tmp_path / "r", progress=False)
    msg = str(e.value)
    assert "at step 2" in msg and "Last good checkpoint kept" in msg and "(step 2)" in msg
    state = _state(tmp_path / "r" / "checkpoint.pt")
    assert state["step"] == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_corrupt_checkpoint_is_a_clear_error(tmp_path, tiny):
    cfg = resolve("digits", tiny())
    train(cfg, tmp_path / "r", progress=False)
    ckpt = tmp_path / "r" / "checkpoint.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:1000])  # truncated, as by a killed copy
    with pytest.raises(CheckpointError, match="corrupt or unreadable.*delete it"):
        train(resolve("digits", tiny(steps=5)), tmp_path / "r", progress=False)


def test_resume_with_a_different_config_is_refused(tmp_path, tiny):
    train(resolve("digits", tiny()), tmp_path / "r", progress=False)
    with pytest.raises(ConfigError, match=r"train\.lr differ"):
        train(resolve("digits", tiny(lr=5e-4, steps=5)), tmp_path / "r", progress=False)


def test_a_checkpoint_from_before_a_later_field_resumes_at_its_default(tmp_path, tiny):
    """A checkpoint written before ``model.z_tokens`` existed has no such key: it resumes with the default (1), is
    refused with any other value, and a finished one is not trained again."""
    from dmz.config import LATER_FIELDS
    from dmz.runio import load_checkpoint, save_checkpoint

    assert LATER_FIELDS["model.z_tokens"] == 1
    run = tmp_path / "r"
    train(resolve("digits", tiny()), run, progress=False)
    state = load_checkpoint(run / "checkpoint.pt")
    del state["config"]["model"]["z_tokens"]
    save_checkpoint(state, run / "checkpoint.pt")
    with pytest.raises(ConfigError, match=r"model\.z_tokens differ"):
        train(resolve("digits", tiny(z_tokens=2)), run, progress=False)
    assert train(resolve("digits", tiny()), run, progress=False)["step"] == 3


def test_cli_trains_and_reports_missing_dataset(tmp_path):
    r = subprocess.run([sys.executable, "-m", "dmz.train", "--preset", "cifar10", "--set", f"data_root={tmp_path}",
                        "--out", str(tmp_path / "r"), "--no-progress"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1
    assert "cifar-10-batches-py" in r.stderr and str(tmp_path) in r.stderr


# ---------------------------------------------------------------------------------------------------------------
# DDP: one step with world size 2 == one process on the same global batch (dropout off)
# ---------------------------------------------------------------------------------------------------------------
def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _train_and_keep_grads(sets, out):
    """Train; return the gradients of the last step (still in .grad: zero_grad runs before each backward)."""
    trainer = Trainer(resolve("digits", sets), out, progress=False)
    trainer.train()
    return {n: p.grad.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}


def _ddp_worker(rank, world, port, sets, out):
    import os
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    grads = _train_and_keep_grads(sets, out)
    if rank == 0:
        torch.save(grads, os.path.join(out, "grads.pt"))
    import torch.distributed as dist
    dist.destroy_process_group()


@pytest.mark.parametrize("prior", ["bernoulli", "none"])
def test_ddp_two_processes_equal_one_process_on_the_global_batch(tmp_path, tiny, prior):
    sets = tiny(prior=prior, steps=1, batch_size=8, dropout=0.0, base_channels=16, norm_groups=4)
    mp.start_processes(_ddp_worker, args=(2, _free_port(), sets, str(tmp_path / "ddp")), nprocs=2,
                       start_method="spawn", join=True)
    single_grads = _train_and_keep_grads(sets, tmp_path / "single")
    ddp_grads = torch.load(tmp_path / "ddp" / "grads.pt")
    # the averaged DDP gradient equals the single-process gradient of the global batch (up to summation order);
    # this includes the encoder, whose BatchNorm must use the global batch statistics for it to hold
    assert ddp_grads.keys() == single_grads.keys()
    scale = max(g.abs().max().item() for g in single_grads.values())
    assert scale > 1e-3
    for k in ddp_grads:  # round-off gradients of zero-gradient parameters (~1e-11) sit far below atol
        torch.testing.assert_close(ddp_grads[k], single_grads[k], rtol=1e-4, atol=1e-6 * scale, msg=k)
    a, b = _state(tmp_path / "ddp" / "checkpoint.pt"), _state(tmp_path / "single" / "checkpoint.pt")
    assert a["step"] == b["step"] == 1
    # parameters after the step: equal, except single elements whose gradient is at round-off level, which Adam's
    # first step (update = lr * g / (|g| + eps)) can move by up to lr in either direction
    lr = resolve("digits", sets).train.lr
    close = total = 0
    for k, v in a["model"].items():
        if not v.is_floating_point():
            continue
        d = (v - b["model"][k]).abs()
        assert d.max() <= 2.01 * lr, k
        close += int((d <= 2e-6).sum())
        total += d.numel()
    assert close / total > 0.999
    if prior == "bernoulli":  # BatchNorm running statistics come from the global batch
        rm = [k for k in a["model"] if k.endswith("running_mean") or k.endswith("running_var")]
        assert rm
        _assert_same_tensors({k: a["model"][k] for k in rm}, {k: b["model"][k] for k in rm}, exact=False, atol=1e-6)


def test_ema_warmup_forgets_the_initialisation(tmp_path, tiny):
    t = Trainer(resolve("digits", tiny(ema_rate=0.999, ema_warmup=True)), tmp_path / "a", progress=False)
    assert t.ema_rate_at(0) == pytest.approx(0.1) and t.ema_rate_at(90) == pytest.approx(0.91)
    assert t.ema_rate_at(10**6) == 0.999  # capped at ema_rate
    released = Trainer(resolve("digits", tiny(ema_rate=0.999, ema_warmup=False)), tmp_path / "b", progress=False)
    assert released.ema_rate_at(0) == 0.999
    # after a few steps the warmed-up EMA sits much closer to the trained weights than the released constant rate
    t.train()
    released.train()

    def dist(tr):
        return sum((e - p).abs().sum() for e, p in zip(tr.ema.parameters(), tr.model.parameters()))

    assert dist(t) < 0.5 * dist(released)


@pytest.mark.parametrize("decay, mid, end", [("none", 1e-3, 1e-3), ("linear", 0.5e-3, 0.0), ("cosine", 0.5e-3, 0.0)])
def test_lr_decay_to_zero_at_the_last_step_after_warm_up(tmp_path, tiny, decay, mid, end):
    t = Trainer(resolve("digits", tiny(lr=1e-3, warmup_steps=10, steps=110, lr_decay=decay)), tmp_path / decay,
                progress=False)
    assert t.lr_at(0) == pytest.approx(1e-4) and t.lr_at(9) == pytest.approx(1e-3)  # the warm-up is unchanged
    assert t.lr_at(60) == pytest.approx(mid) and t.lr_at(110) == pytest.approx(end, abs=1e-12)
    if decay != "none":
        lrs = [t.lr_at(s) for s in range(10, 111)]
        assert lrs == sorted(lrs, reverse=True)
    assert (resolve("digits", tiny(lr_decay=decay)).run_id() == resolve("digits", tiny()).run_id()) == (decay == "none")
    with pytest.raises(ConfigError, match="unknown train.lr_decay 'step'; valid: cosine, linear, none"):
        resolve("digits", tiny(lr_decay="step"))
