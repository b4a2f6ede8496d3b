"""MLflow tracking: one experiment per dataset, one run per training (continued on resume), root worker only.

Where records go: ``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<repo>/mlflow.db``. MLflow 3.x
refuses the plain-folder store (``file:./mlruns``) unless ``MLFLOW_ALLOW_FILE_STORE=true`` is set (it is in
maintenance mode), so the project default is the SQLite store MLflow recommends. Artifacts of a SQLite store land
next to the database in ``mlruns/`` (``<repo>/mlruns/<experiment>/`` by default; both paths are git-ignored).

A run logs: the resolved config flattened as params and as ``config.yaml``; the data fingerprint, path and vocab
sizes (params ``data.*`` and ``vocab.*``) and the manifest as ``data_manifest.json``; per-epoch metrics with
``step = epoch``; final metrics (``best_valid_*``, ``test_*``, ``best_epoch``); ``learning_curves.png``; and the
model (``mlflow.pytorch.log_model``, or a pickled baseline under ``baseline/``). Metric names cannot contain ``@``
in MLflow, so ``hr@10`` is logged as ``hr_at_10`` (``metric_key``; ``display_name`` turns it back).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping
from urllib.parse import unquote

REPO = Path(__file__).resolve().parent.parent
EXPERIMENT_PREFIX = "musicrec-"
ARTIFACTS_FOLDER = "mlruns"


def default_tracking_uri() -> str:
    """``sqlite:///<repo>/mlflow.db``: a local store inside the project."""
    return f"sqlite:///{REPO / 'mlflow.db'}"


