"""Seeds: every random stream of a run is derived from the run's seed, so a run (and a resumed run) is replayable.

``derive_seed(seed, epoch, shard, ...)`` gives a stable seed for one stream (a shuffle, the negatives of an epoch,
the loop's dropout), the same across runs and platforms; ``seed_everything`` seeds Python, numpy and torch once at
the start of a run.
"""

from __future__ import annotations

import random

import numpy as np


def derive_seed(*parts: int, bits: int = 31) -> int:
    """A ``bits``-bit seed from integer ``parts`` (each taken modulo 2^32) through numpy's ``SeedSequence``."""
    state = np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1)[0]
    return int(state) & ((1 << bits) - 1)


def seed_everything(seed: int) -> None:
    """Seed Python, numpy and torch (CPU and CUDA)."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


__all__ = ["derive_seed", "seed_everything"]
