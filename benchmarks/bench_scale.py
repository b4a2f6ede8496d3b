"""Every model at the datasets' real size: generated data at several scales -> both feature jobs -> every model for a
fixed step budget and a bounded evaluation, measured per model and scale (issue 12).

    .venv/bin/python benchmarks/bench_scale.py [--scales 0.01 0.1 1.0] [--max-steps 50] [--models gru ncf ...]
                                               [--work /work/data/scale] [--record] [--note TEXT]

1. Per scale, the raw files (``python -m musicrec.datagen lastfm|kkbox --scale S --seed 0``) and the feature outputs
   (``./spark-submit.sh jobs/features.py ...``) are made once under ``WORK`` and reused by later runs.
2. Every model runs exactly what users run: ``jobs/train.py --model M --data F --max-steps N --epochs 1`` (one
   process, the default configs, a fresh run folder, its own MLflow store under ``WORK``), measured with
   ``measure.run_measured`` (wall time, peak RSS of the process tree, CPU seconds).
3. From the run's MLflow record and checkpoint: vocabulary sizes, parameters, training throughput (time per step =
   the global batch / samples per second), the evaluation's examples and time, and the time one full epoch would
   take at that throughput (training examples per epoch, counted from the Parquet, / samples per second).
Results go to stdout (and with ``--record`` to benchmarks/RESULTS_scale.md) with the command, the machine and the
load average before and after each run. Run it alone on the machine (a figure taken at a load above 3 is void).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from measure import append_record, cpu_model, run_measured  # a sibling of this script
from musicrec.baselines import NAMES as BASELINES  # fitted, not trained: no step budget

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "RESULTS_scale.md"
MODELS = {"lastfm": ["pop", "cooc", "gru", "ncf"], "kkbox": ["pop", "logreg", "dnn", "ncf"]}


def ensure_raw(work: Path, dataset: str, scale: float, seed: int) -> tuple[Path, float | None]:
    """The generated raw folder of (dataset, scale), made on first use; (folder, seconds it took or None)."""
    folder = work / "raw" / f"{dataset}-s{scale:g}"
    if (folder / ".done").is_file():
        return folder, None
    started = time.time()
    subprocess.run([sys.executable, "-m", "musicrec.datagen", dataset, "--out", str(folder), "--scale", str(scale),
                    "--seed", str(seed)], cwd=REPO, check=True)
    (folder / ".done").write_text("")
    return folder, time.time() - started


def ensure_features(work: Path, dataset: str, scale: float, raw: Path, extra: list[str]) -> tuple[Path, dict | None]:
    """The feature output of (dataset, scale), made on first use (``extra``: ``--set`` options of the job); (folder,
    its measured run or None)."""
    out = work / "features" / f"{dataset}-s{scale:g}"
    if (out / "_MANIFEST.json").is_file():
        return out, None
    command = [str(REPO / "spark-submit.sh"), "jobs/features.py", dataset, "--input", str(raw), "--output", str(out),
               *extra]
    run = run_measured(command, cwd=REPO)
    (work / "logs").mkdir(parents=True, exist_ok=True)
    (work / "logs" / f"features-{dataset}-s{scale:g}.log").write_text(run["output"])
    if run["returncode"] != 0:
        raise SystemExit(f"[bench] {shlex.join(command)} failed ({run['returncode']}); see {work / 'logs'}")
    return out, run


def train_examples(data: Path, model: str) -> int:
    """Training examples in one epoch of ``model`` on the feature output ``data`` (from the Parquet and the config)."""
    import pyarrow.dataset as ds
    import yaml

    manifest = json.loads((data / "_MANIFEST.json").read_text())
    if manifest["dataset"] == "kkbox":
        return int(manifest["row_counts"]["train"])
    table = ds.dataset(str(data / manifest["splits"]["train"]), format="parquet").to_table(columns=["songs"])
    songs = table.column("songs").combine_chunks()
    lengths = np.diff(songs.offsets.to_numpy())
    if model != "ncf":
        return int(np.maximum(lengths - 1, 0).sum())  # next-song prefixes
    values = songs.flatten().to_numpy().astype(np.int64)
    session = np.repeat(np.arange(lengths.size), lengths)
    real = values >= 2
    positives = np.unique(np.stack([session[real], values[real]], axis=1), axis=0).shape[0]  # each song once per session
    negatives = yaml.safe_load((REPO / "conf" / "ncf.yaml").read_text())["data"].get("num_negatives", 4)
    return int(positives * (1 + negatives))


def run_model(work: Path, data: Path, model: str, scale: float, max_steps: int, extra: list[str]) -> dict:
    """One bounded training (or baseline evaluation) of ``model`` on ``data``, measured."""
    dataset = json.loads((data / "_MANIFEST.json").read_text())["dataset"]
    run_dir = work / "runs" / f"{dataset}-{model}-s{scale:g}-{int(time.time())}"
    uri = f"sqlite:///{work / 'mlflow.db'}"
    command = [sys.executable, "jobs/train.py", "--model", model, "--data", str(data), "--run-dir", str(run_dir),
               "--tracking-uri", uri, "--epochs", "1", *extra]
    if model not in BASELINES:
        command += ["--max-steps", str(max_steps), "--set", "train.progress=false"]
    run = run_measured(command, cwd=REPO, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    (work / "logs").mkdir(parents=True, exist_ok=True)
    (work / "logs" / f"train-{dataset}-{model}-s{scale:g}.log").write_text(run["output"])
    result = {"dataset": dataset, "model": model, "scale": scale, "command": shlex.join(command[1:]),
              "wall_s": run["seconds"], "peak_rss_gib": run["peak_rss"] / 2**30, "cpu_s": run["cpu_seconds"],
              "load_before": run["load_before"][0], "load_after": run["load_after"][0], "rc": run["returncode"]}
    found = re.search(r"mlflow run ([0-9a-f]{32})", run["output"])
    if run["returncode"] != 0 or not found:
        result["error"] = run["output"].strip().splitlines()[-1] if run["output"].strip() else "no output"
        return result
    result.update(mlflow_figures(uri, found.group(1)))
    result["params"] = parameter_count(run_dir)
    if model not in BASELINES and result.get("samples_per_s"):
        result["examples_per_epoch"] = train_examples(data, model)
        result["epoch_h"] = result["examples_per_epoch"] / result["samples_per_s"] / 3600
        result["step_ms"] = 1000 * result["batch"] / result["samples_per_s"]
    return result


def mlflow_figures(uri: str, run_id: str) -> dict:
    from mlflow.tracking import MlflowClient

    run = MlflowClient(uri).get_run(run_id)
    metrics, params = run.data.metrics, run.data.params
    figures = {"run_id": run_id, "songs": int(params.get("vocab.song", 0)), "users": int(params.get("vocab.user", 0))}
    for key in ("samples_per_s", "epoch_time_s", "valid_examples", "test_examples", "fit_time_s", "eval_time_s",
                "valid_time_s", "test_time_s"):
        if key in metrics:
            figures[key] = metrics[key]
    figures["batch"] = int(params.get("distributed.global_batch") or params.get("data.batch_size") or 0)
    shown = "test_" if any(k.startswith("test_") for k in metrics) else "best_valid_"  # KKBOX's test has no target
    figures["metrics"] = {k: v for k, v in metrics.items() if k.startswith(shown) and "examples" not in k}
    return figures


def parameter_count(run_dir: Path) -> int | None:
    """Parameters of the model in the run's last checkpoint (None for the baselines, which write none)."""
    path = run_dir / "last.pt"
    if not path.is_file():
        return None
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)["model_state"]
    return int(sum(t.numel() for t in state.values()))


