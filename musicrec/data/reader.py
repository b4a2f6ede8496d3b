"""Reading a split folder: Petastorm (or pyarrow alone) for the row groups of a shard, pyarrow for whole columns.

Which reader ``iter_row_groups`` uses: ``MUSICREC_READER`` = ``auto`` (the default: Petastorm when it is installed,
as in the default profile, else ``arrow_reader``, as in the current-dependency profile, whose pyarrow no Petastorm
release reads), ``petastorm`` or ``arrow``. Both give the same row groups of a shard in the same order, as the same
arrays (tests/test_arrow_reader.py), so a run gives the same batches in both profiles.

This is the only module of musicrec that imports Petastorm. It opens only the split's ``data_files`` (the
Parquet files, by name, never the folder): Petastorm unpickles a ``_common_metadata`` / ``_metadata`` it finds
in a folder, and a list of files has none. ``iter_row_groups`` opens a fresh
``make_batch_reader(num_epochs=1)`` for one pass, so every row of the shard is read exactly once; ``cur_shard`` /
``shard_count`` split the row groups between ranks (Petastorm assigns row group ``i`` to shard ``i % shard_count``),
and ``seed`` / ``shuffle_row_groups`` fix their order. With ``reader_pool="thread"`` and ``workers_count=1`` row
groups arrive in ventilation order; more workers read faster but in a timing-dependent order.

Petastorm 0.12.1 stacks list columns into a matrix and fails on ragged lists; a ``TransformSpec`` pads every array
column to the row group's longest list and adds ``<column>__len`` so the loader can cut the padding again. The same
transform hands each row group over as ONE row whose cells are whole columns: Petastorm then converts one array per
column instead of one per row (its per-row ``np.vstack`` was most of the reading time), and ``iter_row_groups``
turns the row back into columns. Row groups, sharding and their order are Petastorm's as before.

``read_table`` reads whole columns of a split with pyarrow, for what needs the whole split at once (the training
plays behind the negatives, the leave-one-out sets, the baselines' feeds).
"""

from __future__ import annotations

import importlib.util
import os
import re
import warnings
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from musicrec.data import arrow_reader
from musicrec.data.arrow_reader import LEN_SUFFIX, pad_flat
from musicrec.data.manifest import DataError, data_files, parquet_schema

# Petastorm 0.12.1 on pyarrow 14 warns about its own use of the legacy ParquetDataset on every read.
warnings.filterwarnings("ignore", category=FutureWarning, module=r"petastorm(\.|$)")
warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"petastorm(\.|$)")

READERS = ("auto", "petastorm", "arrow")  # MUSICREC_READER


def pad_lists(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A column of int lists (object array of arrays, None = empty) -> (padded (n, W) int32, lengths (n,) int32);
    W is the longest list (at least 1), padding is 0."""
    lens = np.fromiter((0 if v is None else len(v) for v in values), dtype=np.int32, count=len(values))
    flat = np.concatenate([v for v in values[lens > 0]]).astype(np.int32, copy=False) if lens.any() else None
    return pad_flat(lens, flat), lens


class _RowGroupAsOneRow:
    """Petastorm transform (runs on the reader's workers): a row group -> ONE row whose cells are whole columns.

    Scalar columns become one array cell; array columns are padded to the row group's longest list
    (``pad_lists``), flattened row-major, with ``<col>__len`` beside them. ``_unpack_row`` undoes it.
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
    """One pass over the shard's row groups as dicts of numpy arrays (arrays padded, plus ``<col>__len``), read by
    Petastorm or by ``arrow_reader`` (``reader_name``), in the same order."""
    if reader_name() == "arrow":
        return arrow_reader.iter_row_groups(path, columns, array_columns, seed=seed,
                                            shuffle_row_groups=shuffle_row_groups, cur_shard=cur_shard,
                                            shard_count=shard_count)
    return _petastorm_row_groups(path, columns, array_columns, seed=seed, shuffle_row_groups=shuffle_row_groups,
                                 cur_shard=cur_shard, shard_count=shard_count, reader_pool=reader_pool,
                                 workers_count=workers_count)


def reader_name() -> str:
    """``petastorm`` or ``arrow``: ``MUSICREC_READER``, where ``auto`` (or unset) is Petastorm when it is installed."""
    name = os.environ.get("MUSICREC_READER", "auto") or "auto"
    if name not in READERS:
        raise DataError(f"MUSICREC_READER={name!r}: must be one of {list(READERS)}")
    if name == "auto":
        return "petastorm" if importlib.util.find_spec("petastorm") is not None else "arrow"
    if name == "petastorm" and importlib.util.find_spec("petastorm") is None:
        raise DataError("MUSICREC_READER=petastorm, but Petastorm is not installed (the current-dependency profile "
                        "has none): use MUSICREC_READER=arrow or auto")
    return name


def _petastorm_row_groups(path: Path, columns: list[str], array_columns: list[str], *, seed: int,
                          shuffle_row_groups: bool, cur_shard: int, shard_count: int, reader_pool: str,
                          workers_count: int) -> Iterator[dict[str, np.ndarray]]:
    """Petastorm's ``make_batch_reader`` over the split's files for one pass (see the module docstring)."""
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
            ["file://" + str(f.resolve()) for f in data_files(path)],  # files, not the folder: no summary files
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
        for batch in _batches(reader, path):
            rows = {name: getattr(batch, name) for name in batch._fields}  # each (row groups, values)
            for r in range(len(rows[columns[0]])):
                chunk = _unpack_row({name: value[r] for name, value in rows.items()}, columns, array_columns)
                if len(chunk[columns[0]]):
                    yield chunk


def _batches(reader, path: Path) -> Iterator:
    """The reader's batches; a file that breaks while being read (its footer was fine) is a ``DataError``."""
    import pyarrow as pa

    try:
        yield from reader
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{path}: a Parquet file cannot be read ({exc}): rerun the feature job") from None


def read_table(path: Path, columns: list[str]) -> dict[str, np.ndarray]:
    """A whole split's ``columns`` with pyarrow (for the global indexes: NCF negatives, leave-one-out sets).
    Array columns come back as (values, offsets)."""
    import pyarrow as pa
    import pyarrow.dataset as ds

    parquet_schema(path)  # every footer readable, else a DataError naming the file
    try:
        table = ds.dataset([str(f) for f in data_files(path)], format="parquet").to_table(columns=columns)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{path}: a Parquet file cannot be read ({exc}): rerun the feature job") from None
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


__all__ = ["LEN_SUFFIX", "READERS", "iter_row_groups", "pad_lists", "read_table", "reader_name"]
