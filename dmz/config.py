"""Typed configuration: dataclasses, named presets, ``--set key=value`` overrides and strict JSON round trips.

A :class:`Config` is the whole resolved description of a run. It is written to ``config.json`` in the run folder
before training starts, and the run id is derived from all of it, so two runs that differ in any field (seed and
learning rate included) never share a folder.

Paper presets (``cifar10``, ``celeba64``) mirror the official release (PAPER.md 1.6, 3.2); ``digits`` is the small CPU
default on scikit-learn's bundled digits.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable


@dataclass
class ModelConfig:
    prior: str = "bernoulli"  # latent prior: none | bernoulli | normal | categorical
    latent_dim: int = 16  # |z|: bits (bernoulli), dimensions (normal), groups (categorical)
    categories: int = 4  # categorical: K classes per group
    estimator: str = "relaxed"  # bernoulli gradient estimator: relaxed (released) | straight_through
    tau: float = 1.0  # Gumbel-softmax temperature (released: 1)
    kl_weight: float = 0.0  # normal: weight of KL(q(z|x) || N(0, I)); categorical: KL to uniform
    prior_matching: float = 0.0  # bernoulli: pull aggregate posterior towards Bernoulli(0.5) (0 = as released)
    prior_confidence: float = 0.0  # bernoulli: penalise each image's per-bit posterior entropy (0 = as released)
    prior_mmd: float = 0.0  # bernoulli: batch MMD^2 between relaxed codes and Bernoulli(0.5) codes (0 = as released)
    conditioning: str = "cross_attention"  # '+'-joined methods: cross_attention | concat | add
    z_tokens: int = 1  # cross_attention: z as this many key/value tokens (1 = the released single token)
    encoder_channels: tuple[int, ...] | None = None  # None = released rule: halve to 2x2 starting at 32 channels
    base_channels: int = 128  # UNet base width
    channel_mult: tuple[int, ...] = (1, 2, 2, 2)  # width multiplier per resolution level
    layers_per_block: int = 3  # res-blocks per level (up path gets one more, as diffusers does)
    attention_levels: tuple[int, ...] = (1, 2)  # levels with (self/cross) attention
    cross_attention_levels: tuple[int, ...] | None = None  # None = every attention level (released default)
    attention_head_dim: int = 32  # diffusers quirk: number of heads in transformer blocks (PAPER.md 1.7)
    dropout: float = 0.3
    norm_groups: int = 32  # GroupNorm groups (capped at base_channels so tiny test models build)
    time_scale_shift: str = "scale_shift"  # scale_shift (AdaGN) | default (additive)
    learn_sigma: bool = True  # learned-range variance: the UNet outputs 2*C channels
    baseline_attention: str = "plain"  # prior=none: plain self-attention | dummy_token (cross-attn on a constant)


@dataclass
class DiffusionConfig:
    noise_schedule: str = "cosine"  # cosine | linear
    diffusion_steps: int = 1000  # training steps of the forward process
    loss: str = "hybrid"  # hybrid (L_simple + vb, learned variance) | mse
    input_perturbation: float = 0.15  # DDPM-IP gamma (0 = plain DDPM, required for DDIM)
    schedule_sampler: str = "loss-second-moment"  # uniform | loss-second-moment
    sigma_small: bool = False  # with model.learn_sigma=false: posterior variance (fixed_small) instead of beta_t


@dataclass
class DataConfig:
    dataset: str = "digits"  # digits | cifar10 | celeba64 | digits_edges | edges2handbags(_edges) | edges2shoes(_edges)
    data_root: str | None = None  # where cifar10/celeba64 live (env DMZ_DATA_ROOT as fallback)
    resolution: int | None = None  # None = the dataset's default
    flip: bool = True  # random horizontal flips in training (released default)
    center_crop: bool = False  # celeba64: crop before resizing (released: no crop)
    download: bool = False  # allow torchvision to download where the network allows
    num_workers: int = 2  # DataLoader workers for on-disk datasets


@dataclass
class TrainConfig:
    batch_size: int = 128  # global batch (split across DDP processes)
    lr: float = 1e-4
    weight_decay: float = 0.0
    ema_rate: float = 0.9999
    ema_warmup: bool = False  # rate_t = min(ema_rate, (1 + t) / (10 + t)) so short runs forget the init (released: off)
    grad_clip: float = 0.0  # 0 = off (released: off)
    steps: int = 500_000  # total optimizer steps
    warmup_steps: int = 0  # linear lr warm-up (released: none)
    lr_decay: str = "none"  # after warm-up: none (released: constant) | linear | cosine, to 0 at train.steps
    seed: int = 0
    # how the seed becomes random numbers (dmz.seeding): v1 = one global seed before building the model, as every run
    # before this field; crn = common random numbers, one generator per purpose (init by module name, data order,
    # timesteps, noise, ...), so two arms trained with one seed share every draw they have in common
    seeding: str = "v1"
    precision: str = "fp16"  # fp32 | fp16 (released, with loss scaling) | bf16 | auto (bf16 on CUDA, fp32 on CPU)
    compile: bool = False  # torch.compile the training step's loss (prior, UNet, hybrid loss; forward and backward)
    sampling_precision: str = "fp32"  # sampling (dmz.sample, evaluation): fp32 | bf16 | auto (bf16 on CUDA)
    sampling_compile: bool = False  # sampling: torch.compile the denoiser
    # cross-attention to the single z token as its value projection (exact: a softmax over one key is 1; the
    # forward is bit-identical, the dead to_q/to_k/norm2 are frozen); false = diffusers' processor, as released
    cross_attention_shortcut: bool = True
    log_every: int = 100
    ckpt_every: int = 10_000  # steps between checkpoints (released save_interval)
    ckpt_minutes: float = 30.0  # also checkpoint when this much wall time passed since the last one
    keep_checkpoints: int = 0  # also keep checkpoint_<step>.pt every ckpt_every steps (0 = only the latest)
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    threads: int = 0  # torch CPU threads (0 = torch default)
    logger: str = "tensorboard"  # tensorboard (writes <run>/tb/) | none; metrics.jsonl is always written
    sample_every: int = 0  # steps between EMA sample grids in the logger (fixed seeds, small T; 0 = off)
    # start the UNet from a pretrained diffusers UNet folder (dmz.finetune): tensors of matching name and shape are
    # copied, the rest stay fresh; the release's CelebA-HQ 256 starts from google/ddpm-ema-celebahq-256
    init_from: str | None = None
    finetune: str = "all"  # with init_from: all (released) | new (only the fresh parameters train: --finetune_attention)


@dataclass
class Config:
    preset: str = "digits"
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    SECTIONS: typing.ClassVar[tuple[str, ...]] = ("model", "diffusion", "data", "train")

    # -- serialisation ------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        """Strict loading: unknown keys are errors."""
        d = dict(d)
        unknown = set(d) - {"preset", *cls.SECTIONS}
        if unknown:
            raise ConfigError(f"unknown top-level config keys {sorted(unknown)}; valid: preset, {', '.join(cls.SECTIONS)}")
        cfg = cls(preset=d.get("preset", "custom"))
        for section in cls.SECTIONS:
            sub = getattr(cfg, section)
            for key, value in (d.get(section) or {}).items():
                if key not in _field_types(type(sub)):
                    raise ConfigError(f"unknown key {section}.{key}; valid: {', '.join(sorted(_field_types(type(sub))))}")
                setattr(sub, key, _coerce(value, _field_types(type(sub))[key], f"{section}.{key}"))
        return cfg

    @classmethod
    def load(cls, path: str | Path) -> "Config":
        """A ``config.json``; a corrupt or foreign file is a :class:`ConfigError` that names it and what to do."""
        path = Path(path)
        fix = (f"dmz.train writes it at the start of every run and checkpoint.pt holds the same config: "
               f"rewrite it with `python -m dmz.run restore-config {path.parent}`")
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path} is corrupt (not valid JSON: {e}); {fix}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{path} is corrupt (not UTF-8 text); {fix}") from None
        if not isinstance(d, dict):
            raise ConfigError(f"{path} is not a DMZ config (a JSON {type(d).__name__}, not an object); {fix}")
        try:
            return cls.from_dict(d)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from None

    def copy(self) -> "Config":
        return Config.from_dict(self.to_dict())

    # -- identity -----------------------------------------------------------------------------------------------
    def digest(self) -> str:
        """Hash of the resolved config (sorted JSON), less the fields that only say how to execute it and the
        fields added later that still hold their default (so adding a field keeps every existing run id)."""
        d = self.to_dict()
        for key in EXECUTION_FIELDS:
            section, name = key.split(".")
            d[section].pop(name, None)
        for key, default in LATER_FIELDS.items():
            section, name = key.split(".")
            if d[section].get(name) == default:
                d[section].pop(name)
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:10]

    def run_id(self) -> str:
        m = self.model
        latent = "ddpm" if m.prior == "none" else f"{m.prior}{m.latent_dim}-{m.conditioning.replace('+', '_')}"
        if m.z_tokens > 1:
            latent += f"-tok{m.z_tokens}"
        return f"{self.preset}-{latent}-s{self.train.seed}-{self.digest()}"


#: ``train.seeding`` values (dmz.seeding says what each means)
SEEDINGS = ("v1", "crn")
#: ``train.lr_decay`` values: the learning rate after warm-up (none: constant, as released)
LR_DECAYS = ("none", "linear", "cosine")


# fields that change how a run executes, not what it computes: left out of the run id
EXECUTION_FIELDS = ("train.device", "train.threads", "train.log_every", "train.ckpt_every", "train.ckpt_minutes",
                    "train.keep_checkpoints", "train.compile", "train.sampling_precision", "train.sampling_compile",
                    "train.cross_attention_shortcut", "train.logger", "train.sample_every", "data.num_workers",
                    "data.data_root", "data.download")


# fields added after run ids were first published, with their defaults: at the default they stay out of the digest
LATER_FIELDS = {"model.prior_confidence": 0.0, "model.prior_mmd": 0.0, "model.z_tokens": 1, "diffusion.sigma_small": False,
                "train.init_from": None, "train.finetune": "all",
                "train.seeding": "v1", "train.lr_decay": "none"}


class ConfigError(ValueError):
    """A bad preset, key or value; the message lists the valid choices."""


# ----------------------------------------------------------------------------------------------------------------
# --set key=value
# ----------------------------------------------------------------------------------------------------------------
def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _leaf_index() -> dict[str, list[str]]:
    index: dict[str, list[str]] = {}
    for section in Config.SECTIONS:
        sub_cls = type(getattr(Config(), section))
        for name in _field_types(sub_cls):
            index.setdefault(name, []).append(section)
    return index


def valid_keys() -> list[str]:
    return sorted(f"{s}.{n}" for n, secs in _leaf_index().items() for s in secs)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Turn ``value`` (a JSON value or a CLI string) into type ``tp``."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], key)
    if origin is tuple:
        if isinstance(value, str):
            value = [v for v in value.replace("(", "").replace(")", "").split(",") if v.strip()]
        return tuple(_coerce(v, args[0], key) for v in value)
    try:
        if tp is bool:
            if isinstance(value, bool):
                return value
            if str(value).lower() in ("1", "true", "yes", "on"):
                return True
            if str(value).lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if tp is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(float(value)) if isinstance(value, str) and "e" in value.lower() else int(value)
        if tp is float:
            return float(value)
        if tp is str:
            return str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"bad value {value!r} for {key}: expected {getattr(tp, '__name__', tp)}") from None
    return value


def apply_overrides(cfg: Config, overrides: list[str] | dict[str, Any]) -> Config:
    """Apply ``key=value`` overrides. Keys are ``section.name`` or a bare ``name`` that is unique across sections."""
    cfg = cfg.copy()
    items = overrides.items() if isinstance(overrides, dict) else [_split(o) for o in overrides]
    index = _leaf_index()
    for key, value in items:
        if "." in key:
            section, name = key.split(".", 1)
            if section not in Config.SECTIONS or name not in _field_types(type(getattr(cfg, section))):
                raise ConfigError(f"unknown config key {key!r}; valid keys: {', '.join(valid_keys())}")
        else:
            if key == "preset":
                raise ConfigError("use --preset to choose a preset, not --set preset=...")
            sections = index.get(key)
            if not sections:
                raise ConfigError(f"unknown config key {key!r}; valid keys: {', '.join(valid_keys())}")
            if len(sections) > 1:
                raise ConfigError(f"ambiguous key {key!r}: use one of {', '.join(s + '.' + key for s in sections)}")
            section, name = sections[0], key
        sub = getattr(cfg, section)
        setattr(sub, name, _coerce(value, _field_types(type(sub))[name], f"{section}.{name}"))
    validate(cfg)
    return cfg


def _split(item: str) -> tuple[str, str]:
    if "=" not in item:
        raise ConfigError(f"override {item!r} is not of the form key=value")
    key, value = item.split("=", 1)
    return key.strip(), value.strip()


# ----------------------------------------------------------------------------------------------------------------
# validation (names are checked against the live registries so a new prior needs no edit here)
# ----------------------------------------------------------------------------------------------------------------
CHOICES: dict[str, tuple[str, ...]] = {
    "model.estimator": ("relaxed", "straight_through"),
    "model.time_scale_shift": ("scale_shift", "default"),
    "model.baseline_attention": ("plain", "dummy_token"),
    "diffusion.noise_schedule": ("cosine", "linear"),
    "diffusion.loss": ("hybrid", "mse"),
    "diffusion.schedule_sampler": ("uniform", "loss-second-moment"),
    "train.precision": ("fp32", "fp16", "bf16", "auto"),
    "train.sampling_precision": ("fp32", "bf16", "auto"),
    "train.logger": ("tensorboard", "none"),
    "train.finetune": ("all", "new"),
    "train.seeding": SEEDINGS,
    "train.lr_decay": LR_DECAYS,
}


def validate(cfg: Config) -> Config:
    from dmz.conditioning import CONDITIONING
    from dmz.data import dataset_names
    from dmz.priors import PRIORS

    def check(key: str, value: str, valid) -> None:
        if value not in valid:
            raise ConfigError(f"unknown {key} {value!r}; valid: {', '.join(sorted(valid))}")

    check("prior", cfg.model.prior, PRIORS)
    for method in cfg.model.conditioning.split("+"):
        check("conditioning", method, CONDITIONING)
    check("dataset", cfg.data.dataset, dataset_names())
    for key, valid in CHOICES.items():
        section, name = key.split(".")
        check(key, getattr(getattr(cfg, section), name), valid)
    m = cfg.model
    if m.latent_dim < 1:
        raise ConfigError("model.latent_dim must be >= 1")
    bad = [lvl for lvl in m.attention_levels if not 0 <= lvl < len(m.channel_mult)]
    if bad:
        raise ConfigError(f"attention_levels {bad} outside 0..{len(m.channel_mult) - 1} (one per channel_mult entry)")
    if m.cross_attention_levels is not None and not set(m.cross_attention_levels) <= set(m.attention_levels):
        raise ConfigError("cross_attention_levels must be a subset of attention_levels")
    if m.z_tokens < 1:
        raise ConfigError(f"model.z_tokens must be >= 1 (1 = z as the released single token), got {m.z_tokens}")
    if m.z_tokens > 1:
        if "cross_attention" not in m.conditioning.split("+") or m.prior == "none":
            raise ConfigError(f"model.z_tokens={m.z_tokens} needs conditioning with cross_attention and a latent "
                              f"(got conditioning={m.conditioning}, prior={m.prior}); use z_tokens=1")
        if m.latent_dim % m.z_tokens:
            raise ConfigError(f"model.z_tokens={m.z_tokens} must divide model.latent_dim={m.latent_dim} "
                              "(each token carries latent_dim / z_tokens latent dimensions)")
    for name in ("prior_matching", "prior_confidence", "prior_mmd", "kl_weight"):
        if getattr(m, name) < 0:
            raise ConfigError(f"model.{name} must be >= 0, got {getattr(m, name)}")
    if cfg.train.batch_size < 1 or cfg.train.steps < 0:
        raise ConfigError("train.batch_size must be >= 1 and train.steps >= 0")
    if cfg.train.sample_every < 0:
        raise ConfigError(f"train.sample_every must be >= 0 (steps between sample grids; 0 = off), "
                          f"got {cfg.train.sample_every}")
    if cfg.train.finetune == "new" and not cfg.train.init_from:
        raise ConfigError("train.finetune=new trains only what train.init_from left fresh: give init_from=DIR too "
                          "(or finetune=all)")
    if cfg.diffusion.loss == "hybrid" and not m.learn_sigma:
        raise ConfigError("diffusion.loss=hybrid needs model.learn_sigma=true (or use diffusion.loss=mse)")
    return cfg


# ----------------------------------------------------------------------------------------------------------------
# presets: functions, so each returns a fresh object
# ----------------------------------------------------------------------------------------------------------------
def preset_cifar10() -> Config:
    """CIFAR-10 32x32 as released: UNet 68.58 M (DMZ) / 50.84 M (plain-attention DDPM), encoder 0.42 M."""
    return Config(
        preset="cifar10",
        model=ModelConfig(prior="bernoulli", latent_dim=16, base_channels=128, channel_mult=(1, 2, 2, 2),
                          layers_per_block=3, attention_levels=(1, 2), attention_head_dim=32, dropout=0.3),
        diffusion=DiffusionConfig(noise_schedule="cosine", input_perturbation=0.15),
        data=DataConfig(dataset="cifar10"),
        train=TrainConfig(batch_size=128, lr=1e-4, ema_rate=0.9999, precision="fp16", sample_every=10_000),
    )


def preset_celeba64() -> Config:
    """CelebA 64x64 as released: UNet 409.08 M, encoder 1.83 M, |z| = 64, global batch 256 (2 x 128)."""
    return Config(
        preset="celeba64",
        model=ModelConfig(prior="bernoulli", latent_dim=64, base_channels=192, channel_mult=(1, 2, 3, 4),
                          layers_per_block=3, attention_levels=(1, 2, 3), attention_head_dim=64, dropout=0.1),
        diffusion=DiffusionConfig(noise_schedule="cosine", input_perturbation=0.1),
        data=DataConfig(dataset="celeba64"),
        train=TrainConfig(batch_size=256, lr=1e-4, ema_rate=0.9999, precision="fp16", sample_every=10_000),
    )


def preset_edges64() -> Config:
    """Edges->Handbags 64x64 as released (PAPER.md 1.6, 1.10): the "lighter" model with cross-attention to z only at
    level 2 (16x16) and the mid block, |z| = 256, 1-channel edges; UNet 328.0 M, encoder 2.62 M. The handbag side is
    the same preset with ``--set dataset=edges2handbags`` (3 channels); ``dataset=edges2shoes(_edges)`` for shoes."""
    return Config(
        preset="edges64",
        model=ModelConfig(prior="bernoulli", latent_dim=256, base_channels=192, channel_mult=(1, 2, 3, 4),
                          layers_per_block=3, attention_levels=(1, 2, 3), cross_attention_levels=(2,),
                          attention_head_dim=64, dropout=0.1),
        diffusion=DiffusionConfig(noise_schedule="cosine", input_perturbation=0.1),
        data=DataConfig(dataset="edges2handbags_edges"),
        train=TrainConfig(batch_size=256, lr=1e-4, ema_rate=0.9999, precision="fp16"),
    )


def preset_celebahq256() -> Config:
    """CelebA-HQ 256x256 fine-tuned from a pretrained DDPM as released (PAPER.md 1.6): the UNet of
    ``google/ddpm-ema-celebahq-256`` (base 128, mult 1,1,2,2,4,4, 2 res-blocks, attention at 16x16, additive time
    conditioning, linear schedule, fixed-small variance) with cross-attention to z (|z| = 256) at 16x16 and the mid
    block, ``attention_head_dim`` 512 (512 heads of dimension 1 there): UNet 142.03 M. Give the checkpoint folder
    with ``--set init_from=DIR``; the release trained 40K iterations, global batch 256."""
    return Config(
        preset="celebahq256",
        model=ModelConfig(prior="bernoulli", latent_dim=256, base_channels=128, channel_mult=(1, 1, 2, 2, 4, 4),
                          layers_per_block=2, attention_levels=(4,), attention_head_dim=512, dropout=0.1,
                          time_scale_shift="default", learn_sigma=False),
        diffusion=DiffusionConfig(noise_schedule="linear", input_perturbation=0.1, loss="mse", sigma_small=True),
        data=DataConfig(dataset="celebahq256"),
        train=TrainConfig(batch_size=256, lr=1e-4, ema_rate=0.9999, precision="fp16", steps=40_000,
                          sample_every=10_000),
    )


def preset_digits() -> Config:
    """The CPU default: DMZ (Bernoulli latents, cross-attention) on 16x16 digits, minutes on 2 cores."""
    return Config(
        preset="digits",
        model=ModelConfig(prior="bernoulli", latent_dim=16, base_channels=32, channel_mult=(1, 2),
                          layers_per_block=1, attention_levels=(1,), attention_head_dim=4, dropout=0.0),
        diffusion=DiffusionConfig(noise_schedule="cosine", input_perturbation=0.1),
        data=DataConfig(dataset="digits", flip=False, num_workers=0),
        train=TrainConfig(batch_size=64, lr=1e-3, ema_rate=0.999, ema_warmup=True, steps=1800, precision="auto",
                          log_every=50, ckpt_every=500, ckpt_minutes=5.0, warmup_steps=100, grad_clip=1.0,
                          sample_every=300,
                          # measured (benchmarks/results/speed_compare_digits_cpu_*): a compiled denoiser samples
                          # 1.28x faster on 1 CPU thread and pays ~70 s once per process (cold cache); compiling the
                          # training step gained 1.10x for ~90 s, bf16 lost on this CPU (0.6-0.8x): both stay off
                          sampling_compile=True),
    )


PRESETS: dict[str, Callable[[], Config]] = {
    "cifar10": preset_cifar10,
    "celeba64": preset_celeba64,
    "digits": preset_digits,
    "celebahq256": preset_celebahq256,
    "edges64": preset_edges64,
}


def get_preset(name: str) -> Config:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; valid presets: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]()


def resolve(preset: str, overrides: list[str] | dict[str, Any] | None = None) -> Config:
    """Preset + overrides, validated."""
    return apply_overrides(get_preset(preset), overrides or [])
