"""Training throughput with 1 process and 2 workers (torchrun and/or horovodrun, gloo) on this machine's CPU, for
every learned model.

    .venv/bin/python benchmarks/bench_distributed.py                      # all models, results as a Markdown table
    .venv/bin/python benchmarks/bench_distributed.py --models dnn gru --epochs 3 --json out.json
    .venv/bin/python benchmarks/bench_distributed.py --quick --launchers torchrun horovodrun   # both backends

For each model, in one run and on the same data: ``jobs/train.py`` in one process with 1 torch thread (the project's
default ``train.num_threads: 1``) and with one thread per core, then with 2 workers under each of ``--launchers``
(``torchrun --standalone --nproc_per_node 2``: the torch.distributed backend, gloo; ``horovodrun -np 2 --gloo``:
Horovod's; default both where Horovod is installed) with 1 thread per worker (cores / workers on this 2-core
machine) and with one thread per core in EVERY worker (2 workers x 2 threads on 2 cores: oversubscribed). Each run
uses the model's ``conf/<model>.yaml`` with only ``train.num_threads`` changed (its ``data.batch_size`` is the
GLOBAL batch, so 2 workers take half each) and ``--epochs`` epochs.
Throughput = training examples per second averaged over the epochs after the first (which warms up: Petastorm, the
loader's row-group cache, the allocator, Horovod's response cache, gloo's connections), from the run's ``last.pt``
history (``samples_per_s`` = examples of all workers / rank 0's epoch wall time; evaluation excluded).
Scaling efficiency = throughput(2 workers) / (2 x throughput(1 process, 1 thread)); also given against the faster
1-process run.

The data are tests/fakedata.py datasets, larger than the tests' (sizes below), written once under ``--workdir``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from measure import cpu_model  # a sibling of this script

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

MODELS = ("logreg", "dnn", "ncf", "gru")
LAUNCHERS = ("torchrun", "horovodrun")  # musicrec.pipeline.launch_command's; torchrun first: it needs no build
DATASET = {"logreg": "kkbox", "dnn": "kkbox", "ncf": "lastfm", "gru": "lastfm"}
KKBOX = dict(n_users=2000, n_songs=5000, n_train=200_000, n_test=1000, row_group_size=10_000, n_files=4)
LASTFM = dict(n_users=2000, n_songs=2000, sessions_per_user=(10, 2, 2), row_group_size=1000, n_files=4, max_len=10)


def write_data(workdir: Path) -> dict[str, Path]:
    from tests import fakedata

    paths = {"kkbox": workdir / "kkbox", "lastfm": workdir / "lastfm"}
    if not (paths["kkbox"] / "_MANIFEST.json").is_file():
        fakedata.write_kkbox(paths["kkbox"], **KKBOX)
    if not (paths["lastfm"] / "_MANIFEST.json").is_file():
        fakedata.write_lastfm(paths["lastfm"], **LASTFM)
    return paths


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def conf_with_threads(model: str, threads: int, workdir: Path) -> Path:
    """conf/<model>.yaml with ``train.num_threads`` set (the shipped files do not list that key)."""
    import yaml

    config = yaml.safe_load((REPO / "conf" / f"{model}.yaml").read_text())
    config["train"]["num_threads"] = threads
    path = workdir / f"conf-{model}-t{threads}.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def run(model: str, data: Path, run_dir: Path, workers: int, epochs: int, threads: int, workdir: Path,
        launcher: str = "horovodrun") -> dict:
    """One training run; returns its last epoch's record and the wall time of the whole command."""
    from musicrec.checkpoint import load
    from musicrec.pipeline import launch_command
    from musicrec.train import TrainConfig

    python = sys.executable
    cmd = [python, "jobs/train.py", "--model", model, "--data", str(data), "--epochs", str(epochs),
           "--run-dir", str(run_dir), "--overwrite", "--tracking-uri", "none", "--set", "train.progress=false",
           "--set", "train.patience=0"]
    has_key = "num_threads" in TrainConfig.__dataclass_fields__
    if has_key:
        cmd += ["--conf", str(conf_with_threads(model, threads, workdir))]
    if workers > 1:
        cmd = launch_command(launcher, workers, cmd)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MUSICREC_")}
    env.pop("OMP_NUM_THREADS", None)
    if not has_key:
        env["OMP_NUM_THREADS"] = str(threads)
    started = time.time()
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env)
    wall = time.time() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{(proc.stdout + proc.stderr)[-3000:]}")
    history = json.loads(load(run_dir / "last.pt")["loop_state"])["history"]
    steady = history[1:] or history
    return {"samples_per_s": sum(r["samples_per_s"] for r in steady) / len(steady),
            "epoch_time_s": sum(r["epoch_time_s"] for r in steady) / len(steady),
            "first_epoch_samples_per_s": history[0]["samples_per_s"], "command_wall_s": wall,
            "command": " ".join(Path(c).name if i == 0 else c for i, c in enumerate(cmd))}


