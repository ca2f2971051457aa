"""The reports' command line: one grid's table, or the paper's claims with verdicts.

    python ablations/report.py --grid latent_size                 # digits; results/latent_size/digits/table.md
    python ablations/report.py --grid main --preset cifar10
    python ablations/report.py --paper --preset digits            # every grid: the paper's claims with verdicts

``--grid`` runs :func:`ablations.grid_report.report` (collect a grid's rows, write its table and plots);
``--paper`` runs :mod:`ablations.paper_report` (every grid's rows, each claim judged over trainings).
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run by path
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ablations.grid_report import report
from ablations.grids import cell_parser, cells_by_seed, parse_cells, results_label
from ablations.paper_report import run


def main(argv: list[str] | None = None) -> int:
    p = cell_parser("python ablations/report.py", __doc__.split("\n\n")[0],
                    results_help="where tables go (default results/)")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--paper", action="store_true", help="instead of one grid's table: every grid's results.csv on "
                   "--preset, each of the paper's claims with a verdict computed from them "
                   "(results/paper/<preset>/REPORT.md, verdicts.csv; see ablations/paper_report.py)")
    next(a for a in p._actions if a.dest == "grid").required = False  # --paper reads every grid
    args = p.parse_args(argv)
    if args.paper:
        cell_opts = [a.option_strings[0] for a in p._actions if a.dest not in ("help", "preset", "results_dir",
                     "no_plots", "paper") and getattr(args, a.dest) not in (None, [])]
        if cell_opts:
            p.error(f"--paper reads every grid's results.csv on --preset; it takes no {', '.join(cell_opts)}")
        return run(args.preset, args.results_dir, plots=not args.no_plots)
    if args.grid is None:
        p.error("the following arguments are required: --grid (or --paper)")
    parsed = parse_cells(p, argv)
    if parsed is None:
        return 2
    args, preset, cells = parsed
    for group in cells_by_seed(cells).values():  # one results folder per training seed
        out = report(args.grid, results_label(preset, args.budget, group), cells=group, runs_root=args.out,
                     results_dir=args.results_dir, plots=not args.no_plots, say=print)
        print(out["markdown_text"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
