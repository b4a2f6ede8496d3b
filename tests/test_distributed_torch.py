"""Distributed training with torch.distributed (issue 15): ``torchrun --nproc_per_node 2`` end to end through a
crash and ``--resume``, Spark's ``TorchDistributor`` in local mode, the exact gradient step of the torch backend
(sparse tables included), its collective timeout, and the launchers' flags.

The end-to-end test trains the DNN (sparse embedding tables, SparseAdam) on the data of tests/test_distributed.py
(shards of unequal size for 2 workers) and checks what the Horovod tests check (their helpers are imported from
there, so both backends pass the same checks):
- a crash: rank 1 exits (status 17) in the middle of epoch 2; the job ends within ``EXIT_BOUND_S`` with torchrun's
  failure summary naming rank 1 as the root cause, rank 0 ends with one ``error:`` line, and the MLflow run is FAILED
  (not RUNNING);
- ``--resume`` finishes it: every training example of every epoch was taken by exactly one worker (over the two
  launches), the final validation AUC is within tolerance of a 1-process run, and the store has exactly one run for
  the model, FINISHED, with one metric point per epoch;
- ``jobs/train_on_spark.py --backend torch`` (TorchDistributor, local mode, through spark-submit) trains the same
  run uninterrupted, in one MLflow run of its own store, and ends with the SAME weights as the crashed-and-resumed
  run: ``--resume`` is exact across launches and launchers.

Every learned model (logreg, dnn, gru, ncf) is then trained under torchrun, TorchDistributor (local mode) and
horovodrun with the same seed: one MLflow run each and the same final weights.

Cost on 2 cores: each torchrun launch ~20-40 s (two processes importing torch, Petastorm and MLflow), the
spark-submit one ~10 s more (a JVM).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from test_distributed import (  # noqa: F401  (datasets: the module-scoped fixture of the shared data)
    BACKEND_SCRIPT,
    DATASET,
    _check_two_worker_run,
    _env,
    _job,
    _one_worker_history,
    _train_args,
    datasets,
)

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
TORCHRUN = [str(VENV_BIN / "torchrun"), "--standalone", "--nproc_per_node", "2"]
EXIT_BOUND_S = 60.0  # a dead worker ends the whole torchrun job within this many seconds (issue 15)
MODEL = "dnn"
ROOT_CAUSE = re.compile(r"Root Cause \(first observed failure\):.*?rank\s*:\s*(\d+) \(local_rank: \d+\)\s*"
                        r"exitcode\s*:\s*(-?\d+)", re.S)

pytestmark = [pytest.mark.e2e]


def _torchrun(args, timeout=300, **env):
    started = time.time()
    proc = subprocess.run([*TORCHRUN, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout,
                          env=_env(**env))
    return proc, time.time() - started


def _why(out: str, limit: int = 6000) -> str:
    """The workers' tracebacks (torchrun prefixes them ``[rankN]:``) and errors first, then the end of the output."""
    errors = [line for line in out.splitlines() if line.startswith("[rank") or "error" in line.lower()]
    return "\n".join(errors)[-limit:] + "\n--- end of output ---\n" + out[-3000:]


def _mlflow_runs(tracking: str, dataset: str, model: str):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name(f"musicrec-{dataset}")
    return client.search_runs([experiment.experiment_id], filter_string=f"tags.model = '{model}'")


def _final_weights(run_dir: Path) -> dict[str, torch.Tensor]:
    from musicrec.checkpoint import load

    return load(run_dir / "last.pt")["model_state"]


@pytest.mark.slow
def test_torchrun_crash_resume_and_torch_distributor(datasets, tracking, tmp_path, capsys):
    data, run_dir = datasets / DATASET[MODEL], tmp_path / "two"
    one = _one_worker_history(MODEL, data, tmp_path / "one", capsys)
    args = ["jobs/train.py", *_train_args(MODEL, data, run_dir, tracking)]
    _crash_rank_1_in_epoch_2(args, tracking)

    proc, wall = _torchrun([*args, "--resume"], MUSICREC_DEBUG_ROWS="1")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, _why(out)
    assert "resuming" in out and "after epoch 1" in out
    assert out.count("distributed: backend=torch  workers=2") == 1 and out.count("resolved config:") == 1, \
        "only rank 0 prints"
    _check_two_worker_run(MODEL, data, run_dir, tracking, one,
                          note=f"(torchrun, crashed in epoch 2, resumed: {wall:.0f} s)")

    spark_dir = tmp_path / "spark"
    started = time.time()
    _train_with_torch_distributor(data, spark_dir, f"sqlite:///{tmp_path / 'spark-mlflow.db'}")
    resumed, uninterrupted = _final_weights(run_dir), _final_weights(spark_dir)
    differences = {k: float((resumed[k].double() - uninterrupted[k].double()).abs().max()) for k in resumed}
    print(f"TorchDistributor (uninterrupted, {time.time() - started:.0f} s) vs torchrun crashed + resumed: max |weight "
          f"difference| {max(differences.values()):.3g}")
    assert max(differences.values()) <= 1e-6, differences


