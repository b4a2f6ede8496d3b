"""Neural Collaborative Filtering (He et al. 2017, "Neural Collaborative Filtering", WWW): GMF, MLP and NeuMF.

- GMF: user and item embeddings of size ``factors``, element-wise product -> h_gmf (B, factors).
- MLP: separate user and item embeddings of size ``mlp_layers[0] // 2`` each, concatenated (B, mlp_layers[0]),
  then ``Linear -> ReLU -> Dropout`` to ``mlp_layers[1]``, ..., ``mlp_layers[-1]`` -> h_mlp (as in the paper's
  code, ``layers=[64, 32, 16, 8]``: the first entry is the concatenated embedding width).
- NeuMF: ``Linear(concat(h_gmf, h_mlp)) -> logit``; ``variant="gmf"`` / ``"mlp"`` keep only one tower.

``NeuMF.from_pretrained(gmf, mlp, alpha)`` initializes NeuMF from a trained GMF and a trained MLP as in the paper:
embeddings and MLP layers are copied, the predict layer is ``[alpha * W_gmf, (1 - alpha) * W_mlp]`` with bias
``alpha * b_gmf + (1 - alpha) * b_mlp``. From the command line: ``model.pretrained_gmf`` / ``model.pretrained_mlp``
name the ``best.pt`` of a ``variant: gmf`` and a ``variant: mlp`` run on the same data (``from_manifest`` loads them;
``load_tower`` checks variant, sizes and vocabularies, each mismatch a ``ConfigError`` naming the key).

Inputs: ``batch["user_idx"]``, ``batch["song_idx"]`` (B,) LongTensors; vocabularies ``user`` and ``song``.

``sparse``: the four embedding tables are ``nn.Embedding(sparse=True)``: their gradients hold only the batch's rows,
and ``sparse_parameters()`` names them for the optimizer (``musicrec.optim``: SparseAdam), so a step's cost does not
grow with the number of users and songs.

``embedding_l2``: the training loss adds ``embedding_l2 * mean_b(sum of squares of the rows example b gathers)``, an
L2 penalty on the embedding rows the batch uses (twice RecBole's ``EmbLoss(require_pow=True)``), so its gradient is
as sparse as the tables'. The other regularizer sparse tables take: ``train.optimizer: adamw`` with
``train.weight_decay`` (``musicrec.optim.SparseAdamW``, decoupled decay of the touched rows).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field, replace
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from musicrec.checkpoint import CheckpointError, load
from musicrec.columns import PAD_INDEX, SONG_IDX, TARGET, USER_IDX
from musicrec.config import ConfigError, require, typed
from musicrec.models.dnn import manifest_vocab_size

VARIANTS = ("neumf", "gmf", "mlp")


@dataclass(frozen=True)
class NCFConfig:
    factors: int = 16  # GMF embedding size (the paper's "predictive factors")
    mlp_layers: tuple[int, ...] = field(default_factory=lambda: (64, 32, 16))  # [concat embedding width, hidden...]
    dropout: float = 0.0  # after each MLP hidden layer
    variant: str = "neumf"  # "neumf" (both towers), "gmf" or "mlp"
    init_std: float = 0.01  # N(0, init_std) for the embeddings, as in the paper
    sparse: bool = False  # sparse gradients for the user/song embeddings (updated by SparseAdam)
    pretrained_gmf: str | None = None  # variant neumf: best.pt of a variant=gmf run to start from (with pretrained_mlp)
    pretrained_mlp: str | None = None  # variant neumf: best.pt of a variant=mlp run to start from (with pretrained_gmf)
    pretrain_alpha: float = 0.5  # weight of the GMF tower in the pretrained predict layer (the paper's alpha)
    embedding_l2: float = 0.0  # L2 penalty on the embedding rows a batch gathers, per example (training loss only)

    def check(self) -> None:
        require(self.variant in VARIANTS, "model.variant", self.variant, f"must be one of {VARIANTS}")
        require(self.factors >= 1, "model.factors", self.factors, "must be >= 1")
        layers = self.mlp_layers
        require(len(layers) >= 1, "model.mlp_layers", layers, "needs at least the concatenated embedding width")
        require(layers[0] % 2 == 0, "model.mlp_layers", layers, "the first width must be even (user ++ item)")
        require(all(w >= 1 for w in layers), "model.mlp_layers", layers, "widths must be >= 1")
        require(0.0 <= self.dropout < 1.0, "model.dropout", self.dropout, "must be in [0, 1)")
        require(self.init_std > 0.0, "model.init_std", self.init_std, "must be > 0")
        require(0.0 <= self.pretrain_alpha <= 1.0, "model.pretrain_alpha", self.pretrain_alpha, "must be in [0, 1]")
        require(self.embedding_l2 >= 0.0, "model.embedding_l2", self.embedding_l2, "must be >= 0")
        pretrained = (self.pretrained_gmf, self.pretrained_mlp)
        if any(pretrained):
            require(all(pretrained), "model.pretrained_gmf, model.pretrained_mlp", pretrained,
                    "NeuMF starts from a pretrained GMF and MLP: set both")
            require(self.variant == "neumf", "model.variant", self.variant, "pretrained towers need variant neumf")


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
            self.gmf_user = nn.Embedding(n_users, config.factors, padding_idx=PAD_INDEX, sparse=config.sparse)
            self.gmf_item = nn.Embedding(n_songs, config.factors, padding_idx=PAD_INDEX, sparse=config.sparse)
            width += config.factors
        if self.has_mlp:
            half = config.mlp_layers[0] // 2
            self.mlp_user = nn.Embedding(n_users, half, padding_idx=PAD_INDEX, sparse=config.sparse)
            self.mlp_item = nn.Embedding(n_songs, half, padding_idx=PAD_INDEX, sparse=config.sparse)
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

    def sparse_parameters(self) -> list[nn.Parameter]:
        """The parameters whose gradients are always sparse: the embedding tables when ``sparse``."""
        return [emb.weight for emb in self._embeddings()] if self.config.sparse else []

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any], config: NCFConfig) -> "NeuMF":
        n_users = manifest_vocab_size(manifest, "user", f"ncf ({USER_IDX})")
        n_songs = manifest_vocab_size(manifest, "song", f"ncf ({SONG_IDX})")
        if not config.pretrained_gmf:
            return cls(config, n_users, n_songs)
        gmf = load_tower(config, "gmf", n_users, n_songs)
        mlp = load_tower(config, "mlp", n_users, n_songs)
        return cls.from_pretrained(gmf, mlp, config.pretrain_alpha, config=config)

    def rows(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The embedding rows the batch gathers, by table name (each (B, width))."""
        user, item = batch[USER_IDX], batch[SONG_IDX]  # (B,), (B,)
        assert user.dim() == 1 and user.shape == item.shape, f"user/song must be (B,), got {user.shape}, {item.shape}"
        out = {}
        if self.has_gmf:
            out["gmf_user"], out["gmf_item"] = self.gmf_user(user), self.gmf_item(item)  # (B, factors) each
        if self.has_mlp:
            out["mlp_user"], out["mlp_item"] = self.mlp_user(user), self.mlp_item(item)  # (B, mlp_layers[0] // 2)
        return out

    def towers(self, batch: Mapping[str, torch.Tensor], rows: Mapping[str, torch.Tensor] | None = None) -> torch.Tensor:
        """The input of the predict layer: concat(h_gmf, h_mlp) (B, width); ``rows``: ``self.rows(batch)``."""
        rows = self.rows(batch) if rows is None else rows
        parts = []
        if self.has_gmf:
            parts.append(rows["gmf_user"] * rows["gmf_item"])  # (B, factors)
        if self.has_mlp:
            x = torch.cat([rows["mlp_user"], rows["mlp_item"]], dim=1)  # (B, mlp_layers[0])
            parts.append(self.mlp(x))  # (B, mlp_layers[-1])
        return torch.cat(parts, dim=1)  # (B, width)

    def forward(self, batch: Mapping[str, torch.Tensor], rows: Mapping[str, torch.Tensor] | None = None
                ) -> torch.Tensor:
        return self.predict(self.towers(batch, rows)).squeeze(-1)  # (B,)

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

    def training_loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The loss the training loop minimizes: ``loss(batch, forward(batch))``, plus ``embedding_l2`` times the
        per-example sum of squares of the gathered embedding rows."""
        rows = self.rows(batch)
        loss = self.loss(batch, self(batch, rows))
        if self.config.embedding_l2:
            squares = sum(r.pow(2).sum(dim=1) for r in rows.values())  # (B,)
            loss = loss + self.config.embedding_l2 * squares.mean()
        return loss

    @classmethod
    def from_pretrained(cls, gmf: "NeuMF", mlp: "NeuMF", alpha: float = 0.5,
                        config: NCFConfig | None = None) -> "NeuMF":
        """A NeuMF initialized from a pretrained ``variant="gmf"`` and a pretrained ``variant="mlp"`` model.

        Embeddings and MLP layers are copied; the predict layer is ``[alpha * W_gmf, (1 - alpha) * W_mlp]`` with
        bias ``alpha * b_gmf + (1 - alpha) * b_mlp`` (He et al. 2017, section 3.4.1). Inputs are not modified.
        ``config``: the NeuMF's (its sizes those of the towers); default: the MLP's with the GMF's factors.
        """
        assert gmf.config.variant == "gmf", f"first model must be a GMF, got variant {gmf.config.variant!r}"
        assert mlp.config.variant == "mlp", f"second model must be an MLP, got variant {mlp.config.variant!r}"
        assert 0.0 <= alpha <= 1.0, f"alpha must be in [0, 1], got {alpha}"
        if (gmf.n_users, gmf.n_songs) != (mlp.n_users, mlp.n_songs):
            raise ValueError(
                f"GMF vocab sizes (users={gmf.n_users}, songs={gmf.n_songs}) differ from the MLP's "
                f"(users={mlp.n_users}, songs={mlp.n_songs})"
            )
        config = config or replace(mlp.config, factors=gmf.config.factors, variant="neumf")
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


_TOWER_SIZES = {"gmf": ("factors",), "mlp": ("mlp_layers",)}  # what a pretrained tower must share with the NeuMF


def load_tower(config: NCFConfig, variant: str, n_users: int, n_songs: int) -> NeuMF:
    """The pretrained ``variant`` ("gmf" / "mlp") model of ``model.pretrained_<variant>`` (a ``best.pt`` or
    ``last.pt`` of jobs/train.py), checked against ``config`` and the vocabulary sizes; a mismatch or an unreadable
    file is a ``ConfigError`` naming the key."""
    key = f"model.pretrained_{variant}"
    path = getattr(config, f"pretrained_{variant}")
    try:
        ckpt = load(path)
        stored = ckpt["model_config"]
        tower_config = typed(NCFConfig, json.loads(stored) if isinstance(stored, str) else dict(stored), "model")
    except (CheckpointError, KeyError, ValueError, TypeError) as exc:
        raise ConfigError(f"{key} = {path!r}: not a readable NCF checkpoint ({exc})") from None
    require(tower_config.variant == variant, key, path, f"is a variant={tower_config.variant} model, not {variant}")
    for size in _TOWER_SIZES[variant]:
        theirs, ours = getattr(tower_config, size), getattr(config, size)
        require(theirs == ours, key, path, f"has model.{size} = {theirs!r}, this model {ours!r}")
    tower = NeuMF(replace(tower_config, sparse=config.sparse), n_users, n_songs)
    state = ckpt["model_state"]
    shapes = {k: tuple(v.shape) for k, v in state.items()}
    if shapes != {k: tuple(v.shape) for k, v in tower.state_dict().items()}:
        raise ConfigError(f"{key} = {path!r}: its tables do not fit this data's vocabularies (users {n_users}, "
                          f"songs {n_songs}): trained on other data?")
    tower.load_state_dict(state)
    return tower
