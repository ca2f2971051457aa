"""``python -m dmz.zsamplers fit|diagnose --run DIR``: fit the learned ``pixelsnail`` z-sampler to a run's codes, or
diagnose its code distribution (see :mod:`dmz.zsamplers.pixelsnail`)."""

from dmz.zsamplers.pixelsnail import main

if __name__ == "__main__":
    raise SystemExit(main())
