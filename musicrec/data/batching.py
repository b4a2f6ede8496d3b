"""From a view's chunks to one epoch of ``dict[str, Tensor]`` batches: shuffling, collation, prefetch.

A chunk is one row group made into examples by a view (``n`` examples, ``take(idx)`` collates some of them into numpy
arrays). ``EpochLoader`` feeds an epoch's chunks through a ``ShuffleBuffer``: in order for evaluation, or, for
training, drawn at random from a buffer of ``shuffle_buffer`` examples with a generator seeded from (seed, epoch,
shard), so an epoch is the same every time it is replayed (which is what makes ``--resume`` exact). With
``prefetch`` > 0 the batches are made in a background thread, a few ahead of the training step; that changes no
batch (tests/test_perf_paths.py compares prefetched epochs with plain ones).
"""

from __future__ import annotations

import queue
import threading
from typing import Callable, Iterable, Iterator, Mapping

import numpy as np
import torch

from musicrec.data.config import DataConfig


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


_DONE = object()


def _prefetched(batches: Iterator, depth: int) -> Iterator:
    """``batches`` produced by a background thread, up to ``depth`` ahead, in the same order.

    Reading, collating and making tensors (numpy and torch release the GIL in their loops) then overlap with the
    training step. An error in the producer is raised here; leaving the loop early (``break``, an exception in the
    training step) stops the producer, which closes ``batches`` (and its Petastorm reader) in its own thread.
    """
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
    """One epoch of batches from ``chunks()`` (a view's chunks of one split); iterate once (a second iteration
    replays the same epoch).

    ``train``: shuffled with a generator seeded by ``seed`` (when ``shuffle_buffer`` > 0), ``batch_size`` examples a
    batch, the last smaller one dropped with ``drop_last``; otherwise in order, ``eval_batch_size`` a batch.
    """

    def __init__(self, chunks: Callable[[], Iterable], config: DataConfig, *, train: bool, seed: int):
        self.chunks, self.config, self.train, self.seed = chunks, config, train, seed

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        if self.config.prefetch > 0:
            return _prefetched(self._batches(), self.config.prefetch)
        return self._batches()

    def _batches(self) -> Iterator[dict[str, torch.Tensor]]:
        cfg = self.config
        rng = np.random.default_rng(self.seed) if self.train and cfg.shuffle_buffer > 0 else None
        batch_size = cfg.batch_size if self.train else cfg.eval_batch_size
        buffer = ShuffleBuffer(batch_size, cfg.shuffle_buffer, rng, drop_last=cfg.drop_last and self.train)
        for chunk in self.chunks():
            for batch in buffer.add(chunk):
                yield to_torch(batch)
        for batch in buffer.flush():
            yield to_torch(batch)


__all__ = ["EpochLoader", "ShuffleBuffer", "to_torch"]
