"""Model quality judged on REAL data (issue 13): the samples in ../shared/data, through the project's own commands,
default configs, every run tracked in MLflow; writes ``benchmarks/RESULTS_quality.md``.

    ./run.sh python benchmarks/quality.py [--seeds 42 7 1] [--work work/quality] [--out benchmarks/RESULTS_quality.md]

What runs, in order (each step a subprocess, exactly what a user would type):

1. ``python -m musicrec.movielens``: MovieLens-100k ratings written as a Last.fm 1K play log (genres as tags).
2. ``spark-submit.sh jobs/features.py``: the KKBOX sample (20k train rows, the last 20% as valid); MovieLens as
   sessions (``sessions.min_sessions_per_user=1``, the global time split); MovieLens with the per-user
   leave-one-out split (``split.protocol=leave_one_out``: each user's latest rating is test, the one before valid).
3. ``jobs/train.py --model M`` for every model and baseline of each table, the learned ones once per seed.

The tables: KKBOX, validation AUC / log loss (the sample's test.csv has no labels); MovieLens sessions, test
next-item full ranking HR@10 / MRR@10 (``eval.max_examples: auto``: the same fixed sample of prefixes for every
model); MovieLens leave-one-out, test HR@10 / NDCG@10 against 99 sampled unplayed items (the NCF paper's protocol).
A learned model's cell is the mean over the seeds, with the spread and every seed's value beside it; the targets
of the issue are checked on the means and the file says which are met.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from mlflow.tracking import MlflowClient

from measure import cpu_model  # a sibling of this script

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from musicrec.compare import run_values  # noqa: E402  (the comparison's own reading of a run's metrics)
from musicrec.config import load_config  # noqa: E402

RESULTS = REPO / "benchmarks" / "RESULTS_quality.md"
BASELINES = {"pop", "cooc", "sknn", "rate"}  # deterministic: one run each; the rest once per seed
MOVIELENS_SETS = ["sessions.min_sessions_per_user=1"]
FEATURES = {  # feature output -> (dataset, input: "kkbox" = the shared sample, "movielens" = the converted log, --set)
    "kkbox": ("kkbox", "kkbox", []),
    "movielens-sessions": ("lastfm", "movielens", MOVIELENS_SETS),
    "movielens-loo": ("lastfm", "movielens", MOVIELENS_SETS + ["split.protocol=leave_one_out"]),
}
TABLES = [  # (title, feature output, comparison dataset, models, metrics shown)
    ("KKBOX sample: validation AUC / log loss", "kkbox", "kkbox",
     ["pop", "rate", "logreg", "lightgbm", "dnn", "ncf"], ["auc", "logloss"]),
    ("MovieLens-100k as sessions (global time split): test HR@10 / MRR@10, full ranking", "movielens-sessions",
     "lastfm", ["pop", "cooc", "sknn", "gru"], ["hr@10", "mrr@10"]),
    ("MovieLens-100k, per-user leave-one-out: test HR@10 / NDCG@10 against 99 negatives", "movielens-loo",
     "lastfm", ["pop", "ncf"], ["loo_hr@10", "loo_ndcg@10"]),
]
SPLIT_OF = {"kkbox": "valid", "movielens-sessions": "test", "movielens-loo": "test"}  # the split each table shows
RUN_ID = re.compile(r"mlflow run ([0-9a-f]{32})")


def log(message: str) -> None:
    print(f"[quality {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run(command: list[str], log_path: Path) -> str:
    """Run ``command`` from the repository root, its output to ``log_path``; its output, or exit naming the log."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w", encoding="utf-8") as handle:
        code = subprocess.run(command, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT).returncode
    output = log_path.read_text(encoding="utf-8", errors="replace")
    if code != 0:
        sys.exit(f"quality: {' '.join(command[:4])} ... failed (exit {code}); its output: {log_path}")
    return output


