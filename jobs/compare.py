"""Compare the musicrec training runs recorded in MLflow: the best run per (dataset, model), as a table and a plot.

    python jobs/compare.py                          # the project's local store, output in runs/compare/
    python jobs/compare.py --tracking-uri sqlite:///path/mlflow.db --out DIR

Reads every finished run of the ``musicrec-<dataset>`` experiments (client API), keeps the runs on each dataset's
newest data (the ``data.fingerprint`` tag of its newest run; ``--all-data`` keeps all), the best run per
(dataset, model) by its main metric, prints one table per dataset, writes ``comparison.md``, ``comparison.csv``
and ``comparison.png`` to ``--out`` and logs them as artifacts of a new run in experiment ``musicrec-compare``.

Which numbers: test-split metrics (``test_*``) where the run has them, else the best epoch's validation metrics
(``best_valid_*``; the KKBOX test split has no labels). KKBOX: auc, logloss (best = highest auc). Last.fm: hr@10,
ndcg@10, mrr@10 of next-song prediction against all songs, and loo_hr@10 / loo_ndcg@10 of NCF's leave-one-out
protocol (best = highest hr@10, or loo_hr@10 for a model that only has that). The best run is chosen by its
VALIDATION value of that metric; the table shows its test values. The comparison is ``musicrec.compare``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from musicrec import compare


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="compare.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///<project>/mlflow.db)")
    parser.add_argument("--out", type=Path, default=compare.DEFAULT_OUT,
                        help="folder for comparison.md / .csv / .png (default: runs/compare)")
    parser.add_argument("--all-data", action="store_true",
                        help="compare runs on any data (default: only runs on the data of each dataset's newest run)")
    parser.add_argument("--no-log", action="store_true", help="do not log the comparison as an MLflow run")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return compare.compare_runs(args.tracking_uri, args.out, all_data=args.all_data, log=not args.no_log)


if __name__ == "__main__":
    sys.exit(main())
