"""MLflow tracking: one experiment per dataset, one run per training (continued on resume), root worker only.

Where records go: ``--tracking-uri``, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<repo>/mlflow.db``. MLflow 3.x
refuses the plain-folder store (``file:./mlruns``) unless ``MLFLOW_ALLOW_FILE_STORE=true`` is set (it is in
maintenance mode), so the project default is the SQLite store MLflow recommends. Artifacts of a SQLite store land
next to the database in ``mlruns/`` (``<repo>/mlruns/<experiment>/`` by default; both paths are git-ignored).

A run logs: the resolved config flattened as params and as ``config.yaml``; the data fingerprint, path and vocab
sizes (params ``data.*`` and ``vocab.*``) and the manifest as ``data_manifest.json``; the feature output as the
run's input dataset (``mlflow.log_input`` of a metadata-only dataset: name ``<dataset>-features``, digest = the
manifest fingerprint, source = the folder; the UI's "Dataset" column); per-epoch metrics with ``step = epoch``; final
metrics (``best_valid_*``, ``test_*``, ``best_epoch``); ``learning_curves.png``; and the model
(``mlflow.pytorch.log_model``, or a pickled baseline under ``baseline/``). Metric names cannot contain ``@`` in
MLflow, so ``hr@10`` is logged as ``hr_at_10`` (``metric_key``; ``display_name`` turns it back).

System metrics (the UI's "System metrics" tab): every run gets MLflow's ``SystemMetricsMonitor`` (what
``mlflow.start_run(log_system_metrics=True)`` starts), which samples CPU and memory use, disk and network, and GPU use
and memory through ``pynvml`` (the ``nvidia-ml-py`` package) when a GPU is there, every ``SYSTEM_METRICS_INTERVAL_S``
seconds (``$MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL`` overrides it) as ``system/*`` metrics; ``end`` adds one last
sample, so a run shorter than an interval has one too. It needs ``psutil`` (a dependency of the project).
"""

from __future__ import annotations

import copy
import json
import logging
import os
import pickle
import socket
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping
from urllib.parse import unquote, urlparse

from musicrec.config import ConfigError

REPO = Path(__file__).resolve().parent.parent
EXPERIMENT_PREFIX = "musicrec-"
ARTIFACTS_FOLDER = "mlruns"
SYSTEM_METRICS_INTERVAL_S = 10.0  # MLflow's default; $MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL overrides it


def default_tracking_uri() -> str:
    """``sqlite:///<repo>/mlflow.db``: a local store inside the project."""
    return f"sqlite:///{REPO / 'mlflow.db'}"


def resolve_tracking_uri(uri: str | None = None) -> str:
    """The explicit ``uri``, else ``$MLFLOW_TRACKING_URI``, else ``default_tracking_uri()``."""
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def check_reachable(uri: str, timeout_s: float = 5.0) -> None:
    """An ``http(s)://`` tracking server must accept a connection within ``timeout_s`` (MLflow's client would retry
    for minutes): else a ``ConfigError`` naming the URI. Other stores (sqlite, files) are local: nothing to check."""
    parsed = urlparse(uri)
    if parsed.scheme not in ("http", "https"):
        return
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        socket.create_connection((parsed.hostname, port), timeout=timeout_s).close()
    except OSError as exc:
        raise ConfigError(f"MLflow tracking server {uri} is unreachable ({exc.strerror or exc}): start it, or pass "
                          "--tracking-uri sqlite:///<path>/mlflow.db (a local store) or --tracking-uri none") from None


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


def feature_dataset(dataset: str, data_dir: str, fingerprint: str):
    """The feature output as an MLflow dataset with metadata only (nothing is read or copied): name
    ``<dataset>-features``, digest = the manifest fingerprint, source = the local folder."""
    from mlflow.data import get_dataset_source_from_json
    from mlflow.data.meta_dataset import MetaDataset

    source = get_dataset_source_from_json(json.dumps({"uri": str(data_dir)}), source_type="local")
    return MetaDataset(source, name=f"{dataset}-features", digest=fingerprint or None)


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
        self._monitor = None
        self._prior_status = None  # a continued run's status before this process took it over

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
                self._prior_status = client.get_run(self.run_id).info.status
            except Exception:
                print(f"MLflow run {self.run_id} not found in {self.tracking_uri}; starting a new run", flush=True)
                self.run_id, resumed = None, False
        if self.run_id is not None:
            self._run = mlflow.start_run(run_id=self.run_id, log_system_metrics=False)
        else:
            self._run = mlflow.start_run(experiment_id=experiment_id, run_name=self.run_name, log_system_metrics=False)
            self.run_id = self._run.info.run_id
        self._monitor = _start_system_metrics(self.run_id, self.tracking_uri, resumed=resumed)
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
        mlflow.log_input(feature_dataset(self.dataset, data_dir, fingerprint), context="training")

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

        if self._monitor is not None:
            _finish_system_metrics(self._monitor)
            self._monitor = None
        if status != "FINISHED" and self._prior_status == "FINISHED":  # a failed continuation keeps the run's result
            mlflow.set_tag("musicrec.resume_failed", f"{status} at {_now()}")
            print(f"note: this continuation ended {status}; MLflow run {self.run_id} keeps its earlier status FINISHED "
                  "(tag musicrec.resume_failed)", flush=True)
            status = "FINISHED"
        mlflow.end_run(status=status)
        self._run = None


def _start_system_metrics(run_id: str, tracking_uri: str, resumed: bool):
    """MLflow's system-metrics sampler for the run, started (a daemon thread), continuing the steps of a resumed run."""
    from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor

    monitor = SystemMetricsMonitor(run_id, sampling_interval=SYSTEM_METRICS_INTERVAL_S, resume_logging=resumed,
                                   tracking_uri=tracking_uri)
    monitor.start()
    return monitor


def _finish_system_metrics(monitor) -> None:
    """Stop the sampler, then log one last sample (what the thread collected since its last one, and now)."""
    monitor.finish()
    monitor.collect_metrics()
    monitor.publish_metrics(monitor.aggregate_metrics())
    monitor.mlflow_logger.flush()


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
    "check_reachable",
    "default_tracking_uri",
    "display_name",
    "experiment_name",
    "feature_dataset",
    "flatten",
    "get_or_create_experiment",
    "metric_key",
    "plot_learning_curves",
    "resolve_tracking_uri",
    "search_musicrec_runs",
]