def resolve_tracking_uri(uri: str | None = None) -> str:
    """The explicit ``uri``, else ``$MLFLOW_TRACKING_URI``, else ``default_tracking_uri()``."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def artifact_root(uri: str) -> str | None:
    """Where a new experiment's artifacts go: ``<folder of the database>/mlruns`` for a local SQLite store;
    ``None`` (the server's or store's default) otherwise."""
    if uri.startswith("sqlite:///"):
        db_path = Path(unquote(uri[len("sqlite:///"):]))
        if not db_path.is_absolute():
            db_path = Path.cwd() / db_path
        return (db_path.parent / ARTIFACTS_FOLDER).resolve().as_uri()
    return None


def experiment_name(dataset: str) -> str:
    return f"{EXPERIMENT_PREFIX}{dataset}"


def metric_key(name: str) -> str:
    """An MLflow-safe metric name: ``valid_hr@10`` -> ``valid_hr_at_10``."""
    return name.replace("@", "_at_")


def display_name(key: str) -> str:
    """The inverse of ``metric_key``: ``hr_at_10`` -> ``hr@10``."""
    return key.replace("_at_", "@")


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"train": {"lr": 0.1}}`` -> ``{"train.lr": "0.1"}`` (lists as JSON)."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        elif isinstance(value, (list, tuple)):
            out[name] = json.dumps(list(value))
        else:
            out[name] = str(value)
    return out


def get_or_create_experiment(client, name: str, uri: str) -> str:
    """The id of experiment ``name``, created (with artifacts under ``artifact_root(uri)/name``) when missing."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    root = artifact_root(uri)
    location = f"{root}/{name}" if root else None
    try:
        return client.create_experiment(name, artifact_location=location)
    except Exception:  # created meanwhile by another process
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def plot_learning_curves(history: list[Mapping[str, float]], path: str | Path, title: str = "") -> Path:
    """A PNG with the train/valid loss and the main validation metrics per epoch (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    from matplotlib.ticker import MaxNLocator

    metric_keys = sorted({k for r in history for k in r if k.startswith("valid_") and k != "valid_loss"})
    main_keys = [k for k in metric_keys if k.endswith("@10") or k in ("valid_auc", "valid_logloss")]
    metric_keys = main_keys or metric_keys  # the @10 ranking metrics, or AUC and log loss
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for key in ("train_loss", "valid_loss"):
        if any(key in r for r in history):
            axes[0].plot(epochs, [r.get(key, float("nan")) for r in history], marker="o", label=key)
    axes[0].set_xlabel("epoch")
    axes[0].set_title("loss")
    axes[0].legend(loc="best")
    for key in metric_keys:
        axes[1].plot(epochs, [r.get(key, float("nan")) for r in history], marker=".", label=key[len("valid_"):])
    axes[1].set_xlabel("epoch")
    axes[1].set_title("validation metrics")
    if metric_keys:
        axes[1].legend(loc="best", fontsize="small", ncol=2)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


class Tracker:
    """No-op tracker (non-root workers, ``--tracking-uri none``); ``MlflowTracker`` records for real."""

    run_id: str | None = None

    def start(self, *, config: Mapping[str, Any], manifest: Mapping[str, Any], model_name: str, data_dir: str = "",
              fingerprint: str = "", resumed: bool = False) -> None: ...

    def log_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None: ...

    def log_final(self, metrics: Mapping[str, float]) -> None: ...

    def log_curves(self, history: list[Mapping[str, float]]) -> None: ...

    def log_model(self, model) -> None: ...

    def log_baseline(self, baseline, name: str) -> None: ...

    def end(self, status: str = "FINISHED") -> None: ...


class MlflowTracker(Tracker):
    """Records one run in experiment ``musicrec-<dataset>`` of the store at ``tracking_uri``.

    ``run_id`` continues an existing run (``--resume``); a run id the store does not know starts a new run and says
    so. Everything is a no-op when ``enabled`` is false (non-root workers).
    """

    def __init__(self, tracking_uri: str, dataset: str, *, run_id: str | None = None, run_name: str | None = None,
                 enabled: bool = True):
        self.tracking_uri = tracking_uri
        self.dataset = dataset
        self.run_id = run_id or None
        self.run_name = run_name
        self.enabled = enabled
        self._run = None

    def start(self, *, config, manifest, model_name, data_dir="", fingerprint="", resumed=False) -> None:
        if not self.enabled:
            return
        import mlflow
        import yaml
        from mlflow.tracking import MlflowClient

        mlflow.set_tracking_uri(self.tracking_uri)
        client = MlflowClient(self.tracking_uri)
        experiment_id = get_or_create_experiment(client, experiment_name(self.dataset), self.tracking_uri)
        if self.run_id is not None:
            try:
                client.get_run(self.run_id)
            except Exception:
                print(f"MLflow run {self.run_id} not found in {self.tracking_uri}; starting a new run", flush=True)
                self.run_id, resumed = None, False
        if self.run_id is not None:
            self._run = mlflow.start_run(run_id=self.run_id)
        else:
            self._run = mlflow.start_run(experiment_id=experiment_id, run_name=self.run_name)
            self.run_id = self._run.info.run_id
        if resumed:
            mlflow.set_tag("musicrec.resumed", "true")
            mlflow.log_text(yaml.safe_dump(dict(config), sort_keys=False), f"config_resume_{_now()}.yaml")
            return
        mlflow.set_tags({"musicrec.kind": "train", "dataset": self.dataset, "model": model_name,
                         "data.fingerprint": fingerprint})
        params = flatten(config)
        params.update({"model_name": model_name, "data.path": str(data_dir), "data.fingerprint": fingerprint,
                       "data.manifest_fingerprint": str(manifest.get("fingerprint", ""))})
        params.update({f"vocab.{k}": str(v) for k, v in (manifest.get("vocab_sizes") or {}).items()})
        params.update({f"rows.{k}": str(v) for k, v in (manifest.get("row_counts") or {}).items()})
        mlflow.log_params(params)
        mlflow.log_text(yaml.safe_dump(dict(config), sort_keys=False), "config.yaml")
        mlflow.log_text(json.dumps(manifest, indent=2, default=str), "data_manifest.json")

    def log_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        import mlflow

        mlflow.log_metrics({metric_key(k): float(v) for k, v in metrics.items() if k != "epoch"}, step=int(epoch))

    def log_final(self, metrics: Mapping[str, float]) -> None:
        if not self.enabled:
            return
        import mlflow

        mlflow.log_metrics({metric_key(k): float(v) for k, v in metrics.items()})

    def log_curves(self, history: list[Mapping[str, float]]) -> None:
        if not self.enabled or not history:
            return
        import mlflow

        with tempfile.TemporaryDirectory() as tmp:
            path = plot_learning_curves(history, Path(tmp) / "learning_curves.png", title=self.run_name or "")
            mlflow.log_artifact(str(path))

    def log_model(self, model) -> None:
        """``mlflow.pytorch.log_model`` of a CPU copy, pickled (the models take dict batches, which the ``pt2``
        export cannot trace); the weights-only checkpoint in the run folder is the safe-to-load copy."""
        if not self.enabled:
            return
        import mlflow.pytorch
        import torch

        requirements = [f"torch=={torch.__version__.split('+')[0]}", "numpy", "pyyaml"]
        logger = logging.getLogger("mlflow.pytorch")
        level = logger.level
        logger.setLevel(logging.ERROR)  # the "pickle needs caution" warning: known, see the docstring
        try:
            mlflow.pytorch.log_model(copy.deepcopy(model).cpu(), name="model", pip_requirements=requirements,
                                     serialization_format="pickle")
        finally:
            logger.setLevel(level)

    def log_baseline(self, baseline, name: str) -> None:
        if not self.enabled:
            return
        import mlflow

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / f"{name}.pkl"
            with open(path, "wb") as handle:
                pickle.dump(baseline, handle, protocol=pickle.HIGHEST_PROTOCOL)
            mlflow.log_artifact(str(path), artifact_path="baseline")

    def end(self, status: str = "FINISHED") -> None:
        if not self.enabled or self._run is None:
            return
        import mlflow

        mlflow.end_run(status=status)
        self._run = None


def _now() -> str:
    import time

    return time.strftime("%Y%m%d-%H%M%S")


def search_musicrec_runs(client, datasets: Iterable[str] | None = None) -> list:
    """Every finished training run in the ``musicrec-<dataset>`` experiments."""
    experiments = [e for e in client.search_experiments() if e.name.startswith(EXPERIMENT_PREFIX)
                   and (datasets is None or e.name[len(EXPERIMENT_PREFIX):] in set(datasets))]
    if not experiments:
        return []
    runs, token = [], None
    while True:
        page = client.search_runs([e.experiment_id for e in experiments], filter_string="tags.`musicrec.kind` = 'train'",
                                  max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            return runs


__all__ = [
    "MlflowTracker",
    "Tracker",
    "artifact_root",
    "default_tracking_uri",
    "display_name",
    "experiment_name",
    "flatten",
    "get_or_create_experiment",
    "metric_key",
    "plot_learning_curves",
    "resolve_tracking_uri",
    "search_musicrec_runs",
]
