"""Logistic regression on the KKBOX features: the baseline the DNN and NeuMF must beat, trained by the same loop.

logit = bias + sum over categorical columns of w[col][index] + sum over multi-valued columns of
mean(w[col][indices != 0]) + numeric @ w_num. Per-category weights are embeddings of dimension 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from musicrec.columns import NUMERIC, TARGET
from musicrec.models.dnn import FeatureEmbeddings, _vocab_sizes_for, manifest_features


@dataclass(frozen=True)
class LogRegConfig:
    share_embeddings: bool = True  # columns that map to the same vocabulary share one weight table


class LogReg(nn.Module):
    """A linear model over one-hot categories, averaged multi-hot categories and the numeric features."""

    def __init__(
        self,
        config: LogRegConfig,
        categorical: Mapping[str, str],
        multi_valued: Mapping[str, str],
        numeric: list[str],
        vocab_sizes: Mapping[str, int],
    ):
        super().__init__()
        assert categorical or multi_valued or numeric, "LogReg needs at least one feature"
        self.config = config
        self.numeric = list(numeric)
        # weights start at zero: the model starts at p = sigmoid(bias) = 0.5 for every row
        self.weights = FeatureEmbeddings(
            categorical, multi_valued, vocab_sizes, 1, share=config.share_embeddings, init_std=0.0
        )
        self.linear = nn.Linear(len(self.numeric), 1, bias=False) if self.numeric else None
        if self.linear is not None:
            nn.init.zeros_(self.linear.weight)
        self.bias = nn.Parameter(torch.zeros(()))

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any], config: LogRegConfig) -> "LogReg":
        categorical, multi_valued, numeric = manifest_features(manifest, "logreg")
        sizes = _vocab_sizes_for(manifest, categorical, multi_valued, "logreg")
        return cls(config, categorical, multi_valued, numeric, sizes)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        logit = self.bias
        if self.weights.n_fields:
            w = self.weights(batch)  # (B, n_fields, 1)
            logit = logit + w.sum(dim=(1, 2))  # (B,)
        if self.linear is not None:
            x_num = batch[NUMERIC].float()  # (B, F)
            assert x_num.shape[1] == len(self.numeric), f"numeric has {x_num.shape[1]} columns, expected {len(self.numeric)}"
            logit = logit + self.linear(x_num).squeeze(-1)  # (B,)
        assert logit.dim() == 1, "LogReg needs at least one per-row feature"
        return logit  # (B,)

    def loss(self, batch: Mapping[str, torch.Tensor], logits: torch.Tensor) -> torch.Tensor:
        """Binary cross-entropy with logits against ``batch["target"]`` (1/0)."""
        return F.binary_cross_entropy_with_logits(logits, batch[TARGET].to(logits.dtype))

    def training_loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The loss the training loop minimizes: ``loss(batch, forward(batch))``."""
        return self.loss(batch, self(batch))
