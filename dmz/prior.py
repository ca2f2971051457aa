"""Deprecated alias of :mod:`dmz.zsamplers.pixelsnail` (PixelSNAIL fitting, the ``pixelsnail`` z-sampler, code
diagnostics), kept so ``python -m dmz.prior fit|diagnose`` and ``from dmz.prior import fit_prior`` (e.g.
``ablations/run_grid.py``) keep working. New code: ``from dmz.zsamplers.pixelsnail import ...`` and
``python -m dmz.zsamplers fit|diagnose``."""

from dmz.zsamplers.pixelsnail import *  # noqa: F401,F403
from dmz.zsamplers.pixelsnail import __all__, main  # noqa: F401

if __name__ == "__main__":
    import sys

    print("note: `python -m dmz.prior` is now `python -m dmz.zsamplers`", file=sys.stderr)
    raise SystemExit(main())
