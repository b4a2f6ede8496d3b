"""``jobs/train.py`` and ``jobs/compare.py``: argument errors (exit 2, one line, no traceback), every supported
(dataset, model) trained or evaluated through the CLI on tiny data, a subprocess run resumed into the same MLflow
run, and the comparison table."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

import fakedata

REPO = Path(__file__).resolve().parent.parent
SMALL = {  # tiny models and batches so that every run takes a second or two
    "gru": ["model.song_dim=8", "model.tag_dim=4", "model.hidden=8", "model.attention_dim=8", "data.batch_size=64"],
    "ncf": ["model.factors=4", "model.mlp_layers=[8,4]", "data.batch_size=64", "data.loo_negatives=50"],
    "dnn": ["model.embedding_dim=4", "model.hidden=[8]", "data.batch_size=64"],
    "logreg": ["data.batch_size=64"],
    "pop": [],
    "cooc": [],
}


def _job(name):
    spec = importlib.util.spec_from_file_location(f"job_{name}", REPO / "jobs" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def train_job():
    return _job("train")


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    fakedata.write_lastfm(root / "lastfm", n_songs=150)
    fakedata.write_kkbox(root / "kkbox", n_train=400, row_group_size=100)
    return root


def _args(model, data, run_dir, uri, epochs=2, extra=()):
    args = ["--model", model, "--data", str(data), "--epochs", str(epochs), "--run-dir", str(run_dir),
            "--tracking-uri", uri]
    for item in SMALL[model] + list(extra):
        args += ["--set", item]
    if model not in ("pop", "cooc"):
        args += ["--set", "train.progress=false"]
    return args


# ---------------------------------------------------------------------------------------------------------------
# argument errors
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.unit
def test_help(train_job, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_job.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--model", "--data", "--conf", "--set", "--epochs", "--max-steps", "--resume", "--tracking-uri",
                 "--run-dir", "--device", "--seed"):
        assert flag in out


@pytest.mark.unit
@pytest.mark.parametrize(
    "case, message",
    [
        ("missing-folder", "data folder not found: {missing}"),
        ("missing-manifest", "{empty}/_MANIFEST.json: manifest not found"),
        ("wrong-model", "model 'gru' does not apply to the kkbox dataset"),
        ("wrong-model-2", "model 'dnn' does not apply to the lastfm dataset"),
        ("bad-override", "unknown key 'train.nope'"),
        ("bad-value", "expected an integer"),
        ("bad-eval-size", "eval.max_examples = -3: must be an integer >= 0"),
        ("bad-max-steps", "train.max_steps = -1: must be >= 0"),
        ("resume-nothing", "--resume: no checkpoint at"),
        ("lr-text", "train.lr: expected a number, got 'abc'"),
        ("lr-negative", "train.lr = -1.0: must be > 0"),
        ("bogus-metric", "train.early_stopping_metric = 'bogus': must be auto or one of hr@1, ndcg@1"),
        ("bogus-metric-baseline", "train.early_stopping_metric = 'loss': must be auto or one of auc, logloss"),
        ("negative-hidden", "model.hidden = -3: must be >= 1"),
        ("unreachable-tracking", "MLflow tracking server http://127.0.0.1:9 is unreachable (Connection refused)"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(case, message, train_job, datasets, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    missing = tmp_path / "missing"
    argv = {
        "missing-folder": ["--model", "gru", "--data", str(missing)],
        "missing-manifest": ["--model", "gru", "--data", str(empty)],
        "wrong-model": ["--model", "gru", "--data", str(datasets / "kkbox")],
        "wrong-model-2": ["--model", "dnn", "--data", str(datasets / "lastfm")],
        "bad-override": ["--model", "gru", "--data", str(datasets / "lastfm"), "--set", "train.nope=1"],
        "bad-value": ["--model", "gru", "--data", str(datasets / "lastfm"), "--set", "model.hidden=big"],
        "bad-eval-size": ["--model", "cooc", "--data", str(datasets / "lastfm"), "--set", "eval.max_examples=-3"],
        "bad-max-steps": ["--model", "gru", "--data", str(datasets / "lastfm"), "--max-steps", "-1"],
        "resume-nothing": ["--model", "gru", "--data", str(datasets / "lastfm"), "--resume", "--run-dir", str(tmp_path / "r"),
                           "--tracking-uri", "none"],
        "lr-text": ["--model", "gru", "--data", str(datasets / "lastfm"), "--set", "train.lr=abc"],
        "lr-negative": ["--model", "ncf", "--data", str(datasets / "kkbox"), "--set", "train.lr=-1"],
        "bogus-metric": ["--model", "gru", "--data", str(datasets / "lastfm"), "--set", "train.early_stopping_metric=bogus",
                         "--run-dir", str(tmp_path / "r"), "--tracking-uri", "none"],
        "bogus-metric-baseline": ["--model", "pop", "--data", str(datasets / "kkbox"), "--set",
                                  "train.early_stopping_metric=loss", "--tracking-uri", "none"],
        "negative-hidden": ["--model", "gru", "--data", str(datasets / "lastfm"), "--set", "model.hidden=-3",
                            "--run-dir", str(tmp_path / "r"), "--tracking-uri", "none"],
        "unreachable-tracking": ["--model", "gru", "--data", str(datasets / "lastfm"), "--tracking-uri",
                                 "http://127.0.0.1:9"],
    }[case]
    assert train_job.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("train.py: error: ")
    assert message.format(missing=missing, empty=empty) in err[0]


@pytest.mark.e2e
def test_subprocess_bad_data_has_no_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "jobs/train.py", "--model", "pop", "--data", str(tmp_path / "nope")],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() == f"train.py: error: data folder not found: {tmp_path / 'nope'}"


# ---------------------------------------------------------------------------------------------------------------
# every supported combination, in-process
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.e2e
@pytest.mark.parametrize("dataset, model", [
    ("kkbox", "pop"), ("kkbox", "logreg"), ("kkbox", "dnn"), ("kkbox", "ncf"),
    ("lastfm", "pop"), ("lastfm", "cooc"), ("lastfm", "ncf"),
])
def test_every_supported_model_runs(dataset, model, train_job, datasets, tracking, tmp_path, capsys):
    assert train_job.main(_args(model, datasets / dataset, tmp_path / "run", tracking)) == 0
    out = capsys.readouterr().out
    assert out.count("resolved config:") == 1 and "done: model=" in out
    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name(f"musicrec-{dataset}")
    (run,) = client.search_runs([experiment.experiment_id], filter_string=f"tags.model = '{model}'")
    assert run.info.status == "FINISHED"
    main = {"kkbox": "best_valid_auc", "lastfm": "test_loo_hr_at_10" if model == "ncf" else "test_hr_at_10"}[dataset]
    assert 0 <= run.data.metrics[main] <= 1
    # the tiny splits are below every "auto" bound: every example is evaluated, and the count is recorded and printed
    assert run.data.params["eval.max_examples"] in ("0", "20000")
    examples = run.data.metrics["best_valid_examples"]
    assert examples > 0 and f"({int(examples):,} examples)" in out
    if model in ("pop", "cooc"):
        assert [a.path for a in client.list_artifacts(run.info.run_id, "baseline")] == [f"baseline/{model}.pkl"]
    else:
        assert (tmp_path / "run" / "last.pt").is_file() and (tmp_path / "run" / "best.pt").is_file()
        assert client.search_logged_models([experiment.experiment_id], filter_string=f"source_run_id = '{run.info.run_id}'")


@pytest.mark.e2e
@pytest.mark.parametrize("model", ["gru", "cooc", "pop"])
def test_max_steps_and_the_evaluation_sample_are_applied_and_recorded(model, train_job, datasets, tmp_path, capsys):
    """``--max-steps`` bounds the training; ``eval.max_examples`` evaluates exactly that many prefixes of each split,
    logged as a param and as ``*_examples`` metrics, and the same for the model and the baselines."""
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"  # a store of its own: the module's store keeps one run per model
    args = _args(model, datasets / "lastfm", tmp_path / "run", tracking, epochs=5, extra=["eval.max_examples=25"])
    assert train_job.main(args + ["--max-steps", "3"]) == 0
    out = capsys.readouterr().out
    assert "eval.max_examples=25: a fixed sample of at most 25 examples per split" in out
    if model == "gru":
        assert "train.max_steps=3 reached in epoch 1" in out
    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name("musicrec-lastfm")
    (run,) = client.search_runs([experiment.experiment_id], filter_string=f"tags.model = '{model}'")
    assert run.data.params["eval.max_examples"] == "25" and run.data.params["train.max_steps"] == "3"
    assert run.data.metrics["test_examples"] == run.data.metrics["best_valid_examples"] == 25
    assert [m.value for m in client.get_metric_history(run.info.run_id, "valid_examples")] == [25.0]
    if model == "pop":
        assert run.data.metrics["test_loo_examples"] > 0


# ---------------------------------------------------------------------------------------------------------------
# a real subprocess run, killed (stopped after 2 of 3 epochs) and resumed into the same MLflow run; then compare
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.e2e
def test_subprocess_train_resume_and_compare(datasets, tracking, tmp_path, capsys):
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    run_dir = tmp_path / "gru"
    first = subprocess.run([sys.executable, "jobs/train.py", *_args("gru", datasets / "lastfm", run_dir, tracking, epochs=2)],
                           cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.count("resolved config:") == 1
    resumed = subprocess.run([sys.executable, "jobs/train.py", *_args("gru", datasets / "lastfm", run_dir, tracking, epochs=3),
                              "--resume"], cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming" in resumed.stdout and "after epoch 2" in resumed.stdout

    client = MlflowClient(tracking)
    experiment = client.get_experiment_by_name("musicrec-lastfm")
    (run,) = client.search_runs([experiment.experiment_id], filter_string="tags.model = 'gru'")
    assert [m.step for m in client.get_metric_history(run.info.run_id, "valid_hr_at_10")] == [1, 2, 3]
    assert run.data.params["model.hidden"] == "8" and run.data.tags["musicrec.resumed"] == "true"

    compare = _job("compare")
    assert compare.main(["--tracking-uri", tracking, "--out", str(tmp_path / "cmp")]) == 0
    out = capsys.readouterr().out
    assert "| model | hr@10 | ndcg@10 | mrr@10 | loo_hr@10 | loo_ndcg@10 | examples | from | run |" in out
    assert "| gru |" in out
    assert (tmp_path / "cmp" / "comparison.png").stat().st_size > 1000
    (cmp_run,) = client.search_runs([client.get_experiment_by_name("musicrec-compare").experiment_id])
    assert {a.path for a in client.list_artifacts(cmp_run.info.run_id)} >= {"comparison.md", "comparison.png"}


@pytest.mark.unit
def test_compare_picks_by_validation_on_the_newest_data():
    from types import SimpleNamespace as NS

    from musicrec import compare

    def run(run_id, model, fp, start, valid, test):
        metrics = {"best_valid_hr_at_10": valid, "test_hr_at_10": test, "test_ndcg_at_10": test / 2,
                   "test_examples": 1234.0}
        return NS(info=NS(run_id=run_id, status="FINISHED", start_time=start),
                  data=NS(tags={"dataset": "lastfm", "model": model, "data.fingerprint": fp}, metrics=metrics))

    runs = [run("old", "gru", "A", 1, 0.9, 0.9), run("g1", "gru", "B", 2, 0.5, 0.2), run("g2", "gru", "B", 3, 0.4, 0.3),
            run("p1", "pop", "B", 4, 0.1, 0.1)]
    kept, chosen = compare.latest_data_only(runs)
    assert chosen == {"lastfm": "B"} and [r.info.run_id for r in kept] == ["g1", "g2", "p1"]
    rows = compare.best_runs(kept)
    assert [(r["model"], r["run_id"], r["hr@10"]) for r in rows] == [("gru", "g1", 0.2), ("pop", "p1", 0.1)]
    table = compare.format_table(rows)
    assert "| gru | 0.2000 | 0.1000 |  |  |  | 1,234 | test | g1 |" in table
