"""The in-memory row-group cache: a split that fits in ``cache_mb`` is decoded once, later epochs replay it.

The first complete pass over a split keeps its decoded row groups (and what the view made of them) when they fit in
the budget. A later pass asks Petastorm, with that epoch's seed and shard, for the id column only (``row_id`` or
``session_id``: a few milliseconds) and replays the kept row groups in the order it gives, so every epoch is the one
an uncached reader would give, row group for row group. Any mismatch (the folder changed) reads everything again; a
split over the budget is never kept, and an incomplete pass (a stopped epoch) is not kept either: once the pass goes
over the budget what it kept so far is dropped, so a split larger than ``cache_mb`` streams through in bounded memory.
The budget counts what is kept: the view's item (its ``nbytes``, e.g. the int64 matrix a KKBOX chunk makes of int32
columns) and the ids.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

import numpy as np

Read = Callable[[list[str], list[str]], Iterator[dict[str, np.ndarray]]]  # (columns, array columns) -> row groups


def _group_key(ids: np.ndarray) -> tuple:
    """A row group's key in the cache: its size and first and last id (ids are unique within a split)."""
    return (len(ids), ids[0].item(), ids[-1].item()) if len(ids) else (0,)


def _nbytes(item: Any) -> int:
    """The memory an item holds: its ``nbytes`` (a view's chunk), or the sum over a dict of arrays (a raw row group)."""
    if isinstance(item, dict):
        return sum(v.nbytes for v in item.values())
    return int(item.nbytes)


class RowGroupCache:
    """Decoded row groups per split (``kept``) within ``budget_mb`` MiB; ``too_big``: the splits that did not fit."""

    def __init__(self, budget_mb: float):
        self.budget_mb = budget_mb
        self.kept: dict[str, dict[tuple, tuple[np.ndarray, Any]]] = {}  # split -> {group key: (ids, item)}
        self.too_big: set[str] = set()

    def row_groups(self, split: str, read: Read, columns: list[str], arrays: list[str], id_col: str, *,
                   validate: Callable[[dict], None], prepare: Callable[[dict], Any] | None = None) -> Iterator[Any]:
        """The row groups ``read`` gives for ``columns`` (``arrays`` of them array columns), each checked with
        ``validate`` and handed out as ``prepare(row group)`` (default: the dict of columns), from memory when the
        split is kept. ``prepare`` must not depend on the epoch: its results are what the cache keeps."""
        kept = self.kept.get(split)
        if kept is not None:
            order = self._replay_order(kept, read([id_col], []), id_col)
            if order is not None:
                yield from order
                return
            del self.kept[split]  # the folder changed under us: read it again
        keep = self.budget_mb > 0 and split not in self.too_big
        store: dict[tuple, tuple[np.ndarray, Any]] = {}
        size = 0
        for raw in read(columns, arrays):
            validate(raw)
            item = raw if prepare is None else prepare(raw)
            if keep:
                size += _nbytes(item) + raw[id_col].nbytes
                if size > self.budget_mb * 2**20:
                    keep, store = False, {}
                    self.too_big.add(split)
                else:
                    store[_group_key(raw[id_col])] = (raw[id_col], item)
            yield item
        if keep:  # only a complete pass is kept
            self.kept[split] = store

    @staticmethod
    def _replay_order(kept: dict[tuple, tuple[np.ndarray, Any]], ids: Iterator[dict[str, np.ndarray]],
                      id_col: str) -> list[Any] | None:
        """The kept items in the order of the row groups' ``ids``; None unless every row group is kept."""
        order = []
        for group_ids in ids:
            group = kept.get(_group_key(group_ids[id_col]))
            if group is None or not np.array_equal(group[0], group_ids[id_col]):
                return None
            order.append(group[1])
        return order if len(order) == len(kept) else None


__all__ = ["RowGroupCache"]