def loadavg() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "?"


def has_horovod() -> bool:
    import importlib.util

    return importlib.util.find_spec("horovod") is not None


def machine() -> dict:
    import torch

    cpu = cpu_model("?")
    horovod = __import__("horovod").__version__ if has_horovod() else "not installed"
    return {"cpu": cpu, "cores": cores(), "python": platform.python_version(), "torch": torch.__version__,
            "horovod": horovod, "torch_default_threads": torch.get_num_threads(),
            "gpu": "none (no GPU lent to this task)"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--epochs", type=int, default=3, help="epochs per run; all but the first are measured (default 3)")
    parser.add_argument("--workdir", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "musicrec-bench-distributed")
    parser.add_argument("--quick", action="store_true", help="only 1 process x 1 thread and 2 workers x 1 thread")
    parser.add_argument("--launchers", nargs="+", choices=LAUNCHERS, default=None,
                        help="launchers of the 2-worker runs (default: torchrun, and horovodrun where installed)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results as JSON")
    args = parser.parse_args(argv)

    launchers = args.launchers or [name for name in LAUNCHERS if name != "horovodrun" or has_horovod()]
    if "horovodrun" in launchers and not has_horovod():
        parser.error("--launchers horovodrun: Horovod is not installed in this profile")
    args.workdir.mkdir(parents=True, exist_ok=True)
    paths = write_data(args.workdir)
    info = machine()
    n = info["cores"]
    print(f"machine: {info}", flush=True)
    rows = []
    for model in args.models:
        data = paths[DATASET[model]]
        half = max(1, n // 2)
        variants = [("1 process x 1 thread", 1, 1, "-"), (f"1 process x {n} threads", 1, n, "-")]
        for launcher in launchers:
            variants += [(f"{launcher} 2 workers x {half} thread(s)", 2, half, launcher)]
            if not args.quick:
                variants += [(f"{launcher} 2 workers x {n} threads (oversubscribed)", 2, n, launcher)]
        if args.quick:
            variants = [v for v in variants if v[2] == 1 or v[1] == 2]
        results = {}
        for label, workers, threads, launcher in dict.fromkeys(variants):
            before = loadavg()
            result = run(model, data, args.workdir / f"run-{model}-{workers}-{threads}-{launcher}", workers,
                         args.epochs, threads, args.workdir, launcher)
            result.update(label=label, workers=workers, launcher=launcher, loadavg_before=before,
                          loadavg_after=loadavg())
            results[label] = result
            print(f"{model:7s} {label:40s} {result['samples_per_s']:>10,.0f} samples/s  (epoch {result['epoch_time_s']:.1f} s, "
                  f"load {before} -> {result['loadavg_after']})", flush=True)
        one = results[variants[0][0]]["samples_per_s"]
        best_one = max(r["samples_per_s"] for r in results.values() if r["workers"] == 1)
        for result in results.values():
            result["efficiency"] = result["samples_per_s"] / (result["workers"] * one)
            result["efficiency_vs_best_1"] = result["samples_per_s"] / (result["workers"] * best_one)
        rows.append({"model": model, "dataset": DATASET[model], "results": list(results.values())})

    print("\n| model | data | run | samples/s (epochs 2..E) | efficiency vs 1 x 1 thread | vs best 1-process | "
          "load avg before -> after |")
    print("| --- | --- | --- | ---: | ---: | ---: | --- |")
    for row in rows:
        for r in row["results"]:
            eff = "" if r["workers"] == 1 else f"{r['efficiency']:.2f}"
            best = "" if r["workers"] == 1 else f"{r['efficiency_vs_best_1']:.2f}"
            print(f"| {row['model']} | {row['dataset']} | {r['label']} | {r['samples_per_s']:,.0f} | {eff} | {best} | "
                  f"{r['loadavg_before']} -> {r['loadavg_after']} |")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "kkbox": KKBOX, "lastfm": LASTFM, "epochs": args.epochs,
                                         "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
