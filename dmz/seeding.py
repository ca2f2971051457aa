"""Training seeds as common random numbers (``train.seeding``).

``v1`` (every run before this field existed): the global torch RNG is seeded with the training seed and the model is
built, so each module's initial weights depend on every module built before it; each step's batch flips, timesteps,
noise, input perturbation and prior noise come, in that order, from one generator seeded by ``(seed, step)``.

``crn`` (common random numbers, Bouthillier et al. 2021): every random draw of a training comes from its own
generator seeded by ``derive(seed, purpose, ...)``: the initial weights of each module from ``("init", its
qualified name)``, the data order from ``("data", epoch)``, and per step the flips, the diffusion timesteps, the
noise, the input perturbation, the latent's (encoder's) noise and dropout each from ``(purpose, step)``. Two arms
trained with one seed (DMZ and DDPM, or two conditionings) therefore share every draw they have in common: a module
one arm adds does not move another module's initial weights, and the noise of step s is the same tensor in both. A
module is re-initialised by its own ``reset_parameters`` (the init torch and diffusers use when they build it);
parameters a builder set to a constant after construction (zeros, ones) keep that constant.
"""

from __future__ import annotations

import hashlib

import torch
from torch import nn


from dmz.config import SEEDINGS  # noqa: F401  (re-exported: the values of train.seeding)


def derive(seed: int, *purpose: object) -> int:
    """A 63-bit seed for one purpose of one training seed (sha256 of the text ``seed/purpose/...``): the same on every
    machine and Python, independent across purposes."""
    text = "/".join(str(x) for x in (int(seed), *purpose))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def generator(seed: int, *purpose: object) -> torch.Generator:
    """A CPU generator seeded by :func:`derive`."""
    return torch.Generator().manual_seed(derive(seed, *purpose))


def _constant(p: torch.Tensor) -> float | None:
    """The value every element of ``p`` holds, if there is one (a builder's zeros or ones)."""
    if p.numel() == 0:
        return None
    first = p.reshape(-1)[0]
    return float(first) if bool((p == first).all()) else None


@torch.no_grad()
def init_by_name(model: nn.Module, seed: int) -> list[str]:
    """Re-draw the initial weights of every module of ``model`` from its own generator, ``("init", qualified name)``
    of ``seed``: each module with parameters of its own is reset by its ``reset_parameters`` with the global torch
    RNG seeded for it (the caller's RNG state is restored after); a parameter that held one constant before keeps it.
    Returns the names of the modules whose parameters no ``reset_parameters`` covers (they keep the builder's draw,
    which then depends on the construction order; empty for every model the presets build)."""
    uncovered = []
    with torch.random.fork_rng(devices=[]):
        for name, module in model.named_modules():
            own = dict(module.named_parameters(recurse=False))
            if not own:
                continue
            reset = getattr(module, "reset_parameters", None)
            if not callable(reset):
                uncovered.append(name)
                continue
            constants = {k: _constant(p) for k, p in own.items()}
            torch.manual_seed(derive(seed, "init", name))
            reset()
            for k, p in module.named_parameters(recurse=False):
                if constants.get(k) is not None:
                    p.fill_(constants[k])
    return uncovered
