"""A fixed sample of evaluation examples (``eval.max_examples``): the same examples for every model and every run on
the same data, whatever the model, the run's seed or the number of workers.

Every example of a split has a key made of its own ids (a KKBOX row: ``row_id``; a Last.fm prefix: ``session_id`` and
its position ``t``; a leave-one-out user: ``user_idx``) and a pseudo-random priority hashed from that key with a
fixed salt (splitmix64). The sample of size k is the k examples of the whole split with the smallest (priority, key):
``EvalSample.choose`` finds the k-th of them once from all the split's keys, and ``EvalSample.subset`` keeps the
examples of a chunk at or below it, so each worker keeps exactly its share of the same k examples (exactly k in all,
keys being unique within a split) without seeing the others' rows.
"""

from __future__ import annotations

import numpy as np

SALT = 0x5EED_E7A1_0000_0012  # fixed: the sample must not depend on any run setting


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer, element-wise on uint64 (wrapping arithmetic)."""
    x = x.astype(np.uint64, copy=True)
    with np.errstate(over="ignore"):
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return x


def priorities(keys: tuple[np.ndarray, ...]) -> np.ndarray:
    """(n,) uint64 pseudo-random priority of each example, hashed from its key columns."""
    h = np.full(len(keys[0]), SALT, dtype=np.uint64)
    for column in keys:
        h = _splitmix64(h ^ _splitmix64(np.asarray(column).astype(np.int64).view(np.uint64)))
    return h


class _Subset:
    """Some examples of a chunk (``idx``), as a chunk: ``n`` examples, ``take`` collates some of them."""

    def __init__(self, chunk, idx: np.ndarray):
        self.chunk, self.idx = chunk, idx
        self.n = int(idx.size)

    def take(self, idx: np.ndarray) -> dict[str, np.ndarray]:
        return self.chunk.take(self.idx[idx])


class EvalSample:
    """The k examples of a split with the smallest (priority, key): ``last`` is the k-th of them."""

    def __init__(self, last: tuple, size: int):
        self.last, self.size = last, size

    @classmethod
    def choose(cls, keys: tuple[np.ndarray, ...], k: int) -> "EvalSample | None":
        """The sample of ``k`` examples among all of a split's examples (``keys``: one array per key column);
        None (every example) when ``k`` is 0 or the split has at most k examples."""
        n = len(keys[0])
        if k <= 0 or n <= k:
            return None
        prio = priorities(keys)
        order = np.lexsort(tuple(reversed((prio, *keys))))  # by priority, then by the key columns
        i = order[k - 1]
        return cls((prio[i], *(column[i] for column in keys)), k)

    def selected(self, keys: tuple[np.ndarray, ...]) -> np.ndarray:
        """(n,) bool: which of these examples are in the sample, (priority, key) <= ``last`` lexicographically."""
        columns = (priorities(keys), *keys)
        chosen = np.zeros(len(keys[0]), dtype=bool)
        tied = np.ones(len(keys[0]), dtype=bool)  # equal to ``last`` on every column so far
        for column, bound in zip(columns, self.last):
            chosen |= tied & (column < bound)
            tied &= column == bound
        return chosen | tied

    def subset(self, chunk) -> _Subset:
        """The examples of ``chunk`` (whose ``keys()`` are its examples' key columns) that are in the sample."""
        return _Subset(chunk, np.nonzero(self.selected(chunk.keys()))[0])


__all__ = ["EvalSample", "priorities"]