def make_features(shared: Path, work: Path) -> dict[str, Path]:
    """Steps 1 and 2: the MovieLens conversion and the three feature outputs; {name: output folder}."""
    inputs = {"kkbox": shared / "kkbox", "movielens": work / "raw" / "movielens"}
    for path in (inputs["kkbox"], shared / "movielens-100k"):
        if not path.is_dir():
            sys.exit(f"quality: {path} not found (the real samples of ../shared/data, see its PROVENANCE.md)")
    log("MovieLens-100k -> Last.fm play log")
    run([sys.executable, "-m", "musicrec.movielens", "--input", str(shared / "movielens-100k"),
         "--out", str(inputs["movielens"])], work / "logs" / "movielens.log")
    outputs = {}
    for name, (dataset, source, sets) in FEATURES.items():
        outputs[name] = work / "features" / name
        log(f"feature job: {name}")
        command = ["./spark-submit.sh", "jobs/features.py", dataset, "--input", str(inputs[source]),
                   "--output", str(outputs[name])]
        for value in sets:
            command += ["--set", value]
        run(command, work / "logs" / f"features-{name}.log")
    return outputs


def train(model: str, data: Path, seed: int, work: Path, uri: str, name: str) -> str:
    """Step 3 for one model and seed: ``jobs/train.py`` with the default config; the MLflow run id."""
    tag = f"{name}-{model}-s{seed}"
    log(f"train {tag}")
    has_bar = "progress" in (load_config(None, default_name=model).get("train") or {})  # the loop's models
    quiet = ["--set", "train.progress=false"] if has_bar else []  # no progress bar in the logs
    output = run([sys.executable, "jobs/train.py", "--model", model, "--data", str(data), "--seed", str(seed),
                  "--run-dir", str(work / "runs" / tag), "--overwrite", "--tracking-uri", uri, *quiet],
                 work / "logs" / f"train-{tag}.log")
    found = RUN_ID.findall(output)
    if not found:
        sys.exit(f"quality: no MLflow run id in {work / 'logs' / f'train-{tag}.log'}")
    return found[-1]


def collect(tables, features: dict[str, Path], seeds: list[int], work: Path, uri: str) -> dict:
    """{(feature output, model): [metric values per seed]} from MLflow, training every model of every table."""
    client = MlflowClient(uri)
    results = {}
    for _, name, dataset, models, metrics in tables:
        for model in models:
            runs = [train(model, features[name], seed, work, uri, name)
                    for seed in (seeds[:1] if model in BASELINES else seeds)]
            results[name, model] = [_metrics(client, run_id, dataset, name, model, metrics) for run_id in runs]
    return results


def _metrics(client, run_id: str, dataset: str, name: str, model: str, metrics: list[str]) -> dict[str, float]:
    """The run's metrics as the comparison reads them, or exit naming the run when one is missing or comes from
    another split than the table's (``SPLIT_OF``)."""
    values, source = run_values(client.get_run(run_id), dataset)
    missing = [m for m in metrics if m not in values]
    if missing or source != SPLIT_OF[name]:
        sys.exit(f"quality: {model} on {name}, MLflow run {run_id}: expected {metrics} from the {SPLIT_OF[name]} "
                 f"split, got {sorted(values)} from {source}")
    return values


def mean(values: list[dict], metric: str) -> float:
    return statistics.fmean(v[metric] for v in values)


def cell(values: list[dict], metric: str) -> str:
    """``0.812`` for one run, ``0.812 ± 0.004 (0.81, 0.82, ...)`` (mean ± sample sd, each seed) for several."""
    if len(values) == 1:
        return f"{values[0][metric]:.3f}"
    each = ", ".join(f"{v[metric]:.3f}" for v in values)
    return f"{mean(values, metric):.3f} ± {statistics.stdev(v[metric] for v in values):.3f} ({each})"


def targets(results: dict) -> list[tuple[str, bool, str]]:
    """The issue's targets, checked on the means: (target, met, the figures it was checked on)."""
    def m(name, model, metric):
        return mean(results[name, model], metric)

    ncf, pop = m("movielens-loo", "ncf", "loo_hr@10"), m("movielens-loo", "pop", "loo_hr@10")
    checks = [("MovieLens leave-one-out: NCF test HR@10 >= 0.65 and >= pop + 0.2", ncf >= 0.65 and ncf >= pop + 0.2,
               f"ncf {ncf:.3f}, pop {pop:.3f}")]
    for metric in ("hr@10", "mrr@10"):
        gru = m("movielens-sessions", "gru", metric)
        best, best_name = max((m("movielens-sessions", b, metric), b) for b in ("cooc", "sknn"))
        checks.append((f"MovieLens sessions: GRU test {metric.upper()} above the best of cooc and sknn",
                       gru > best, f"gru {gru:.3f}, {best_name} {best:.3f}"))
    dnn, logreg = m("kkbox", "dnn", "auc"), m("kkbox", "logreg", "auc")
    checks.append(("KKBOX sample: DNN validation AUC above logistic regression", dnn > logreg,
                   f"dnn {dnn:.3f}, logreg {logreg:.3f}"))
    return checks


