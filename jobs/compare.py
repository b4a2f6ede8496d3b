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
VALIDATION value of that metric; the table shows its test values.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

COLUMNS = {
    "kkbox": ["auc", "logloss"],
    "lastfm": ["hr@10", "ndcg@10", "mrr@10", "loo_hr@10", "loo_ndcg@10"],
}
RANK_BY = {"kkbox": ["auc"], "lastfm": ["hr@10", "loo_hr@10"]}  # first metric a run has decides its rank
PLOT_METRICS = {"kkbox": ["auc"], "lastfm": ["hr@10", "ndcg@10", "loo_hr@10"]}
COMPARE_EXPERIMENT = "musicrec-compare"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="compare.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///<project>/mlflow.db)")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "compare",
                        help="folder for comparison.md / .csv / .png (default: runs/compare)")
    parser.add_argument("--all-data", action="store_true",
                        help="compare runs on any data (default: only runs on the data of each dataset's newest run)")
    parser.add_argument("--no-log", action="store_true", help="do not log the comparison as an MLflow run")
    return parser


def run_values(run, dataset: str) -> tuple[dict[str, float], str]:
    """The run's comparable metrics ({display name: value}) and where they come from ("test" or "valid")."""
    from musicrec.tracking import metric_key

    metrics = run.data.metrics
    values, sources = {}, set()
    for name in COLUMNS[dataset]:
        for prefix, source in (("test_", "test"), ("best_valid_", "valid")):
            key = metric_key(prefix + name)
            if key in metrics and not math.isnan(metrics[key]):
                values[name] = float(metrics[key])
                sources.add(source)
                break
    return values, "/".join(sorted(sources)) or "-"


def latest_data_only(runs) -> tuple[list, dict[str, str]]:
    """The runs on each dataset's most recently used data (same ``data.fingerprint`` tag as the newest run), so
    the table never compares models trained on different feature outputs; and {dataset: that fingerprint}."""
    newest: dict[str, tuple[int, str]] = {}
    for run in runs:
        dataset, fp = run.data.tags.get("dataset"), run.data.tags.get("data.fingerprint", "")
        start = run.info.start_time or 0
        if dataset and (dataset not in newest or start > newest[dataset][0]):
            newest[dataset] = (start, fp)
    chosen = {dataset: fp for dataset, (_, fp) in newest.items()}
    kept = [r for r in runs if chosen.get(r.data.tags.get("dataset")) == r.data.tags.get("data.fingerprint", "")]
    return kept, chosen


def best_runs(runs) -> list[dict]:
    """One row per (dataset, model): the run with the highest validation value of the ranking metric."""
    from musicrec.tracking import metric_key

    best: dict[tuple[str, str], dict] = {}
    for run in runs:
        dataset, model = run.data.tags.get("dataset"), run.data.tags.get("model")
        if dataset not in COLUMNS or not model or run.info.status != "FINISHED":
            continue
        values, source = run_values(run, dataset)
        rank_metric = next((m for m in RANK_BY[dataset] if m in values), None)
        if rank_metric is None:
            continue
        # pick runs by their validation score (no model selection on the test split); show test numbers
        score = run.data.metrics.get(metric_key(f"best_valid_{rank_metric}"), values[rank_metric])
        row = {"dataset": dataset, "model": model, "run_id": run.info.run_id, "source": source,
               "rank_metric": rank_metric, "score": score, **values, "start": run.info.start_time or 0}
        key = (dataset, model)
        if key not in best or row["score"] > best[key]["score"]:
            best[key] = row
    return sorted(best.values(), key=lambda r: (r["dataset"], r["rank_metric"] != RANK_BY[r["dataset"]][0],
                                                -r.get(r["rank_metric"], 0.0), r["model"]))


def format_table(rows: list[dict]) -> str:
    """Markdown tables, one per dataset."""
    blocks = []
    for dataset in sorted({r["dataset"] for r in rows}):
        cols = COLUMNS[dataset]
        header = ["model", *cols, "from", "run"]
        lines = [f"### {dataset}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for r in (r for r in rows if r["dataset"] == dataset):
            cells = [r["model"], *[f"{r[c]:.4f}" if c in r else "" for c in cols], r["source"], r["run_id"][:8]]
            lines.append("| " + " | ".join(cells) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def write_csv(rows: list[dict], path: Path) -> None:
    cols = ["dataset", "model", *dict.fromkeys(c for cs in COLUMNS.values() for c in cs), "source", "run_id"]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=cols, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def plot(rows: list[dict], path: Path) -> Path:
    """Grouped bars: one panel per dataset, one group per model, one bar per main metric."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    datasets = sorted({r["dataset"] for r in rows})
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        subset = [r for r in rows if r["dataset"] == dataset]
        metrics = [m for m in PLOT_METRICS[dataset] if any(m in r for r in subset)]
        x = np.arange(len(subset))
        width = 0.8 / max(len(metrics), 1)
        for i, metric in enumerate(metrics):
            ax.bar(x + i * width, [r.get(metric, 0.0) for r in subset], width, label=metric)
        ax.set_xticks(x + width * (len(metrics) - 1) / 2)
        ax.set_xticklabels([r["model"] for r in subset])
        ax.set_ylim(0, 1)
        ax.set_title(dataset)
        ax.legend(loc="best", fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from mlflow.tracking import MlflowClient

    from musicrec.tracking import get_or_create_experiment, resolve_tracking_uri, search_musicrec_runs

    uri = resolve_tracking_uri(args.tracking_uri)
    client = MlflowClient(uri)
    runs = [r for r in search_musicrec_runs(client) if r.info.status == "FINISHED"]
    if args.all_data:
        data_note = "runs on any data"
    else:
        kept, chosen = latest_data_only(runs)
        data_note = "data " + ", ".join(f"{d}={fp[:8]}" for d, fp in sorted(chosen.items()))
        if len(kept) < len(runs):
            data_note += f"; {len(runs) - len(kept)} run(s) on older data left out (--all-data includes them)"
        runs = kept
    rows = best_runs(runs)
    if not rows:
        print(f"compare.py: no finished musicrec training runs in {uri}")
        return 0
    table = format_table(rows)
    print(f"best run per (dataset, model) in {uri} ({data_note}):\n")
    print(table)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "comparison.md").write_text(table, encoding="utf-8")
    write_csv(rows, out / "comparison.csv")
    plot(rows, out / "comparison.png")
    print(f"wrote {out / 'comparison.md'}, {out / 'comparison.csv'}, {out / 'comparison.png'}")
    if not args.no_log:
        experiment_id = get_or_create_experiment(client, COMPARE_EXPERIMENT, uri)
        run = client.create_run(experiment_id, run_name=f"compare-{time.strftime('%Y%m%d-%H%M%S')}",
                                tags={"musicrec.kind": "compare"})
        for r in rows:
            client.log_param(run.info.run_id, f"best.{r['dataset']}.{r['model']}", r["run_id"])
        for name in ("comparison.md", "comparison.csv", "comparison.png"):
            client.log_artifact(run.info.run_id, str(out / name))
        client.set_terminated(run.info.run_id, "FINISHED")
        print(f"logged as MLflow run {run.info.run_id} in experiment {COMPARE_EXPERIMENT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
