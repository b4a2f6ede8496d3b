"""Bi-GRU with attention over a Last.fm session prefix, predicting the next song (the seed Last.fm model).

Per step t: x_t = concat(song embedding (song_dim), masked mean of the song's tag embeddings (tag_dim)).
A bidirectional GRU runs over the valid prefix only, attention pooling takes a masked softmax over the steps of
``v . tanh(W o_t + b)``, then dropout and one dense layer over the full song vocabulary.

How the GRU skips the padding (``bigru``): on CUDA with ``pack_padded_sequence`` (cuDNN's packed kernels). On CPU
by masking: the forward direction runs over the right-padded batch as it is (the padding comes after every valid
step, so it cannot reach a valid output), and the backward direction runs, with the reverse weights, over each row
reversed within its own length, whose outputs are then put back in time order. The numbers are those of packing
(tests/test_perf_paths.py), but the backward pass is several times cheaper: PyTorch's packed CPU path slices the
packed input once per time step, and each slice's gradient is a zero-filled copy of the whole packed input.

Logits and the two special indices: ``forward`` returns RAW logits (B, V_song) for every index, which is what
training needs. ``score_all(batch)`` returns the same logits with index 0 (padding) and 1 (OOV) set to -inf: use it
for ranking evaluation so neither can be recommended.

Loss: full-softmax cross-entropy, except in training mode with ``sampled_softmax = S > 0``: then a sampled softmax
over the target and S negatives shared by the batch, drawn with replacement from the real songs (indices >= 2),
UNIFORMLY by default (``sampler="popularity"`` draws proportionally to counts given to ``set_sampling_counts``),
with the log-Q correction (every candidate's logit minus log of its expected count S * q_j) and accidental hits
(a negative equal to the row's target) removed. With the uniform sampler log-Q is the same constant for every
candidate, so it does not change the loss; it matters for the popularity sampler. In eval mode ``loss`` is always
the full softmax, so validation losses are comparable across settings. ``sampled_loss(batch)`` computes the sampled
loss without the (B, V) logits (the compute saving); ``loss(batch, logits)`` gathers the sampled columns of the
full logits (same value, simpler to call from a generic training loop).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from musicrec.columns import FIRST_TOKEN_INDEX, OOV_INDEX, PAD_INDEX, SONG_TAGS, SONGS
from musicrec.models.dnn import manifest_vocab_size, masked_mean_embedding

LENGTHS = "lengths"
NEXT_SONG = "next_song"
SAMPLERS = ("uniform", "popularity")


@dataclass
class GRUConfig:
    song_dim: int = 64  # song embedding size
    tag_dim: int = 16  # tag embedding size; 0 = no tag input (batch["song_tags"] then unused)
    hidden: int = 64  # GRU hidden size per direction; outputs are 2 * hidden
    num_layers: int = 1  # stacked bidirectional GRU layers
    attention_dim: int = 32  # width of the attention scorer
    dropout: float = 0.2  # on the pooled vector (and between GRU layers when num_layers > 1)
    sampled_softmax: int = 0  # negatives per batch for the training loss; 0 = full softmax
    sampler: str = "uniform"  # "uniform" or "popularity" (needs set_sampling_counts)
    clip_grad_norm: float = 5.0  # stored for the training loop, which applies it; 0 = no clipping

    def __post_init__(self):
        assert self.song_dim >= 1 and self.hidden >= 1 and self.attention_dim >= 1 and self.num_layers >= 1
        assert self.tag_dim >= 0, f"tag_dim must be >= 0, got {self.tag_dim}"
        assert 0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}"
        assert self.sampled_softmax >= 0, f"sampled_softmax must be >= 0, got {self.sampled_softmax}"
        assert self.sampler in SAMPLERS, f"sampler must be one of {SAMPLERS}, got {self.sampler!r}"
        assert self.clip_grad_norm >= 0.0, f"clip_grad_norm must be >= 0, got {self.clip_grad_norm}"


class SessionGRU(nn.Module):
    """(songs, song_tags, lengths) -> logits over the song vocabulary (B, V_song)."""

    def __init__(self, config: GRUConfig, n_songs: int, n_tags: int | None):
        super().__init__()
        assert n_songs > FIRST_TOKEN_INDEX, f"song vocabulary must hold a real song, got size {n_songs}"
        self.config = config
        self.n_songs = n_songs
        self.n_tags = n_tags
        self.song_emb = nn.Embedding(n_songs, config.song_dim, padding_idx=PAD_INDEX)
        self.tag_emb = None
        if config.tag_dim > 0:
            assert n_tags is not None and n_tags >= 2, "tag_dim > 0 needs the tag vocabulary size"
            self.tag_emb = nn.Embedding(n_tags, config.tag_dim, padding_idx=PAD_INDEX)
        self.gru = nn.GRU(
            config.song_dim + config.tag_dim,
            config.hidden,
            num_layers=config.num_layers,
            batch_first=True,
            bidirectional=True,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
        )
        self.att_proj = nn.Linear(2 * config.hidden, config.attention_dim)
        self.att_score = nn.Linear(config.attention_dim, 1, bias=False)
        self.drop = nn.Dropout(config.dropout)
        self.out = nn.Linear(2 * config.hidden, n_songs)
        # popularity sampler distribution over songs, set by set_sampling_counts; not part of the state_dict
        self.register_buffer("sampling_probs", torch.empty(0), persistent=False)

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any], config: GRUConfig) -> "SessionGRU":
        n_songs = manifest_vocab_size(manifest, "song", f"gru ({SONGS})")
        n_tags = manifest_vocab_size(manifest, "tag", f"gru ({SONG_TAGS})") if config.tag_dim > 0 else None
        return cls(config, n_songs, n_tags)

    # --- encoder ---------------------------------------------------------------------------------------------
    def encode(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The pooled session vector after dropout (B, 2H): the input of the output layer."""
        songs = batch[SONGS]  # (B, T)
        lengths = batch[LENGTHS]  # (B,)
        B, T = songs.shape
        assert lengths.shape == (B,), f"lengths must be (B,) = ({B},), got {tuple(lengths.shape)}"
        lengths_cpu = lengths.detach().to("cpu", torch.int64)
        assert int(lengths_cpu.min()) >= 1 and int(lengths_cpu.max()) <= T, "lengths must be in [1, T]"
        x = self.song_emb(songs)  # (B, T, Ds)
        if self.tag_emb is not None:
            tags = batch[SONG_TAGS]  # (B, T, K)
            assert tags.shape[:2] == (B, T), f"song_tags must be (B, T, K) with (B, T) = {(B, T)}, got {tags.shape}"
            x = torch.cat([x, masked_mean_embedding(self.tag_emb, tags)], dim=-1)  # (B, T, Ds + Dt)
        valid = torch.arange(T, device=songs.device).unsqueeze(0) < lengths.to(songs.device).unsqueeze(1)  # (B, T)
        out = self.bigru(x, lengths_cpu, valid)  # (B, T, 2H), zeros past the length
        scores = self.att_score(torch.tanh(self.att_proj(out))).squeeze(-1)  # (B, T)
        scores = scores.masked_fill(~valid, float("-inf"))
        weights = torch.softmax(scores, dim=1)  # (B, T), zero past the length
        pooled = torch.bmm(weights.unsqueeze(1), out).squeeze(1)  # (B, 2H)
        return self.drop(pooled)  # (B, 2H)

    def bigru(self, x: torch.Tensor, lengths_cpu: torch.Tensor, valid: torch.Tensor, packed: bool | None = None) -> torch.Tensor:
        """The bidirectional GRU over the first ``lengths`` steps of each row: x (B, T, D) -> (B, T, 2H), zeros past
        the length. ``packed=None`` packs on CUDA and masks on CPU (see the module docstring); both give the same
        numbers, up to float rounding (the dropout between stacked layers draws different masks)."""
        B, T, _ = x.shape
        if packed is None:
            packed = x.device.type != "cpu"
        if packed:
            seq = pack_padded_sequence(x, lengths_cpu, batch_first=True, enforce_sorted=False)
            out, _ = self.gru(seq)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)  # (B, T, 2H)
            return out
        steps = torch.arange(T, device=x.device).unsqueeze(0)  # (1, T)
        lengths = lengths_cpu.to(x.device).unsqueeze(1)  # (B, 1)
        rev = torch.where(valid, lengths - 1 - steps, steps)  # (B, T): row b's first lengths[b] steps reversed
        keep = valid.unsqueeze(-1).to(x.dtype)  # (B, T, 1)
        H, layer_in = self.config.hidden, x
        for layer in range(self.config.num_layers):
            if layer > 0:  # what nn.GRU does between stacked layers
                layer_in = F.dropout(layer_in, self.gru.dropout, self.training)
            run = self._one_direction(layer_in.shape[-1])
            names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
            fwd = {f"{n}_l0": getattr(self.gru, f"{n}_l{layer}") for n in names}
            bwd = {f"{n}_l0": getattr(self.gru, f"{n}_l{layer}_reverse") for n in names}
            out_f, _ = functional_call(run, fwd, (layer_in,))  # (B, T, H); past the length: junk
            rev_in = layer_in.gather(1, rev.unsqueeze(-1).expand_as(layer_in))  # (B, T, D_in)
            out_b, _ = functional_call(run, bwd, (rev_in,))  # (B, T, H), reversed time
            out_b = out_b.gather(1, rev.unsqueeze(-1).expand(B, T, H))  # (B, T, H), back in time order
            layer_in = torch.cat([out_f, out_b], dim=-1) * keep  # (B, T, 2H), zeros past the length
        return layer_in

    def _one_direction(self, input_size: int) -> nn.GRU:
        """A weightless one-layer, one-direction GRU of this model's hidden size, run with the weights of one direction
        of one layer of ``self.gru`` (``functional_call``); kept out of the state_dict and built without drawing
        random numbers, so the model's parameters and its initialization are those of the packed version."""
        runners = self.__dict__.setdefault("_runners", {})
        if input_size not in runners:
            runners[input_size] = nn.GRU(input_size, self.config.hidden, batch_first=True, device="meta")  # no storage, no RNG
        return runners[input_size]

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_runners", None)  # rebuilt on first use (a pickled model, e.g. mlflow.pytorch, stays plain)
        return state

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Raw logits over every song index (B, V_song); see ``score_all`` for evaluation."""
        return self.out(self.encode(batch))  # (B, V)

    @torch.no_grad()
    def score_all(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Logits (B, V_song) with padding (0) and OOV (1) set to -inf, for ranking evaluation (no grad)."""
        return mask_special(self(batch))

    # --- losses ----------------------------------------------------------------------------------------------
    def loss(self, batch: Mapping[str, torch.Tensor], logits: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of ``batch["next_song"]``: sampled softmax in training when ``sampled_softmax > 0``."""
        target = batch[NEXT_SONG].to(logits.device)  # (B,)
        assert logits.shape == (target.shape[0], self.n_songs), f"logits must be (B, V), got {tuple(logits.shape)}"
        if self.training and self.config.sampled_softmax > 0:
            neg, log_q_neg, log_q_pos = self._sample(target)
            pos_logit = logits.gather(1, target.unsqueeze(1)).squeeze(1)  # (B,)
            neg_logits = logits[:, neg]  # (B, S)
            return _sampled_softmax_loss(pos_logit, neg_logits, target, neg, log_q_pos, log_q_neg)
        return F.cross_entropy(logits, target)

    def sampled_loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The sampled-softmax training loss computed without the full (B, V) logits."""
        assert self.config.sampled_softmax > 0, "sampled_loss needs config.sampled_softmax > 0"
        h = self.encode(batch)  # (B, 2H)
        target = batch[NEXT_SONG].to(h.device)  # (B,)
        neg, log_q_neg, log_q_pos = self._sample(target)
        pos_logit = (h * self.out.weight[target]).sum(-1) + self.out.bias[target]  # (B,)
        neg_logits = h @ self.out.weight[neg].T + self.out.bias[neg]  # (B, S)
        return _sampled_softmax_loss(pos_logit, neg_logits, target, neg, log_q_pos, log_q_neg)

    def set_sampling_counts(self, counts: torch.Tensor) -> None:
        """Training counts per song index (V,) for ``sampler="popularity"``; indices 0 and 1 are never sampled."""
        counts = torch.as_tensor(counts, dtype=torch.float64).flatten()
        assert counts.shape == (self.n_songs,), f"counts must be ({self.n_songs},), got {tuple(counts.shape)}"
        assert bool((counts >= 0).all()), "counts must be non-negative"
        probs = counts.clone()
        probs[:FIRST_TOKEN_INDEX] = 0.0
        assert float(probs.sum()) > 0, "counts of the real songs (index >= 2) sum to 0"
        self.sampling_probs = (probs / probs.sum()).to(self.out.weight.device, torch.float32)

    def _sample(self, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """S negatives shared by the batch (S,), log expected counts of the negatives (S,) and targets (B,)."""
        S, V, device = self.config.sampled_softmax, self.n_songs, target.device
        if self.config.sampler == "uniform":
            neg = torch.randint(FIRST_TOKEN_INDEX, V, (S,), device=device)  # (S,)
            log_q = math.log(S / (V - FIRST_TOKEN_INDEX))
            return neg, torch.full((S,), log_q, device=device), torch.full(target.shape, log_q, device=device)
        if self.sampling_probs.numel() == 0:
            raise RuntimeError('sampler="popularity" needs model.set_sampling_counts(counts) before training')
        probs = self.sampling_probs.to(device)
        neg = torch.multinomial(probs, S, replacement=True)  # (S,)
        # expected count S * q_j; a target with q = 0 (index 0/1 or unseen) gets the smallest positive q
        floor = probs[probs > 0].min()
        log_q_pos = torch.log(S * probs[target].clamp(min=floor))  # (B,)
        return neg, torch.log(S * probs[neg]), log_q_pos


def _sampled_softmax_loss(
    pos_logit: torch.Tensor,  # (B,)
    neg_logits: torch.Tensor,  # (B, S)
    target: torch.Tensor,  # (B,)
    neg: torch.Tensor,  # (S,)
    log_q_pos: torch.Tensor,  # (B,)
    log_q_neg: torch.Tensor,  # (S,)
) -> torch.Tensor:
    """Softmax cross-entropy over [target, negatives] with log-Q correction and accidental hits removed."""
    pos = (pos_logit - log_q_pos).unsqueeze(1)  # (B, 1)
    negs = neg_logits - log_q_neg.unsqueeze(0)  # (B, S)
    negs = negs.masked_fill(neg.unsqueeze(0) == target.unsqueeze(1), float("-inf"))  # accidental hits
    logits = torch.cat([pos, negs], dim=1)  # (B, 1 + S)
    labels = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
    return F.cross_entropy(logits, labels)


def mask_special(scores: torch.Tensor) -> torch.Tensor:
    """A copy of ``scores`` (B, V) with the padding (0) and OOV (1) columns set to -inf."""
    scores = scores.clone()
    scores[:, PAD_INDEX] = float("-inf")
    scores[:, OOV_INDEX] = float("-inf")
    return scores
