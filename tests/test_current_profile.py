"""The two dependency profiles (README "Two dependency profiles", issue 15): ``pip check`` is clean in the
environment the tests run in; the current profile's loader gives the default profile's batches; PySpark's Arrow paths (Arrow ``toPandas``, ``mapInArrow``, with the fallback off) work
in the current-dependency profile, where PySpark's declared pyarrow >= 18 is met, and fail in the default one
(pyarrow 14, for Petastorm); and in the current profile ``jobs/train_on_spark.py --backend torch --torch-mode
cluster`` trains through TorchDistributor's barrier tasks on a loopback standalone cluster (tests/standalone_cluster.py),
every learned model, each logging exactly one MLflow run. The default profile's refusal of cluster mode is tested in
tests/test_distributed_torch.py (test_backend_flags_and_refusals).

Cost on 2 cores: the Arrow test a few seconds (the shared SparkSession); the cluster test ~4 min (a master and two
workers, then per model a driver and two executors, each executor a torchrun node with one training process).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pyarrow
import pytest
from packaging.version import Version

from standalone_cluster import StandaloneCluster
from test_distributed import _env, _train_args, datasets  # noqa: F401  (datasets: module-scoped fixture)

REPO = Path(__file__).resolve().parent.parent
VENV_BIN = Path(sys.executable).parent
CURRENT = Version(pyarrow.__version__) >= Version("18")  # PySpark 4.3's declared minimum: the current profile
needs_current = pytest.mark.skipif(not CURRENT, reason="needs the current-dependency profile (pyarrow >= 18): "
                                                       "MUSICREC_PROFILE=current ./run.sh test ...")


@needs_current
@pytest.mark.unit
def test_run_sh_names_a_tool_the_profile_lacks():
    env = {**os.environ, "MUSICREC_PROFILE": "current"}
    proc = subprocess.run([str(REPO / "run.sh"), "horovodrun", "--help"], capture_output=True, text=True,
                          timeout=300, env=env, cwd=REPO)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "horovodrun is not installed in the current profile" in proc.stderr
    assert "Horovod is only in the default profile" in proc.stderr


@pytest.mark.unit
def test_pip_check_is_clean():
    proc = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.spark
def test_pysparks_arrow_paths_work_only_with_its_declared_pyarrow(spark):
    """Arrow ``toPandas`` and ``mapInArrow`` (what TorchDistributor's cluster mode runs) with
    ``spark.sql.execution.arrow.pyspark.fallback.enabled`` off: they work in the current profile, and fail with
    PySpark's own pyarrow message in the default one."""
    from pyspark.sql import functions as F

    df = spark.range(0, 1000, numPartitions=2).withColumn("half", (F.col("id") / 2).cast("double"))

    def double_ids(batches):
        for batch in batches:
            yield batch.set_column(0, "id", pyarrow.compute.multiply(batch.column(0), 2))

    spark.conf.set("spark.sql.execution.arrow.pyspark.enabled", "true")
    spark.conf.set("spark.sql.execution.arrow.pyspark.fallback.enabled", "false")
    try:
        if not CURRENT:
            with pytest.raises(Exception, match=r"PyArrow >= 18\.0\.0 must be installed"):
                df.toPandas()
            return
        pdf = df.toPandas()
        assert list(pdf.columns) == ["id", "half"] and len(pdf) == 1000
        assert pdf["id"].tolist() == list(range(1000)) and pdf["half"].iloc[-1] == 499.5
        doubled = df.mapInArrow(double_ids, df.schema).agg(F.sum("id")).collect()[0][0]
        assert doubled == 2 * sum(range(1000))
    finally:
        spark.conf.unset("spark.sql.execution.arrow.pyspark.enabled")
        spark.conf.unset("spark.sql.execution.arrow.pyspark.fallback.enabled")


@needs_current
@pytest.mark.unit
def test_the_same_batches_as_the_default_profile(kkbox_dir, lastfm_dir, tmp_path):
    """The pyarrow reader here (pyarrow >= 18, numpy 2) and Petastorm in the default profile's .venv (pyarrow 14,
    numpy 1.26) give the same batches, dtype for dtype (tests/profile_batches.py in both venvs)."""
    import numpy as np

    from profile_batches import batches

    default_python = REPO / ".venv" / "bin" / "python"
    if not default_python.is_file():
        pytest.skip("the default profile's .venv is not set up")
    subprocess.run([str(default_python), str(REPO / "tests" / "profile_batches.py"), str(kkbox_dir), str(lastfm_dir),
                    str(tmp_path / "default.npz")], check=True, cwd=REPO, timeout=300, env=_env())
    here = batches(kkbox_dir, lastfm_dir)
    with np.load(tmp_path / "default.npz") as default:
        assert (str(default["reader"]), str(here["reader"])) == ("petastorm", "arrow")
        assert sorted(default.files) == sorted(here) and len(here) > 300
        for key in set(here) - {"reader"}:
            assert default[key].dtype == here[key].dtype, key
            np.testing.assert_array_equal(default[key], here[key], err_msg=key)


@needs_current
@pytest.mark.e2e
@pytest.mark.slow
def test_torch_distributor_cluster_mode_on_a_standalone_cluster(datasets, tmp_path):  # noqa: F811
    """jobs/train_on_spark.py --backend torch --torch-mode cluster through spark-submit on a 2-worker standalone
    cluster on 127.0.0.1, once per learned model: two barrier tasks, one in each worker's executor, each a torchrun
    node, train the model for 2 epochs; one MLflow run per model, FINISHED, recorded as the torch backend with 2
    workers, with a metric point per epoch."""
    from mlflow.tracking import MlflowClient

    from musicrec.tracking import metric_key
    from test_distributed import DATASET, MAIN_METRIC

    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = _env(PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable, SPARK_LOCAL_IP="127.0.0.1",
               MUSICREC_CONF_DIR=str(REPO / "conf"))
    client, walls = MlflowClient(store), {}
    with StandaloneCluster(workers=2, cores=1, memory="1g", log_dir=tmp_path / "cluster") as cluster:
        for model in ("dnn", "logreg", "gru", "ncf"):
            run_dir, started = tmp_path / model, time.time()
            # the current profile's own spark-submit (spark-submit.sh takes .venv's); musicrec is on the venv's path
            proc = subprocess.run([str(VENV_BIN / "spark-submit"), "--master", cluster.master_url,
                                   "--total-executor-cores", "2", "--executor-cores", "1", "--executor-memory", "1g",
                                   "--conf", "spark.ui.enabled=false", "jobs/train_on_spark.py", "--backend", "torch",
                                   "--torch-mode", "cluster", "--num-proc", "2",
                                   *_train_args(model, datasets / DATASET[model], run_dir, store)],
                                  cwd=REPO, capture_output=True, text=True, timeout=480, env=env)
            out = proc.stdout + proc.stderr
            assert proc.returncode == 0, \
                model + "\n" + "\n".join(line for line in out.splitlines() if " INFO " not in line)[-6000:]
            assert "2 torch.distributed workers through TorchDistributor (cluster mode: barrier tasks on " \
                "spark://127.0.0.1:" in out
            assert "train_on_spark.py: done: 2 workers finished" in out
            experiment = client.get_experiment_by_name(f"musicrec-{DATASET[model]}")
            (run,) = client.search_runs([experiment.experiment_id], filter_string=f"tags.model = '{model}'")
            assert run.info.status == "FINISHED"
            assert run.data.params["distributed.backend"] == "torch" and run.data.params["distributed.workers"] == "2"
            assert len(client.get_metric_history(run.info.run_id, metric_key(MAIN_METRIC[model]))) == 2
            assert (run_dir / "last.pt").is_file()
            walls[model] = round(time.time() - started)
    # the training ran in the executors: per application one barrier task in each worker's executor, rank 0's output
    # in one of them
    apps = sorted({f.parent.parent.name for f in (tmp_path / "cluster").glob("worker-*/app-*/*/stderr")})
    assert len(apps) == len(walls), apps
    for app in apps:
        logs = {w: [f.read_text(errors="replace") for f in (tmp_path / "cluster" / w / app).glob("*/stderr")]
                for w in ("worker-0", "worker-1")}
        assert all(len(found) == 1 and "BarrierTaskContext" in found[0] for found in logs.values()), (app, logs.keys())
        assert sum(bool(re.search(r"train\.py: model=\w+ dataset=", found[0])) for found in logs.values()) == 1, app
    print(f"\nTorchDistributor cluster mode on a 2-worker standalone cluster, seconds per model: {walls} "
          f"(pyarrow {pyarrow.__version__}, reader {os.environ.get('MUSICREC_READER', 'auto')})")
