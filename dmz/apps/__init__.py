"""Applications of the binary latent (PAPER.md 1.10): one file each, one CLI, ``python -m dmz.apps``.

* :mod:`dmz.apps.interpolate` -- between two test images' codes (bit-flip orders, relaxed codes, from a partly
  noised x_t);
* :mod:`dmz.apps.manipulate` -- move codes across a linear attribute classifier's boundary, decode from 0.9T;
* :mod:`dmz.apps.translate` -- the bit-mapping MLP from one model's codes to another's (paired datasets);
* :mod:`dmz.apps.common` -- run loading, decoding from x_T or x_t, feature space, PNGs and ``scores.json``;
* :mod:`dmz.apps.summary` -- the Markdown summary of the three ``scores.json`` (``ablations/run_apps.py``).

Nothing here is imported by the trainer; this package imports nothing heavy at import time.
"""
