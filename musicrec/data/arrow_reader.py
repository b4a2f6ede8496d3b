"""Reading a shard's row groups with pyarrow alone, in Petastorm's order (the current-dependency profile's reader).

No Petastorm release works with pyarrow >= 15 (ENVIRONMENT.md), so the current profile reads the same Parquet files
with ``pyarrow.parquet.ParquetFile.read_row_group``. ``row_group_order`` is Petastorm 0.12.1's selection and order
for ``make_batch_reader(<list of files>, seed, shuffle_row_groups, cur_shard, shard_count, num_epochs=1)``, step for
step (petastorm/reader.py, petastorm/etl/dataset_metadata.py, petastorm/workers_pool/ventilator.py):

1. the row groups are numbered file by file in the order of the list (``data_files``: name order; pyarrow's legacy
   ``ParquetDataset`` keeps a list's order, ``_split_row_groups_from_footers`` one piece per row group);
2. sharded (``shard_count`` > 1): fewer row groups than shards is an error; the indexes are shuffled with
   ``random.Random(seed).shuffle`` and shard ``r`` keeps the indexes ``i`` with ``i % shard_count == r`` (in the
   shuffled order);
3. ``shuffle_row_groups``: the kept indexes are shuffled once more with ``numpy.random.RandomState(seed).shuffle``
   (the ventilator's shuffle at the start of its one iteration; the legacy RandomState stream is frozen across
   numpy 1 and 2).

Each row group comes out as reader.py's Petastorm path gives it: scalar columns as numpy arrays (an integer column
with nulls as float64 NaN), array columns padded to the row group's longest list with ``<column>__len``; empty row
groups are skipped. Row groups are read one at a time in the calling thread, so the order is the ventilation order
whatever ``workers_count`` says. tests/test_arrow_reader.py compares both readers chunk for chunk (1 and 2 shards).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Iterator

import numpy as np

from musicrec.data.manifest import DataError, data_files

LEN_SUFFIX = "__len"  # <column>__len: the list lengths of a padded array column (reader.py re-exports it)


def pad_flat(lens: np.ndarray, flat: np.ndarray) -> np.ndarray:
    """Lists given as their lengths (n,) and their values concatenated -> a (n, W) int32 matrix padded with 0, W the
    longest list (at least 1)."""
    n = len(lens)
    width = max(int(lens.max()) if n else 0, 1)
    padded = np.zeros((n, width), dtype=np.int32)
    if n and lens.any():
        padded[np.arange(width) < lens[:, None]] = flat  # row-major, like the concatenation
    return padded


def row_group_order(counts: list[int], *, seed: int | None, shuffle_row_groups: bool, cur_shard: int = 0,
                    shard_count: int = 1) -> list[tuple[int, int]]:
    """The (file index, row group in the file) pairs shard ``cur_shard`` reads, in Petastorm's order; ``counts``:
    the row groups of each file, in the order of the file list."""
    pieces = [(f, g) for f, n in enumerate(counts) for g in range(n)]
    indexes = list(range(len(pieces)))
    if shard_count > 1:
        if len(pieces) < shard_count:
            raise ValueError(f"{len(pieces)} row groups, fewer than the {shard_count} shards requested")
        if seed is not None:
            random.Random(seed).shuffle(indexes)
        indexes = [i for i in indexes if i % shard_count == cur_shard]
    if shuffle_row_groups:
        np.random.RandomState(seed).shuffle(indexes)
    return [pieces[i] for i in indexes]


def _column(column, array: bool) -> dict[str, np.ndarray]:
    """One column of a row group (a pyarrow ChunkedArray) -> {name: values} as reader.py's Petastorm path gives it."""
    import pyarrow.compute as pc

    if not array:
        return {"": column.to_numpy()}  # ints with nulls -> float64 NaN, as pandas (Petastorm's path) makes them
    lists = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    lens = pc.fill_null(pc.list_value_length(lists), 0).to_numpy().astype(np.int32)
    flat = lists.flatten()  # the values of the non-null lists, in order
    if flat.null_count:
        raise ValueError("a list holds a null")
    values = flat.to_numpy(zero_copy_only=False) if len(flat) else np.zeros(0, np.int32)
    return {"": pad_flat(lens, values.astype(np.int32, copy=False)), LEN_SUFFIX: lens}


def iter_row_groups(path: Path, columns: list[str], array_columns: list[str], *, seed: int,
                    shuffle_row_groups: bool, cur_shard: int = 0, shard_count: int = 1, **_pool) -> Iterator[dict]:
    """One pass over the shard's row groups of the split folder ``path`` as dicts of numpy arrays (arrays padded,
    plus ``<col>__len``), in Petastorm's order; opens only ``data_files(path)``. ``_pool``: Petastorm's
    ``reader_pool`` / ``workers_count``, which do not apply here."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    files = data_files(Path(path))
    if not files:
        raise DataError(f"{path}: no Parquet files in the split folder")
    opened = []
    for file in files:
        try:
            opened.append(pq.ParquetFile(file))
        except Exception as exc:  # pyarrow raises several types for unreadable files
            raise DataError(f"{file}: not a readable Parquet file ({exc}): rerun the feature job") from None
    try:
        order = row_group_order([f.num_row_groups for f in opened], seed=seed, shuffle_row_groups=shuffle_row_groups,
                                cur_shard=cur_shard, shard_count=shard_count)
    except ValueError as exc:
        raise DataError(f"{path}: cannot split the row groups into {shard_count} shards: {exc}") from None
    arrays = set(array_columns)
    for f, g in order:
        try:
            table = opened[f].read_row_group(g, columns=list(columns))
            chunk = {}
            for col in columns:
                chunk.update({col + key: v for key, v in _column(table.column(col), col in arrays).items()})
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise DataError(f"{files[f]}: row group {g} cannot be read ({exc}): rerun the feature job") from None
        if table.num_rows:
            yield chunk


__all__ = ["LEN_SUFFIX", "iter_row_groups", "pad_flat", "row_group_order"]
