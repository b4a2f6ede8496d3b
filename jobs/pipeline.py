"""The main job, end to end: raw files -> Spark feature jobs -> training (Horovod) -> MLflow comparison.

    ./run.sh demo                      # generated default data (real formats), everything else default
    ./run.sh demo --lastfm DIR --kkbox DIR   # real Last.fm 1K / KKBOX files instead of generated ones

Every stage is a separate command (the same ones a user runs by hand, printed as they run), and each stage
records what it was run on in a small ``.stamp.json``; a second run reuses every stage whose inputs and settings
are unchanged instead of redoing it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BIN = Path(PYTHON).parent

# (model, dataset, launched with horovodrun?) in the order they run; baselines run in one process.
TRAININGS = [
    ("pop", "kkbox", False),
    ("logreg", "kkbox", False),
    ("dnn", "kkbox", True),
    ("ncf", "kkbox", True),
    ("pop", "lastfm", False),
    ("cooc", "lastfm", False),
    ("gru", "lastfm", True),
    ("ncf", "lastfm", True),
]


def log(message: str) -> None:
    print(f"[pipeline {time.strftime('%H:%M:%S')}] {message}", flush=True)


def fingerprint(paths: list[Path], params: dict) -> str:
    """Cheap fingerprint of input files (name, size, mtime) and stage parameters, for stage reuse."""
    digest = hashlib.sha256(json.dumps(params, sort_keys=True, default=str).encode())
    for root in paths:
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for path in files:
            if path.name.startswith(".stamp"):
                continue
            stat = path.stat()
            digest.update(f"{path.relative_to(root.parent)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def stage(name: str, stamp_dir: Path, inputs: list[Path], params: dict, cmd: list[str], env: dict | None = None) -> None:
    """Run ``cmd`` unless ``stamp_dir/.stamp-<name>.json`` says it already ran on the same inputs and params."""
    stamp = stamp_dir / f".stamp-{name}.json"
    key = fingerprint(inputs, params)
    if stamp.is_file() and json.loads(stamp.read_text()).get("key") == key:
        log(f"{name}: up to date, reusing ({stamp.parent})")
        return
    log(f"{name}: {' '.join(shlex.quote(c) for c in cmd)}")
    started = time.time()
    # Tools (spark-submit, horovodrun) and Spark's Python workers come from the interpreter running this pipeline.
    base_env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYSPARK_PYTHON": PYTHON,
                "PYSPARK_DRIVER_PYTHON": PYTHON}
    result = subprocess.run(cmd, cwd=REPO, env={**base_env, **(env or {})})
    if result.returncode != 0:
        raise SystemExit(f"[pipeline] stage {name!r} failed with exit code {result.returncode}; see its output above")
    stamp_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps({"key": key, "seconds": round(time.time() - started, 1), "cmd": cmd}, indent=2))
    log(f"{name}: done in {time.time() - started:.0f}s")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="run.sh demo",
        description="Run the whole pipeline: data -> Spark features -> training -> MLflow comparison.",
    )
    parser.add_argument("--lastfm", type=Path, help="folder with the real Last.fm 1K files (default: generated)")
    parser.add_argument("--kkbox", type=Path, help="folder with the real KKBOX files (default: generated)")
    parser.add_argument("--workdir", type=Path, default=REPO / "work", help="where data and features go (default: work/)")
    parser.add_argument("--scale", type=float, default=None, help="generated data scale (default: the generator's small default)")
    parser.add_argument("--seed", type=int, default=7, help="seed for generated data and training (default: 7)")
    parser.add_argument("--np", dest="num_proc", type=int, default=2, help="horovodrun processes per learned model (default: 2)")
    parser.add_argument("--epochs", type=int, default=None, help="override every model's epoch count")
    parser.add_argument("--tracking-uri", default=None, help="MLflow tracking URI (default: the project's local store)")
    parser.add_argument("--skip-train", action="store_true", help="stop after the feature jobs")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    work = args.workdir.resolve()
    raw = {"lastfm": args.lastfm, "kkbox": args.kkbox}
    from musicrec.schemas import KKBOX_FILES, LASTFM_PLAYS_FILE

    required = {"lastfm": [LASTFM_PLAYS_FILE], "kkbox": KKBOX_FILES}
    for dataset, folder in raw.items():
        if folder is None:
            continue
        missing = [name for name in required[dataset] if not (folder / name).is_file()]
        if missing:
            print(f"run.sh demo: error: --{dataset} {folder}: missing file(s): {', '.join(missing)}", file=sys.stderr)
            return 2

    # 1. raw data: the user's files, or generated files in the real formats
    for dataset in ("lastfm", "kkbox"):
        if raw[dataset] is None:
            out = work / "raw" / dataset
            cmd = [PYTHON, "-m", "musicrec.datagen", dataset, "--out", str(out), "--seed", str(args.seed)]
            if args.scale is not None:
                cmd += ["--scale", str(args.scale)]
            stage(f"generate-{dataset}", out, [REPO / "musicrec" / "datagen"], {"cmd": cmd[2:]}, cmd)
            raw[dataset] = out

    # 2. Spark feature jobs through spark-submit
    for dataset in ("lastfm", "kkbox"):
        out = work / "features" / dataset
        cmd = [str(REPO / "spark-submit.sh"), "jobs/features.py", dataset, "--input", str(raw[dataset]), "--output", str(out)]
        inputs = [raw[dataset].resolve(), REPO / "musicrec", REPO / "conf" / f"{dataset}.yaml"]
        stage(f"features-{dataset}", work / "features", inputs, {"cmd": cmd[1:]}, cmd)

    if args.skip_train:
        log("--skip-train: stopping after the feature jobs")
        return 0

    # 3. training: baselines in one process, learned models with horovodrun -np N
    common = ["--seed", str(args.seed)]
    if args.tracking_uri:
        common += ["--tracking-uri", args.tracking_uri]
    if args.epochs is not None:
        common += ["--epochs", str(args.epochs)]
    for model, dataset, distributed in TRAININGS:
        data = work / "features" / dataset
        run_dir = work / "runs" / f"{dataset}-{model}"
        train = [PYTHON, "jobs/train.py", "--model", model, "--data", str(data), "--run-dir", str(run_dir)] + common
        if distributed and args.num_proc > 1:
            cmd = [str(BIN / "horovodrun"), "-np", str(args.num_proc), "--gloo", "-H", f"localhost:{args.num_proc}"] + train
        else:
            cmd = train
        inputs = [data, REPO / "musicrec", REPO / "conf" / f"{model}.yaml"]
        stage(f"train-{dataset}-{model}", run_dir, inputs, {"cmd": cmd[1:]}, cmd)

    # 4. comparison table from MLflow (always rerun: it is cheap and reads whatever runs exist)
    compare = [PYTHON, "jobs/compare.py", "--out", str(work / "compare")]
    if args.tracking_uri:
        compare += ["--tracking-uri", args.tracking_uri]
    log("compare: " + " ".join(compare))
    subprocess.run(compare, cwd=REPO, check=True)
    log("done. Open the MLflow UI with:  ./run.sh mlflow-ui   (then browse http://127.0.0.1:5000)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
