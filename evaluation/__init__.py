"""Evaluation: feature extractors, FID (through torch-fidelity), linear probes, reconstruction, CLI.

Submodules are imported explicitly (``from evaluation.fid import reference_stats``); this package
imports nothing eagerly so that light modules stay light (scikit-learn / torch-fidelity are only
loaded by the modules that need them).
"""
