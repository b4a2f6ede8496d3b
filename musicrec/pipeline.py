"""The main job, end to end, as ``jobs/pipeline.py`` (``./run.sh demo``) runs it: raw files -> Spark feature jobs
-> training (Horovod or torch.distributed) -> MLflow comparison.

``run_demo`` runs every stage as a subprocess of the project's own commands (the ones a user runs by hand, printed
as they run), from the repository root and with the tools of the interpreter running the pipeline:

1. ``generate-<dataset>``: ``python -m musicrec.datagen <dataset>`` writes generated files in the real formats,
   for each dataset given no folder of real files (``check_raw_files`` first checks the real ones are complete);
2. ``features-<dataset>``: ``./spark-submit.sh jobs/features.py <dataset>``;
3. ``train-<dataset>-<model>``: ``jobs/train.py`` for each of ``TRAININGS``, the learned models under
   ``horovodrun -np N`` or ``torchrun --standalone --nproc_per_node N`` (``LAUNCHERS``), each with
   ``--max-steps N`` when given (a step budget, for a bounded run at the real size);
4. ``compare``: ``jobs/compare.py``, always rerun (it is cheap and reads whatever runs exist).

Each stage of 1-3 (``stage``) records what it was run on in ``.stamp-<name>.json`` (a ``fingerprint`` of its
input files and its command); a second run reuses every stage whose inputs and settings are unchanged.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from musicrec.schemas import KKBOX_FILES, LASTFM_PLAYS_FILE

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
BIN = Path(PYTHON).parent
DATASETS = ("lastfm", "kkbox")
REQUIRED_FILES = {"lastfm": [LASTFM_PLAYS_FILE], "kkbox": KKBOX_FILES}
LAUNCHERS = ("horovodrun", "torchrun")  # start the learned models' workers (``launch_command``); the first: default

# (model, dataset, launched with horovodrun / torchrun?) in the order they run; baselines run in one process.
TRAININGS = [
    ("pop", "kkbox", False),
    ("rate", "kkbox", False),
    ("lightgbm", "kkbox", False),
    ("logreg", "kkbox", False),
    ("dnn", "kkbox", True),
    ("ncf", "kkbox", True),
    ("pop", "lastfm", False),
    ("cooc", "lastfm", False),
    ("sknn", "lastfm", False),
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


def stage(name: str, stamp_dir: Path, inputs: list[Path], params: dict, cmd: list[str]) -> None:
    """Run ``cmd`` unless ``stamp_dir/.stamp-<name>.json`` says it already ran on the same inputs and params."""
    stamp = stamp_dir / f".stamp-{name}.json"
    key = fingerprint(inputs, params)
    if stamp.is_file() and json.loads(stamp.read_text()).get("key") == key:
        log(f"{name}: up to date, reusing ({stamp.parent})")
        return
    log(f"{name}: {' '.join(shlex.quote(c) for c in cmd)}")
    started = time.time()
    # Tools (spark-submit, horovodrun, torchrun) and Spark's Python workers come from the interpreter running this
    # pipeline.
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYSPARK_PYTHON": PYTHON,
           "PYSPARK_DRIVER_PYTHON": PYTHON}
    result = subprocess.run(cmd, cwd=REPO, env=env)
    if result.returncode != 0:
        raise SystemExit(f"[pipeline] stage {name!r} failed with exit code {result.returncode}; see its output above")
    stamp_dir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(json.dumps({"key": key, "seconds": round(time.time() - started, 1), "cmd": cmd}, indent=2))
    log(f"{name}: done in {time.time() - started:.0f}s")


def check_raw_files(raw: dict[str, Path | None]) -> str | None:
    """The error message for the first given folder of real files that lacks a required file, else None."""
    for dataset, folder in raw.items():
        if folder is None:
            continue
        missing = [name for name in REQUIRED_FILES[dataset] if not (folder / name).is_file()]
        if missing:
            return f"--{dataset} {folder}: missing file(s): {', '.join(missing)}"
    return None


def generate_stage(dataset: str, work: Path, seed: int, scale: float | None) -> Path:
    """Stage 1: generated raw files of ``dataset`` in the real formats, in ``work/raw/<dataset>``."""
    out = work / "raw" / dataset
    cmd = [PYTHON, "-m", "musicrec.datagen", dataset, "--out", str(out), "--seed", str(seed)]
    if scale is not None:
        cmd += ["--scale", str(scale)]
    stage(f"generate-{dataset}", out, [REPO / "musicrec" / "datagen"], {"cmd": cmd[2:]}, cmd)
    return out


def features_stage(dataset: str, work: Path, raw: Path) -> None:
    """Stage 2: the Spark feature job of ``dataset`` through spark-submit, into ``work/features/<dataset>``."""
    out = work / "features" / dataset
    cmd = [str(REPO / "spark-submit.sh"), "jobs/features.py", dataset, "--input", str(raw), "--output", str(out)]
    inputs = [raw.resolve(), REPO / "musicrec", REPO / "conf" / f"{dataset}.yaml"]
    stage(f"features-{dataset}", work / "features", inputs, {"cmd": cmd[1:]}, cmd)


def launch_command(launcher: str, num_proc: int, train: list[str]) -> list[str]:
    """``train`` (``[python, jobs/train.py, ...]``) under ``launcher`` with ``num_proc`` workers on this host:
    horovodrun (Gloo) runs the whole command, torchrun (``--standalone``: its own rendezvous on a free local port)
    runs the script with this interpreter; jobs/train.py picks the matching backend from the environment."""
    if launcher == "horovodrun":
        return [str(BIN / "horovodrun"), "-np", str(num_proc), "--gloo", "-H", f"localhost:{num_proc}"] + train
    if launcher == "torchrun":
        return [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", str(num_proc)] + train[1:]
    raise ValueError(f"unknown launcher {launcher!r}; expected one of {', '.join(LAUNCHERS)}")


def training_stages(work: Path, common: list[str], num_proc: int, launcher: str = "horovodrun") -> None:
    """Stage 3: every one of ``TRAININGS`` (``common``: the options of every run), the baselines in one process,
    the learned models with ``num_proc`` workers under ``launcher`` (in one process when ``num_proc`` is 1)."""
    for model, dataset, distributed in TRAININGS:
        data = work / "features" / dataset
        run_dir = work / "runs" / f"{dataset}-{model}"
        train = [PYTHON, "jobs/train.py", "--model", model, "--data", str(data), "--run-dir", str(run_dir),
                 "--overwrite"] + common  # the pipeline owns its work folder: a changed stage trains afresh
        if distributed and num_proc > 1:
            cmd = launch_command(launcher, num_proc, train)
        else:
            cmd = train
        inputs = [data, REPO / "musicrec", REPO / "conf" / f"{model}.yaml"]
        stage(f"train-{dataset}-{model}", run_dir, inputs, {"cmd": cmd[1:]}, cmd)


def compare_stage(work: Path, tracking_uri: str | None) -> None:
    """Stage 4: the comparison table from MLflow, into ``work/compare`` (no stamp: always rerun)."""
    compare = [PYTHON, "jobs/compare.py", "--out", str(work / "compare")]
    if tracking_uri:
        compare += ["--tracking-uri", tracking_uri]
    log("compare: " + " ".join(compare))
    subprocess.run(compare, cwd=REPO, check=True)


def run_demo(workdir: Path, lastfm: Path | None = None, kkbox: Path | None = None, *, scale: float | None = None,
             seed: int = 7, num_proc: int = 2, epochs: int | None = None, max_steps: int | None = None,
             tracking_uri: str | None = None, skip_train: bool = False, launcher: str = "horovodrun") -> int:
    """Run the whole pipeline in ``workdir`` on the real files in ``lastfm`` / ``kkbox`` (None: generated ones);
    ``epochs`` / ``max_steps`` go to every training (``--epochs`` / ``--max-steps``: a step budget bounds each
    learned model's run, e.g. at ``scale`` 1.0 on a CPU); ``launcher`` (``LAUNCHERS``) starts the learned models'
    ``num_proc`` workers. Returns the exit status: 0 done, 2 a folder of real files
    lacks a required file (one ``error:`` line). A stage that fails ends the run (``SystemExit``
    naming it: exit status 1)."""
    work = workdir.resolve()
    raw = {"lastfm": lastfm, "kkbox": kkbox}
    error = check_raw_files(raw)
    if error:
        print(f"run.sh demo: error: {error}", file=sys.stderr)
        return 2
    for dataset in DATASETS:
        if raw[dataset] is None:
            raw[dataset] = generate_stage(dataset, work, seed, scale)
    for dataset in DATASETS:
        features_stage(dataset, work, raw[dataset])
    if skip_train:
        log("--skip-train: stopping after the feature jobs")
        return 0
    common = ["--seed", str(seed)]
    if tracking_uri:
        common += ["--tracking-uri", tracking_uri]
    if epochs is not None:
        common += ["--epochs", str(epochs)]
    if max_steps is not None:
        common += ["--max-steps", str(max_steps)]
    training_stages(work, common, num_proc, launcher)
    compare_stage(work, tracking_uri)
    log("done. Open the MLflow UI with:  ./run.sh mlflow-ui   (then browse http://127.0.0.1:5000)")
    return 0
