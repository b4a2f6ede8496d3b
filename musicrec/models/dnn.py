"""A dense network over averaged embeddings for KKBOX rows (the seed KKBOX analysis's "standard DNN").

One embedding per categorical field, a mean-pooled embedding per multi-valued field (the ``mean`` combiner of
TF's ``embedding_column``; padding 0 is excluded from the mean), concatenated with the numeric features, then
dense layers and one output logit.

``sparse``: every embedding table is ``nn.Embedding(sparse=True)`` (gradients hold only the batch's rows; the
optimizer updates them with SparseAdam, see ``musicrec.optim``), so a step's cost does not grow with the vocabularies.

Also home of the two helpers the other models share: ``manifest_vocab_size`` and ``masked_mean_embedding``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from musicrec.columns import NUMERIC, PAD_INDEX, TARGET
from musicrec.config import require


def manifest_vocab_size(manifest: Mapping[str, Any], vocab: str, needed_by: str) -> int:
    """``manifest["vocab_sizes"][vocab]``, or a ``ValueError`` that says who needed it and what the manifest has."""
    sizes = manifest.get("vocab_sizes")
    if not isinstance(sizes, Mapping):
        raise ValueError(f"manifest has no 'vocab_sizes' mapping (needed by {needed_by})")
    if vocab not in sizes:
        raise ValueError(f"manifest vocab_sizes has no vocabulary {vocab!r} (needed by {needed_by}); has: {sorted(sizes)}")
    size = int(sizes[vocab])
    if size < 2:
        raise ValueError(f"manifest vocab_sizes[{vocab!r}] = {size}: must be >= 2 (0 = padding, 1 = OOV)")
    return size


def manifest_features(manifest: Mapping[str, Any], needed_by: str) -> tuple[dict[str, str], dict[str, str], list[str]]:
    """``(categorical, multi_valued, numeric)`` from ``manifest["features"]``; a clear ``ValueError`` if absent."""
    features = manifest.get("features")
    if not isinstance(features, Mapping):
        raise ValueError(f"manifest has no 'features' mapping (needed by {needed_by})")
    categorical = dict(features.get("categorical") or {})
    multi_valued = dict(features.get("multi_valued") or {})
    numeric = list(features.get("numeric") or [])
    return categorical, multi_valued, numeric


def masked_mean_embedding(embedding: nn.Embedding, idx: torch.Tensor) -> torch.Tensor:
    """Mean of the embeddings of the non-padding indices along the last axis of ``idx``.

    ``idx`` (..., L) LongTensor, 0 = padding -> (..., D). A row with only padding gives zeros. Equivalent to
    ``nn.EmbeddingBag(mode="mean", padding_idx=0)`` but works for any leading shape and for shared tables.
    """
    mask = (idx != PAD_INDEX).unsqueeze(-1)  # (..., L, 1)
    vectors = embedding(idx) * mask  # (..., L, D)
    count = mask.sum(dim=-2).clamp(min=1)  # (..., 1)
    return vectors.sum(dim=-2) / count  # (..., D)


@dataclass(frozen=True)
class DNNConfig:
    embedding_dim: int = 16  # size of every field's embedding
    hidden: tuple[int, ...] = field(default_factory=lambda: (256, 128, 64))  # dense layer widths
    dropout: float = 0.2  # after every dense layer
    batch_norm: bool = False  # BatchNorm1d before each ReLU
    share_embeddings: bool = True  # columns that map to the same vocabulary share one table (artist/composer/...)
    sparse: bool = False  # sparse gradients for the embedding tables (updated by SparseAdam)

    def check(self) -> None:
        require(self.embedding_dim >= 1, "model.embedding_dim", self.embedding_dim, "must be >= 1")
        require(all(h >= 1 for h in self.hidden), "model.hidden", self.hidden, "widths must be >= 1")
        require(0.0 <= self.dropout < 1.0, "model.dropout", self.dropout, "must be in [0, 1)")


class FeatureEmbeddings(nn.Module):
    """Embedding tables for the categorical and multi-valued columns of a manifest, in sorted column order.

    ``forward(batch) -> (B, n_fields, D)``: one vector per categorical column, one masked mean per multi-valued
    column. Columns that map to the same vocabulary share a table when ``share`` is true.
    """

    def __init__(
        self,
        categorical: Mapping[str, str],
        multi_valued: Mapping[str, str],
        vocab_sizes: Mapping[str, int],
        dim: int,
        share: bool = True,
        init_std: float | None = None,  # None: PyTorch's N(0, 1); 0.0: zeros
        sparse: bool = False,  # nn.Embedding(sparse=True): gradients hold only the batch's rows
    ):
        super().__init__()
        self.categorical = sorted(categorical)
        self.multi_valued = sorted(multi_valued)
        assert not set(self.categorical) & set(self.multi_valued), "a column is both categorical and multi-valued"
        self.table_of: dict[str, str] = {}
        tables: dict[str, nn.Embedding] = {}
        for col in self.categorical + self.multi_valued:
            vocab = categorical[col] if col in categorical else multi_valued[col]
            table = f"v_{vocab}" if share else f"c_{col}"
            if table not in tables:
                tables[table] = nn.Embedding(vocab_sizes[vocab], dim, padding_idx=PAD_INDEX, sparse=sparse)
                if init_std == 0.0:
                    nn.init.zeros_(tables[table].weight)
                elif init_std is not None:
                    nn.init.normal_(tables[table].weight, std=init_std)
                with torch.no_grad():
                    tables[table].weight[PAD_INDEX].zero_()
            self.table_of[col] = table
        self.tables = nn.ModuleDict(tables)
        self.n_fields = len(self.categorical) + len(self.multi_valued)
        self.dim = dim

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        parts = []
        for col in self.categorical:
            idx = batch[col]  # (B,)
            assert idx.dim() == 1, f"categorical column {col!r} must be (B,), got {tuple(idx.shape)}"
            parts.append(self.tables[self.table_of[col]](idx))  # (B, D)
        for col in self.multi_valued:
            idx = batch[col]  # (B, L)
            assert idx.dim() == 2, f"multi-valued column {col!r} must be (B, L), got {tuple(idx.shape)}"
            parts.append(masked_mean_embedding(self.tables[self.table_of[col]], idx))  # (B, D)
        return torch.stack(parts, dim=1)  # (B, n_fields, D)


def _vocab_sizes_for(
    manifest: Mapping[str, Any], categorical: Mapping[str, str], multi_valued: Mapping[str, str], model: str
) -> dict[str, int]:
    sizes = {}
    for kind, cols in (("categorical", categorical), ("multi_valued", multi_valued)):
        for col, vocab in cols.items():
            sizes[vocab] = manifest_vocab_size(manifest, vocab, f"{model} {kind} column {col!r}")
    return sizes


class DNN(nn.Module):
    """Embeddings (+ mean-pooled multi-valued embeddings) ++ numeric -> [Linear -> (BN) -> ReLU -> Dropout]* -> logit."""

    def __init__(
        self,
        config: DNNConfig,
        categorical: Mapping[str, str],
        multi_valued: Mapping[str, str],
        numeric: list[str],
        vocab_sizes: Mapping[str, int],
    ):
        super().__init__()
        assert categorical or multi_valued or numeric, "DNN needs at least one feature"
        self.config = config
        self.numeric = list(numeric)
        self.embeddings = FeatureEmbeddings(
            categorical, multi_valued, vocab_sizes, config.embedding_dim, share=config.share_embeddings, init_std=0.05,
            sparse=config.sparse,
        )
        layers: list[nn.Module] = []
        width = self.embeddings.n_fields * config.embedding_dim + len(self.numeric)
        for h in config.hidden:
            layers.append(nn.Linear(width, h))
            if config.batch_norm:
                layers.append(nn.BatchNorm1d(h))
            layers += [nn.ReLU(), nn.Dropout(config.dropout)]
            width = h
        self.mlp = nn.Sequential(*layers)
        self.out = nn.Linear(width, 1)

    def sparse_parameters(self) -> list[nn.Parameter]:
        """The parameters whose gradients are always sparse: the embedding tables when ``sparse``."""
        return [table.weight for table in self.embeddings.tables.values()] if self.config.sparse else []

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any], config: DNNConfig) -> "DNN":
        categorical, multi_valued, numeric = manifest_features(manifest, "dnn")
        sizes = _vocab_sizes_for(manifest, categorical, multi_valued, "dnn")
        return cls(config, categorical, multi_valued, numeric, sizes)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        parts = []
        if self.embeddings.n_fields:
            emb = self.embeddings(batch)  # (B, n_fields, D)
            parts.append(emb.flatten(1))  # (B, n_fields * D)
        if self.numeric:
            x_num = batch[NUMERIC].float()  # (B, F)
            assert x_num.shape[1] == len(self.numeric), f"numeric has {x_num.shape[1]} columns, expected {len(self.numeric)}"
            parts.append(x_num)
        x = torch.cat(parts, dim=1)  # (B, n_fields * D + F)
        return self.out(self.mlp(x)).squeeze(-1)  # (B,)

    def loss(self, batch: Mapping[str, torch.Tensor], logits: torch.Tensor) -> torch.Tensor:
        """Binary cross-entropy with logits against ``batch["target"]`` (1/0)."""
        return F.binary_cross_entropy_with_logits(logits, batch[TARGET].to(logits.dtype))

    def training_loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The loss the training loop minimizes: ``loss(batch, forward(batch))``."""
        return self.loss(batch, self(batch))
