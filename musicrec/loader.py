"""Petastorm -> PyTorch batches for the feature jobs' output (docs/DATA_CONTRACT.md).

The training loop sees only iterables of ``dict[str, Tensor]``; this module is the one place that knows about
Petastorm and Parquet. One ``Data`` object per run reads ``OUT/_MANIFEST.json`` and hands out one-epoch loaders:

===============  ==========================  =======================================================================
view             datasets / models           one example = ...
===============  ==========================  =======================================================================
``rows``         kkbox: ncf, dnn, logreg     one event row: every categorical column (B,), every multi-valued column
                                             (B, L) 0-padded, ``numeric`` (B, F), ``target`` (B,) (NaN when null),
                                             ``row_id`` (B,)
``next_song``    lastfm: gru, pop, cooc      one prefix of a session: ``songs`` (B, T) 0-padded on the right,
                                             ``song_tags`` (B, T, K), ``lengths`` (B,), ``next_song`` (B,),
                                             ``user_idx`` (B,), ``session_id`` (B,); every position t >= 1 of every
                                             session predicts ``songs[t]`` from ``songs[:t]`` cut to the last
                                             ``max_len`` songs
``pairs``        lastfm: ncf (train)         (user, song) of a training session (each distinct song of a session
                                             once, OOV skipped) with target 1, plus ``num_negatives`` sampled songs
                                             the user never played in training with target 0
``loo``          lastfm: ncf (valid/test)    leave-one-out: per user, the last non-OOV song of its last session in
                                             the split, ``candidates`` (B, 1 + N) = [that song, N sampled songs the
                                             user never played in training]; ``user_idx`` (B,)
===============  ==========================  =======================================================================

Exact epochs: each epoch opens a fresh ``make_batch_reader(num_epochs=1)``, so every row of the shard is read exactly
once; ``cur_shard``/``shard_count`` split the row groups between ranks (Petastorm assigns row group ``i`` to shard
``i % shard_count``), so the shards of one epoch are disjoint and cover the split.

Shuffling: the row-group order is shuffled by Petastorm (``shuffle_row_groups``) and examples are drawn at random
from a buffer of ``shuffle_buffer`` examples; both are seeded from (seed, epoch, shard), so an epoch is the same
every time it is replayed (which is what makes ``--resume`` exact). With ``reader_pool="thread"`` and
``workers_count=1`` (the default) row groups still arrive in ventilation order; more workers read faster but in a
timing-dependent order, so epochs are then not reproducible.

Petastorm 0.12.1 stacks list columns into a matrix and fails on ragged lists; a ``TransformSpec`` pads every array
column to the row group's longest list and adds ``<column>__len`` so the loader can cut the padding again. The same
transform hands each row group over as ONE row whose cells are whole columns: Petastorm then converts one array per
column instead of one per row (its per-row ``np.vstack`` was most of the reading time), and the loader turns the
row back into columns (``iter_row_groups``). Row groups, sharding and their order are Petastorm's as before.

Speed (benchmarks/RESULTS_training.md): a split that fits in ``cache_mb`` is decoded once and kept in memory; later
epochs ask Petastorm, with the epoch's seed and shard, only for the order of the row groups (one small id column) and
replay the kept ones in that order (``Data.row_groups``), so every epoch is the one an uncached reader would give. With
``prefetch`` > 0 the batches of an epoch are made in a background thread, a few ahead of the training step. Neither
changes a batch: tests/test_perf_paths.py compares cached, prefetched epochs with plain ones.
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np
import torch

from musicrec.metrics import sample_negative_items

from musicrec.columns import FIRST_TOKEN_INDEX, OOV_INDEX, PAD_INDEX, SESSION_ID, SONG_IDX, SONG_TAGS, SONGS, START_TS, TARGET, USER_IDX

# Petastorm 0.12.1 on pyarrow 14 warns about its own use of the legacy ParquetDataset on every read.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"petastorm(\.|$)")
warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"petastorm(\.|$)")

MANIFEST_NAME = "_MANIFEST.json"
DATASETS = ("lastfm", "kkbox")
VIEWS = ("rows", "next_song", "pairs", "loo")
LEN_SUFFIX = "__len"
ROW_ID = "row_id"
LENGTH = "length"  # Last.fm sessions: len(songs)
NUMERIC = "numeric"
LENGTHS = "lengths"
NEXT_SONG = "next_song"
CANDIDATES = "candidates"
_REQUIRED_KEYS = ("dataset", "fingerprint", "vocab_sizes", "features", "splits")


class DataError(ValueError):
    """The data folder, its manifest or its Parquet files do not match the data contract; the message names the path."""


# ----------------------------------------------------------------------------------------------------------------
# Manifest
# ----------------------------------------------------------------------------------------------------------------
def read_manifest(data_dir: str | Path) -> dict:
    """Read and check ``<data_dir>/_MANIFEST.json``; a ``DataError`` names the folder, file or key at fault."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"data folder not found: {data_dir}")
    path = data_dir / MANIFEST_NAME
    if not path.is_file():
        raise DataError(f"{path}: manifest not found (the feature job writes it last; is its output complete?)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable JSON manifest: {exc}") from exc
    if not isinstance(manifest, dict):
        raise DataError(f"{path}: the manifest must be a JSON object")
    missing = [key for key in _REQUIRED_KEYS if key not in manifest]
    if missing:
        raise DataError(f"{path}: manifest lacks key(s) {missing}")
    if manifest["dataset"] not in DATASETS:
        raise DataError(f"{path}: dataset {manifest['dataset']!r} is not one of {list(DATASETS)}")
    for split in ("train", "valid", "test"):
        if split not in manifest["splits"]:
            raise DataError(f"{path}: manifest 'splits' lacks {split!r}")
    return manifest


