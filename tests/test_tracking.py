"""MLflow records of a training run, read back through ``MlflowClient`` from a temporary SQLite store: params,
per-epoch metric histories, final metrics, artifacts, the logged model, the feature output as the run's input dataset,
system metrics, and a resumed run continuing the same run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from musicrec.data import Data, DataConfig, manifest_fingerprint
from musicrec.seeding import seed_everything
from musicrec.tracking import (
    MlflowTracker,
    artifact_root,
    default_tracking_uri,
    display_name,
    flatten,
    metric_key,
    resolve_tracking_uri,
)
from musicrec.train import TrainConfig, fit
import fakedata
from test_training import TinyBinary, TinyConfig

@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow")
    return root, f"sqlite:///{root / 'mlflow.db'}"


@pytest.fixture(scope="module")
def kkbox_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("kkbox")
    fakedata.write_kkbox(out, n_train=300, row_group_size=100)
    return out


@pytest.mark.unit
def test_default_store_is_sqlite_inside_the_project(monkeypatch, tmp_path):
    repo = Path(__file__).resolve().parent.parent
    assert default_tracking_uri() == f"sqlite:///{repo / 'mlflow.db'}"
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri() == default_tracking_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///elsewhere.db")
    assert resolve_tracking_uri() == "sqlite:///elsewhere.db"
    assert resolve_tracking_uri("http://server:5000") == "http://server:5000"
    assert artifact_root(default_tracking_uri()) == (repo / "mlruns").as_uri()
    assert artifact_root(f"sqlite:///{tmp_path / 'x.db'}") == (tmp_path / "mlruns").as_uri()
    assert artifact_root("http://server:5000") is None


@pytest.mark.unit
def test_names_and_flattening():
    assert metric_key("valid_hr@10") == "valid_hr_at_10" and display_name("valid_hr_at_10") == "valid_hr@10"
    assert flatten({"train": {"lr": 0.1, "ks": [1, 5]}, "model": {"hidden": (8, 4)}}) == {
        "train.lr": "0.1", "train.ks": "[1, 5]", "model.hidden": "[8, 4]"}


# not marked unit: it creates an MLflow store and logs a model (about 10 s)
def test_run_records_read_back_and_resume_continues_the_run(store, kkbox_dir, monkeypatch):
    root, uri = store
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")  # a sample every 0.2 s in this short run
    seed_everything(0)
    data = Data(kkbox_dir, "rows", DataConfig(batch_size=64, shuffle_buffer=100))
    model = TinyBinary(data.manifest, TinyConfig())
    config = {"model": {"dim": 8}, "train": {"epochs": 2, "lr": 0.02, "progress": False}, "data": {"batch_size": 64}}
    fp = manifest_fingerprint(data.manifest)
    tracker = MlflowTracker(uri, "kkbox", run_name="tiny-test")
    tracker.start(config=config, manifest=data.manifest, model_name="tiny", data_dir=str(kkbox_dir), fingerprint=fp)
    fit(model, train_loader=data.train_loader, eval_loader=data.eval_loader, kind="binary",
        config=TrainConfig(device="cpu", **config["train"]), tracker=tracker, model_name="tiny", fingerprint=fp)
    tracker.log_model(model)
    tracker.end()

    client = MlflowClient(uri)
    run = client.get_run(tracker.run_id)
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "musicrec-kkbox"
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["train.lr"] == "0.02" and params["model.dim"] == "8"
    assert params["data.fingerprint"] == fp and params["vocab.song"] == str(data.manifest["vocab_sizes"]["song"])
    assert run.data.tags["dataset"] == "kkbox" and run.data.tags["model"] == "tiny"
    for key in ("train_loss", "valid_auc", "valid_logloss", "samples_per_s"):
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [1, 2], key
    assert {"best_valid_auc", "best_epoch"} <= set(run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"config.yaml", "data_manifest.json", "learning_curves.png"} <= artifacts
    (dataset_input,) = run.inputs.dataset_inputs  # the UI's "Dataset" column
    dataset = dataset_input.dataset
    assert (dataset.name, dataset.digest, dataset.source_type) == ("kkbox-features", fp, "local")
    assert json.loads(dataset.source) == {"uri": str(kkbox_dir)}
    assert {t.key: t.value for t in dataset_input.tags}["mlflow.data.context"] == "training"
    system = {k for k in run.data.metrics if k.startswith("system/")}  # the UI's "System metrics" tab
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= system, system
    models = client.search_logged_models([experiment.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'")
    assert len(models) == 1 and models[0].name == "model"
    assert models[0].artifact_location.startswith((root / "mlruns").as_uri()), "artifacts land next to the store"
    assert (root / "mlruns" / "musicrec-kkbox").is_dir()

    resumed = MlflowTracker(uri, "kkbox", run_id=tracker.run_id)
    resumed.start(config=config, manifest=data.manifest, model_name="tiny", fingerprint=fp, resumed=True)
    resumed.log_epoch(3, {"epoch": 3, "valid_auc": 0.5, "valid_hr@10": 0.25})
    resumed.end()
    assert resumed.run_id == tracker.run_id
    assert [m.step for m in client.get_metric_history(tracker.run_id, "valid_auc")] == [1, 2, 3]
    assert client.get_metric_history(tracker.run_id, "valid_hr_at_10")[0].value == 0.25
    assert client.get_run(tracker.run_id).data.tags["musicrec.resumed"] == "true"


@pytest.mark.unit
def test_disabled_tracker_records_nothing(tmp_path):
    uri = f"sqlite:///{tmp_path / 'never.db'}"
    tracker = MlflowTracker(uri, "kkbox", enabled=False)
    tracker.start(config={}, manifest={}, model_name="x")
    tracker.log_epoch(1, {"a": 1.0})
    tracker.end()
    assert tracker.run_id is None and not (tmp_path / "never.db").exists()
