"""dmz.tblog: the TensorBoard writer the trainer and evaluation use (read back with TensorBoard's own reader), its
lazy import, and the config fields that switch it (execution fields: run ids do not change)."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import conftest
from dmz.config import Config, ConfigError, resolve
from dmz.sampling import sample_grid
from dmz.tblog import TB_DIR, RunLogger, log_result_rows

REPO = Path(__file__).resolve().parent.parent


def events(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    ea = EventAccumulator(str(Path(run_dir) / TB_DIR), size_guidance={"scalars": 0, "images": 0})
    ea.Reload()
    return ea


def scalars(ea, tag):
    return [(e.step, pytest.approx(e.value)) for e in ea.Scalars(tag)]


def test_importing_the_logger_or_the_trainer_does_not_import_tensorboard():
    code = ("import sys, dmz.tblog, dmz.trainer, evaluation.run\n"
            "bad = [m for m in sys.modules if m.startswith(('tensorboard', 'torch.utils.tensorboard'))]\n"
            "assert not bad, bad\n")
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr


def test_disabled_logger_writes_nothing(tmp_path):
    with RunLogger(tmp_path, enabled=False) as log:
        log.scalars(1, {"loss": 1.0})
        log.images(1, "samples", torch.zeros(4, 1, 8, 8, dtype=torch.uint8))
    assert not (tmp_path / TB_DIR).exists()
    assert log_result_rows(tmp_path, [{"metric": "fid", "T": 10, "value": 1.0}], enabled=False) == 0
    assert not (tmp_path / TB_DIR).exists()


def test_scalars_and_image_grids_read_back(tmp_path):
    log = RunLogger(tmp_path, enabled=True)
    log.scalars(10, {"loss": 0.5, "lr": 1e-3, "vb": None, "bad": float("nan")})
    log.scalars(20, {"loss": 0.25})
    log.scalars(20, {"fid": 3.0}, prefix="eval/")
    u8 = torch.arange(4 * 16 * 16, dtype=torch.int64).remainder(256).to(torch.uint8).view(4, 1, 16, 16)
    log.images(20, "samples/ema_T10", u8)  # 2 x 2 grid, 1-pixel padding
    log.images(30, "samples/ema_T10", torch.full((9, 1, 4, 4), -1.0))  # float in [-1, 1]: 3 x 3 grid
    log.close()
    ea = events(tmp_path)
    assert scalars(ea, "train/loss") == [(10, 0.5), (20, 0.25)]
    assert scalars(ea, "train/lr") == [(10, 1e-3)] and scalars(ea, "eval/fid") == [(20, 3.0)]
    assert "train/vb" not in ea.Tags()["scalars"] and "train/bad" not in ea.Tags()["scalars"]
    imgs = ea.Images("samples/ema_T10")
    assert [(i.step, i.width, i.height) for i in imgs] == [(20, 2 * 16 + 3, 2 * 16 + 3), (30, 3 * 4 + 4, 3 * 4 + 4)]
    grid = torch.from_numpy(np.array(Image.open(io.BytesIO(imgs[0].encoded_image_string))))
    assert torch.equal(grid[1:17, 1:17, 0], u8[0, 0])  # the first image, exactly, after the padding
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        RunLogger(tmp_path).images(1, "x", torch.zeros(8, 8))


def test_result_rows_go_to_eval_tags_at_checkpoint_step_and_against_T(tmp_path):
    rows = [{"metric": "fid", "T": T, "sampler": "pixelsnail:temperature=0.8", "value": v, "checkpoint_step": 500}
            for T, v in ((10, 4.0), (100, 2.0))]
    rows += [{"metric": "probe_acc_cv", "T": None, "sampler": None, "value": 0.9, "checkpoint_step": 500},
             {"metric": "fid", "T": 10, "sampler": "prior", "value": None, "checkpoint_step": 500}]  # no value
    assert log_result_rows(tmp_path, rows) == 3
    ea = events(tmp_path)
    assert scalars(ea, "eval/fid_T10/pixelsnail_temperature_0.8") == [(500, 4.0)]
    assert scalars(ea, "eval/fid_T100/pixelsnail_temperature_0.8") == [(500, 2.0)]
    assert scalars(ea, "eval_vs_T/fid/pixelsnail_temperature_0.8") == [(10, 4.0), (100, 2.0)]
    assert scalars(ea, "eval/probe_acc_cv") == [(500, 0.9)]
    assert "eval/fid_T10/prior" not in ea.Tags()["scalars"]


def test_sample_grid_is_the_same_at_every_call_and_restores_the_mode():
    from dmz.model import build_model

    cfg = resolve("digits", conftest.tiny_overrides())
    model = build_model(cfg).train()
    a = sample_grid(cfg, model, torch.device("cpu"), num=4, steps=2)
    assert model.training  # mode restored
    b = sample_grid(cfg, model, torch.device("cpu"), num=4, steps=2)
    assert a.shape == (4, 1, 16, 16) and torch.equal(a, b)
    assert not torch.equal(a, sample_grid(cfg, model, torch.device("cpu"), num=4, steps=2, seed=7))


# ---------------------------------------------------------------------------------------------------- config
def test_logger_fields_are_execution_fields_and_checked():
    a = resolve("digits")
    assert (a.train.logger, Config().train.logger, Config().train.sample_every) == ("tensorboard", "tensorboard", 0)
    assert resolve("digits", ["logger=none", "sample_every=7"]).run_id() == a.run_id()
    with pytest.raises(ConfigError, match="unknown train.logger 'wandb'; valid: none, tensorboard"):
        resolve("digits", ["train.logger=wandb"])
    with pytest.raises(ConfigError, match="sample_every must be >= 0"):
        resolve("digits", ["sample_every=-1"])


@pytest.mark.parametrize("name", ["ddpm", "dmz"])
def test_published_run_ids_are_unchanged(name):
    """The README's digits results name their runs; the configs beside them must still give those ids."""
    cfg = Config.load(REPO / "results" / "digits" / f"{name}_config.json")
    lines = (REPO / "results" / "digits" / f"{name}_results.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert {r["run_id"] for r in rows} == {cfg.run_id()}
    assert {r["config_digest"] for r in rows} == {cfg.digest()}
    assert resolve("digits", ["prior=none"] if name == "ddpm" else []).run_id() == cfg.run_id()


def test_evaluation_adds_its_rows_to_the_runs_tensorboard(tmp_path):
    from dmz.trainer import train
    from evaluation.run import evaluate

    run = tmp_path / "run"
    train(resolve("digits", conftest.tiny_overrides(logger="none")), run, progress=False)
    evaluate(run, steps=[2], num_samples=8, seeds=1, metrics=["fid"], log=lambda m: None)
    assert not (run / TB_DIR).exists()  # train.logger=none: nothing
    cfg = json.loads((run / "config.json").read_text())
    cfg["train"]["logger"] = "tensorboard"
    (run / "config.json").write_text(json.dumps(cfg))
    rows = evaluate(run, steps=[2, 3], num_samples=8, seeds=1, metrics=["fid"], log=lambda m: None)
    fid3 = next(r["value"] for r in rows if r["T"] == 3)
    assert scalars(events(run), "eval/fid_T3/prior") == [(3, fid3)]  # the new row only (T=2 was already there)
    assert "eval/fid_T2/prior" not in events(run).Tags()["scalars"]


def test_trainer_writes_its_metrics_and_ema_sample_grids(tmp_path):
    from dmz.runio import read_jsonl
    from dmz.trainer import train

    out = tmp_path / "r"
    train(resolve("digits", conftest.tiny_overrides(steps=4, log_every=2, logger="tensorboard", sample_every=2)),
          out, progress=False)
    ea = events(out)
    rows = read_jsonl(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == [2, 4]
    for name in ("loss", "mse", "vb", "lr", "images_per_s", "bit_entropy"):  # the same numbers as metrics.jsonl
        assert scalars(ea, f"train/{name}") == [(r["step"], pytest.approx(r[name], rel=1e-5)) for r in rows], name
    imgs = ea.Images("samples/ema")
    assert [i.step for i in imgs] == [2, 4]
    a, b = (np.array(Image.open(io.BytesIO(i.encoded_image_string))) for i in imgs)
    assert a.shape == b.shape and a.shape[0] > 16 and not np.array_equal(a, b)  # the EMA moved between frames
    none = tmp_path / "n"
    train(resolve("digits", conftest.tiny_overrides(steps=2, sample_every=1)), none, progress=False)  # logger=none
    assert not (none / TB_DIR).exists()