def report(results: list[dict], setup: list[dict], args: argparse.Namespace, seconds: float) -> str:
    fmt = lambda v, f: "" if v is None else format(v, f)  # noqa: E731
    lines = [f"## bench_scale {time.strftime('%Y-%m-%d %H:%M')} ({seconds / 60:.0f} min)", "",
             f"Command: `.venv/bin/python benchmarks/bench_scale.py {shlex.join(args.argv)}`; machine: "
             f"{os.cpu_count()} cores, {cpu_model()}; no GPU. Load average (1 min) before / after each run in the "
             "table. One process per model, default configs, `--max-steps` budget, one (partial) epoch.", ""]
    for entry in setup:
        lines.append(f"- {entry}")
    lines += ["", "| scale | dataset | model | songs | params | time/step | step / smallest scale's | samples/s | peak RSS | "
              "eval examples (valid + test) | eval time | projected epoch | wall | load | test metrics |",
              "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    reference = {}  # (dataset, model) -> time per step at the smallest scale of this run: the ratio's reference
    for r in sorted(results, key=lambda r: r["scale"]):
        if r.get("step_ms"):
            reference.setdefault((r["dataset"], r["model"]), r["step_ms"])
    for r in results:
        if "error" in r:
            lines.append(f"| {r['scale']:g} | {r['dataset']} | {r['model']} | error: {r['error'][:120]} |")
            continue
        shown = {k.replace("best_valid_", "valid ").replace("test_", "").replace("_at_", "@"): v
                 for k, v in r.get("metrics", {}).items()
                 if any(s in k for s in ("auc", "hr_at_10", "mrr_at_10"))}
        examples = int(r.get("valid_examples", 0) + r.get("test_examples", 0))
        ratio = r["step_ms"] / reference[(r["dataset"], r["model"])] if r.get("step_ms") else None
        eval_s = r.get("eval_time_s", r.get("valid_time_s", 0) + r.get("test_time_s", 0)) or None
        lines.append(
            f"| {r['scale']:g} | {r['dataset']} | {r['model']} | {r['songs']:,} | {fmt(r.get('params'), ',')} | "
            f"{fmt(r.get('step_ms'), '.1f')}{' ms' if r.get('step_ms') else ''} | {fmt(ratio, '.2f')} | "
            f"{fmt(r.get('samples_per_s'), ',.0f')} | {r['peak_rss_gib']:.2f} GiB | {examples:,} | "
            f"{fmt(eval_s, '.0f')}{' s' if eval_s else ''} | {fmt(r.get('epoch_h'), '.2f')}{' h' if r.get('epoch_h') else ''} | "
            f"{r['wall_s']:.0f} s | {r['load_before']:.2f} / {r['load_after']:.2f} | "
            + ", ".join(f"{k} {v:.3f}" for k, v in sorted(shown.items())) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scales", type=float, nargs="+", default=[0.01, 0.1, 1.0])
    parser.add_argument("--models", nargs="+", default=None, help="models to run (default: all of both datasets)")
    parser.add_argument("--datasets", nargs="+", default=["lastfm", "kkbox"], choices=sorted(MODELS))
    parser.add_argument("--max-steps", type=int, default=50, help="training steps per model (default 50)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="passed to every training, e.g. --set eval.max_examples=2000")
    parser.add_argument("--features-set", dest="feature_overrides", action="append", default=[],
                        metavar="SECTION.KEY=VALUE", help="passed to both feature jobs, e.g. vocab.song_min_count=5 "
                        "(a feature output already under --work is reused as it is)")
    parser.add_argument("--work", type=Path, default=Path("/work/data/scale"), help="data, outputs and logs")
    parser.add_argument("--seed", type=int, default=0, help="datagen seed")
    parser.add_argument("--record", action="store_true", help=f"append the results to {RESULTS.relative_to(REPO)}")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    extra = [item for o in args.overrides for item in ("--set", o)]
    feature_extra = [item for o in args.feature_overrides for item in ("--set", o)]
    started, results, setup = time.time(), [], []
    for scale in args.scales:
        for dataset in args.datasets:
            raw, gen_s = ensure_raw(args.work, dataset, scale, args.seed)
            data, job = ensure_features(args.work, dataset, scale, raw, feature_extra)
            if gen_s is not None:
                setup.append(f"generated {dataset} at scale {scale:g} in {gen_s:.0f} s")
            if job is not None:
                setup.append(f"{dataset} feature job at scale {scale:g}: {job['seconds']:.0f} s, peak RSS "
                             f"{job['peak_rss'] / 2**30:.2f} GiB, load {job['load_before'][0]:.2f} / "
                             f"{job['load_after'][0]:.2f}")
            for model in MODELS[dataset]:
                if args.models and model not in args.models:
                    continue
                print(f"[bench] scale {scale:g} {dataset} {model}", flush=True)
                results.append(run_model(args.work, data, model, scale, args.max_steps, extra))
                print(json.dumps(results[-1], default=str), flush=True)
    text = report(results, setup, args, time.time() - started)
    print(text)
    if args.record:
        append_record(RESULTS, text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
