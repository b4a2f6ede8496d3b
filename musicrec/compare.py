"""The comparison of the training runs recorded in MLflow: what ``jobs/compare.py`` runs.

``compare_runs(tracking_uri, out, all_data=False, log=True)`` reads every finished run of the ``musicrec-<dataset>``
experiments (``tracking.search_musicrec_runs``), keeps the runs on each dataset's newest data
(``latest_data_only``, unless ``all_data``), picks the best run per (dataset, model) (``best_runs``), prints one
Markdown table per dataset (``format_table``), writes ``comparison.md``, ``comparison.csv`` (``write_csv``) and
``comparison.png`` (``plot``) to ``out`` and, with ``log``, records them as a new run of experiment
``musicrec-compare`` (``log_comparison``). It returns the exit status (0, also when there is no run to compare).

Which numbers (``run_values``): test-split metrics (``test_*``) where the run has them, else the best epoch's
validation metrics (``best_valid_*``). The best run is chosen by its VALIDATION value of the first metric of
``RANK_BY`` it has; the table shows its test values and, in ``examples``, how many examples they were measured on
(``test_examples`` / ``best_valid_examples``: the split, or the fixed sample of ``eval.max_examples``).
"""

from __future__ import annotations

import csv
import math
import time
from pathlib import Path

from musicrec.tracking import get_or_create_experiment, metric_key, resolve_tracking_uri, search_musicrec_runs

REPO = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO / "runs" / "compare"
COLUMNS = {
    "kkbox": ["auc", "logloss"],
    "lastfm": ["hr@10", "ndcg@10", "mrr@10", "loo_hr@10", "loo_ndcg@10"],
}
RANK_BY = {"kkbox": ["auc"], "lastfm": ["hr@10", "loo_hr@10"]}  # first metric a run has decides its rank
PLOT_METRICS = {"kkbox": ["auc"], "lastfm": ["hr@10", "ndcg@10", "loo_hr@10"]}
EXAMPLES = "examples"  # the examples a run's metrics were measured on: a column of every table
COMPARE_EXPERIMENT = "musicrec-compare"
OUTPUT_FILES = ("comparison.md", "comparison.csv", "comparison.png")


def run_values(run, dataset: str) -> tuple[dict[str, float], str]:
    """The run's comparable metrics ({display name: value}, with ``examples``) and where they come from ("test" or
    "valid")."""
    metrics = run.data.metrics
    values, sources = {}, set()
    for name in [*COLUMNS[dataset], EXAMPLES]:
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


def comparable_runs(runs, all_data: bool) -> tuple[list, str]:
    """The runs to compare (all of them, or ``latest_data_only``) and a note on which data they are on."""
    if all_data:
        return runs, "runs on any data"
    kept, chosen = latest_data_only(runs)
    data_note = "data " + ", ".join(f"{d}={fp[:8]}" for d, fp in sorted(chosen.items()))
    if len(kept) < len(runs):
        data_note += f"; {len(runs) - len(kept)} run(s) on older data left out (--all-data includes them)"
    return kept, data_note


def best_runs(runs) -> list[dict]:
    """One row per (dataset, model): the run with the highest validation value of the ranking metric."""
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
        header = ["model", *cols, EXAMPLES, "from", "run"]
        lines = [f"### {dataset}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        for r in (r for r in rows if r["dataset"] == dataset):
            examples = f"{int(r[EXAMPLES]):,}" if EXAMPLES in r else ""
            metrics = [f"{r[c]:.4f}" if c in r else "" for c in cols]
            cells = [r["model"], *metrics, examples, r["source"], r["run_id"][:8]]
            lines.append("| " + " | ".join(cells) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def write_csv(rows: list[dict], path: Path) -> None:
    cols = ["dataset", "model", *dict.fromkeys(c for cs in COLUMNS.values() for c in cs), EXAMPLES, "source", "run_id"]
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


def write_outputs(rows: list[dict], table: str, out: Path) -> None:
    """``out/comparison.md`` (the table), ``.csv`` (the rows) and ``.png`` (the plot)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "comparison.md").write_text(table, encoding="utf-8")
    write_csv(rows, out / "comparison.csv")
    plot(rows, out / "comparison.png")


def log_comparison(client, uri: str, rows: list[dict], out: Path) -> str:
    """A finished run of ``COMPARE_EXPERIMENT``: param ``best.<dataset>.<model>`` = that run's id per row, and the
    files of ``write_outputs`` as artifacts; returns its run id."""
    experiment_id = get_or_create_experiment(client, COMPARE_EXPERIMENT, uri)
    run = client.create_run(experiment_id, run_name=f"compare-{time.strftime('%Y%m%d-%H%M%S')}",
                            tags={"musicrec.kind": "compare"})
    for r in rows:
        client.log_param(run.info.run_id, f"best.{r['dataset']}.{r['model']}", r["run_id"])
    for name in OUTPUT_FILES:
        client.log_artifact(run.info.run_id, str(out / name))
    client.set_terminated(run.info.run_id, "FINISHED")
    return run.info.run_id


def compare_runs(tracking_uri: str | None, out: Path, *, all_data: bool = False, log: bool = True) -> int:
    """Compare the finished training runs of ``tracking_uri`` (``resolve_tracking_uri``): print the table, write
    it to ``out`` and, with ``log``, log it as an MLflow run. Returns the exit status, 0."""
    from mlflow.tracking import MlflowClient

    uri = resolve_tracking_uri(tracking_uri)
    client = MlflowClient(uri)
    runs = [r for r in search_musicrec_runs(client) if r.info.status == "FINISHED"]
    runs, data_note = comparable_runs(runs, all_data)
    rows = best_runs(runs)
    if not rows:
        print(f"compare.py: no finished musicrec training runs in {uri}")
        return 0
    table = format_table(rows)
    print(f"best run per (dataset, model) in {uri} ({data_note}):\n")
    print(table)
    out = out.resolve()
    write_outputs(rows, table, out)
    print(f"wrote {out / 'comparison.md'}, {out / 'comparison.csv'}, {out / 'comparison.png'}")
    if log:
        run_id = log_comparison(client, uri, rows, out)
        print(f"logged as MLflow run {run_id} in experiment {COMPARE_EXPERIMENT}")
    return 0
