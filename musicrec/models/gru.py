"""Bi-GRU with attention over a Last.fm session prefix, predicting the next song (the seed Last.fm model).

Per step t: x_t = concat(song embedding (song_dim), masked mean of the song's tag embeddings (tag_dim)).
A bidirectional GRU runs over the valid prefix only, attention pooling takes a masked softmax over the steps of
``v . tanh(W o_t + b)``; the pooled vector, followed by the output at the last step (``last_step``, NARM's global +
local encoders), goes through dropout and one dense layer over the full song vocabulary.

How the GRU skips the padding (``bigru``): on CUDA, ``self.gru`` on a ``PackedSequence`` (cuDNN). On CPU, PyTorch's
packed GRU slices the packed input once per time step in autograd, and each slice's gradient is a zero-filled copy
of the whole packed input (most of the backward time), while the unpacked GRU wastes its work on the padding. So on
CPU ``_PackedGRU`` runs the same packed recurrence with a hand-written backward (BPTT): both directions at once (the
reverse one over each session reversed within its length), per step only the sessions still running, and the
weight gradients as three matrix products at the end. Same parameters (``self.gru``'s), same numbers up to float
rounding (tests/test_perf_paths.py checks outputs and gradients against ``nn.GRU``).

Logits and the two special indices: ``forward`` and ``logits`` return RAW logits for every index; ranking evaluation
masks index 0 (padding) and 1 (OOV) with ``musicrec.metrics.mask_special`` so neither can be recommended.

Losses. ``loss(batch, logits)`` is always the full-softmax cross-entropy (validation losses are comparable across
settings). ``training_loss(batch)``, the ONE entry the training loop calls, is the same full softmax when
``sampled_softmax = 0``; with ``sampled_softmax = S > 0`` it is a sampled softmax computed from GATHERED output rows,
never the (B, V) logits: the rows of the batch's targets and of S negatives shared by the batch, drawn with
replacement from the real songs (indices >= 2), uniformly or (``sampler="popularity"``) in proportion to the counts
given to ``set_sampling_counts`` (a precomputed CDF, so a draw costs O(S log V)); with ``in_batch_negatives`` the
other rows' targets are negatives too. Every candidate's logit is corrected by minus log of its expected count in
the candidate set (log-Q: S q(j), plus B q(j) for the in-batch targets, which follow the popularity counts), and
accidental hits (a negative equal to the row's target) are removed.

Sparse tables (``sparse``): the song and tag embeddings are ``nn.Embedding(sparse=True)`` and, with the sampled
softmax, the output rows are gathered by ``sparse_rows``; their gradients hold only the rows the batch touched, so a
step's cost does not grow with V. ``sparse_parameters()`` names them for the optimizer (``musicrec.optim``), which
updates them with ``torch.optim.SparseAdam`` (they must always get sparse gradients).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from musicrec.columns import FIRST_TOKEN_INDEX, LENGTHS, NEXT_SONG, PAD_INDEX, SONG_TAGS, SONGS
from musicrec.config import require
from musicrec.models.dnn import manifest_vocab_size, masked_mean_embedding

SAMPLERS = ("uniform", "popularity")


@dataclass(frozen=True)
class GRUConfig:
    song_dim: int = 64  # song embedding size
    tag_dim: int = 16  # tag embedding size; 0 = no tag input (batch["song_tags"] then unused)
    hidden: int = 64  # GRU hidden size per direction; outputs are 2 * hidden
    num_layers: int = 1  # stacked bidirectional GRU layers
    attention_dim: int = 32  # width of the attention scorer
    dropout: float = 0.2  # on the pooled vector (and between GRU layers when num_layers > 1)
    sampled_softmax: int = 0  # negatives per batch for the training loss; 0 = full softmax
    sampler: str = "uniform"  # "uniform" or "popularity" (needs set_sampling_counts)
    in_batch_negatives: bool = False  # with sampled_softmax: the batch's other targets are negatives too (popularity)
    sparse: bool = False  # sparse gradients for the song/tag tables (and the output rows with sampled_softmax > 0)
    clip_grad_norm: float = 5.0  # stored for the training loop, which applies it; 0 = no clipping
    last_step: bool = True  # also feed the last step's GRU output to the output layer (NARM's local encoder)

    def check(self) -> None:
        for key in ("song_dim", "hidden", "attention_dim", "num_layers"):
            require(getattr(self, key) >= 1, f"model.{key}", getattr(self, key), "must be >= 1")
        require(self.tag_dim >= 0, "model.tag_dim", self.tag_dim, "must be >= 0 (0 = no tag input)")
        require(0.0 <= self.dropout < 1.0, "model.dropout", self.dropout, "must be in [0, 1)")
        require(self.sampled_softmax >= 0, "model.sampled_softmax", self.sampled_softmax, "must be >= 0")
        require(self.sampler in SAMPLERS, "model.sampler", self.sampler, f"must be one of {SAMPLERS}")
        require(not (self.in_batch_negatives and self.sampled_softmax > 0) or self.sampler == "popularity",
                "model.in_batch_negatives", self.in_batch_negatives,
                "needs model.sampler: popularity (the in-batch targets' log-Q uses the popularity counts)")
        require(self.clip_grad_norm >= 0.0, "model.clip_grad_norm", self.clip_grad_norm, "must be >= 0")


class SessionGRU(nn.Module):
    """(songs, song_tags, lengths) -> logits over the song vocabulary (B, V_song)."""

    def __init__(self, config: GRUConfig, n_songs: int, n_tags: int | None):
        super().__init__()
        assert n_songs > FIRST_TOKEN_INDEX, f"song vocabulary must hold a real song, got size {n_songs}"
        self.config = config
        self.n_songs = n_songs
        self.n_tags = n_tags
        self.song_emb = nn.Embedding(n_songs, config.song_dim, padding_idx=PAD_INDEX, sparse=config.sparse)
        self.tag_emb = None
        if config.tag_dim > 0:
            assert n_tags is not None and n_tags >= 2, "tag_dim > 0 needs the tag vocabulary size"
            self.tag_emb = nn.Embedding(n_tags, config.tag_dim, padding_idx=PAD_INDEX, sparse=config.sparse)
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
        self.out = nn.Linear((4 if config.last_step else 2) * config.hidden, n_songs)
        # popularity sampler, set by set_sampling_counts (not in the state_dict): the CDF over songs that draws the
        # negatives, and log q(j) for the log-Q correction (a song of probability 0 gets the rarest song's q)
        self.register_buffer("sampling_cdf", torch.empty(0, dtype=torch.float64), persistent=False)
        self.register_buffer("sampling_log_q", torch.empty(0), persistent=False)

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any], config: GRUConfig) -> "SessionGRU":
        n_songs = manifest_vocab_size(manifest, "song", f"gru ({SONGS})")
        n_tags = manifest_vocab_size(manifest, "tag", f"gru ({SONG_TAGS})") if config.tag_dim > 0 else None
        return cls(config, n_songs, n_tags)

    def sparse_parameters(self) -> list[nn.Parameter]:
        """The parameters whose gradients are always sparse (``musicrec.optim.make_optimizer`` gives them SparseAdam)."""
        if not self.config.sparse:
            return []
        tables = [self.song_emb.weight] + ([self.tag_emb.weight] if self.tag_emb is not None else [])
        return tables + ([self.out.weight, self.out.bias] if self.config.sampled_softmax > 0 else [])

    # --- encoder ---------------------------------------------------------------------------------------------
    def encode(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The session vector after dropout, the input of the output layer: the attention-pooled GRU outputs (B, 2H),
        with ``last_step`` followed by the output at the last valid step (B, 4H), as in NARM (Li et al. 2017): the
        pooled part says what the session is about, the last step where it is now."""
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
        out = self.bigru(x, lengths_cpu)  # (B, T, 2H), zeros past the length
        valid = torch.arange(T, device=songs.device).unsqueeze(0) < lengths.to(songs.device).unsqueeze(1)  # (B, T)
        scores = self.att_score(torch.tanh(self.att_proj(out))).squeeze(-1)  # (B, T)
        scores = scores.masked_fill(~valid, float("-inf"))
        weights = torch.softmax(scores, dim=1)  # (B, T), zero past the length
        pooled = torch.bmm(weights.unsqueeze(1), out).squeeze(1)  # (B, 2H)
        if self.config.last_step:
            last = out[torch.arange(B, device=out.device), lengths.to(out.device) - 1]  # (B, 2H)
            pooled = torch.cat([pooled, last], dim=1)  # (B, 4H)
        return self.drop(pooled)  # (B, 2H) or (B, 4H)

    def bigru(self, x: torch.Tensor, lengths_cpu: torch.Tensor, own_bptt: bool | None = None) -> torch.Tensor:
        """The bidirectional GRU over the first ``lengths`` steps of each row: x (B, T, D) -> (B, T, 2H), zeros past
        the length. ``own_bptt=None``: ``self.gru`` on a ``PackedSequence`` on CUDA (cuDNN), ``_PackedGRU`` on CPU (see
        the module docstring); the two give the same numbers up to float rounding."""
        B, T, D = x.shape
        if not (x.device.type == "cpu" if own_bptt is None else own_bptt):
            packed = pack_padded_sequence(x, lengths_cpu, batch_first=True, enforce_sorted=False)
            out, _ = self.gru(packed)
            out, _ = pad_packed_sequence(out, batch_first=True, total_length=T)  # (B, T, 2H)
            return out
        # the packed layout of the positions (b, t): time-major, longest sessions first, as PackedSequence.data; the
        # data itself is moved with index_select (whose gradient is one index_add, where pack_padded_sequence /
        # pad_packed_sequence copy one slice per time step, and autograd zero-fills a full-size gradient per slice)
        steps = torch.arange(T).unsqueeze(0)  # (1, T)
        lengths = lengths_cpu.unsqueeze(1)  # (B, 1)
        valid = steps < lengths  # (B, T)
        pos = torch.arange(B * T).view(B, T)  # (B, T) position ids
        packed_pos = pack_padded_sequence(pos, lengths_cpu, batch_first=True, enforce_sorted=False)
        pos_packed, sizes = packed_pos.data, packed_pos.batch_sizes.tolist()  # (N,) positions in packed order
        N = pos_packed.numel()
        row_of = torch.full((B * T,), N, dtype=torch.long)  # position -> packed row; padding -> N (a zero row)
        row_of[pos_packed] = torch.arange(N)
        rev = torch.where(valid, lengths - 1 - steps, steps)  # (B, T): each session reversed within its length
        rev_packed = pack_padded_sequence(pos.gather(1, rev), lengths_cpu, batch_first=True, enforce_sorted=False).data
        rev_perm = row_of[rev_packed].to(x.device)  # (N,) packed row of (b, L_b - 1 - t); its own inverse
        names = ("weight_ih", "weight_hh", "bias_ih", "bias_hh")
        with torch.autocast("cpu", enabled=False):  # the recurrence in the weights' dtype, also under bf16 autocast
            h = x.reshape(B * T, D).to(self.gru.weight_ih_l0.dtype).index_select(0, pos_packed.to(x.device))  # (N, D)
            for layer in range(self.config.num_layers):
                if layer > 0:  # what nn.GRU does between stacked layers
                    h = F.dropout(h, self.gru.dropout, self.training)
                weights = [torch.stack([getattr(self.gru, f"{n}_l{layer}"), getattr(self.gru, f"{n}_l{layer}_reverse")])
                           for n in names]  # (2, ...): forward, reverse
                out = _PackedGRU.apply(torch.stack([h, h[rev_perm]]), *weights, sizes)  # (2, N, H)
                h = torch.cat([out[0], out[1][rev_perm]], dim=1)  # (N, 2H), both directions in time order
            h = torch.cat([h, h.new_zeros(1, h.shape[1])])  # (N + 1, 2H): row N is the padding
            return h.index_select(0, row_of.to(x.device)).view(B, T, -1)  # (B, T, 2H)

    def logits(self, h: torch.Tensor, songs: slice | torch.Tensor | None = None) -> torch.Tensor:
        """Raw logits of session vectors ``h`` (B, D) (from ``encode``) for some output rows: ``songs`` None = every
        song (B, V), a slice of indices (B, C), or a 1-D index tensor (B, C). Evaluation scores the vocabulary in
        chunks with it, so no (B, V) matrix is needed."""
        if songs is None:
            return self.out(h)  # (B, V)
        return h @ self.out.weight[songs].T + self.out.bias[songs]  # (B, C)

    def forward(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Raw logits over every song index (B, V_song), the padding and OOV columns included."""
        return self.out(self.encode(batch))  # (B, V)

    # --- losses ----------------------------------------------------------------------------------------------
    def loss(self, batch: Mapping[str, torch.Tensor], logits: torch.Tensor) -> torch.Tensor:
        """Full-softmax cross-entropy of ``batch["next_song"]`` given the (B, V) ``logits`` (evaluation losses)."""
        target = batch[NEXT_SONG].to(logits.device)  # (B,)
        assert logits.shape == (target.shape[0], self.n_songs), f"logits must be (B, V), got {tuple(logits.shape)}"
        return F.cross_entropy(logits, target)

    def training_loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The loss the training loop minimizes: the full softmax when ``sampled_softmax = 0``, else the sampled softmax
        over gathered output rows (module docstring); no (B, V) tensor is made on that path."""
        h = self.encode(batch)  # (B, Dh)
        target = batch[NEXT_SONG].to(h.device)  # (B,)
        if self.config.sampled_softmax == 0:
            return F.cross_entropy(self.logits(h), target)
        B, S = target.shape[0], self.config.sampled_softmax
        rows = torch.cat([target, self._sample(S, h.device)])  # (B + S,): the targets, then the sampled negatives
        gather = sparse_rows if self.config.sparse else _dense_rows
        weight, bias = gather(self.out.weight, rows), gather(self.out.bias, rows)  # (B + S, Dh), (B + S,)
        log_count = self._log_expected_count(rows, B if self.config.in_batch_negatives else 0)  # (B + S,)
        pos = (h * weight[:B]).sum(-1) + bias[:B] - log_count[:B]  # (B,)
        cand = slice(0, None) if self.config.in_batch_negatives else slice(B, None)  # in-batch: every target too
        neg = h @ weight[cand].T + bias[cand] - log_count[cand]  # (B, C)
        neg = neg.masked_fill(rows[cand].unsqueeze(0) == target.unsqueeze(1), float("-inf"))  # accidental hits
        logits = torch.cat([pos.unsqueeze(1), neg], dim=1)  # (B, 1 + C): column 0 is the target
        return F.cross_entropy(logits, torch.zeros(B, dtype=torch.long, device=h.device))

    def set_sampling_counts(self, counts: torch.Tensor) -> None:
        """Training counts per song index (V,) for ``sampler="popularity"``; indices 0 and 1 are never sampled."""
        counts = torch.as_tensor(counts, dtype=torch.float64).flatten()
        assert counts.shape == (self.n_songs,), f"counts must be ({self.n_songs},), got {tuple(counts.shape)}"
        assert bool((counts >= 0).all()), "counts must be non-negative"
        probs = counts.clone()
        probs[:FIRST_TOKEN_INDEX] = 0.0
        assert float(probs.sum()) > 0, "counts of the real songs (index >= 2) sum to 0"
        probs /= probs.sum()
        cdf = torch.cumsum(probs, 0)
        cdf[-1] = 1.0  # torch.rand < 1 then always falls inside
        device = self.out.weight.device
        self.sampling_cdf = cdf.to(device)
        self.sampling_log_q = torch.log(torch.where(probs > 0, probs, probs[probs > 0].min())).to(device, torch.float32)

    def _sample(self, S: int, device: torch.device) -> torch.Tensor:
        """S negatives (S,) shared by the batch, with replacement, from the real songs (index >= 2)."""
        if self.config.sampler == "uniform":
            return torch.randint(FIRST_TOKEN_INDEX, self.n_songs, (S,), device=device)
        if self.sampling_cdf.numel() == 0:
            raise RuntimeError('sampler="popularity" needs model.set_sampling_counts(counts) before training')
        u = torch.rand(S, dtype=torch.float64, device=device)
        return torch.searchsorted(self.sampling_cdf, u, right=True).clamp_(max=self.n_songs - 1)  # (S,)

    def _log_expected_count(self, songs: torch.Tensor, in_batch: int) -> torch.Tensor:
        """log of the expected number of times each song appears among the candidates: S q(j) for the S draws, plus
        ``in_batch`` q(j) for the batch's targets (which follow the popularity counts)."""
        S = self.config.sampled_softmax
        if self.config.sampler == "uniform":
            return torch.full(songs.shape, math.log(S / (self.n_songs - FIRST_TOKEN_INDEX)), device=songs.device)
        return math.log(S + in_batch) + self.sampling_log_q[songs]


class _SparseRows(torch.autograd.Function):
    """``table[rows]`` whose gradient is a sparse (V, ...) tensor holding only the gathered rows (a plain gather's
    backward fills a dense zero (V, ...) gradient first, O(V) per step)."""

    @staticmethod
    def forward(ctx, table, rows):
        ctx.save_for_backward(rows)
        ctx.shape = table.shape
        return table.index_select(0, rows)

    @staticmethod
    def backward(ctx, grad):
        (rows,) = ctx.saved_tensors
        return torch.sparse_coo_tensor(rows.unsqueeze(0), grad, ctx.shape, check_invariants=False), None


def sparse_rows(table: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Rows ``rows`` (N,) of ``table`` (V, ...) -> (N, ...), with a sparse gradient for ``table``."""
    return _SparseRows.apply(table, rows)


def _dense_rows(table: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    return table[rows]


class _PackedGRU(torch.autograd.Function):
    """K one-direction GRU layers (K = 2: forward, reverse) over one packed layout, with a hand-written backward.

    ``x`` (K, N, D): rows in ``PackedSequence.data`` order (time-major; step t holds the first ``sizes[t]`` sessions,
    longest first); weights ``w_ih`` (K, 3H, D), ``w_hh`` (K, 3H, H), ``b_ih`` / ``b_hh`` (K, 3H) in ``nn.GRU``'s gate
    order (r, z, n) -> (K, N, H), h_0 = 0. The recurrence is ``nn.GRU``'s:
    r, z = sigmoid(x W_ir,z + b_ir,z + h W_hr,z + b_hr,z); n = tanh(x W_in + b_in + r (h W_hn + b_hn)); h' = n + z (h - n).
    """

    @staticmethod
    def forward(ctx, x, w_ih, w_hh, b_ih, b_hh, sizes):
        K, N, _ = x.shape
        H = w_hh.shape[2]
        gi = torch.baddbmm(b_ih.unsqueeze(1), x, w_ih.transpose(1, 2))  # (K, N, 3H), every step at once
        gh = x.new_empty(K, N, 3 * H)  # h W_hh + b_hh of each row's step
        rz = x.new_empty(K, N, 2 * H)
        cand = x.new_empty(K, N, H)
        out = x.new_empty(K, N, H)
        w_hh_t, b_hh = w_hh.transpose(1, 2), b_hh.unsqueeze(1)  # (K, H, 3H), (K, 1, 3H)
        h = x.new_zeros(K, sizes[0] if sizes else 0, H)
        start = 0
        for n in sizes:  # per step only what depends on h; the rest is done for all rows before and after
            end = start + n
            h = h[:, :n]  # the sessions still running
            g_h = torch.baddbmm(b_hh, h, w_hh_t)  # (K, n, 3H)
            gh[:, start:end] = g_h
            r_z = torch.sigmoid(gi[:, start:end, : 2 * H] + g_h[..., : 2 * H])  # (K, n, 2H)
            c = torch.tanh(torch.addcmul(gi[:, start:end, 2 * H:], r_z[..., :H], g_h[..., 2 * H:]))  # (K, n, H)
            h = torch.lerp(c, h, r_z[..., H:])  # n + z (h - n)
            rz[:, start:end], cand[:, start:end], out[:, start:end] = r_z, c, h
            start = end
        assert start == N, f"sizes add up to {start}, not to the {N} packed rows"
        ctx.sizes = sizes
        ctx.save_for_backward(x, w_ih, w_hh, out, rz, cand, gh[..., 2 * H:])
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, d_out):
        x, w_ih, w_hh, out, rz, cand, gh_n = ctx.saved_tensors
        sizes = ctx.sizes
        K, N, _ = x.shape
        H = w_hh.shape[2]
        h_prev = _previous_states(out, sizes)  # (K, N, H): the state each row's step started from
        r, z = rz[..., :H], rz[..., H:]
        # every gate gradient is dh (this row's d loss / d h) times a factor known from the forward pass:
        # d pre-act n = dh (1 - z)(1 - n^2) = dh A; d pre-act r = dh A gh_n r (1 - r); d pre-act z = dh (h_prev - n) z (1 - z)
        a = (1 - z) * (1 - cand * cand)
        f_r = a * gh_n * r * (1 - r)
        f_z = (h_prev - cand) * z * (1 - z)
        f_hid = torch.stack([f_r, f_z, a * r], dim=2)  # (K, N, 3, H): hidden side (n gate: r (h W_hn + b_hn))
        f_in = torch.stack([f_r, f_z, a], dim=2)  # (K, N, 3, H): input side
        dh_all = d_out.clone()  # (K, N, H), completed step by step with what flows back through h
        end = N
        for t in range(len(sizes) - 1, 0, -1):  # step t's dh -> the running sessions' dh at step t - 1
            n, start = sizes[t], end - sizes[t]
            dh = dh_all[:, start:end].unsqueeze(2)  # (K, n, 1, H)
            d_gh = (dh * f_hid[:, start:end]).view(K, n, 3 * H)
            carry = torch.baddbmm(dh_all[:, start:end] * z[:, start:end], d_gh, w_hh)  # (K, n, H)
            prev = start - sizes[t - 1]
            dh_all[:, prev: prev + n] += carry
            end = start
        dh = dh_all.unsqueeze(2)
        d_gh = (dh * f_hid).view(K, N, 3 * H)
        d_gi = (dh * f_in).view(K, N, 3 * H)
        d_x = torch.bmm(d_gi, w_ih) if ctx.needs_input_grad[0] else None  # (K, N, D)
        d_w_ih = torch.bmm(d_gi.transpose(1, 2), x)  # (K, 3H, D)
        d_w_hh = torch.bmm(d_gh.transpose(1, 2), h_prev)  # (K, 3H, H)
        return d_x, d_w_ih, d_w_hh, d_gi.sum(1), d_gh.sum(1), None


def _previous_states(out: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """(K, N, H) packed outputs -> the state each row's step started from: 0 at the first step, else the same
    session's output one step earlier (the first ``sizes[t]`` rows of step t - 1)."""
    starts = [0]
    for n in sizes[:-1]:
        starts.append(starts[-1] + n)
    index = torch.cat([torch.arange(starts[t - 1], starts[t - 1] + sizes[t]) for t in range(1, len(sizes))]
                      ) if len(sizes) > 1 else torch.zeros(0, dtype=torch.long)
    h_prev = out.new_zeros(out.shape)
    h_prev[:, sizes[0]:] = out[:, index.to(out.device)]
    return h_prev
