"""The main job end to end on tiny generated data, then what a user does next: notebooks and the MLflow UI.

One module-scoped run of ``jobs/pipeline.py`` (generate -> spark-submit feature jobs -> horovodrun training ->
compare) feeds every test here, so the expensive part runs once.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
NOTEBOOKS = ["01_lastfm_eda.ipynb", "02_kkbox_eda.ipynb", "03_compare_runs.ipynb"]
MODELS = ({("kkbox", m) for m in ("pop", "rate", "logreg", "lightgbm", "dnn", "ncf")}
          | {("lastfm", m) for m in ("pop", "cooc", "sknn", "gru", "ncf")})

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def run_pipeline(workdir: Path, tracking_uri: str, *extra: str) -> subprocess.CompletedProcess:
    cmd = [PYTHON, "jobs/pipeline.py", "--workdir", str(workdir), "--tracking-uri", tracking_uri,
           "--scale", "0.002", "--epochs", "1", "--max-steps", "4", "--np", "2", *extra]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1500)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """Run the whole pipeline once; return (workdir, tracking uri, the run's stdout)."""
    workdir = tmp_path_factory.mktemp("demo")
    tracking_uri = f"sqlite:///{workdir / 'mlflow.db'}"
    result = run_pipeline(workdir, tracking_uri)
    assert result.returncode == 0, f"pipeline failed:\n{result.stdout[-6000:]}\n{result.stderr[-6000:]}"
    return workdir, tracking_uri, result.stdout


def compared_models(table_md: str) -> set[tuple[str, str]]:
    """{(dataset, model)} listed in compare.py's comparison.md (one '### dataset' table each)."""
    found = set()
    for block in table_md.split("### ")[1:]:
        dataset, *lines = block.splitlines()
        rows = [line for line in lines if line.startswith("| ") and not line.startswith("| model ")]
        found |= {(dataset.strip(), row.split("|")[1].strip()) for row in rows}
    return found


def test_pipeline_compares_every_model(demo):
    workdir, _, stdout = demo
    table = (workdir / "compare" / "comparison.md").read_text()
    assert compared_models(table) == MODELS, table
    assert "mlflow-ui" in stdout  # tells the user how to open the UI
    trainings = [line for line in stdout.splitlines() if "train-" in line and "jobs/train.py" in line]
    assert len(trainings) == len(MODELS) and all("--max-steps 4" in line for line in trainings), trainings
    assert (workdir / "compare" / "comparison.png").stat().st_size > 10_000


def test_second_run_reuses_every_stage(demo):
    workdir, tracking_uri, _ = demo
    started = time.time()
    result = run_pipeline(workdir, tracking_uri)
    assert result.returncode == 0, result.stderr[-3000:]
    reused = [line for line in result.stdout.splitlines() if "up to date, reusing" in line]
    assert len(reused) == 2 + 2 + len(MODELS), result.stdout  # generate x2, features x2, every training
    assert time.time() - started < 120


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_notebook_executes(demo, notebook, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    workdir, tracking_uri, _ = demo
    env = {
        "MUSICREC_LASTFM_FEATURES": str(workdir / "features" / "lastfm"),
        "MUSICREC_KKBOX_FEATURES": str(workdir / "features" / "kkbox"),
        "MUSICREC_KKBOX_RAW": str(workdir / "raw" / "kkbox"),
        "MLFLOW_TRACKING_URI": tracking_uri,
    }
    old = {key: os.environ.get(key) for key in env}
    os.environ.update(env)  # the kernel inherits the environment of this process
    try:
        nb = nbformat.read(REPO / "notebooks" / notebook, as_version=4)
        NotebookClient(nb, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": str(REPO / "notebooks")}}).execute()
    finally:
        for key, value in old.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    images = sum("image/png" in out.get("data", {}) for cell in nb.cells for out in cell.get("outputs", []))
    assert images >= 2, f"{notebook} drew {images} plots"
    nbformat.write(nb, tmp_path / notebook)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_mlflow_server_serves_the_demo_runs(demo):
    workdir, tracking_uri, _ = demo
    port = free_port()
    server = subprocess.Popen(
        [str(Path(PYTHON).parent / "mlflow"), "server", "--backend-store-uri", tracking_uri,
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    base = f"http://127.0.0.1:{port}/api/2.0/mlflow"
    try:
        deadline = time.time() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    raise AssertionError(f"mlflow server did not start: {server.stderr.read()[-3000:]}")
                time.sleep(1)

        def post(path: str, body: dict) -> dict:
            request = urllib.request.Request(f"{base}/{path}", data=json.dumps(body).encode(),
                                             headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.load(response)

        experiments = post("experiments/search", {"max_results": 100})["experiments"]
        ids = {e["name"]: e["experiment_id"] for e in experiments}
        assert {"musicrec-lastfm", "musicrec-kkbox"} <= set(ids)
        runs = post("runs/search", {"experiment_ids": [ids["musicrec-lastfm"], ids["musicrec-kkbox"]],
                                    "max_results": 1000})["runs"]
        found = {(tag["value"]) for run in runs for tag in run["data"].get("tags", []) if tag["key"] == "model"}
        assert {model for _, model in MODELS} <= found
        for run in runs:  # what the UI shows in its "Dataset" column and "System metrics" tab
            params = {p["key"]: p["value"] for p in run["data"]["params"]}
            (dataset,) = [d["dataset"] for d in run["inputs"]["dataset_inputs"]]
            assert (dataset["digest"], dataset["source_type"]) == (params["data.fingerprint"], "local")
            assert json.loads(dataset["source"]) == {"uri": params["data.path"]}
            assert params["train.max_steps"] == "4"
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


def test_max_steps_is_documented_and_checked(tmp_path):
    shown = subprocess.run([PYTHON, "jobs/pipeline.py", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "--max-steps N" in shown.stdout
    result = subprocess.run([PYTHON, "jobs/pipeline.py", "--max-steps", "-1", "--workdir", str(tmp_path / "w")],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--max-steps must be >= 0, got -1" in result.stderr
    assert not (tmp_path / "w").exists(), "nothing ran"


def test_missing_real_file_fails_at_once_naming_it(tmp_path):
    kkbox = tmp_path / "kkbox"
    kkbox.mkdir()
    for name in ("train.csv", "test.csv", "songs.csv", "members.csv"):  # song_extra_info.csv missing
        (kkbox / name).write_text("x\n")
    started = time.time()
    result = subprocess.run([PYTHON, "jobs/pipeline.py", "--kkbox", str(kkbox), "--workdir", str(tmp_path / "w")],
                            cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert "song_extra_info.csv" in result.stderr
    assert time.time() - started < 30
