"""Shared fixtures: one session-scoped SparkSession, paths to the real samples, GPU skipping."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("MUSICREC_SHARED_DATA", REPO.parent / "shared" / "data"))


# The JVMs that pyspark starts for the suite (its SparkSession, and any a test's subprocess starts without
# spark-submit.sh) work on tiny data: the same flags spark-submit.sh gives a local driver on a small --input (its
# comment says why: the throughput collector, the JIT's quick compiler only). spark-submit.sh runs ignore this.
os.environ.setdefault(
    "PYSPARK_SUBMIT_ARGS", "--driver-java-options '-XX:+UseParallelGC -XX:TieredStopAtLevel=1' pyspark-shell"
)


@pytest.fixture(scope="session")
def spark():
    """One local[2] SparkSession for the whole run (UI off, few shuffle partitions), stopped at the end."""
    from musicrec.spark import get_spark

    session = get_spark(
        "musicrec-tests",
        master="local[2]",
        conf={
            "spark.sql.shuffle.partitions": "2",
            "spark.ui.enabled": "false",
            "spark.ui.showConsoleProgress": "false",
            "spark.default.parallelism": "2",
        },
    )
    yield session
    session.stop()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real small samples in ../shared/data (see its PROVENANCE.md); skip when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real samples not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="module")
def tracking(tmp_path_factory) -> str:
    """A fresh MLflow tracking store (sqlite) per test module."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


# Small fake feature outputs (tests/fakedata.py) for the loader tests, one per test module; a module that needs
# other sizes (test_training.py, test_tracking.py) defines its own fixture of the same name. ``import fakedata``
# (pytest puts the folder of a conftest on sys.path) works under both ``pytest`` and ``python -m pytest``.
@pytest.fixture(scope="module")
def kkbox_dir(tmp_path_factory):
    import fakedata

    out = tmp_path_factory.mktemp("kkbox")
    fakedata.write_kkbox(out, n_train=300, n_test=40, row_group_size=30)
    return out


@pytest.fixture(scope="module")
def lastfm_dir(tmp_path_factory):
    import fakedata

    out = tmp_path_factory.mktemp("lastfm")
    fakedata.write_lastfm(out, n_songs=150, row_group_size=8)
    return out


def pytest_collection_modifyitems(config, items):
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:  # torch missing is a set-up error that other tests report
        has_cuda = False
    if not has_cuda:
        skip = pytest.mark.skip(reason="needs a CUDA device")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
