"""The I(z; x_t) estimators' settings, torch-free: the release's t grid, the estimator specs (``mine``,
``infonce:epochs=100,lr=0.001``) and the default per dataset. :mod:`evaluation.mi` runs them; the grids read the
rows they name from here without importing torch."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

#: the release's t grid: 0, 0.1, ..., 0.9, then 0.91, ..., 1.0
RELEASE_T = tuple([round(0.1 * i, 2) for i in range(10)] + [round(0.9 + 0.01 * i, 2) for i in range(1, 11)])
ESTIMATORS = ("mine", "infonce")


class MIError(ValueError):
    """Bad estimator settings: one line that says what to give instead."""


@dataclass(frozen=True)
class MIConfig:
    """An estimator and its settings (the release's by default: MINE, 10 epochs, lr 1e-4, batch 64)."""

    estimator: str = "mine"
    epochs: int = 10
    lr: float = 1e-4
    batch_size: int = 64
    hidden: int = 256
    ema: float = 0.01  # MINE's moving-average rate for E[e^T] in the gradient
    heldout: float = 0.2  # share of the pairs kept out of training, on which the bound is reported
    val: float = 0.2  # share of the pairs that picks the epoch (early stopping: the critic of the best epoch)
    seed: int = 0

    def __post_init__(self):
        if self.estimator not in ESTIMATORS:
            raise MIError(f"unknown MI estimator {self.estimator!r}; valid: {', '.join(ESTIMATORS)}")
        if self.epochs < 1 or self.batch_size < 2 or self.hidden < 1 or not 0 < self.lr:
            raise MIError(f"MI estimator needs epochs >= 1, batch_size >= 2, hidden >= 1 and lr > 0 (got epochs="
                          f"{self.epochs}, batch_size={self.batch_size}, hidden={self.hidden}, lr={self.lr})")
        if not 0 < self.ema <= 1 or not 0 < self.heldout or not 0 <= self.val or self.heldout + self.val >= 1:
            raise MIError(f"MI estimator needs 0 < ema <= 1, heldout > 0, val >= 0 and heldout + val < 1 (got "
                          f"ema={self.ema}, heldout={self.heldout}, val={self.val})")

    def settings(self) -> dict[str, Any]:
        return asdict(self)


#: the estimator a dataset gets when the caller names none. The paper datasets get the release's settings. Digits has
#: 1,437 training images, so the release's 10 epochs are ~180 Adam steps: MINE then reads 2.7 of 4 known bits
#: (``benchmarks/mi_bias.py``); 100 epochs at lr 1e-3 read 3.8 (a named departure, digits only).
DATASET_SPECS = {"digits": "mine:epochs=100,lr=0.001"}
RELEASE_SPEC = "mine"


def default_spec(dataset: str) -> str:
    return DATASET_SPECS.get(dataset, RELEASE_SPEC)


def parse_spec(spec: str) -> MIConfig:
    """``"mine"`` or ``"infonce:epochs=100,lr=0.001"`` -> :class:`MIConfig` (the z-samplers' option syntax)."""
    name, _, opts = str(spec).partition(":")
    fields = {f: type(v) for f, v in MIConfig().settings().items() if f != "estimator"}
    kw: dict[str, Any] = {"estimator": name.strip()}
    for item in filter(None, (o.strip() for o in opts.split(","))):
        key, eq, val = item.partition("=")
        if not eq or key not in fields:
            raise MIError(f"bad MI estimator option {item!r} in {spec!r}; valid: {', '.join(fields)} "
                          f"(e.g. mine:epochs=100,lr=0.001)")
        try:
            kw[key] = fields[key](val)
        except ValueError:
            raise MIError(f"MI estimator option {key}={val!r} must be "
                          f"{'an integer' if fields[key] is int else 'a number'}") from None
    return MIConfig(**kw)


def canonical_spec(cfg: MIConfig) -> str:
    """The spec that names a row: the estimator and every setting that differs from the defaults."""
    base = MIConfig(estimator=cfg.estimator).settings()
    diff = [f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in cfg.settings().items()
            if k != "estimator" and v != base[k]]
    return cfg.estimator + (":" + ",".join(diff) if diff else "")


def check_noise_levels(ts) -> tuple[float, ...]:
    """The noise levels t as floats, each in [0, 1] (``MIError`` names the first that is not)."""
    out = tuple(float(t) for t in ts)
    for t in out:
        if not 0 <= t <= 1:
            raise MIError(f"MI noise levels t must be in [0, 1], got {t:g}")
    return out
