"""The ``train:`` section of a run config: ``TrainConfig``, typed with ``musicrec.config.typed(TrainConfig, section,
"train")`` (conf/*.yaml has one comment per key), and what it decides for several workers (batch, learning rate)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from musicrec.config import ConfigError, require

OPTIMIZERS = ("adam", "adamw", "sgd")
LR_SCALINGS = ("auto", "none", "linear", "sqrt")
STOPPING_MODES = ("auto", "max", "min")


@dataclass(frozen=True)
class TrainConfig:
    """The ``train:`` section of a run config (see conf/*.yaml for one comment per key)."""

    epochs: int = 10
    max_steps: int | None = None  # total optimizer steps of the run over all epochs; None / 0 = no limit
    optimizer: str = "adam"
    lr: float = 1e-3
    lr_decay: float = 1.0  # epoch e (0-based) trains at lr * lr_decay ** e; 1 = a constant lr
    weight_decay: float = 0.0
    momentum: float = 0.9
    clip_grad_norm: float | None = None
    early_stopping_metric: str = "auto"
    early_stopping_mode: str = "auto"
    patience: int = 3
    seed: int = 42
    device: str = "auto"
    amp: bool = False
    progress: bool = True
    ks: tuple[int, ...] = (1, 5, 10, 20)
    loo_k: int = 10
    global_batch: bool = True  # distributed: data.batch_size is the global batch, split over the workers
    lr_scaling: str = "auto"  # distributed: lr x f(workers); see LR_SCALINGS and ``scaled_lr``
    num_threads: int = 1  # CPU: torch intra-op threads per worker; 0 = PyTorch's default (benchmarks/RESULTS_distributed.md, table 2)

    def check(self) -> None:
        """The values ``typed`` cannot check from the types alone; a ``ConfigError`` names the key."""
        require(self.epochs >= 0, "train.epochs", self.epochs, "must be >= 0")
        require(self.max_steps is None or self.max_steps >= 0, "train.max_steps", self.max_steps,
                "must be >= 0 (0 or null = no limit)")
        require(self.lr > 0, "train.lr", self.lr, "must be > 0")
        require(0 < self.lr_decay <= 1, "train.lr_decay", self.lr_decay, "must be in (0, 1] (1 = a constant lr)")
        require(self.weight_decay >= 0, "train.weight_decay", self.weight_decay, "must be >= 0")
        require(self.patience >= 0, "train.patience", self.patience, "must be >= 0")
        require(self.clip_grad_norm is None or self.clip_grad_norm > 0, "train.clip_grad_norm", self.clip_grad_norm,
                "must be > 0 (null = no clipping)")
        require(self.optimizer in OPTIMIZERS, "train.optimizer", self.optimizer, f"must be one of {OPTIMIZERS}")
        require(self.early_stopping_mode in STOPPING_MODES, "train.early_stopping_mode", self.early_stopping_mode,
                f"must be one of {STOPPING_MODES}")
        require(self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:"), "train.device", self.device,
                "must be auto, cpu, cuda or cuda:<index>")
        require(self.lr_scaling in LR_SCALINGS, "train.lr_scaling", self.lr_scaling, f"must be one of {LR_SCALINGS}")
        require(self.num_threads >= 0, "train.num_threads", self.num_threads, "must be >= 0 (0 = PyTorch's default)")
        require(all(k >= 1 for k in self.ks), "train.ks", list(self.ks), "cut-offs must be >= 1")
        require(self.loo_k >= 1, "train.loo_k", self.loo_k, "must be >= 1")

    def per_worker_batch(self, batch_size: int, workers: int) -> int:
        """The training batch each of ``workers`` workers takes: ``batch_size`` / workers when ``global_batch`` (the
        same global batch, hence the same gradient step, for any number of workers), else ``batch_size``."""
        if not self.global_batch or workers == 1:
            return batch_size
        if batch_size < workers:
            raise ConfigError(f"data.batch_size={batch_size} is the global batch (train.global_batch: true) and cannot "
                             f"be split over {workers} workers")
        return batch_size // workers

    def scaled_lr(self, workers: int) -> float:
        """The learning rate for ``workers`` workers: ``lr`` x workers (``linear``, Goyal et al. 2017), x sqrt(workers)
        (``sqrt``) or x 1 (``none``); ``auto`` = ``linear`` when the global batch grows with the workers
        (``global_batch: false``, Horovod's recipe) and ``none`` when it does not."""
        mode = self.lr_scaling
        if mode == "auto":
            mode = "none" if self.global_batch else "linear"
        return self.lr * {"none": 1.0, "linear": float(workers), "sqrt": math.sqrt(workers)}[mode]


__all__ = ["LR_SCALINGS", "OPTIMIZERS", "TrainConfig"]
