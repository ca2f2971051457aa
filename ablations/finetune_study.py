"""DMZ fine-tuned from a pretrained DDPM against DMZ from scratch: the release's CelebA-HQ 256 procedure end to end.

    python ablations/finetune_study.py                     # digits, training seed 0, about half an hour on one core
    python ablations/finetune_study.py --seed 1 --finetune new

Steps (each skipped when its output is there; a killed run resumes):
 1. train ``main``'s ``ddpm`` cell (the grid's config and budget) with training seed k;
 2. write its EMA UNet as a diffusers folder (``python -m dmz.finetune export``);
 3. train ``main``'s ``dmz`` cell from it (``--set init_from=<that folder> finetune=<all|new>``), same steps;
 4. score the fine-tuned DMZ's FID at T=10 and 100 as ``main`` scores it (N=300 x 3 sampling seeds, pinned extractor).

Rows: ``results/finetune/<preset>[-seed<k>]/results.csv``; ``table.md`` beside it puts them next to ``main``'s
checked-in DMZ from scratch and DDPM (mean ± sd over their trainings, n) with the 95% prediction interval of one new
from-scratch training: with one fine-tuned training a side nothing is resolved by the report's rule, so the table
says whether the fine-tuned FID falls inside, below or above what a new from-scratch training would give.
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

from ablations.claims import REPO
from ablations.collect import collect, repo_relative, save
from ablations.grids import EvalSpec, cell_dir, expand, results_label
from ablations.reproduce import prediction_interval, trainings
from ablations.tables import fmt, to_markdown

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


def comparison(mine: pd.DataFrame, preset: str) -> pd.DataFrame:
    """Each T: the fine-tuned DMZ's FID, main's DMZ from scratch and DDPM over their trainings, and where the
    fine-tuned value falls against the 95% prediction interval of one new from-scratch training."""
    ref = trainings("main", preset)
    rows = []
    for T in STEPS:
        got = mine[(mine["metric"] == "fid") & (mine["T"].astype(float) == T)]
        row = {"T": T, "DMZ fine-tuned from the DDPM (n=1)": "–" if got.empty else f"{float(got['value'].iloc[0]):.2f}"}
        for variant, label in (("dmz", "DMZ from scratch (main)"), ("ddpm", "DDPM (main)")):
            r = None if ref is None else ref[(ref["variant"] == variant) & (ref["metric"] == "fid")
                                             & (ref["T"].astype(float) == T) & (ref["sampler"] == "prior")]
            if r is None or r.empty:
                row[label] = "–"
                continue
            r = r.iloc[0]
            n, sd = int(r["train_seeds"]), float(r["sd"])
            row[label] = fmt(float(r["value"]), sd if n > 1 else None, 2) + f" (n={n})"
            if variant == "dmz" and not got.empty:
                pi = prediction_interval(float(r["value"]), sd, n)
                v = float(got["value"].iloc[0])
                row["95% PI of a new from-scratch training"] = "–" if pi is None else f"[{pi[0]:.2f}, {pi[1]:.2f}]"
                row["fine-tuned is"] = "–" if pi is None else ("below" if v < pi[0] else "above" if v > pi[1]
                                                                else "inside")
        rows.append(row)
    return pd.DataFrame(rows)


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
    args = p.parse_args(argv)
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
    label = results_label(args.preset, None, [dmz])
    paths = save(df, GRID, label, args.results_dir)
    table = comparison(df[df["variant"] == dmz.name], args.preset)
    md = (f"# DMZ fine-tuned from a pretrained DDPM vs from scratch ({args.preset}, training seed {args.seed}, "
          f"finetune={args.finetune})\n\n`python ablations/finetune_study.py --preset {args.preset} --seed "
          f"{args.seed} --finetune {args.finetune}`: the DDPM and the DMZ each train {dmz.config().train.steps:,} "
          "steps (main's budget); FID in the pinned feature space, N and sampling seeds as main. Main's columns: "
          "mean ± sd over its trainings (n). One fine-tuned training resolves nothing by the report's rule "
          "(fewer than 2 trainings a side); the last columns say where it falls against one new from-scratch "
          "training's 95% prediction interval.\n\n" + to_markdown(table) + "\n")
    out = Path(paths["csv"]).parent / "table.md"
    out.write_text(md)
    print(md)
    print(f"wrote {paths['csv']}, {out} ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
