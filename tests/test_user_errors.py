"""Errors in the user's terms: they name the file or option, the valid range, and what to do."""

from __future__ import annotations

import importlib
import json
from types import SimpleNamespace

import pytest

import conftest
from ablations.run_grid import main as grid_main
from dmz.config import Config, ConfigError, resolve
from dmz.trainer import train



@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    train(resolve("digits", conftest.tiny_overrides()), out, progress=False)
    return out


@pytest.fixture
def cli(capsys):
    """``cli("dmz.sample", *argv)``: the module's main() in this process -> returncode, stdout, stderr."""
    def run(module, *argv):
        code = importlib.import_module(module).main(list(argv))
        out = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=out.out, stderr=out.err)
    return run


def test_corrupt_config_json_names_the_file_and_the_fix_and_the_fix_works(tiny_run, cli):
    cfg_path = tiny_run / "config.json"
    good = cfg_path.read_text()
    try:
        cfg_path.write_text('{"model": {"prior": "bernoulli",\n')  # cut short
        for cmd in (["evaluation.run", "--run", str(tiny_run), "--steps", "2", "--metrics", "fid"],
                    ["dmz.sample", "--run", str(tiny_run), "--steps", "2", "--num", "1",
                     "--out", str(tiny_run / "x.png")]):
            r = cli(*cmd)
            assert r.returncode == 2, r.stderr
            err = r.stderr.strip().splitlines()[-1]
            assert err.startswith(f"error: {cfg_path} is corrupt (not valid JSON: ")
            assert f"python -m dmz.run restore-config {tiny_run}" in err
        r = cli("dmz.run", "restore-config", str(tiny_run))
        assert r.returncode == 0 and f"wrote {cfg_path}" in r.stdout
        assert Config.load(cfg_path).run_id() == Config.from_dict(json.loads(good)).run_id()
    finally:
        cfg_path.write_text(good)


def test_config_json_that_is_not_a_config_is_named(tmp_path):
    p = tmp_path / "config.json"
    p.write_text("[1, 2]")
    with pytest.raises(ConfigError, match=rf"^{p} is not a DMZ config \(a JSON list"):
        Config.load(p)
    p.write_text('{"model": {"latnt_dim": 3}}')
    with pytest.raises(ConfigError, match=rf"^{p}: unknown key model.latnt_dim"):
        Config.load(p)


def test_restore_config_without_a_checkpoint_says_so(tmp_path, cli):
    r = cli("dmz.run", "restore-config", str(tmp_path))
    assert r.returncode == 2 and f"no checkpoint at {tmp_path / 'checkpoint.pt'}" in r.stderr


@pytest.mark.parametrize("args, message", [
    (["--steps", "0"], "T=0 denoising steps is out of range: T must be between 1 and 1000 (the run's training "
                       "diffusion steps)"),
    (["--steps", "1001"], "T must be between 1 and 1000"),
    (["--steps", "999", "--solver", "ddim"], "DDIM cannot take exactly T=999 steps"),
    (["--steps", "999", "--sampler", "ddim"], "DDIM cannot take exactly T=999 steps"),  # the old name, an alias
    (["--num", "0"], "--num must be >= 1"),
])
def test_sample_cli_range_errors(tiny_run, tmp_path, cli, args, message):
    r = cli("dmz.sample", "--run", str(tiny_run), "--out", str(tmp_path / "x.png"), *args)
    assert r.returncode == 2 and message in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_ddim_suggests_the_nearest_valid_step_counts():
    from dmz.sampling import check_steps

    with pytest.raises(ValueError, match="nearest valid T: 500, 1000"):
        check_steps(999, 1000, "ddim")
    check_steps(999, 1000, "ddpm")  # ancestral respacing takes any T
    check_steps(100, 1000, "ddim")


def test_evaluation_steps_out_of_range(tiny_run, cli):
    r = cli("evaluation.run", "--run", str(tiny_run), "--steps", "1001", "--metrics", "fid")
    assert r.returncode == 2 and "T must be between 1 and 1000 (the run's training diffusion steps)" in r.stderr


@pytest.mark.parametrize("args, message", [
    (["--T", "0"], "--T 0 is out of range: T must be between 1 and 1000"),
    (["--num-samples", "1"], "--num-samples must be >= 2"),
    (["--eval-seeds", "0"], "--eval-seeds must be >= 1"),
])
def test_grid_evaluation_sizes_are_checked_before_submitting(tmp_path, capsys, args, message):
    assert grid_main(["--grid", "main", "--out", str(tmp_path), "--dry-run", *args]) == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
