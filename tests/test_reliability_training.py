"""Issue 14, the training side (docs/FAILURE_MODES.md, cases 1, 4 and 5): a fresh run never destroys an earlier run's
checkpoints, MLflow history is not rewritten (a failed continuation keeps FINISHED; a run whose process was killed
is marked KILLED by the next start in its folder, also after ``kill -9`` of rank 0 under ``horovodrun``), and an
unreachable tracking server fails within seconds. Every run is ``jobs/train.py`` as a subprocess on tiny fake data
with a real SQLite MLflow store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

import fakedata
from musicrec.train.rundir import RECORD_NAME, REPLACED

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
SMALL = ["--set", "model.song_dim=8", "--set", "model.tag_dim=4", "--set", "model.hidden=8", "--set",
         "model.attention_dim=8", "--set", "data.batch_size=32", "--set", "train.progress=false"]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lastfm")
    fakedata.write_lastfm(out, n_songs=150)
    return out


def train(data: Path, run_dir: Path, uri: str, *extra: str, env: dict | None = None, wait: bool = True):
    """``jobs/train.py --model gru`` (tiny sizes, 1 epoch unless ``extra`` says otherwise) as a subprocess."""
    command = [PYTHON, "jobs/train.py", "--model", "gru", "--data", str(data), "--run-dir", str(run_dir),
               "--tracking-uri", uri, "--epochs", "1", *SMALL, *extra]
    environment = dict(os.environ, PYTHONPATH=str(REPO), **(env or {}))
    if not wait:
        return subprocess.Popen(command, cwd=REPO, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True)
    return subprocess.run(command, cwd=REPO, env=environment, capture_output=True, text=True, timeout=300)


def statuses(uri: str) -> list[str]:
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("musicrec-lastfm")
    return [r.info.status for r in client.search_runs([experiment.experiment_id])] if experiment else []


def error_line(result) -> str:
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    lines = [line for line in result.stderr.strip().splitlines() if not line.startswith("warning: ")]
    assert len(lines) == 1 and lines[0].startswith("train.py: error: "), result.stderr[-2000:]
    return lines[0]


@pytest.mark.e2e
def test_case1_fresh_run_refuses_then_overwrite_keeps_the_old_checkpoints_until_it_finishes(data, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_dir = tmp_path / "run"
    assert train(data, run_dir, uri).returncode == 0
    before = {p.name: p.read_bytes() for p in run_dir.glob("*.pt")}
    assert set(before) == {"last.pt", "best.pt"}

    # a fresh run (a mistyped --set included) in the folder: exit 2, nothing touched
    line = error_line(train(data, run_dir, uri, "--set", "train.lr=0.002"))
    assert f"run dir {run_dir} holds an earlier run's checkpoints (last.pt, best.pt): pass --resume" in line
    assert {p.name: p.read_bytes() for p in run_dir.glob("*.pt")} == before

    # --overwrite that dies at its first batch: the old checkpoints wait in replaced/
    died = train(data, run_dir, uri, "--overwrite", env={"MUSICREC_FAULT_RANK": "0", "MUSICREC_FAULT_AT_STEP": "1"})
    assert died.returncode == 17, died.stdout[-2000:]
    assert {p.name: p.read_bytes() for p in (run_dir / REPLACED).glob("*.pt")} == before

    # the next start settles the dead run's RUNNING MLflow record; a finished --overwrite run drops replaced/
    finished = train(data, run_dir, uri, "--overwrite")
    assert finished.returncode == 0, finished.stdout[-2000:] + finished.stderr[-2000:]
    assert "was left RUNNING by a training that died" in finished.stdout
    assert not (run_dir / REPLACED).exists() and (run_dir / "best.pt").is_file()
    assert sorted(statuses(uri)) == ["FINISHED", "FINISHED", "KILLED"]


@pytest.mark.e2e
def test_case4_failed_continuation_keeps_the_run_finished(data, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_dir = tmp_path / "run"
    assert train(data, run_dir, uri).returncode == 0
    (run_dir / "best.pt").write_bytes(b"not a checkpoint")  # the continuation fails when it reads it back
    result = train(data, run_dir, uri, "--resume", "--epochs", "2")
    assert result.returncode != 0
    assert "keeps its earlier status FINISHED" in result.stdout
    assert statuses(uri) == ["FINISHED"]
    run = MlflowClient(uri).search_runs([MlflowClient(uri).get_experiment_by_name("musicrec-lastfm").experiment_id])[0]
    assert "musicrec.resume_failed" in run.data.tags


@pytest.mark.e2e
def test_case4_kill_9_leaves_no_running_orphan_after_the_next_start(data, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_dir = tmp_path / "run"
    process = train(data, run_dir, uri, "--epochs", "50", wait=False)
    deadline = time.time() + 120
    while not (run_dir / RECORD_NAME).is_file() and time.time() < deadline:
        time.sleep(0.2)
    assert (run_dir / RECORD_NAME).is_file(), "the training never recorded its MLflow run"
    time.sleep(1.0)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert statuses(uri) == ["RUNNING"]  # what kill -9 leaves: nobody could end the run

    # the next start in the folder (here a fresh one: the kill may have come before the first checkpoint)
    again = train(data, run_dir, uri, "--overwrite")
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert "was left RUNNING by a training that died" in again.stdout
    assert sorted(statuses(uri)) == ["FINISHED", "KILLED"]


@pytest.mark.e2e
def test_case4_dead_rank_0_under_horovodrun_is_marked_killed_by_the_next_start(data, tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_dir = tmp_path / "run"
    horovodrun = str(Path(PYTHON).parent / "horovodrun")
    command = [horovodrun, "-np", "2", "--gloo", "-H", "localhost:2", PYTHON, "jobs/train.py", "--model", "gru",
               "--data", str(data), "--run-dir", str(run_dir), "--tracking-uri", uri, "--epochs", "1", *SMALL]
    env = dict(os.environ, PYTHONPATH=str(REPO), MUSICREC_FAULT_RANK="0", MUSICREC_FAULT_AT_STEP="2",
               PATH=f"{Path(PYTHON).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    died = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert died.returncode != 0
    assert statuses(uri) == ["RUNNING"]
    again = train(data, run_dir, uri)  # rank 0 died before any checkpoint: a fresh run in the same folder
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-2000:]
    assert sorted(statuses(uri)) == ["FINISHED", "KILLED"]


@pytest.mark.e2e
def test_case1_second_training_in_a_busy_run_dir_is_refused(data, tmp_path):
    run_dir = tmp_path / "run"
    first = train(data, run_dir, "none", "--epochs", "50", wait=False)
    try:
        deadline = time.time() + 120
        while not (run_dir / ".run.lock").is_file() and time.time() < deadline:
            time.sleep(0.2)
        line = error_line(train(data, run_dir, "none"))
        assert f"run dir {run_dir} is in use by another training (pid {first.pid})" in line
    finally:
        first.kill()
        first.wait(timeout=30)


@pytest.mark.e2e
def test_case5_unreachable_tracking_server_fails_within_seconds(data, tmp_path):
    started = time.time()
    result = train(data, tmp_path / "run", "http://127.0.0.1:9")
    line = error_line(result)
    assert time.time() - started < 30
    assert "MLflow tracking server http://127.0.0.1:9 is unreachable" in line
    env_result = subprocess.run([PYTHON, "jobs/train.py", "--model", "gru", "--data", str(data)], cwd=REPO,
                                env=dict(os.environ, PYTHONPATH=str(REPO), MLFLOW_TRACKING_URI="http://127.0.0.1:9"),
                                capture_output=True, text=True, timeout=60)
    assert "is unreachable" in error_line(env_result)
