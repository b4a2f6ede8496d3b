"""Neural Collaborative Filtering (He et al. 2017, "Neural Collaborative Filtering", WWW): GMF, MLP and NeuMF.

- GMF: user and item embeddings of size ``factors``, element-wise product -> h_gmf (B, factors).
- MLP: separate user and item embeddings of size ``mlp_layers[0] // 2`` each, concatenated (B, mlp_layers[0]),
  then ``Linear -> ReLU -> Dropout`` to ``mlp_layers[1]``, ..., ``mlp_layers[-1]`` -> h_mlp (as in the paper's
  code, ``layers=[64, 32, 16, 8]``: the first entry is the concatenated embedding width).
- NeuMF: ``Linear(concat(h_gmf, h_mlp)) -> logit``; ``variant="gmf"`` / ``"mlp"`` keep only one tower.

``NeuMF.from_pretrained(gmf, mlp, alpha)`` initializes NeuMF from a trained GMF and a trained MLP as in the paper:
embeddings and MLP layers are copied, the predict layer is ``[alpha * W_gmf, (1 - alpha) * W_mlp]`` with bias
``alpha * b_gmf + (1 - alpha) * b_mlp``.

Inputs: ``batch["user_idx"]``, ``batch["song_idx"]`` (B,) LongTensors; vocabularies ``user`` and ``song``.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from musicrec.columns import PAD_INDEX, SONG_IDX, TARGET, USER_IDX
from musicrec.config import require
from musicrec.models.dnn import manifest_vocab_size

VARIANTS = ("neumf", "gmf", "mlp")


@dataclass(frozen=True)
class NCFConfig:
    factors: int = 16  # GMF embedding size (the paper's "predictive factors")
    mlp_layers: tuple[int, ...] = field(default_factory=lambda: (64, 32, 16))  # [concat embedding width, hidden...]
    dropout: float = 0.0  # after each MLP hidden layer
    variant: str = "neumf"  # "neumf" (both towers), "gmf" or "mlp"
    init_std: float = 0.01  # N(0, init_std) for the embeddings, as in the paper

    def check(self) -> None:
        require(self.variant in VARIANTS, "model.variant", self.variant, f"must be one of {VARIANTS}")
        require(self.factors >= 1, "model.factors", self.factors, "must be >= 1")
        layers = self.mlp_layers
        require(len(layers) >= 1, "model.mlp_layers", layers, "needs at least the concatenated embedding width")
        require(layers[0] % 2 == 0, "model.mlp_layers", layers, "the first width must be even (user ++ item)")
        require(all(w >= 1 for w in layers), "model.mlp_layers", layers, "widths must be >= 1")
        require(0.0 <= self.dropout < 1.0, "model.dropout", self.dropout, "must be in [0, 1)")
        require(self.init_std > 0.0, "model.init_std", self.init_std, "must be > 0")


class NeuMF(nn.Module):
    """GMF + MLP towers fused by one linear layer -> (B,) logits."""

    def __init__(self, config: NCFConfig, n_users: int, n_songs: int):
        super().__init__()
        self.config = config
        self.n_users, self.n_songs = n_users, n_songs
        self.has_gmf = config.variant in ("neumf", "gmf")
        self.has_mlp = config.variant in ("neumf", "mlp")
        width = 0
        if self.has_gmf:
            self.gmf_user = nn.Embedding(n_users, config.factors, padding_idx=PAD_INDEX)
            self.gmf_item = nn.Embedding(n_songs, config.factors, padding_idx=PAD_INDEX)
            width += config.factors
        if self.has_mlp:
            half = config.mlp_layers[0] // 2
            self.mlp_user = nn.Embedding(n_users, half, padding_idx=PAD_INDEX)
            self.mlp_item = nn.Embedding(n_songs, half, padding_idx=PAD_INDEX)
            layers: list[nn.Module] = []
            for w_in, w_out in zip(config.mlp_layers[:-1], config.mlp_layers[1:]):
                layers += [nn.Linear(w_in, w_out), nn.ReLU(), nn.Dropout(config.dropout)]
            self.mlp = nn.Sequential(*layers)
            width += config.mlp_layers[-1]
        self.predict = nn.Linear(width, 1)
        for emb in self._embeddings():
            nn.init.normal_(emb.weight, std=config.init_std)
            with torch.no_grad():
                emb.weight[PAD_INDEX].zero_()

    def _embeddings(self) -> list[nn.Embedding]:
        out = []
        if self.has_gmf:
            out += [self.gmf_user, self.gmf_item]
        if self.has_mlp:
            out += [self.mlp_user, self.mlp_item]
        return out

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any], config: NCFConfig) -> "NeuMF":
        n_users = manifest_vocab_size(manifest, "user", f"ncf ({USER_IDX})")
        n_songs = manifest_vocab_size(manifest, "song", f"ncf ({SONG_IDX})")
        return cls(config, n_users, n_songs)

    def towers(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The input of the predict layer: concat(h_gmf, h_mlp) (B, width)."""
        user, item = batch[USER_IDX], batch[SONG_IDX]  # (B,), (B,)
        assert user.dim() == 1 and user.shape == item.shape, f"user/song must be (B,), got {user.shape}, {item.shape}"
        parts = []
        if self.has_gmf:
            parts.append(self.gmf_user(user) * self.gmf_item(item))  # (B, factors)
        if self.has_mlp:
            x = torch.cat([self.mlp_user(user), self.mlp_item(item)], dim=1)  # (B, mlp_layers[0])
            parts.append(self.mlp(x))  # (B, mlp_layers[-1])
        return torch.cat(parts, dim=1)  # (B, width)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return self.predict(self.towers(batch)).squeeze(-1)  # (B,)

    def score_candidates(self, user_idx: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Logits (B, C) of each user's candidate songs (B, C), e.g. the leave-one-out [positive, 99 negatives];
        then ``musicrec.metrics.sampled_ranks(scores[:, 0], scores[:, 1:])``."""
        B, C = candidates.shape
        assert user_idx.shape == (B,), f"user_idx must be ({B},), got {tuple(user_idx.shape)}"
        users = user_idx.unsqueeze(1).expand(B, C).reshape(-1)  # (B * C,)
        return self({USER_IDX: users, SONG_IDX: candidates.reshape(-1)}).view(B, C)  # (B, C)

    def loss(self, batch: Mapping[str, torch.Tensor], logits: torch.Tensor) -> torch.Tensor:
        """Binary cross-entropy with logits against ``batch["target"]`` (1/0; sampled negatives are 0)."""
        return F.binary_cross_entropy_with_logits(logits, batch[TARGET].to(logits.dtype))

    @classmethod
    def from_pretrained(cls, gmf: "NeuMF", mlp: "NeuMF", alpha: float = 0.5) -> "NeuMF":
        """A NeuMF initialized from a pretrained ``variant="gmf"`` and a pretrained ``variant="mlp"`` model.

        Embeddings and MLP layers are copied; the predict layer is ``[alpha * W_gmf, (1 - alpha) * W_mlp]`` with
        bias ``alpha * b_gmf + (1 - alpha) * b_mlp`` (He et al. 2017, section 3.4.1). Inputs are not modified.
        """
        assert gmf.config.variant == "gmf", f"first model must be a GMF, got variant {gmf.config.variant!r}"
        assert mlp.config.variant == "mlp", f"second model must be an MLP, got variant {mlp.config.variant!r}"
        assert 0.0 <= alpha <= 1.0, f"alpha must be in [0, 1], got {alpha}"
        if (gmf.n_users, gmf.n_songs) != (mlp.n_users, mlp.n_songs):
            raise ValueError(
                f"GMF vocab sizes (users={gmf.n_users}, songs={gmf.n_songs}) differ from the MLP's "
                f"(users={mlp.n_users}, songs={mlp.n_songs})"
            )
        config = replace(mlp.config, factors=gmf.config.factors, variant="neumf")
        model = cls(config, gmf.n_users, gmf.n_songs)
        with torch.no_grad():
            model.gmf_user.weight.copy_(gmf.gmf_user.weight)
            model.gmf_item.weight.copy_(gmf.gmf_item.weight)
            model.mlp_user.weight.copy_(mlp.mlp_user.weight)
            model.mlp_item.weight.copy_(mlp.mlp_item.weight)
            model.mlp.load_state_dict(copy.deepcopy(mlp.mlp.state_dict()))
            model.predict.weight.copy_(
                torch.cat([alpha * gmf.predict.weight, (1.0 - alpha) * mlp.predict.weight], dim=1)  # (1, width)
            )
            model.predict.bias.copy_(alpha * gmf.predict.bias + (1.0 - alpha) * mlp.predict.bias)
        return model
