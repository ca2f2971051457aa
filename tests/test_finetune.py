"""dmz.finetune: DMZ's UNet started from a pretrained diffusers UNet (offline: tiny random UNet2DModels saved in
diffusers format), the celebahq256 preset's size, and the errors for folders that cannot start a run."""

import json

import pytest
import torch
from diffusers import UNet2DModel

import dmz.config
import dmz.train
import dmz.trainer
from dmz.finetune import INIT_REPORT, InitFromError, export_unet, init_unet_from
from dmz.model import build_model
from dmz.run import load_run

torch.set_num_threads(1)
TINY = {"base_channels": 8, "latent_dim": 4, "attention_head_dim": 2, "batch_size": 8, "steps": 2, "log_every": 1,
        "warmup_steps": 0, "logger": "none", "sampling_compile": False, "ckpt_every": 1000}


def source_unet(path, channels=(8, 16), in_channels=1, seed=123):
    """A randomly initialised UNet2DModel laid out like the tiny digits DMZ (16x16, 1 channel, attention at level 1,
    scale-shift time conditioning) but with plain attention and one output channel, saved in diffusers format."""
    torch.manual_seed(seed)
    unet = UNet2DModel(sample_size=16, in_channels=in_channels, out_channels=1, block_out_channels=channels,
                       down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                       layers_per_block=1, norm_num_groups=8, attention_head_dim=2, resnet_time_scale_shift="scale_shift")
    unet.save_pretrained(str(path))
    return {k: v.clone() for k, v in unet.state_dict().items()}


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    path = tmp_path_factory.mktemp("pretrained") / "unet"
    return path, source_unet(path)


def test_copies_what_matches_and_leaves_the_rest_fresh(source):
    path, src = source
    torch.manual_seed(0)
    model = build_model(dmz.config.resolve("digits", TINY))
    before = {k: v.clone() for k, v in model.unet.state_dict().items()}
    report = init_unet_from(model, path)
    after = model.unet.state_dict()
    assert len(report["copied"]) > 20 and report["copied_params"] > 0
    for k in report["copied"]:
        assert torch.equal(after[k], src[k]), k
    assert "conv_in.weight" in report["copied"] and "time_embedding.linear_1.weight" in report["copied"]
    assert any(k.startswith("down_blocks.0.resnets.0.") for k in report["copied"])
    # DMZ's learned-range output (2 channels) and z's transformer blocks have no counterpart: fresh, untouched
    assert "conv_out.weight" in report["mismatched"] and "conv_out.weight" in report["fresh"]
    fresh_xattn = [k for k in report["fresh"] if "transformer_blocks" in k]
    assert fresh_xattn and all(torch.equal(after[k], before[k]) for k in report["fresh"])
    assert any("attentions.0.to_q" in k for k in report["dropped"])  # the source's plain attention has no place
    assert set(report["copied"]) | set(report["fresh"]) == set(after)


def test_finetune_new_trains_only_the_fresh_parameters(source, tmp_path, capsys):
    path, src = source
    cfg = dmz.config.resolve("digits", {**TINY, "init_from": str(path), "finetune": "new"})
    dmz.trainer.train(cfg, tmp_path / "run", progress=False)
    report = json.loads((tmp_path / "run" / INIT_REPORT).read_text())
    assert report["finetune"] == "new" and report["source"] == str(path)
    err = capsys.readouterr().err
    assert "copied" in err and "fresh" in err and "frozen" in err
    state = torch.load(tmp_path / "run" / "checkpoint.pt", map_location="cpu", weights_only=False)["model"]
    params = {n for n, _ in build_model(cfg).unet.named_parameters()}
    copied = [k for k in report["copied"] if k in params]
    assert copied and all(torch.equal(state["unet." + k], src[k]) for k in copied)
    moved = [k for k in report["fresh"] if k in params and "transformer_blocks" in k and "attn2.to_v" in k]
    torch.manual_seed(cfg.train.seed)
    init = build_model(cfg).unet.state_dict()
    assert moved and any(not torch.equal(state["unet." + k], init[k]) for k in moved)


def test_finetune_all_moves_the_copied_ones(source, tmp_path):
    path, src = source
    cfg = dmz.config.resolve("digits", {**TINY, "init_from": str(path)})
    dmz.trainer.train(cfg, tmp_path / "run", progress=False)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", map_location="cpu", weights_only=False)["model"]
    assert not torch.equal(state["unet.conv_in.weight"], src["conv_in.weight"])
    # the run id names its start: another source folder is another run
    assert cfg.run_id() != dmz.config.resolve("digits", TINY).run_id()


