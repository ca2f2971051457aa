"""Conditioning methods, by name. One file each; adding one = a new file + one import line here."""

from .base import CONDITIONING, ConditioningMethod, register_conditioning
from . import add, concat, cross_attention  # noqa: E401,F401  (registration)


def build_conditioning(spec: str) -> list[ConditioningMethod]:
    """``spec`` is a '+'-joined list, e.g. ``cross_attention+add`` (combinations the release allows)."""
    names = [s for s in spec.split("+") if s]
    unknown = [n for n in names if n not in CONDITIONING]
    if unknown or not names:
        raise ValueError(f"unknown conditioning {spec!r}; valid: {', '.join(sorted(CONDITIONING))} "
                         "(combine with '+', e.g. cross_attention+add)")
    methods = [CONDITIONING[n]() for n in dict.fromkeys(names)]
    if sum(m.uses_time_embedding for m in methods) > 1:
        raise ValueError(f"conditioning {spec!r}: {' and '.join(m.name for m in methods if m.uses_time_embedding)} "
                         "both use the time-embedding path; choose one of them")
    return methods


__all__ = ["CONDITIONING", "ConditioningMethod", "register_conditioning", "build_conditioning"]
