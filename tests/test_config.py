import json
import subprocess
import sys

import pytest

from dmz.config import Config, ConfigError, get_preset, resolve, valid_keys


def test_overrides_are_typed_and_resolve_bare_and_dotted_keys():
    cfg = resolve("digits", ["prior=none", "train.lr=2e-4", "attention_levels=0,1", "flip=true",
                             "cross_attention_levels=none", "steps=1e3"])
    assert cfg.model.prior == "none"
    assert cfg.train.lr == pytest.approx(2e-4)
    assert cfg.model.attention_levels == (0, 1)
    assert cfg.data.flip is True
    assert cfg.model.cross_attention_levels is None
    assert cfg.train.steps == 1000 and isinstance(cfg.train.steps, int)


@pytest.mark.parametrize("override, fragment", [
    ("priorr=none", "unknown config key 'priorr'"),
    ("prior=gaussian", "unknown prior 'gaussian'; valid: bernoulli, categorical, none, normal"),
    ("conditioning=film", "unknown conditioning 'film'; valid: add, concat, cross_attention"),
    ("dataset=mnist", "unknown dataset 'mnist'"),
    ("latent_dim=abc", "bad value 'abc' for model.latent_dim"),
    ("model.lr=1", "unknown config key 'model.lr'"),
    ("noise_schedule=sqrt", "valid: cosine, linear"),
    ("attention_levels=5", "attention_levels [5] outside"),
])
def test_bad_overrides_name_the_valid_choices(override, fragment):
    with pytest.raises(ConfigError) as e:
        resolve("digits", [override])
    assert fragment in str(e.value)


def test_unknown_key_error_lists_valid_keys():
    with pytest.raises(ConfigError) as e:
        resolve("digits", ["latnt_dim=3"])
    assert "model.latent_dim" in str(e.value)
    assert set(valid_keys()) >= {"model.prior", "train.lr", "data.dataset", "diffusion.loss"}


def test_unknown_preset_lists_presets():
    with pytest.raises(ConfigError, match="valid presets: celeba64, celebahq256, cifar10, digits"):
        get_preset("cifar100")


def test_json_round_trip_is_strict():
    cfg = resolve("cifar10", ["prior=normal", "kl_weight=0.5"])
    again = Config.from_dict(json.loads(cfg.to_json()))
    assert again == cfg
    d = cfg.to_dict()
    d["model"]["nonsense"] = 1
    with pytest.raises(ConfigError, match="unknown key model.nonsense"):
        Config.from_dict(d)


def test_run_id_depends_on_every_field():
    a = resolve("digits")
    ids = {a.run_id(), resolve("digits", ["seed=1"]).run_id(), resolve("digits", ["lr=3e-4"]).run_id(),
           resolve("digits", ["prior=none"]).run_id()}
    assert len(ids) == 4
    assert a.run_id() == resolve("digits").run_id()
    # how a run executes is not part of what it computes
    assert resolve("digits", ["threads=1", "device=cpu", "log_every=7"]).run_id() == a.run_id()


def test_fields_added_later_keep_existing_run_ids_at_their_default():
    import hashlib
    import json

    from dmz.config import EXECUTION_FIELDS, LATER_FIELDS

    a = resolve("digits")
    d = a.to_dict()  # what a config looked like before the later fields existed
    for key in (*EXECUTION_FIELDS, *LATER_FIELDS):
        section, name = key.split(".")
        d[section].pop(name, None)
    assert a.digest() == hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]
    assert Config.from_dict(d).run_id() == a.run_id()  # an old config.json loads with the default: same run
    assert resolve("digits", ["prior_confidence=0.1"]).run_id() != a.run_id()  # set, it is part of the identity
    with pytest.raises(ConfigError, match="prior_confidence must be >= 0"):
        resolve("digits", ["prior_confidence=-1"])


def test_paper_presets_match_release():
    c = get_preset("cifar10")
    assert (c.model.base_channels, c.model.channel_mult, c.model.layers_per_block) == (128, (1, 2, 2, 2), 3)
    assert (c.model.dropout, c.diffusion.input_perturbation, c.model.latent_dim) == (0.3, 0.15, 16)
    assert c.model.prior_matching == 0 and c.model.prior_confidence == 0
    assert c.model.estimator == "relaxed" and c.model.tau == 1.0
    assert (c.train.lr, c.train.ema_rate, c.train.batch_size, c.train.weight_decay) == (1e-4, 0.9999, 128, 0.0)
    assert c.diffusion.schedule_sampler == "loss-second-moment" and c.diffusion.loss == "hybrid"
    e = get_preset("celeba64")
    assert (e.model.base_channels, e.model.channel_mult, e.model.attention_levels) == (192, (1, 2, 3, 4), (1, 2, 3))
    assert (e.model.latent_dim, e.diffusion.input_perturbation, e.train.batch_size) == (64, 0.1, 256)


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "dmz.train", *args], capture_output=True, text=True, timeout=300)


def test_dry_run_prints_config_then_param_counts():
    r = _cli("--preset", "digits", "--set", "prior=none", "--dry-run")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    info = json.loads(lines[-1])
    assert {"params_unet", "params_encoder", "params_total"} <= set(info)
    assert info["params_encoder"] == 0 and info["params_total"] == info["params_unet"] > 0
    cfg = json.loads("\n".join(lines[:-1]))
    assert cfg["model"]["prior"] == "none"


def test_cli_rejects_unknown_prior_with_list():
    r = _cli("--preset", "digits", "--set", "prior=vq", "--dry-run")
    assert r.returncode == 2
    assert "valid: bernoulli, categorical, none, normal" in r.stderr
