"""Training: the typed ``train:`` config (``config``), the evaluation protocols (``evaluate``), the loop
(``loop``: ``train_one_epoch`` and the ``fit`` driver), the debug hooks (``hooks``) and the wiring of one run
(``run``: what jobs/train.py calls; imported on its own, it is not re-exported here)."""

from musicrec.train.config import TrainConfig
from musicrec.train.evaluate import (
    KINDS,
    BaselineScorer,
    FitResult,
    ModelScorer,
    evaluate,
    evaluate_baseline,
)
from musicrec.train.loop import LoopState, StepSetup, fit, make_optimizer, resolve_device, train_one_epoch

__all__ = [
    "BaselineScorer",
    "FitResult",
    "KINDS",
    "LoopState",
    "ModelScorer",
    "StepSetup",
    "TrainConfig",
    "evaluate",
    "evaluate_baseline",
    "fit",
    "make_optimizer",
    "resolve_device",
    "train_one_epoch",
]