def _crash_rank_1_in_epoch_2(args, tracking):
    """torchrun ``args`` with rank 1 exiting at its 30th batch (rank 1's shard is 1500 rows = 24 batches of 64 per
    epoch: in epoch 2, after the epoch-1 checkpoint): the job ends within EXIT_BOUND_S, torchrun names rank 1 as the
    root cause, rank 0 ends with one error line and the MLflow run is FAILED."""
    proc, _ = _torchrun(args, MUSICREC_DEBUG_ROWS="1", MUSICREC_FAULT_RANK="1", MUSICREC_FAULT_AT_STEP="30")
    ended, out = time.time(), proc.stdout + proc.stderr
    assert proc.returncode != 0, out[-3000:]
    fault = re.search(r"fault injection: rank 1 exits with status 17 at its training batch 30 \(epoch 2, "
                      r".*unix time ([0-9.]+)\)", out)
    assert fault, _why(out)
    assert ROOT_CAUSE.search(out) and ROOT_CAUSE.search(out).groups() == ("1", "17"), _why(out)
    assert re.search(r"^train\.py: error: rank 0 of 2: .*(another worker stopped|stopped by SIGTERM)", out,
                     re.M), _why(out)
    print(f"\nkilled worker: torchrun exited {ended - float(fault.group(1)):.1f} s after rank 1 died "
          f"(bound {EXIT_BOUND_S:.0f} s)")
    assert ended - float(fault.group(1)) < EXIT_BOUND_S
    (crashed,) = _mlflow_runs(tracking, DATASET[MODEL], MODEL)
    assert crashed.info.status == "FAILED", crashed.info.status


def _train_with_torch_distributor(data, run_dir, store):
    """jobs/train_on_spark.py --backend torch (TorchDistributor, local mode) through spark-submit: one FINISHED MLflow
    run in ``store``, recorded as the torch backend."""
    proc = subprocess.run(["./spark-submit.sh", "--master", "local[2]", "--conf", "spark.ui.enabled=false",
                           "jobs/train_on_spark.py", "--backend", "torch", "--num-proc", "2",
                           *_train_args(MODEL, data, run_dir, store)],
                          cwd=REPO, capture_output=True, text=True, timeout=420, env=_env())
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, "\n".join(line for line in out.splitlines() if " INFO " not in line)[-4000:]
    assert "2 torch.distributed workers through TorchDistributor (local mode" in out
    assert "train_on_spark.py: done" in out
    (run,) = _mlflow_runs(store, DATASET[MODEL], MODEL)
    assert run.info.status == "FINISHED" and run.data.params["distributed.backend"] == "torch"


