import os

import pytest
import torch

# two cores are shared by everything on a CI machine: keep each test on one thread
torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


def tiny_overrides(**extra):
    """A digits model small enough to train a few steps in well under a second."""
    base = {"base_channels": 8, "latent_dim": 4, "attention_head_dim": 2, "batch_size": 8, "steps": 3,
            "log_every": 1, "ckpt_every": 1000, "warmup_steps": 0, "logger": "none",
            "sampling_compile": False}  # compiling even a tiny UNet costs ~1 min per test process
    base.update(extra)
    return base


@pytest.fixture
def tiny():
    return tiny_overrides
