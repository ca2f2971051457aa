"""``--help`` of every command line answers without importing torch, diffusers or torch-fidelity (issue 9: importing
them took 6.6 s before the first line of help). Not timed: the test checks what was imported, which is what costs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
HEAVY = ("torch", "diffusers", "torch_fidelity", "tensorboard", "sklearn")

PROBE = """
import atexit, runpy, sys
heavy = {heavy!r}
atexit.register(lambda: print("HEAVY", sorted(m for m in heavy if m in sys.modules)))
sys.argv = ["prog", "--help"]
{run}
"""


@pytest.mark.parametrize("target", ["module:dmz.train", "module:dmz.sample", "module:evaluation.run",
                                    "path:ablations/run_grid.py", "module:dmz.apps", "path:ablations/report.py"])
def test_help_imports_no_heavy_library(target):
    kind, name = target.split(":")
    run = (f"runpy.run_module({name!r}, run_name='__main__')" if kind == "module" else
           f"sys.path.insert(0, {str(REPO)!r}); runpy.run_path({str(REPO / name)!r}, run_name='__main__')")
    r = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY, run=run)], cwd=REPO, capture_output=True,
                       text=True, timeout=120)
    assert "usage:" in r.stdout, r.stderr[-2000:]
    assert "HEAVY []" in r.stdout, r.stdout.splitlines()[-1]


def test_cli_modules_hold_no_library_names():
    """One door per concept: the library is dmz.trainer / dmz.sampling; the command lines do not forward to it."""
    import dmz.sample
    import dmz.train

    assert not any(hasattr(dmz.train, n) for n in ("Trainer", "train", "DiffusionLoss"))
    assert not any(hasattr(dmz.sample, n) for n in ("generate", "MicroBatched", "save_samples"))