@pytest.mark.slow
def test_torch_backend_same_steps_as_one_process_resume_and_timeout(tmp_path):
    """tests/test_distributed.py's exactness script under torchrun (the torch backend instead of Horovod's): 2
    workers take the same steps as 1 on the same global batches (SGD, Adam with clipping, and a sparse table with
    SparseAdam, then SparseAdamW, whose gradient is gathered, an idle worker joining with no rows), also across a
    checkpoint + resume;
    the optimizer state is broadcast without a dummy step; a worker that hangs makes the other give up after
    MUSICREC_COLLECTIVE_TIMEOUT_S (gloo's process-group timeout)."""
    assert 'backend.name == "horovod"' in BACKEND_SCRIPT
    script = tmp_path / "backend_check.py"
    script.write_text(BACKEND_SCRIPT.replace('backend.name == "horovod"', 'backend.name == "torch"'))
    proc, wall = _torchrun([str(script), str(REPO), str(tmp_path / "run")], timeout=240,
                           MUSICREC_COLLECTIVE_TIMEOUT_S="10")
    out = proc.stdout + proc.stderr
    for check in ("EXACT OK", "RESUME OK", "BROADCAST OK"):
        assert f"{check} rank 0" in out and f"{check} rank 1" in out, _why(out)
    print("\n" + re.search(r"EXACT OK rank 0[^\n]*?\}", out).group(0))
    assert "NOT REACHED" not in out and proc.returncode != 0
    assert re.search(r"rank 0 of 2: barrier waited more than 10 s for the other workers "
                     r"\(MUSICREC_COLLECTIVE_TIMEOUT_S\)", out), _why(out)
    assert ROOT_CAUSE.search(out).group(1) == "0", _why(out)  # the worker that gave up; the hung one was stopped
    hang_start = float(re.search(r"HANG START rank 0 ([0-9.]+)", out).group(1))
    print(f"hung worker: the job ended {time.time() - hang_start:.1f} s after rank 0 entered the barrier (limit 10 s)")
    assert time.time() - hang_start < 10 + EXIT_BOUND_S


@pytest.mark.slow
@pytest.mark.spark
@pytest.mark.parametrize("model", ["logreg", "dnn", "gru", "ncf"])  # every learned model
def test_every_launcher_trains_every_model_to_the_same_weights(model, datasets, spark, tmp_path):
    """The same seed, data and flags under torchrun, TorchDistributor (local mode, on this suite's SparkSession:
    no JVM per model) and horovodrun, 2 workers each: each logs exactly one FINISHED MLflow run in its own store,
    recorded with its backend and one metric point per epoch; torchrun takes every training example once per epoch;
    and the three end with the same weights (sparse tables are gathered in rank order by each backend and averaged
    the same way), hence the same metrics. TorchDistributor's cluster mode trains every model in
    tests/test_current_profile.py."""
    pytest.importorskip("horovod.torch")
    from mlflow.tracking import MlflowClient

    from musicrec.distributed.torch_dist import run_on_spark
    from musicrec.tracking import metric_key
    from test_distributed import HOROVODRUN, MAIN_METRIC, _check_every_example_once, _debug_rows

    data, weights, metrics = datasets / DATASET[model], {}, {}
    for name in ("torchrun", "TorchDistributor", "horovodrun"):
        run_dir, store = tmp_path / name, f"sqlite:///{tmp_path / name}-mlflow.db"
        args = ["jobs/train.py", *_train_args(model, data, run_dir, store)]
        started = time.time()
        if name == "TorchDistributor":
            run_on_spark(str(REPO / "jobs" / "train.py"), args[1:], num_proc=2, local_mode=True, use_gpu=False)
        else:
            launcher = TORCHRUN if name == "torchrun" else [*HOROVODRUN, sys.executable]
            proc = subprocess.run([*launcher, *args], cwd=REPO, capture_output=True, text=True, timeout=300,
                                  env=_env(MUSICREC_DEBUG_ROWS="1" if name == "torchrun" else "0"))
            assert proc.returncode == 0, _why(proc.stdout + proc.stderr)
        (run,) = _mlflow_runs(store, DATASET[model], model)  # exactly one run
        assert run.info.status == "FINISHED", (name, run.info.status)
        assert run.data.params["distributed.backend"] == ("horovod" if name == "horovodrun" else "torch")
        assert run.data.params["distributed.workers"] == "2"
        history = MlflowClient(store).get_metric_history(run.info.run_id, metric_key(MAIN_METRIC[model]))
        assert [m.step for m in history] == [1, 2], (name, history)
        metrics[name] = f"{history[-1].value:.4f} ({time.time() - started:.0f} s)"
        weights[name] = _final_weights(run_dir)
    for epoch in (1, 2):
        _check_every_example_once(model, data, _debug_rows(tmp_path / "torchrun", epoch))
    differences = {name: max(float((w.double() - weights["horovodrun"][k].double()).abs().max())
                             for k, w in weights[name].items()) for name in ("torchrun", "TorchDistributor")}
    print(f"\n{model}, 2 workers, 2 epochs: {MAIN_METRIC[model]} {metrics}; max |weight difference| vs horovodrun "
          f"{differences}")
    assert max(differences.values()) <= 1e-6, differences


