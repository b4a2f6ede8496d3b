"""Training end to end on the REAL samples in ../shared/data (issue: "training runs end to end on the real
samples"): the feature jobs run in-process on the session's Spark, then every supported model trains (or, for the
baselines, evaluates) one epoch through ``jobs/train.py`` and its run is read back from MLflow."""

from __future__ import annotations

import importlib.util
import math
import shutil
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from musicrec.config import apply_overrides, load_config

REPO = Path(__file__).resolve().parent.parent
LASTFM_SAMPLE = "userid-timestamp-artid-artname-traid-traname.head5000.tsv"
SMALL = {  # small models: the point is that the real formats flow through, not the scores
    "gru": ["model.song_dim=16", "model.tag_dim=4", "model.hidden=16", "model.attention_dim=8"],
    "ncf": ["model.factors=8", "model.mlp_layers=[16,8]", "data.loo_negatives=50"],
    "dnn": ["model.embedding_dim=8", "model.hidden=[16]"],
    "logreg": [],
    "pop": [],
    "cooc": [],
}


def _train_job():
    spec = importlib.util.spec_from_file_location("job_train_real", REPO / "jobs" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _features(spark, dataset: str, input_dir: Path, out: Path, overrides: list[str]) -> Path:
    if dataset == "lastfm":
        from musicrec.features.lastfm import run_job
    else:
        from musicrec.features.kkbox import run_job
    run_job(spark, input_dir, out, apply_overrides(load_config(None, default_name=dataset), overrides))
    return out


@pytest.fixture(scope="module")
def real_features(spark, shared_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    lastfm_in = root / "lastfm-in"
    lastfm_in.mkdir()
    source = shared_data / "lastfm-1k" / LASTFM_SAMPLE
    if not source.is_file() or not (shared_data / "kkbox" / "train.csv").is_file():
        pytest.skip("real samples not found")
    shutil.copy(source, lastfm_in / LASTFM_SAMPLE)
    # the 5,000 real rows are one user's: keep them all (no tags file, so no tag filter; short windows)
    lastfm = _features(spark, "lastfm", lastfm_in, root / "lastfm", [
        f"input.plays_file={LASTFM_SAMPLE}", "tags.drop_untagged=false", "sessions.min_sessions_per_user=1"])
    kkbox = _features(spark, "kkbox", shared_data / "kkbox", root / "kkbox", [])
    return {"lastfm": lastfm, "kkbox": kkbox}


@pytest.mark.e2e
@pytest.mark.parametrize("dataset, model", [
    ("kkbox", "pop"), ("kkbox", "logreg"), ("kkbox", "dnn"), ("kkbox", "ncf"),
    ("lastfm", "pop"), ("lastfm", "cooc"), ("lastfm", "gru"), ("lastfm", "ncf"),
])
def test_every_model_trains_on_the_real_samples(dataset, model, real_features, tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["--model", model, "--data", str(real_features[dataset]), "--epochs", "1", "--run-dir",
            str(tmp_path / "run"), "--tracking-uri", uri]
    for item in SMALL[model] + ([] if model in ("pop", "cooc") else ["train.progress=false"]):
        args += ["--set", item]
    assert _train_job().main(args) == 0
    assert "done: model=" in capsys.readouterr().out
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name(f"musicrec-{dataset}")
    (run,) = client.search_runs([experiment.experiment_id], filter_string=f"tags.model = '{model}'")
    assert run.info.status == "FINISHED"
    main = {"kkbox": "best_valid_auc", "lastfm": "test_loo_hr_at_10" if model == "ncf" else "test_hr_at_10"}[dataset]
    value = run.data.metrics[main]
    assert 0.0 <= value <= 1.0 and not math.isnan(value)
