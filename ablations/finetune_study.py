"""DMZ fine-tuned from a pretrained DDPM against DMZ from scratch: the release's CelebA-HQ 256 procedure end to end.

    python ablations/finetune_study.py                     # digits, training seed 0, about half an hour on one core
    python ablations/finetune_study.py --seed 1 --finetune new

Steps (each skipped when its output is there; a killed run resumes):
 1. train ``main``'s ``ddpm`` cell (the grid's config and budget) with training seed k;
 2. write its EMA UNet as a diffusers folder (``python -m dmz.finetune export``);
 3. train ``main``'s ``dmz`` cell from it (``--set init_from=<that folder> finetune=<all|new>``), same steps;
 4. score the fine-tuned DMZ's FID at T=10 and 100 as ``main`` scores it (N=300 x 3 sampling seeds, pinned extractor).

Rows: ``results/finetune/<preset>[-seed<k>]/results.csv``; ``results/finetune/<preset>/table.md`` pools every
training seed's rows and sets them beside ``main``'s checked-in DMZ from scratch and DDPM (mean ± sd over trainings,
n), with the report's rule on fine-tuned vs from scratch (not resolved with fewer than 2 trainings a side) and the
95% prediction interval of one new from-scratch training. ``--table-only`` rebuilds the table from the rows.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run by path: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pandas as pd

from ablations.collect import collect, save
from ablations.grids import EvalSpec, cell_dir, expand, results_label
from ablations.reproduce import prediction_interval, trainings
from ablations.rows import _best, select
from ablations.tables import fmt, to_markdown
from ablations.verdicts import Part, as_num
from dmz.runio import REPO, repo_relative

GRID = "finetune"
STEPS = (10, 100)


def cells(preset: str, seed: int, finetune: str, runs_root: Path, sets: dict | None = None,
          num_samples: int | None = None, eval_seeds: int | None = None):
    sets = {**(sets or {}), "seed": seed}
    ddpm = expand("main", preset, sets, only=["ddpm"])[0]
    ddpm = dataclasses.replace(ddpm, grid=GRID, evals=())
    source = cell_dir(ddpm, runs_root) / "diffusers"
    dmz = expand("main", preset, {**sets, "init_from": repo_relative(source), "finetune": finetune},
                 only=["dmz"])[0]
    fid = next(e for e in dmz.evals if "fid" in e.metrics)
    dmz = dataclasses.replace(dmz, grid=GRID, name=f"dmz-finetuned-{finetune}",
                              evals=(EvalSpec(("fid",), STEPS, ("prior",), num_samples or fid.num_samples,
                                               eval_seeds or fid.seeds),))
    return ddpm, source, dmz


def comparison(preset: str, variant: str, results_dir: Path | None = None) -> pd.DataFrame:
    """Each T: the fine-tuned DMZ over its trainings (every ``results/finetune/<preset>[-seed<k>]/``), main's DMZ
    from scratch and DDPM over theirs; fine-tuned vs from scratch by the report's rule (Welch over trainings, two
    sided on log FID, the claimed direction "fine-tuned lower"; fewer than 2 trainings a side: not resolved), and where the
    fine-tuned mean falls against the 95% prediction interval of one new from-scratch training."""
    ours = trainings(GRID, preset, results_dir)
    ref = trainings("main", preset, results_dir)
    rows = []

    def pick(df, v, T):
        return None if df is None else _best(select(df, variant=v, metric="fid", T=T, sampler="prior"))

    for T in STEPS:
        ft = as_num(pick(ours, variant, T), f"DMZ fine-tuned, T={T}")
        dmz = as_num(pick(ref, "dmz", T), f"DMZ from scratch, T={T}")
        ddpm = as_num(pick(ref, "ddpm", T), f"DDPM, T={T}")
        cell = lambda n: "–" if n is None else fmt(n.value, n.sd if n.n > 1 else None, 2) + f" (n={n.n})"  # noqa: E731
        row = {"T": T, "DMZ fine-tuned from the DDPM": cell(ft), "DMZ from scratch (main)": cell(dmz),
               "DDPM (main)": cell(ddpm)}
        part = Part(f"ft@T={T}", "fine-tuned FID < from scratch", ft, dmz)  # the report's rule, log FID
        verdict, test = part.verdict, part.test
        row["fine-tuned / scratch [95% CI]"] = "–" if test.diff is None else part.effect(2).replace("a/b ", "")
        row["verdict (fine-tuned lower)"] = f"{verdict}" + (f" ({part.test_text()}, p {test.p:.3g})"
                                                            if test.p is not None else "")
        pi = None if dmz is None or dmz.n < 2 else prediction_interval(dmz.value, dmz.sd, dmz.n,
                                                                       values=list(dmz.trainings), log=True)
        row["95% PI of a new from-scratch training"] = "–" if pi is None else f"[{pi[0]:.2f}, {pi[1]:.2f}]"
        row["fine-tuned mean is"] = "–" if pi is None or ft is None else (
            "below" if ft.value < pi[0] else "above" if ft.value > pi[1] else "inside")
        rows.append(row)
    return pd.DataFrame(rows)


def write_table(preset: str, variant: str, finetune: str, steps: int, results_dir: Path | None = None) -> Path:
    table = comparison(preset, variant, results_dir)
    md = (f"# DMZ fine-tuned from a pretrained DDPM vs from scratch ({preset}, finetune={finetune})\n\n"
          f"`python ablations/finetune_study.py --preset {preset} --seed K --finetune {finetune}` per training seed "
          f"K: the DDPM and the DMZ each train {steps:,} steps (main's budget); FID in the pinned feature space, N and "
          "sampling seeds as main. Every column is the mean ± sd over trainings (n). The verdict is the report's "
          "rule (Welch's t-test over trainings on log FID, so the effect is a ratio, two-sided, α = 0.05; inside "
          "the FID margin a/b in [0.9, 1.1] by TOST: no practical difference; fewer than 2 trainings a side: not "
          "resolved); the last columns place the fine-tuned mean against one new from-scratch training's 95% "
          "prediction interval (on log FID).\n\n" + to_markdown(table) + "\n")
    out = Path(results_dir or REPO / "results") / GRID / preset / "table.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(md)
    print(md)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="digits")
    p.add_argument("--seed", type=int, default=0, help="training seed of both trainings")
    p.add_argument("--finetune", default="all", choices=["all", "new"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=REPO / "results" / "runs", help="root of the run folders")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for both trainings (a smoke test: --set steps=3 --set base_channels=8)")
    p.add_argument("--num-samples", type=int, default=None, help="images per FID instead of main's")
    p.add_argument("--eval-seeds", type=int, default=None, help="FID sampling seeds instead of main's")
    p.add_argument("--results-dir", type=Path, default=None, help="where the table goes (default results/)")
    p.add_argument("--table-only", action="store_true", help="only rebuild table.md from the recorded rows")
    args = p.parse_args(argv)
    if args.table_only:
        _, _, dmz = cells(args.preset, args.seed, args.finetune, args.out)
        write_table(args.preset, dmz.name, args.finetune, dmz.config().train.steps, args.results_dir)
        return 0
    if args.seed < 0:
        print("error: --seed must be >= 0", file=sys.stderr)
        return 2
    from ablations.run_grid import run_cell
    from dmz.finetune import export_unet

    os.chdir(REPO)  # init_from is written relative to the checkout (so the run id does not carry this machine's path)

    sets = dict(s.split("=", 1) for s in args.sets)
    ddpm, source, dmz = cells(args.preset, args.seed, args.finetune, args.out, sets, args.num_samples,
                              args.eval_seeds)
    t0 = time.perf_counter()
    run_cell(ddpm, cell_dir(ddpm, args.out), threads=args.threads)
    if not (source / "config.json").exists():
        export_unet(cell_dir(ddpm, args.out), source)
        print(f"exported the DDPM's EMA UNet to {source}", flush=True)
    run_cell(dmz, cell_dir(dmz, args.out), threads=args.threads)
    df = collect([ddpm, dmz], args.out)
    paths = save(df, GRID, results_label(args.preset, None, [dmz]), args.results_dir)
    out = write_table(args.preset, dmz.name, args.finetune, dmz.config().train.steps, args.results_dir)
    print(f"wrote {paths['csv']}, {out} ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