@pytest.mark.spark
def test_torch_distributor_names_the_failed_rank(spark, tmp_path):
    """``torch_dist.run_on_spark``: TorchDistributor (local mode) runs a script under torchrun; rank 1 exits 17 while
    rank 0 still works -> ``WorkerFailure`` naming rank 1 and its status, from torchrun's summary."""
    from musicrec.distributed import WorkerFailure
    from musicrec.distributed.torch_dist import run_on_spark

    script = tmp_path / "exit17.py"
    script.write_text("import os, sys, time\nif os.environ['RANK'] == '1':\n    sys.exit(17)\ntime.sleep(60)\n")
    started = time.time()
    with pytest.raises(WorkerFailure, match=r"^rank 1 failed first \(exit status 17\)"):
        run_on_spark(str(script), [], num_proc=2, local_mode=True, use_gpu=False)
    assert time.time() - started < EXIT_BOUND_S


@pytest.mark.unit
def test_backend_flags_and_refusals(datasets, capsys, monkeypatch):
    import pyarrow
    from packaging.version import Version

    from musicrec import pipeline
    from musicrec.distributed import detect_backend
    from musicrec.distributed.torch_dist import LAUNCHER_ENV, TorchBackend

    for key in ("HOROVOD_RANK", "HOROVOD_SIZE", *LAUNCHER_ENV):
        monkeypatch.delenv(key, raising=False)
    assert detect_backend().name == "single"
    for key, value in zip(LAUNCHER_ENV, ("1", "2", "1", "127.0.0.1", "29500")):
        monkeypatch.setenv(key, value)
    assert detect_backend() is TorchBackend  # torchrun's environment; nothing initialized
    monkeypatch.setenv("HOROVOD_RANK", "1")
    monkeypatch.setenv("HOROVOD_SIZE", "2")
    assert detect_backend().name == "horovod"  # Horovod's launchers are looked for first
    for key in ("HOROVOD_RANK", "HOROVOD_SIZE", *LAUNCHER_ENV):
        monkeypatch.delenv(key)

    kkbox = str(datasets / "kkbox")
    assert _job("train").main(["--model", MODEL, "--data", kkbox, "--backend", "torch", "--tracking-uri", "none"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--backend torch: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT not set" in err[0]

    monkeypatch.setitem(sys.modules, "horovod.torch", None)  # a profile without Horovod: its import fails
    train_job = _job("train")
    assert train_job.main(["--model", MODEL, "--data", kkbox, "--backend", "horovod", "--tracking-uri", "none"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "the Horovod backend cannot be used here" in err[0] and "--backend torch" in err[0], err

    spark_job = _job("train_on_spark")
    with pytest.raises(SystemExit):
        _job("train").main(["--help"])
    assert "--backend {auto,torch,horovod}" in capsys.readouterr().out
    assert spark_job.main(["--torch-mode", "local", "--backend", "horovod", "--model", MODEL, "--data", kkbox]) == 2
    assert "--torch-mode local applies to --backend torch, not horovod" in capsys.readouterr().err
    if Version(pyarrow.__version__) < Version("18"):  # the default profile: cluster mode is refused before Spark starts
        assert spark_job.main(["--torch-mode", "cluster", "--backend", "torch", "--model", MODEL, "--data", kkbox]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "PyArrow >= 18.0.0 must be installed" in err[0] and "--torch-mode local" in err[0], err

    train = [sys.executable, "jobs/train.py", "--model", MODEL]
    assert pipeline.launch_command("torchrun", 2, train) == [str(pipeline.BIN / "torchrun"), "--standalone",
                                                             "--nproc_per_node", "2", "jobs/train.py", "--model", MODEL]
    assert pipeline.launch_command("horovodrun", 2, train)[1:6] == ["-np", "2", "--gloo", "-H", "localhost:2"]
    pipeline_job = _job("pipeline")
    assert pipeline_job.build_parser().parse_args(["--launcher", "torchrun"]).launcher == "torchrun"
    assert pipeline_job.build_parser().parse_args([]).launcher == "horovodrun"
    with pytest.raises(SystemExit):
        pipeline_job.build_parser().parse_args(["--launcher", "mpirun"])
    assert "invalid choice: 'mpirun'" in capsys.readouterr().err
