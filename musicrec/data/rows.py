"""The ``rows`` view (KKBOX: ncf, dnn, logreg): one example = one event row.

A batch has every categorical column (B,), every multi-valued column (B, L) 0-padded to its longest list in the
batch (or to ``pad_to``), ``numeric`` (B, F), ``target`` (B,) (NaN when null, as in KKBOX's test split) and
``row_id`` (B,).
"""

from __future__ import annotations

import numpy as np

from musicrec.columns import NUMERIC, ROW_ID, TARGET
from musicrec.data.reader import LEN_SUFFIX, read_table
from musicrec.data.view import View


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
        self.row_id = data[ROW_ID]
        self.n = n = len(self.row_id)
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

    @property
    def nbytes(self) -> int:
        return self.ints.nbytes + self.floats.nbytes + self.row_id.nbytes

    def keys(self) -> tuple[np.ndarray, ...]:
        """Each example's key for the evaluation sample: its ``row_id``."""
        return (self.row_id,)

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


class RowsView(View):
    """KKBOX event rows, every split read the same way."""

    name = "rows"
    id_col = ROW_ID

    @property
    def columns(self) -> list[str]:
        return [ROW_ID, *self.categorical, *self.multi_valued, *self.numeric] + ([self.target] if self.target else [])

    @property
    def arrays(self) -> list[str]:
        return list(self.multi_valued)

    def expected_columns(self, split: str) -> dict[str, str]:
        cols = {ROW_ID: "int", **{c: "int" for c in self.categorical}, **{c: "array" for c in self.multi_valued},
                **{c: "float" for c in self.numeric}}
        if self.target:
            cols[self.target] = "float"
        return cols

    def example_keys(self, split: str) -> tuple[np.ndarray, ...]:
        return (read_table(self.path(split), [ROW_ID])[ROW_ID],)

    def make_chunk(self, raw: dict[str, np.ndarray]) -> _RowsChunk:
        data = dict(raw)
        if self.numeric:
            data[NUMERIC] = np.stack([np.asarray(raw[c], np.float32) for c in self.numeric], axis=1)  # (n, F)
            for c in self.numeric:
                del data[c]
        if self.target:
            data[TARGET] = np.asarray(raw[self.target], np.float32)  # NaN where null (KKBOX test)
        return _RowsChunk(data, self.arrays, self.config.pad_to)


__all__ = ["RowsView"]