def manifest_fingerprint(manifest: Mapping[str, Any]) -> str:
    """The feature job's data fingerprint (inputs + job config), with the vocabulary sizes folded in."""
    vocab = json.dumps(manifest.get("vocab_sizes", {}), sort_keys=True)
    return hashlib.sha256(f"{manifest['fingerprint']}|{vocab}".encode()).hexdigest()[:16]


def split_dir(data_dir: str | Path, manifest: Mapping[str, Any], split: str) -> Path:
    """The Parquet folder of ``split``: ``manifest["splits"][split]`` relative to the data folder (the Last.fm job
    writes ``sessions/train``), or under ``sessions/`` for a Last.fm manifest that names only ``train``."""
    name = manifest["splits"][split]
    base = Path(data_dir).resolve()
    candidates = [base / name]
    if manifest["dataset"] == "lastfm":
        candidates.append(base / "sessions" / name)
    for path in candidates:
        if path.is_dir():
            return path
    raise DataError(f"{candidates[-1]}: folder of split {split!r} ({name!r} in {MANIFEST_NAME}) does not exist")


def parquet_schema(path: Path):
    """The Arrow schema of a Parquet folder (files starting with ``_`` or ``.`` are skipped, as Spark writes them)."""
    import pyarrow.dataset as ds

    try:
        dataset = ds.dataset(str(path), format="parquet")
    except Exception as exc:  # pyarrow raises several types for unreadable files
        raise DataError(f"{path}: cannot read the Parquet files: {exc}") from exc
    if not dataset.files:
        raise DataError(f"{path}: no Parquet files in the split folder")
    return dataset.schema


def check_columns(path: Path, expected: Mapping[str, str]) -> None:
    """Raise ``DataError`` unless the Parquet folder has every column of ``expected`` ({column: "int" | "float" |
    "array" | "timestamp"}) with a compatible type; the message names the column and the path."""
    import pyarrow as pa

    schema = parquet_schema(path)
    for col, kind in expected.items():
        if col not in schema.names:
            raise DataError(f"{path}: column {col!r} named in {MANIFEST_NAME} is missing from the Parquet schema "
                            f"(has: {schema.names})")
        typ = schema.field(col).type
        ok = {
            "int": pa.types.is_integer(typ),
            "float": pa.types.is_floating(typ) or pa.types.is_integer(typ),
            "array": (pa.types.is_list(typ) or pa.types.is_large_list(typ)) and pa.types.is_integer(typ.value_type),
            "timestamp": pa.types.is_timestamp(typ),
        }[kind]
        if not ok:
            raise DataError(f"{path}: column {col!r} has type {typ}, expected {kind} (docs/DATA_CONTRACT.md)")


def _vocab_of(manifest: Mapping[str, Any], col: str, vocab: str) -> int:
    sizes = manifest["vocab_sizes"]
    if vocab not in sizes:
        raise DataError(f"{MANIFEST_NAME}: column {col!r} uses vocab {vocab!r}, which is not in vocab_sizes {sorted(sizes)}")
    return int(sizes[vocab])


def check_indices(path: Path, col: str, values: np.ndarray, vocab_size: int) -> None:
    """Raise ``DataError`` if an index in ``values`` is negative, null or >= ``vocab_size``."""
    if values.size == 0:
        return
    if values.dtype.kind == "f" and np.isnan(values).any():
        raise DataError(f"{path}: column {col!r} has null indices (the contract maps missing values to 1 = OOV)")
    lo, hi = values.min(), values.max()
    if lo < 0 or hi >= vocab_size:
        bad = int(hi) if hi >= vocab_size else int(lo)
        raise DataError(f"{path}: column {col!r} has index {bad} outside [0, {vocab_size}) = its vocab size in "
                        f"{MANIFEST_NAME}; the data and the manifest do not belong together")


# ----------------------------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class DataConfig:
    """The ``data:`` section of a run config (see conf/*.yaml for one comment per key)."""

    batch_size: int = 256
    eval_batch_size: int = 1024
    shuffle_buffer: int = 10_000
    shuffle_row_groups: bool = True
    pad_to: int | None = None
    max_len: int | None = None
    num_negatives: int = 4
    loo_negatives: int = 99
    reader_pool: str = "thread"
    workers_count: int = 1
    drop_last: bool = False
    cache_mb: float = 1024.0
    prefetch: int = 4

    @classmethod
    def from_dict(cls, section: Mapping[str, Any] | None) -> "DataConfig":
        section = dict(section or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(section) - known)
        if unknown:
            raise ValueError(f"unknown key(s) {unknown} in the data config (known: {sorted(known)})")
        cfg = cls(**section)
        assert cfg.batch_size >= 1 and cfg.eval_batch_size >= 1, "batch sizes must be >= 1"
        assert cfg.shuffle_buffer >= 0, "shuffle_buffer must be >= 0"
        assert cfg.cache_mb >= 0 and cfg.prefetch >= 0, "cache_mb and prefetch must be >= 0"
        assert cfg.reader_pool in ("thread", "dummy", "process"), f"reader_pool {cfg.reader_pool!r} unknown"
        return cfg


def _epoch_seed(*parts: int) -> int:
    """A 31-bit seed derived from (seed, epoch, shard, ...), stable across runs and platforms."""
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0] & 0x7FFFFFFF)


