"""Where a grid cell's time goes: training, each FID, the NLL and the rest, from finished run folders.

    python benchmarks/cell_cost.py RUN_DIR [RUN_DIR ...] [--out benchmarks/results/cell_cost.md]

Reads what every cell job records anyway: ``cell_state.json`` (wall and CPU seconds of each phase: train,
pixelsnail, evaluate) and ``results.jsonl`` (each row's ``eval_seconds``: the generation and scoring of one FID, one
NLL split, ...). Per run: the training's CPU and wall seconds, each evaluation row's seconds, and the rest of the
evaluate phase (loading, feature extraction, reference statistics: its wall seconds less the rows'). Runs that shared
the cores with other jobs show wall above CPU; compare runs measured side by side.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run by path: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import pandas as pd

from benchmarks.record import emit
from dmz.runio import read_jsonl, repo_relative


def row_name(r: dict) -> str:
    if r.get("metric") == "fid":
        return f"FID T={r.get('T')} N={r.get('N')}x{r.get('seeds') or 1}"
    return f"{r.get('metric')} ({r.get('reference') or ''})".replace(" ()", "")


def cost(run: Path) -> dict:
    state = json.loads((run / "cell_state.json").read_text())
    t = state.get("timings", {})
    out = {"run": run.name, "train CPU s": t.get("train", {}).get("cpu_s"),
           "train wall s": t.get("train", {}).get("wall_s"),
           "evaluate CPU s": t.get("evaluate", {}).get("cpu_s"), "evaluate wall s": t.get("evaluate", {}).get("wall_s")}
    rows = {}
    for r in read_jsonl(run / "results.jsonl"):
        s = r.get("eval_seconds")
        if s is not None:
            rows[row_name(r)] = rows.get(row_name(r), 0.0) + float(s)
    out.update({k: round(v, 1) for k, v in rows.items()})
    if out["evaluate wall s"] is not None:
        out["rest of evaluate (wall s)"] = round(out["evaluate wall s"] - sum(rows.values()), 1)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", type=Path, help="finished run folders (with cell_state.json)")
    p.add_argument("--out", type=Path, default=None, help="write the record here (Markdown)")
    args = p.parse_args(argv)
    missing = [r for r in args.runs if not (r / "cell_state.json").is_file()]
    if missing:
        print(f"error: {missing[0]} has no cell_state.json (a run folder that run_grid finished)", file=sys.stderr)
        return 2
    table = pd.DataFrame([cost(r) for r in args.runs]).set_index("run").T
    text = "\n".join([
        "# Where a cell's time goes", "",
        f"Written by `python benchmarks/cell_cost.py` on {time.strftime('%Y-%m-%d')} "
        f"({platform.processor() or platform.machine()}); runs: "
        + ", ".join(f"`{repo_relative(r)}`" for r in args.runs) + ".", "",
        "Seconds per phase (cell_state.json) and per evaluation row (results.jsonl `eval_seconds`, wall).", "",
        table.to_markdown(), ""])
    return emit(text, args.out)


if __name__ == "__main__":
    raise SystemExit(main())