def report(results: dict, seeds: list[int], context: dict) -> str:
    lines = ["# Model quality on real data (`benchmarks/quality.py`)", "",
             f"Command: `{context['command']}`  ", f"Machine: {context['machine']}  ",
             f"Commit: {context['commit']}; {context['date']}; wall {context['wall']:.0f} s  ",
             f"Load average before: {context['load_before']}; after: {context['load_after']}  ",
             f"Seeds of the learned models: {', '.join(map(str, seeds))} (baselines {', '.join(sorted(BASELINES))}: "
             "deterministic, one run); default configs (conf/*.yaml); MLflow store: "
             f"`{context['uri']}`  ",
             "KKBOX: the best epoch's validation values, the split early stopping watches (optimistic for the learned "
             "models by the selection of one epoch of up to 20; the configs were chosen on an inner split, "
             "benchmarks/RESULTS_tuning.md). MovieLens: the test split, after the epoch chosen on validation.", ""]
    for title, name, _, models, metrics in TABLES:
        lines += [f"## {title}", "", "| model | " + " | ".join(metrics) + " | examples |",
                  "|---|" + "---|" * (len(metrics) + 1)]
        for model in models:
            values = results[name, model]
            examples = int(values[0].get("examples", 0))
            lines.append(f"| {model} | " + " | ".join(cell(values, k) for k in metrics) + f" | {examples:,} |")
        lines.append("")
    lines += ["## Targets (issue 13)", "", "| target | met? | figures (means) |", "|---|---|---|"]
    checks = targets(results)
    lines += [f"| {text} | {'yes' if met else '**no**'} | {figures} |" for text, met, figures in checks]
    if not all(met for _, met, _ in checks):
        lines += ["", "A target marked **no** is not reached with the default configs; what was tried to reach it, "
                  "and measured on validation, is in benchmarks/RESULTS_tuning.md."]
    return "\n".join(lines) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "data",
                        help="folder of the real samples (default: ../shared/data)")
    parser.add_argument("--work", type=Path, default=REPO / "work" / "quality",
                        help="folder for the converted log, feature outputs, run folders, logs and the MLflow store")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 7, 1],
                        help="train.seed values of the learned models (default: 42 7 1)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="the Markdown file written (default: %(default)s)")
    parser.add_argument("--skip-features", action="store_true",
                        help="reuse the feature outputs of an earlier run in --work (steps 1 and 2 skipped)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    work = args.work.resolve()
    uri = f"sqlite:///{work / 'mlflow.db'}"
    work.mkdir(parents=True, exist_ok=True)
    started, load_before = time.time(), os.getloadavg()
    if args.skip_features:
        features = {name: work / "features" / name for name in FEATURES}
        missing = [str(p) for p in features.values() if not (p / "_MANIFEST.json").is_file()]
        if missing:
            sys.exit(f"quality: --skip-features, but no feature output in {', '.join(missing)}")
    else:
        features = make_features(args.shared.resolve(), work)
    results = collect(TABLES, features, args.seeds, work, uri)
    commit = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=REPO, capture_output=True, text=True)
    context = {"command": "./run.sh python benchmarks/quality.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               "machine": f"{cpu_model()}, {os.cpu_count()} cores, no GPU used", "uri": uri,
               "commit": commit.stdout.strip() or "unknown", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
               "wall": time.time() - started, "load_before": " ".join(f"{x:.2f}" for x in load_before),
               "load_after": " ".join(f"{x:.2f}" for x in os.getloadavg())}
    text = report(results, args.seeds, context)
    args.out.write_text(text, encoding="utf-8")
    print(text)
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
