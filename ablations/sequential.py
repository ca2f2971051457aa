"""Train until decided: ``python ablations/run_grid.py --grid G --until-decided [--max-trainings K] [--wave W]``.

The cells that a grid's claims compare are trained in **waves** of training seeds under common random numbers
(``seeding=crn``, so the arms of one seed pair): wave 1 trains every cell with seeds ``0 .. W-1``, and after each wave
the grid's claims are judged again on every crn training on disk. A counted part stops when it is **decided** (holds,
does not hold, or no practical difference) or **futile**; the next wave trains only the cells of the parts still
open, with the next W seeds, until every part has stopped or the parts' trainings reach ``--max-trainings``.

The looks do not inflate false decisions: each look is a look of a group-sequential design with
``--max-trainings`` as its full information (:class:`Design`): a part with n trainings a side is decided at the
nominal level of the Lan-DeMets O'Brien-Fleming-type alpha-spending design for the looks taken so far, calibrated
to the t-test (:func:`ablations.inference.t_look_alphas`, fractions n / max), never at the fixed-n alpha. The design (the looks taken,
the maximum, alpha) is written to ``results/<grid>/<label>/sequential.json`` beside the tables, so the paper report
judges those rows at the same levels.

A part is **futile** (stopped: more trainings would very likely not decide it) when, after at least two looks, its
power at ``--max-trainings`` a side at the final look's level, with the difference and spread observed now, is below
:data:`ablations.inference.FUTILITY_POWER` for the difference test and, where it has a margin, for the equivalence
test too. Futility never decides a part: it reads "not resolved" with the reason. Stopping for futility does not
raise the false-decision rate (it only ends looks early).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from ablations.inference import ALPHA, FUTILITY_POWER, equivalence_power, power, spending_bounds, t_look_alphas

DESIGN_FILE = "sequential.json"
DEFAULT_WAVE = 2
DEFAULT_MAX_TRAININGS = 8


@dataclass
class Design:
    """A group-sequential design over trainings a side: at most ``max_trainings``, looks after each wave."""

    max_trainings: int = DEFAULT_MAX_TRAININGS
    wave: int = DEFAULT_WAVE
    alpha: float = ALPHA
    looks: list[int] = field(default_factory=list)  # trainings a side at each look taken so far
    spending: str = "Lan-DeMets O'Brien-Fleming type (gsDesign sfLDOF), two-sided"
    log: list[dict[str, Any]] = field(default_factory=list)  # one entry per look: what was decided

    def planned(self) -> list[int]:
        """Trainings a side at each planned look: W, 2W, ... up to the maximum (the maximum always a look)."""
        out = list(range(self.wave, self.max_trainings, self.wave))
        return [*out, self.max_trainings]

    def alpha_at(self, n: int, looks: list[int] | None = None, *, paired: bool = True) -> float:
        """The nominal two-sided level a t-test (paired or Welch) at ``n`` trainings a side is decided at, after
        the looks taken before it (``looks``: those looks instead of the ones taken, e.g. the planned ones):
        :func:`ablations.inference.t_look_alphas` of the looks up to this one, fractions ``n_k / max_trainings``."""
        if n < 2:
            return self.alpha
        looks = sorted({k for k in (self.looks if looks is None else looks) if 2 <= k < n} | {n})
        return t_look_alphas(looks, max(self.max_trainings, n), self.alpha, paired=paired)[-1]

    def bounds_text(self) -> str:
        plan = self.planned()
        z = spending_bounds([k / self.max_trainings for k in plan], self.alpha)
        t = t_look_alphas([k for k in plan if k >= 2], self.max_trainings, self.alpha, paired=True)
        t = [None] * (len(plan) - len(t)) + t
        return ", ".join(f"n={k}: paired t p < {tl:.2g}" if tl is not None else f"n={k}: -" for k, tl in
                         zip(plan, t)) + " (the z-scale bounds: " + ", ".join(f"{c:.2f}" for c in z) + ")"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Design":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in d.items() if k in known})


def design_path(results_dir: Path, grid: str, label: str) -> Path:
    return Path(results_dir) / grid / label / DESIGN_FILE


def load_design(results_dir: Path, grid: str, label: str) -> Design | None:
    path = design_path(results_dir, grid, label)
    if not path.is_file():
        return None
    return Design.from_dict(json.loads(path.read_text()))


def save_design(design: Design, results_dir: Path, grid: str, label: str) -> Path:
    from dmz.runio import atomic_write_bytes

    path = design_path(results_dir, grid, label)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, design.to_json().encode())
    return path


# ----------------------------------------------------------------------------------------------------------------
# the state of each part after a look
# ----------------------------------------------------------------------------------------------------------------
DECIDED, FUTILE, OPEN, NO_ROWS = "decided", "futile", "open", "no rows"


def futile(part, design: Design) -> bool:
    """Is ``part`` (an :class:`ablations.claims.Part`, judged) futile under ``design``? See the module docstring."""
    t = part.test
    if t.diff is None or t.p is None or len(design.looks) < 2 or part.a is None or part.b is None:
        return False
    # the test's own spread: paired, the sd of the per-seed differences; Welch's sd_diff is sqrt(var_a + var_b), so
    # the per-arm sd power() takes is sd_diff / sqrt 2
    paired = t.test == "paired t"
    sd = t.sd_diff if paired or t.sd_diff is None else t.sd_diff / math.sqrt(2)
    if not sd or not math.isfinite(sd):
        return False
    final = design.alpha_at(design.max_trainings, design.looks + design.planned(), paired=paired)
    n = design.max_trainings
    if power(t.diff, sd, n, paired=paired, alpha=final) >= FUTILITY_POWER:
        return False
    return t.margin is None or equivalence_power(t.diff, sd, n, t.margin, paired=paired,
                                                 alpha=final) < FUTILITY_POWER


def part_states(claims, design: Design) -> list[tuple[Any, Any, str]]:
    """(claim, part, state) for every counted part of the claims (state: decided / futile / open / no rows: the
    cells trained have no row for it, so more waves cannot decide it)."""
    from ablations.verdicts import FAILS, HOLDS, NO_DATA, NO_DIFF

    out = []
    for c in claims:
        for p in c.parts:
            if not p.counted:
                continue
            n = min(p.a.n, p.b.n) if p.a and p.b else 0
            if p.verdict == NO_DATA:  # this budget's cells do not score it (e.g. 4b needs --budget full)
                state = NO_ROWS
            elif p.verdict in (HOLDS, FAILS, NO_DIFF):
                state = DECIDED
            elif n >= design.max_trainings or futile(p, design):
                state = FUTILE
            else:
                state = OPEN
            out.append((c, p, state))
    return out


def describe(states, design: Design) -> list[str]:
    """One line per counted part: its verdict, the test, the trainings and the level it was judged at."""
    lines = []
    for c, p, state in states:
        n = f"{p.a.n} vs {p.b.n}" if p.a and p.b else "no rows"
        effect = p.effect(3 if (p.a or p.b) and (p.a or p.b).metric != "fid" else 2) if p.a and p.b else "–"
        why = {FUTILE: "futile: at the most trainings allowed it would very likely stay unresolved" if (
            p.a and p.b and min(p.a.n, p.b.n) < design.max_trainings) else "at the most trainings allowed",
               DECIDED: "decided", OPEN: "open", NO_ROWS: "this budget's cells have no rows for it"}[state]
        lines.append(f"  {p.pid} [{c.cid}] {p.verdict} ({why}); {p.test_text()}, trainings {n}, {effect}; "
                     f"level {p.alpha:.4g}; {p.why}")
    return lines


def open_cells(states) -> list[str]:
    """The cells of the parts still open (both sides' variants), in order."""
    out: dict[str, None] = {}
    for _, p, state in states:
        if state == OPEN:
            for n in (p.a, p.b):
                if n is not None and n.variant:
                    out[n.variant] = None
    return list(out)


def grid_claims(grid: str, preset: str) -> list[Callable]:
    """The claim functions of :data:`ablations.claims.CLAIMS` that a grid's rows decide (information left out)."""
    from ablations.claims import CLAIMS, Ctx

    out = []
    for f in CLAIMS:
        c = f(Ctx(preset, {}))
        if c.grid == grid and c.kind != "information":
            out.append(f)
    return out


def judge_grid(grid: str, preset: str, label: str, results_dir: Path, design: Design):
    """The grid's claims judged on the crn rows under ``label`` alone, at ``design``'s levels."""
    from ablations.claims import Ctx, build_claims
    from ablations.rows import load_all

    data = load_all(preset, results_dir).get(grid, {})
    ctx = Ctx(preset, {grid: {label: data[label]}} if label in data else {}, results_dir=Path(results_dir),
              designs={grid: design})
    return build_claims(ctx, grid_claims(grid, preset))


def seeds_on_disk(results_dir: Path, grid: str, label: str) -> list[int]:
    """The training seeds with a results.csv under ``label`` (``<label>/`` is seed 0, ``<label>-seed<k>/`` seed k)."""
    from ablations.collect import split_seed_label

    root = Path(results_dir) / grid
    out = []
    for folder in [root / label, *sorted(root.glob(f"{label}-seed*"))]:
        base, k = split_seed_label(folder.name)
        if base == label and (folder / "results.csv").is_file():
            out.append(k or 0)
    return sorted(set(out))
