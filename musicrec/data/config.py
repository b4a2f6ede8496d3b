"""The ``data:`` section of a run config: ``DataConfig``, typed with ``musicrec.config.typed(DataConfig, section,
"data")`` (conf/*.yaml has one comment per key)."""

from __future__ import annotations

from dataclasses import dataclass

from musicrec.config import require

READER_POOLS = ("thread", "dummy", "process")  # Petastorm's reader pool types


@dataclass(frozen=True)
class DataConfig:
    """How the loaders batch, shuffle, cache and prefetch."""

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

    def check(self) -> None:
        """The values a loader can work with; called by ``typed``."""
        require(self.batch_size >= 1, "data.batch_size", self.batch_size, "must be >= 1")
        require(self.eval_batch_size >= 1, "data.eval_batch_size", self.eval_batch_size, "must be >= 1")
        require(self.shuffle_buffer >= 0, "data.shuffle_buffer", self.shuffle_buffer, "must be >= 0")
        require(self.cache_mb >= 0, "data.cache_mb", self.cache_mb, "must be >= 0")
        require(self.prefetch >= 0, "data.prefetch", self.prefetch, "must be >= 0")
        require(self.reader_pool in READER_POOLS, "data.reader_pool", self.reader_pool, f"must be one of {READER_POOLS}")


__all__ = ["DataConfig", "READER_POOLS"]