def test_a_plain_ddpm_run_exports_and_starts_a_dmz_run(tmp_path):
    cfg = dmz.config.resolve("digits", {**TINY, "prior": "none"})
    dmz.trainer.train(cfg, tmp_path / "ddpm", progress=False)
    out = export_unet(tmp_path / "ddpm", tmp_path / "ddpm-diffusers")
    assert (out / "config.json").exists() and (out / "diffusion_pytorch_model.safetensors").exists()
    ddpm = load_run(tmp_path / "ddpm", device="cpu").model.unet.state_dict()
    model = build_model(dmz.config.resolve("digits", TINY))
    report = init_unet_from(model, out)
    got = model.unet.state_dict()
    assert "conv_out.weight" in report["copied"]  # same learned-range output as the DMZ
    assert all(torch.equal(got[k], ddpm[k]) for k in report["copied"])
    dmz.trainer.train(dmz.config.resolve("digits", TINY), tmp_path / "dmz", progress=False)
    with pytest.raises(InitFromError, match="only a plain DDPM run"):
        export_unet(tmp_path / "dmz", tmp_path / "dmz-diffusers")


def test_folders_that_cannot_start_a_run_say_so(tmp_path, capsys):
    model = build_model(dmz.config.resolve("digits", TINY))
    with pytest.raises(InitFromError, match="no such folder.*huggingface-cli download google/ddpm-ema-celebahq-256"):
        init_unet_from(model, tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InitFromError, match="is not a diffusers UNet folder"):
        init_unet_from(model, tmp_path / "empty")
    (tmp_path / "sched").mkdir()
    (tmp_path / "sched" / "config.json").write_text(json.dumps({"_class_name": "DDPMScheduler"}))
    (tmp_path / "sched" / "diffusion_pytorch_model.bin").write_bytes(b"")
    with pytest.raises(InitFromError, match="describes 'DDPMScheduler', not a UNet2DModel"):
        init_unet_from(model, tmp_path / "sched")
    source_unet(tmp_path / "other", channels=(64, 128), in_channels=3)
    before = {k: v.clone() for k, v in model.unet.state_dict().items()}
    with pytest.raises(InitFromError, match="no tensor of its UNet matches"):
        init_unet_from(model, tmp_path / "other")
    assert all(torch.equal(v, before[k]) for k, v in model.unet.state_dict().items())  # nothing half-copied
    rc = dmz.train.main(["--preset", "digits", *sum((["--set", f"{k}={v}"] for k, v in TINY.items()), []),
                         "--set", f"init_from={tmp_path / 'absent'}", "--out", str(tmp_path / "run")])
    assert rc == 1 and "init_from=" in capsys.readouterr().err and not (tmp_path / "run").exists()
    with pytest.raises(dmz.config.ConfigError, match="finetune=new .* init_from"):
        dmz.config.resolve("digits", {"finetune": "new"})


def test_celebahq256_preset_is_the_released_fine_tune():
    cfg = dmz.config.resolve("celebahq256")
    counts = build_model(cfg).param_counts()
    assert round(counts["params_unet"] / 1e6, 2) == 142.03  # PAPER.md 1.7
    assert (cfg.model.latent_dim, cfg.model.attention_head_dim, cfg.model.learn_sigma, cfg.diffusion.sigma_small,
            cfg.diffusion.noise_schedule, cfg.train.steps) == (256, 512, False, True, "linear", 40_000)


def test_study_table_pools_trainings_and_applies_the_rule(tmp_path):
    """ablations/finetune_study.py's table: the fine-tuned DMZ over its trainings against main's from-scratch DMZ by
    Welch over trainings; one fine-tuned training is not resolved whatever the gap."""
    from test_paper_report import fid, write

    from ablations.finetune_study import comparison

    write(tmp_path, "main", [fid("dmz", T, v, 0.3) for T, v in ((10, 6.0), (100, 3.0))]
          + [fid("ddpm", T, v, 0.3) for T, v in ((10, 6.5), (100, 2.0))], trainings=5)
    ft = [fid("dmz-finetuned-all", T, v, 0.3) for T, v in ((10, 4.0), (100, 3.1))]
    write(tmp_path, "finetune", ft, trainings=1)
    one = comparison("digits", "dmz-finetuned-all", tmp_path)
    assert list(one["verdict (fine-tuned lower)"].str.startswith("not resolved")) == [True, True]
    assert one.loc[0, "fine-tuned mean is"] == "below"  # 4.0 under the PI of a new from-scratch training
    write(tmp_path, "finetune", ft, trainings=3)
    three = comparison("digits", "dmz-finetuned-all", tmp_path)
    assert three.loc[0, "verdict (fine-tuned lower)"].startswith("holds")
    assert three.loc[1, "verdict (fine-tuned lower)"].startswith("not resolved")
    assert three.loc[0, "DMZ fine-tuned from the DDPM"] == "4.00 ± 0.30 (n=3)"
