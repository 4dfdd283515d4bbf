"""`esc50tf compare`: rank finished runs, plot them, list their hard classes."""

from __future__ import annotations

import os
import sys

from esc50tf.cli.command import Command
from esc50tf.cli.options import positive_float, positive_int


def _add_compare(p):
    """compare finished runs: ranked table, accuracy plot, hard classes

    Read the report.json of finished runs (train run folders, tune folders with best_run/,
    study folders with runs/*) and write comparison.md/.csv (one row per run, ranked by
    accuracy, the best run of each model marked), comparison.png (accuracy +- std over
    folds, by model family), per_class.csv/.png (per-class accuracy, classes x runs), the
    hard classes and the most confused class pairs. Runs measured under another protocol,
    dataset or class list are flagged and not ranked with the rest. A run folder without
    report.json is an error; in a study folder such runs are skipped with a warning.

    examples:
      esc50tf compare runs/hybrid runs/bigru-seed --out comparison
      esc50tf compare study-out tune-out --out comparison
    """
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run, tune or study folders")
    p.add_argument("--out", default="comparison",
                   help="folder for the comparison files; only those files are replaced "
                   "(default: %(default)s)")
    p.add_argument("--hard-threshold", type=positive_float, default=0.5,
                   help="a class is hard for a run below this accuracy (default: %(default)s)")
    p.add_argument("--top", type=positive_int, default=10,
                   help="hard classes and confused pairs to list (default: %(default)s)")


def _run_compare(args):
    from esc50tf.compare import compare

    result = compare(args.runs, args.out, hard_threshold=args.hard_threshold, top=args.top,
                     log=lambda m: print(f"esc50tf compare: {m}", file=sys.stderr))
    ranked = [r for r in result.rows if r["comparable"]]
    for r in ranked[:10]:
        acc = f"{100 * r['accuracy']:5.1f}%" + (f" +- {100 * r['accuracy_std']:.1f}"
                                                if r["splits"] > 1 else "")
        print(f"{r['rank']:>3}. {r['run']:<36} {acc}  macro F1 {r['macro_f1']:.3f}"
              + ("  (best of model)" if r["best_of_model"] else ""))
    print(f"{len(ranked)} run(s) ranked, {len(result.rows) - len(ranked)} not comparable, "
          f"{len(result.skipped)} skipped; wrote {os.path.join(args.out, 'comparison.md')}")
    return 0


COMMANDS = (Command("compare", _add_compare, _run_compare, raw=True),)