# ----------------------------------------------------------------------------------------------------------------
# Petastorm reading
# ----------------------------------------------------------------------------------------------------------------
def pad_lists(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A column of int lists (object array of arrays, None = empty) -> (padded (n, W) int32, lengths (n,) int32);
    W is the longest list (at least 1), padding is 0."""
    n = len(values)
    lens = np.fromiter((0 if v is None else len(v) for v in values), dtype=np.int32, count=n)
    width = max(int(lens.max()) if n else 0, 1)
    padded = np.zeros((n, width), dtype=np.int32)
    if n and lens.any():
        flat = np.concatenate([v for v in values[lens > 0]]).astype(np.int32, copy=False)
        padded[np.arange(width) < lens[:, None]] = flat  # row-major, like the concatenation
    return padded, lens


class _RowGroupAsOneRow:
    """Petastorm transform (runs on the reader's workers): a row group -> ONE row whose cells are whole columns.

    Scalar columns become one array cell; array columns are padded to the row group's longest list
    (``pad_lists``), flattened row-major, with ``<col>__len`` beside them. ``iter_row_groups`` undoes it.
    """

    def __init__(self, columns: list[str], array_columns: list[str]):
        self.columns, self.array_columns = list(columns), set(array_columns)

    def __call__(self, df):
        import pandas as pd

        out = {}
        for col in self.columns:
            values = df[col].to_numpy()
            if col in self.array_columns:
                padded, lens = pad_lists(values)
                out[col], out[col + LEN_SUFFIX] = [padded.ravel()], [lens]
            else:
                out[col] = [values]
        return pd.DataFrame(out)


def _numpy_dtype(arrow_type):
    import pyarrow as pa

    if pa.types.is_list(arrow_type) or pa.types.is_large_list(arrow_type):
        return np.int32
    try:
        return np.dtype(arrow_type.to_pandas_dtype()).type
    except (NotImplementedError, TypeError):
        return np.object_


def _unpack_row(row: Mapping[str, np.ndarray], columns: list[str], array_columns: list[str]) -> dict[str, np.ndarray]:
    """One row of ``_RowGroupAsOneRow`` -> the row group's columns (arrays (n, W) padded, plus ``<col>__len``)."""
    chunk = {col: np.asarray(row[col]) for col in columns if col not in array_columns}
    for col in array_columns:
        lens = np.asarray(row[col + LEN_SUFFIX], dtype=np.int32)
        flat = np.asarray(row[col])
        chunk[col] = flat.reshape(lens.size, -1) if lens.size else flat.reshape(0, 1)
        chunk[col + LEN_SUFFIX] = lens
    return chunk


def iter_row_groups(
    path: Path,
    columns: list[str],
    array_columns: list[str],
    *,
    seed: int,
    shuffle_row_groups: bool,
    cur_shard: int = 0,
    shard_count: int = 1,
    reader_pool: str = "thread",
    workers_count: int = 1,
) -> Iterator[dict[str, np.ndarray]]:
    """One pass over the shard's row groups as dicts of numpy arrays (arrays padded, plus ``<col>__len``)."""
    from petastorm import make_batch_reader
    from petastorm.errors import NoDataAvailableError
    from petastorm.transform import TransformSpec

    schema = parquet_schema(Path(path))
    spec = TransformSpec(
        _RowGroupAsOneRow(columns, array_columns),
        edit_fields=[(c, _numpy_dtype(schema.field(c).type), (None,), False) for c in columns]
        + [(c + LEN_SUFFIX, np.int32, (None,), False) for c in array_columns],
    )
    sharded = shard_count > 1
    try:
        reader = make_batch_reader(
            "file://" + str(Path(path).resolve()),
            schema_fields=[re.escape(c) for c in columns],
            reader_pool_type=reader_pool,
            workers_count=workers_count,
            seed=seed,
            shuffle_row_groups=shuffle_row_groups,
            num_epochs=1,  # one fresh reader per epoch: exact epochs, no rows carried over
            cur_shard=cur_shard if sharded else None,
            shard_count=shard_count if sharded else None,
            transform_spec=spec,
        )
    except NoDataAvailableError as exc:
        raise DataError(f"{path}: cannot split the row groups into {shard_count} shards: {exc}") from exc
    with reader:
        for batch in reader:
            rows = {name: getattr(batch, name) for name in batch._fields}  # each (row groups, values)
            for r in range(len(rows[columns[0]])):
                chunk = _unpack_row({name: value[r] for name, value in rows.items()}, columns, array_columns)
                if len(chunk[columns[0]]):
                    yield chunk


def read_table(path: Path, columns: list[str]) -> dict[str, np.ndarray]:
    """A whole split's ``columns`` with pyarrow (for the global indexes: NCF positives, leave-one-out sets).
    Array columns come back as (values, offsets)."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    table = ds.dataset(str(path), format="parquet").to_table(columns=columns)
    out: dict[str, Any] = {}
    for col in columns:
        column = table.column(col).combine_chunks()
        if pa.types.is_list(column.type):
            out[col] = (column.flatten().to_numpy(zero_copy_only=False).astype(np.int64),
                        column.offsets.to_numpy().astype(np.int64))
        elif pa.types.is_timestamp(column.type):
            out[col] = column.cast(pa.int64()).to_numpy(zero_copy_only=False)
        else:
            out[col] = column.to_numpy(zero_copy_only=False)
    return out


# ----------------------------------------------------------------------------------------------------------------
# Chunks: one row group turned into examples; ``take(idx)`` collates a subset into numpy arrays
# ----------------------------------------------------------------------------------------------------------------
def _trim(matrix: np.ndarray, lens: np.ndarray, pad_to: int | None) -> np.ndarray:
    """Cut a padded (n, W) matrix to the longest list in it (or to exactly ``pad_to`` columns)."""
    width = pad_to if pad_to else max(int(lens.max()) if lens.size else 0, 1)
    if matrix.shape[1] >= width:
        return matrix[:, :width]
    out = np.zeros((matrix.shape[0], width), dtype=matrix.dtype)
    out[:, : matrix.shape[1]] = matrix
    return out


class _RowsChunk:
    """The rows of a row group as one row-major int64 matrix (every integer column, each array column as its padded
    block, and the array lengths) and one float32 matrix (the rest): a batch is two row gathers, each reading a few
    contiguous bytes per example, instead of one scattered gather per column. The batch has the same columns and,
    once ``to_torch`` has made them tensors, the same values and dtypes as the columns themselves would give."""

    def __init__(self, data: dict[str, np.ndarray], array_columns: list[str], pad_to: int | None):
        self.pad_to = pad_to
        self.n = n = len(data[ROW_ID])
        blocks: dict[str, list[np.ndarray]] = {"i": [], "f": []}
        width = {"i": 0, "f": 0}
        at: dict[str, tuple[str, int, int]] = {}
        for key, value in data.items():
            kind = "i" if value.dtype.kind in "iub" else "f"
            block = value.reshape(n, -1)
            at[key] = (kind, width[kind], width[kind] + block.shape[1])
            blocks[kind].append(block)
            width[kind] += block.shape[1]
        self.ints = np.concatenate(blocks["i"], axis=1).astype(np.int64) if blocks["i"] else np.zeros((n, 0), np.int64)
        self.floats = (np.concatenate(blocks["f"], axis=1).astype(np.float32) if blocks["f"]
                       else np.zeros((n, 0), np.float32))
        # (key, matrix, start, stop, 1-D?, column of the lengths for an array column)
        self.layout = [(key, kind, start, stop, data[key].ndim == 1,
                        at[key + LEN_SUFFIX][1] if key in array_columns else None)
                       for key, (kind, start, stop) in at.items() if not key.endswith(LEN_SUFFIX)]

    def take(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        rows = {"i": self.ints[idx], "f": self.floats[idx]}  # (k, C_int), (k, C_float)
        out = {}
        for key, kind, start, stop, flat, len_col in self.layout:
            m = rows[kind]
            if len_col is not None:
                out[key] = _trim(m[:, start:stop], m[:, len_col], self.pad_to)
            else:
                out[key] = m[:, start] if flat else m[:, start:stop]
        return out


class _SessionsChunk:
    """Prefix examples of a row group of sessions, kept as (row, t) pairs; tensors are built only for a batch."""

    def __init__(self, data: dict[str, np.ndarray], top_k: int, max_len: int):
        self.songs = data[SONGS]  # (n, S) int32
        lens = data[SONGS + LEN_SUFFIX].astype(np.int64)  # (n,)
        n, width = self.songs.shape
        tags = data[SONG_TAGS]  # (n, W)
        if tags.shape[1] < width * top_k:
            tags = np.pad(tags, ((0, 0), (0, width * top_k - tags.shape[1])))
        self.tags = tags[:, : width * top_k].reshape(n, width, top_k)  # (n, S, K)
        self.user = data[USER_IDX]
        self.session_id = data[SESSION_ID]
        self.max_len = max_len
        per_row = np.maximum(lens - 1, 0)  # positions t = 1 .. len - 1
        self.ex_row = np.repeat(np.arange(n), per_row)
        starts = np.cumsum(per_row) - per_row
        self.ex_t = np.arange(self.ex_row.size) - np.repeat(starts, per_row) + 1
        self.n = int(self.ex_row.size)

    def take(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        rows, t = self.ex_row[idx], self.ex_t[idx]  # (B,), (B,)
        start = np.maximum(t - self.max_len, 0)
        lengths = t - start  # (B,)
        T = int(lengths.max())
        steps = np.arange(T)[None, :]  # (1, T)
        valid = steps < lengths[:, None]  # (B, T)
        cols = np.where(valid, start[:, None] + steps, 0)  # (B, T)
        songs = np.where(valid, self.songs[rows[:, None], cols], PAD_INDEX)  # (B, T)
        tags = np.where(valid[..., None], self.tags[rows[:, None], cols], PAD_INDEX)  # (B, T, K)
        return {
            SONGS: songs,
            SONG_TAGS: tags,
            LENGTHS: lengths,
            NEXT_SONG: self.songs[rows, t],
            USER_IDX: self.user[rows],
            SESSION_ID: self.session_id[rows],
        }


class _PairsChunk:
    def __init__(self, user: np.ndarray, song: np.ndarray, target: np.ndarray):
        self.user, self.song, self.target = user, song, target
        self.n = int(user.size)

    def take(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        return {USER_IDX: self.user[idx], SONG_IDX: self.song[idx], TARGET: self.target[idx]}


class _ArraysChunk:
    """Already-materialized examples (the leave-one-out set)."""

    def __init__(self, data: dict[str, np.ndarray]):
        self.data = data
        self.n = int(len(next(iter(data.values()))))

    def take(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        return {key: value[idx] for key, value in self.data.items()}


def _concat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate collated parts along rows, 0-padding trailing dimensions to the widest part."""
    if len(parts) == 1:
        return parts[0]
    out = {}
    for key in parts[0]:
        arrays = [p[key] for p in parts]
        if arrays[0].ndim == 1 or len({a.shape[1:] for a in arrays}) == 1:
            out[key] = np.concatenate(arrays)
            continue
        shape = tuple(int(w) for w in np.max([a.shape[1:] for a in arrays], axis=0))
        merged = np.zeros((sum(len(a) for a in arrays), *shape), dtype=np.result_type(*arrays))
        row = 0
        for a in arrays:
            merged[(slice(row, row + len(a)), *(slice(0, w) for w in a.shape[1:]))] = a
            row += len(a)
        out[key] = merged
    return out


class ShuffleBuffer:
    """Batches from a stream of chunks: in order (``rng=None``) or drawn at random from the last ``capacity`` examples.

    Examples are references (chunk, index) until a batch is drawn, so a buffer of sessions holds the row groups
    and not every expanded prefix.
    """

    def __init__(self, batch_size: int, capacity: int = 0, rng: np.random.Generator | None = None, drop_last: bool = False):
        self.batch_size, self.capacity, self.rng, self.drop_last = batch_size, max(capacity, batch_size), rng, drop_last
        self.chunks: dict[int, list] = {}
        self.cid = np.empty(0, np.int64)
        self.eid = np.empty(0, np.int64)
        self._next_id = 0

    def __len__(self) -> int:
        return int(self.cid.size)

    def add(self, chunk) -> Iterator[dict[str, np.ndarray]]:
        """Add a chunk and yield the batches that are ready."""
        if chunk.n:
            self.chunks[self._next_id] = [chunk, chunk.n]
            self.cid = np.concatenate([self.cid, np.full(chunk.n, self._next_id, np.int64)])
            self.eid = np.concatenate([self.eid, np.arange(chunk.n, dtype=np.int64)])
            self._next_id += 1
        limit = self.capacity if self.rng is not None else self.batch_size
        while len(self) >= limit:
            yield self._emit(self._positions(self.batch_size))

    def flush(self) -> Iterator[dict[str, np.ndarray]]:
        """Yield what is left at the end of the epoch (shuffled when shuffling)."""
        if self.rng is not None and len(self):
            order = self.rng.permutation(len(self))
            self.cid, self.eid = self.cid[order], self.eid[order]
        while len(self) >= self.batch_size or (len(self) and not self.drop_last):
            yield self._emit(np.arange(min(self.batch_size, len(self))))
        self.chunks.clear()
        self.cid, self.eid = self.cid[:0], self.eid[:0]

    def _positions(self, k: int) -> np.ndarray:
        if self.rng is None:
            return np.arange(k)
        return np.sort(self.rng.choice(len(self), size=k, replace=False))

    def _emit(self, pos: np.ndarray) -> dict[str, np.ndarray]:
        cid, eid = self.cid[pos], self.eid[pos]
        if pos.size and pos[-1] == pos.size - 1:  # sorted, distinct: the first pos.size entries (flush)
            self.cid, self.eid = self.cid[pos.size:], self.eid[pos.size:]
        else:
            keep = np.ones(len(self), dtype=bool)
            keep[pos] = False
            self.cid, self.eid = self.cid[keep], self.eid[keep]
        parts = []
        for chunk_id in np.unique(cid):
            sel = cid == chunk_id
            entry = self.chunks[int(chunk_id)]
            parts.append(entry[0].take(eid[sel]))
            entry[1] -= int(sel.sum())
            if entry[1] == 0:
                del self.chunks[int(chunk_id)]
        return _concat(parts)


def to_torch(batch: Mapping[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """Integer arrays -> LongTensor, floating arrays -> FloatTensor."""
    out = {}
    for key, value in batch.items():
        value = np.ascontiguousarray(value)
        if value.dtype.kind in "iub":
            out[key] = torch.from_numpy(value.astype(np.int64, copy=False))
        else:
            out[key] = torch.from_numpy(value.astype(np.float32, copy=False))
    return out


# ----------------------------------------------------------------------------------------------------------------
# Loaders
# ----------------------------------------------------------------------------------------------------------------
def _group_key(ids: np.ndarray) -> tuple:
    """A row group's key in the cache: its size and first and last id (ids are unique within a split)."""
    return (len(ids), ids[0].item(), ids[-1].item()) if len(ids) else (0,)


_DONE = object()


def _prefetched(batches: Iterator, depth: int) -> Iterator:
    """``batches`` produced by a background thread, up to ``depth`` ahead, in the same order.

    Reading, collating and making tensors (numpy and torch release the GIL in their loops) then overlap with the
    training step. An error in the producer is raised here; leaving the loop early (``break``, an exception in the
    training step) stops the producer, which closes ``batches`` (and its Petastorm reader) in its own thread.
    """
    import queue
    import threading

    out: "queue.Queue" = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        """Queue ``item`` unless the consumer has stopped; False when it has."""
        while not stop.is_set():
            try:
                out.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        item = _DONE
        try:
            for batch in batches:
                if not put(batch):
                    return
        except BaseException as exc:  # handed to the consumer
            item = exc
        finally:
            close = getattr(batches, "close", None)
            if close is not None:
                close()  # in this thread: the Petastorm reader it holds is stopped here
        put(item)

    thread = threading.Thread(target=produce, name="musicrec-loader", daemon=True)
    thread.start()
    try:
        while True:
            try:
                item = out.get(timeout=0.5)
            except queue.Empty:
                if not thread.is_alive() and out.empty():
                    raise RuntimeError("the loader's prefetch thread ended without a result") from None
                continue
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


class EpochLoader:
    """One epoch of batches from one split; iterate once (a second iteration replays the same epoch)."""

    def __init__(self, data: "Data", split: str, view: str, epoch: int, train: bool, cur_shard: int, shard_count: int):
        self.data, self.split, self.view, self.epoch, self.train = data, split, view, epoch, train
        self.cur_shard, self.shard_count = cur_shard, shard_count

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        if self.data.config.prefetch > 0:
            return _prefetched(self._batches(), self.data.config.prefetch)
        return self._batches()

    def _batches(self) -> Iterator[dict[str, torch.Tensor]]:
        d, cfg = self.data, self.data.config
        seed = _epoch_seed(d.seed, self.epoch, self.cur_shard)
        rng = np.random.default_rng(seed) if self.train and cfg.shuffle_buffer > 0 else None
        batch_size = cfg.batch_size if self.train else cfg.eval_batch_size
        buffer = ShuffleBuffer(batch_size, cfg.shuffle_buffer, rng, drop_last=cfg.drop_last and self.train)
        for chunk in self._chunks(seed):
            for batch in buffer.add(chunk):
                yield to_torch(batch)
        for batch in buffer.flush():
            yield to_torch(batch)

    def _chunks(self, seed: int):
        d = self.data
        if self.view == "loo":
            yield d.loo_chunk(self.split, self.cur_shard, self.shard_count)
            return
        columns, arrays = d.read_columns(self.view)
        neg_rng = np.random.default_rng(_epoch_seed(d.seed, self.epoch, self.cur_shard, 1))
        read = dict(seed=_epoch_seed(d.seed, self.epoch),  # the same on every shard: Petastorm's sharding must agree
                    shuffle_row_groups=self.train and d.config.shuffle_row_groups,
                    cur_shard=self.cur_shard, shard_count=self.shard_count)
        if self.view == "pairs":  # fresh negatives every epoch: the chunk is made from the row group each time
            for raw in d.row_groups(self.split, columns, arrays, **read):
                yield d.make_chunk(self.view, raw, neg_rng)
        else:  # the same chunk every epoch: made once and cached with the row group
            yield from d.row_groups(self.split, columns, arrays, **read, prepared_as=self.view,
                                    prepare=lambda raw: d.make_chunk(self.view, raw, neg_rng))


class Data:
    """The data side of a run: manifest, split folders, views and one-epoch loaders.

    ``view`` is ``rows`` (KKBOX), ``next_song`` (Last.fm sessions) or ``ncf`` (Last.fm: ``pairs`` for training,
    ``loo`` for evaluation). ``cur_shard``/``shard_count`` are the rank and world size in distributed training.
    """

    def __init__(self, data_dir: str | Path, view: str, config: DataConfig | None = None, *, seed: int = 0,
                 cur_shard: int = 0, shard_count: int = 1, manifest: Mapping[str, Any] | None = None):
        self.data_dir = Path(data_dir).resolve()
        self.manifest = dict(manifest) if manifest is not None else read_manifest(self.data_dir)
        self.dataset = self.manifest["dataset"]
        self.config = config or DataConfig()
        self.seed, self.cur_shard, self.shard_count = int(seed), int(cur_shard), int(shard_count)
        assert 0 <= self.cur_shard < self.shard_count, f"cur_shard {cur_shard} not in [0, {shard_count})"
        expected = {"kkbox": ("rows",), "lastfm": ("next_song", "ncf")}[self.dataset]
        if view not in expected:
            raise DataError(f"{self.data_dir}: a {self.dataset} dataset has views {list(expected)}, not {view!r}")
        self.view = view
        features = self.manifest["features"]
        self.categorical: dict[str, str] = dict(features.get("categorical") or {})
        self.multi_valued: dict[str, str] = dict(features.get("multi_valued") or {})
        self.numeric: list[str] = list(features.get("numeric") or [])
        self.target = features.get("target")
        self.vocab_limits = {c: _vocab_of(self.manifest, c, v) for c, v in {**self.categorical, **self.multi_valued}.items()}
        self.top_k = int(self.manifest.get("top_k_tags") or 1)
        self.max_len = int(self.config.max_len or self.manifest.get("max_session_length") or 50)
        self._train_keys: np.ndarray | None = None
        self._loo: dict[str, dict[str, np.ndarray]] = {}
        self._cache: dict[tuple, dict[tuple, tuple[np.ndarray, Any]]] = {}  # see row_groups
        self._too_big: set[tuple] = set()
        for split in ("train", "valid", "test"):
            check_columns(self.path(split), self.expected_columns(split))

    # --- layout -------------------------------------------------------------------------------------------------
    @property
    def song_vocab(self) -> int:
        return int(self.manifest["vocab_sizes"]["song"])

    def path(self, split: str) -> Path:
        return split_dir(self.data_dir, self.manifest, split)

    def expected_columns(self, split: str) -> dict[str, str]:
        if self.dataset == "kkbox":
            cols = {ROW_ID: "int", **{c: "int" for c in self.categorical}, **{c: "array" for c in self.multi_valued},
                    **{c: "float" for c in self.numeric}}
            if self.target:
                cols[self.target] = "float"
            return cols
        cols = {SESSION_ID: "int", USER_IDX: "int", SONGS: "array", SONG_TAGS: "array"}
        if self.view == "ncf" and split != "train":
            cols[START_TS] = "timestamp"
        return cols

    def read_columns(self, view: str) -> tuple[list[str], list[str]]:
        """(columns, array columns) Petastorm reads for ``view``."""
        if view == "rows":
            columns = [ROW_ID, *self.categorical, *self.multi_valued, *self.numeric] + ([self.target] if self.target else [])
            return columns, list(self.multi_valued)
        if view == "next_song":
            return [SESSION_ID, USER_IDX, SONGS, SONG_TAGS], [SONGS, SONG_TAGS]
        if view == "pairs":
            return [SESSION_ID, USER_IDX, SONGS], [SONGS]
        raise ValueError(f"view {view!r} is not read with Petastorm")

    def validate(self, path: Path, raw: Mapping[str, np.ndarray]) -> None:
        """Every index column of a row group within its vocab (a ``DataError`` names column and path)."""
        for col, limit in self.vocab_limits.items():
            if col in raw:
                check_indices(path, col, raw[col], limit)

    def row_groups(self, split: str, columns: list[str], arrays: list[str], *, seed: int, shuffle_row_groups: bool,
                   cur_shard: int, shard_count: int, prepare: Callable[[dict], Any] | None = None,
                   prepared_as: str = "") -> Iterator[Any]:
        """The shard's row groups of ``split`` in Petastorm's order for ``seed`` (``iter_row_groups``), checked
        against the vocabularies, as ``prepare(row group)`` (default: the dict of columns). ``prepare`` must not
        depend on the epoch (its results are what the cache keeps); ``prepared_as`` names it in the cache key.

        In-memory cache (``config.cache_mb`` > 0): the first complete pass keeps the decoded row groups when they fit
        in ``cache_mb``; a later pass asks Petastorm, with the same seed and shard, for the key column only
        (``row_id`` or ``session_id``: a few milliseconds) and replays the kept row groups in the order it gives, so
        an epoch is the same, row group for row group, as an uncached one. Any mismatch reads everything again.
        """
        path = self.path(split)
        read = dict(seed=seed, shuffle_row_groups=shuffle_row_groups, cur_shard=cur_shard, shard_count=shard_count,
                    reader_pool=self.config.reader_pool, workers_count=self.config.workers_count)
        key_col = next((c for c in (ROW_ID, SESSION_ID) if c in columns), None)
        cache_key = (split, tuple(columns), tuple(arrays), cur_shard, shard_count, prepared_as)
        cached = self._cache.get(cache_key)
        if cached is not None:
            order = []
            for ids in iter_row_groups(path, [key_col], [], **read):
                group = cached.get(_group_key(ids[key_col]))
                if group is None or not np.array_equal(group[0], ids[key_col]):
                    order = None
                    break
                order.append(group[1])
            if order is not None and len(order) == len(cached):
                yield from order
                return
            del self._cache[cache_key]  # the folder changed under us: read it again
        keep = self.config.cache_mb > 0 and key_col is not None and cache_key not in self._too_big
        store: dict[tuple, tuple[np.ndarray, Any]] = {}
        size = 0
        for raw in iter_row_groups(path, columns, arrays, **read):
            self.validate(path, raw)
            item = raw if prepare is None else prepare(raw)
            if keep:
                size += sum(v.nbytes for v in raw.values())
                if size > self.config.cache_mb * 2**20:
                    keep, store = False, {}
                    self._too_big.add(cache_key)
                else:
                    store[_group_key(raw[key_col])] = (raw[key_col], item)
            yield item
        if keep:  # only a complete pass is kept
            self._cache[cache_key] = store

    # --- loaders ------------------------------------------------------------------------------------------------
    def train_loader(self, epoch: int) -> EpochLoader:
        """The training examples of ``epoch`` for this shard, shuffled with a seed derived from (seed, epoch, shard)."""
        view = "pairs" if self.view == "ncf" else self.view
        return EpochLoader(self, "train", view, epoch, True, self.cur_shard, self.shard_count)

    def eval_loader(self, split: str) -> EpochLoader:
        """All examples of ``split`` for this shard, in order (for evaluation: sums are all-reduced over shards)."""
        if self.view == "ncf":
            return self.loo_loader(split)
        return EpochLoader(self, split, self.view, 0, False, self.cur_shard, self.shard_count)

    def loo_loader(self, split: str) -> EpochLoader:
        """The leave-one-out set of a Last.fm ``split`` (NCF's evaluation; any user-level scorer can use it)."""
        if self.dataset != "lastfm":
            raise DataError(f"{self.data_dir}: the leave-one-out set is built from Last.fm sessions, not {self.dataset}")
        check_columns(self.path(split), {SESSION_ID: "int", USER_IDX: "int", START_TS: "timestamp", SONGS: "array"})
        return EpochLoader(self, split, "loo", 0, False, self.cur_shard, self.shard_count)

    def make_chunk(self, view: str, raw: dict[str, np.ndarray], rng: np.random.Generator):
        if view == "rows":
            data = dict(raw)
            if self.numeric:
                data[NUMERIC] = np.stack([np.asarray(raw[c], np.float32) for c in self.numeric], axis=1)  # (n, F)
                for c in self.numeric:
                    del data[c]
            if self.target:
                data[TARGET] = np.asarray(raw[self.target], np.float32)  # NaN where null (KKBOX test)
            return _RowsChunk(data, list(self.multi_valued), self.config.pad_to)
        if view == "next_song":
            return _SessionsChunk(raw, self.top_k, self.max_len)
        if view == "pairs":
            return self._pairs_chunk(raw, rng)
        raise ValueError(f"unknown view {view!r}")

    # --- NCF on sessions ----------------------------------------------------------------------------------------
    def train_keys(self) -> np.ndarray:
        """Sorted unique ``user * V_song + song`` of every (user, song) played in the training sessions."""
        if self._train_keys is None:
            table = read_table(self.path("train"), [USER_IDX, SONGS])
            values, offsets = table[SONGS]
            users = np.repeat(table[USER_IDX].astype(np.int64), np.diff(offsets))
            self._train_keys = np.unique(users * self.song_vocab + values)
        return self._train_keys

    def _is_known(self, users: np.ndarray, songs: np.ndarray) -> np.ndarray:
        keys = self.train_keys()
        query = users.astype(np.int64) * self.song_vocab + songs
        pos = np.clip(np.searchsorted(keys, query), 0, max(keys.size - 1, 0))
        return keys[pos] == query if keys.size else np.zeros(query.shape, bool)

    def _sample_negatives(self, users: np.ndarray, k: int, rng: np.random.Generator, rounds: int = 20) -> np.ndarray:
        """``k`` songs per user (users.size, k) drawn uniformly from the real songs the user never played in training."""
        neg = rng.integers(FIRST_TOKEN_INDEX, self.song_vocab, size=(users.size, k))
        flat, owner = neg.reshape(-1), np.repeat(users, k)  # (users.size * k,) views / copies, row-major
        todo = np.arange(flat.size)  # only redrawn entries need checking again: same draws as checking all
        for _ in range(rounds):
            bad = todo[self._is_known(owner[todo], flat[todo])]
            if not bad.size:
                break
            flat[bad] = rng.integers(FIRST_TOKEN_INDEX, self.song_vocab, size=bad.size)
            todo = bad
        return neg

    def _pairs_chunk(self, raw: dict[str, np.ndarray], rng: np.random.Generator) -> _PairsChunk:
        songs, lens = raw[SONGS].astype(np.int64), raw[SONGS + LEN_SUFFIX]
        rows = np.repeat(np.arange(len(lens)), lens)
        cols = np.arange(rows.size) - np.repeat(np.cumsum(lens) - lens, lens)
        flat = songs[rows, cols]
        session = raw[SESSION_ID].astype(np.int64)[rows]
        keep = flat >= FIRST_TOKEN_INDEX
        # each distinct song once per session; np.unique sorts, so restore the row-group order afterwards
        pairs = np.stack([session[keep], flat[keep], rows[keep]], axis=1)
        _, first = np.unique(pairs[:, :2], axis=0, return_index=True)
        first.sort()
        user = raw[USER_IDX].astype(np.int64)[pairs[first, 2]]
        song = pairs[first, 1]
        k = self.config.num_negatives
        negatives = self._sample_negatives(user, k, rng) if k else np.empty((user.size, 0), np.int64)
        all_user = np.concatenate([user, np.repeat(user, k)])
        all_song = np.concatenate([song, negatives.ravel()])
        target = np.concatenate([np.ones(user.size, np.float32), np.zeros(user.size * k, np.float32)])
        return _PairsChunk(all_user, all_song, target)

    def loo_chunk(self, split: str, cur_shard: int, shard_count: int) -> _ArraysChunk:
        """Leave-one-out set of ``split`` (built once, fixed seed), users dealt round-robin over shards."""
        if split not in self._loo:
            self._loo[split] = self._build_loo(split)
        data = self._loo[split]
        idx = np.arange(cur_shard, len(data[USER_IDX]), shard_count)
        return _ArraysChunk({k: v[idx] for k, v in data.items()})

    def _build_loo(self, split: str) -> dict[str, np.ndarray]:
        path = self.path(split)
        table = read_table(path, [SESSION_ID, USER_IDX, START_TS, SONGS])
        values, offsets = table[SONGS]
        check_indices(path, SONGS, values, self.song_vocab)
        check_indices(path, USER_IDX, table[USER_IDX], self.vocab_limits.get(USER_IDX, 2**62))
        # each user's last session (by start, then session id) and its last real (non-OOV) song
        order = np.lexsort((table[SESSION_ID], table[START_TS], table[USER_IDX]))
        users_sorted = table[USER_IDX][order]
        last = order[np.r_[users_sorted[1:] != users_sorted[:-1], True]] if order.size else order
        users, held = [], []
        for row in last:
            session = values[offsets[row]: offsets[row + 1]]
            real = session[session >= FIRST_TOKEN_INDEX]
            if real.size:
                users.append(int(table[USER_IDX][row]))
                held.append(int(real[-1]))
        users_arr = np.asarray(users, np.int64)
        held_arr = np.asarray(held, np.int64)
        n = self.config.loo_negatives
        rng = np.random.default_rng(_epoch_seed(self.seed, 0xC0FFEE, {"valid": 1, "test": 2}.get(split, 3)))
        keys, V = self.train_keys(), self.song_vocab
        negatives = np.empty((users_arr.size, n), np.int64)
        for i, (user, song) in enumerate(zip(users_arr, held_arr)):
            lo, hi = np.searchsorted(keys, [user * V, (user + 1) * V])
            exclude = set((keys[lo:hi] - user * V).tolist()) | {int(song)}
            try:  # n distinct songs the user never played in training, other than the held-out one
                negatives[i] = sample_negative_items(rng, V, exclude, n)
            except ValueError as exc:
                raise DataError(f"{path}: user {user}: {exc}; lower data.loo_negatives") from exc
        return {USER_IDX: users_arr, CANDIDATES: np.concatenate([held_arr[:, None], negatives], axis=1)}

    # --- for the baselines --------------------------------------------------------------------------------------
    def train_sessions(self) -> list[np.ndarray]:
        """Every training session's songs (the input of MostPopular.fit_sessions / CoOccurrence.fit)."""
        table = read_table(self.path("train"), [SONGS])
        values, offsets = table[SONGS]
        check_indices(self.path("train"), SONGS, values, self.song_vocab)
        return [values[offsets[i]: offsets[i + 1]] for i in range(offsets.size - 1)]

    def train_rows(self, columns: list[str]) -> dict[str, np.ndarray]:
        """Whole training columns of a row dataset (for MostPopular.fit(song_idx, target))."""
        return read_table(self.path("train"), columns)


def view_for(dataset: str, model: str) -> str:
    """The data view a model trains on: ``rows`` (KKBOX), ``next_song`` or ``ncf`` (Last.fm)."""
    if dataset == "kkbox":
        return "rows"
    return "ncf" if model == "ncf" else "next_song"


__all__ = [
    "Data",
    "DataConfig",
    "DataError",
    "EpochLoader",
    "ShuffleBuffer",
    "check_columns",
    "iter_row_groups",
    "manifest_fingerprint",
    "read_manifest",
    "split_dir",
    "view_for",
]
