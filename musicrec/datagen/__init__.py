"""Seeded synthetic data in the exact real formats of Last.fm 1K and KKBOX WSDM 2018.

``python -m musicrec.datagen {lastfm,kkbox} --out DIR [--scale S] [--seed N]`` (see ``__main__.py``). The two
generators live in :mod:`musicrec.datagen.lastfm` and :mod:`musicrec.datagen.kkbox`; this module holds what they
share: deterministic random streams, counter-based hashing, atomic file output, the KKBOX CSV dialect and
progress lines.

Determinism: every random draw comes from ``numpy.random.Generator(PCG64(...))`` seeded from ``(seed, stream name,
index)``, and chunk boundaries depend only on the sizes, never on timing, so one seed gives byte-identical files.
"""

from __future__ import annotations

import contextlib
import csv
import math
import os
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Callable, Iterator, TypeVar

import numpy as np

DATASETS = ("lastfm", "kkbox")

T = TypeVar("T")

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


MAX_SCALE = 10.0  # 10x the real size (about 25 GB of Last.fm plays) is the most the CLI accepts


class DatagenError(Exception):
    """A problem the user can fix (bad argument, unusable output directory); the CLI prints it as one line."""


def check_scale(scale: float) -> float:
    """Return ``scale`` if it is a finite number in (0, MAX_SCALE], else raise :class:`DatagenError`."""
    if not isinstance(scale, (int, float)) or not math.isfinite(scale) or not 0 < scale <= MAX_SCALE:
        raise DatagenError(f"scale must be a number > 0 and <= {MAX_SCALE:g}, got {scale!r}")
    return float(scale)


def make_rng(seed: int, stream: str, index: int = 0) -> np.random.Generator:
    """Return an independent PCG64 generator for ``(seed, stream, index)``.

    ``stream`` is hashed with CRC32 (stable across runs, unlike ``hash``), so adding a stream never shifts another.
    """
    key = np.random.SeedSequence([int(seed), zlib.crc32(stream.encode("utf-8")), int(index)])
    return np.random.Generator(np.random.PCG64(key))


def stream_key(seed: int, stream: str) -> int:
    """A 64-bit key for :func:`hash64`, derived from the seed and a stream name."""
    return int(np.random.SeedSequence([int(seed), zlib.crc32(stream.encode("utf-8"))]).generate_state(2, np.uint64)[0])


def hash64(key: int, index: np.ndarray, lane: int = 0) -> np.ndarray:
    """SplitMix64 of ``(key, index, lane)``: a uint64 per index, the same whatever chunk the index is in.

    Used for values that must be recomputed anywhere without storing them (ids of songs and members, per-user
    library entries), so a chunk never needs the whole table.
    """
    with np.errstate(over="ignore"):
        z = np.asarray(index, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        z = z + np.uint64(key) + np.uint64((lane * 0xD1B54A32D192ED03) & 0xFFFFFFFFFFFFFFFF)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def hash_uniform(key: int, index: np.ndarray, lane: int = 0) -> np.ndarray:
    """Uniform floats in [0, 1) from :func:`hash64` (53 random bits)."""
    return (hash64(key, index, lane) >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def base64_ids(key: int, index: np.ndarray) -> list[str]:
    """44-character ids like KKBOX's ``msno``/``song_id``: 32 pseudo-random bytes per index, standard base64.

    The 32 bytes are padded with one zero byte so that a whole block encodes in one call (33 bytes = 44 symbols);
    the last symbol is then replaced by the ``=`` padding that a lone 32-byte value gets.
    """
    index = np.asarray(index, dtype=np.uint64)
    words = np.stack([hash64(key, index, lane) for lane in range(4)], axis=1)  # (N, 4) uint64
    raw = np.zeros((len(index), 33), dtype=np.uint8)
    raw[:, :32] = words.astype("<u8").view(np.uint8).reshape(len(index), 32)
    symbols = _b64_symbols(raw)  # (N, 44)
    symbols[:, 43] = ord("=")
    return symbols.view("S44").ravel().astype("U44").tolist()


def _b64_symbols(raw: np.ndarray) -> np.ndarray:
    """Vectorized base64 of a (N, 3k) uint8 array into (N, 4k) ASCII codes."""
    n, width = raw.shape
    triples = raw.reshape(n, width // 3, 3).astype(np.uint32)
    value = (triples[:, :, 0] << 16) | (triples[:, :, 1] << 8) | triples[:, :, 2]
    sextets = np.stack([(value >> s) & 63 for s in (18, 12, 6, 0)], axis=2).reshape(n, -1)
    return np.frombuffer(_B64_ALPHABET, dtype=np.uint8)[sextets]


def zipf_ranks(u: np.ndarray, size: np.ndarray, exponent: float) -> np.ndarray:
    """Ranks in ``[0, size)`` with P(rank r) roughly proportional to ``(r + 1) ** -exponent`` (inverse CDF).

    Uses the continuous power law on ``[1, size + 1)``, so it is vectorized over per-row ``size``.
    """
    size = np.asarray(size, dtype=np.float64)
    if abs(exponent - 1.0) < 1e-9:
        x = np.exp(u * np.log(size + 1.0))
    else:
        one_minus = 1.0 - exponent
        x = (1.0 + u * ((size + 1.0) ** one_minus - 1.0)) ** (1.0 / one_minus)
    return np.minimum(np.floor(x).astype(np.int64) - 1, size.astype(np.int64) - 1).clip(0)


def allocate(total: int, weights: np.ndarray, minimum: int = 0) -> np.ndarray:
    """Split ``total`` into integers proportional to ``weights`` (largest remainder), each at least ``minimum``."""
    weights = np.asarray(weights, dtype=np.float64)
    rest = total - minimum * len(weights)
    if rest < 0:
        raise ValueError(f"cannot give {len(weights)} parts at least {minimum} out of {total}")
    exact = rest * weights / weights.sum()
    parts = np.floor(exact).astype(np.int64)
    short = rest - int(parts.sum())
    if short:
        parts[np.argsort(-(exact - parts), kind="stable")[:short]] += 1
    return parts + minimum


def ensure_some(mask: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """Return ``mask`` with at least ``count`` True entries, so that a rare quirk shows up at every scale."""
    missing = count - int(mask.sum())
    if missing > 0:
        candidates = np.flatnonzero(~mask)
        mask = mask.copy()
        mask[rng.choice(candidates, size=min(missing, len(candidates)), replace=False)] = True
    return mask


def check_output_dir(out_dir: str | os.PathLike) -> Path:
    """Create ``out_dir`` if needed and check that files can be written there; raise :class:`DatagenError`."""
    path = Path(out_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatagenError(f"cannot create output directory {str(path)!r}: {exc.strerror or exc}") from None
    if not path.is_dir():
        raise DatagenError(f"output path {str(path)!r} is not a directory")
    probe = path / ".datagen-write-test.tmp"
    try:
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise DatagenError(f"output directory {str(path)!r} is not writable: {exc.strerror or exc}") from None
    return path


def checked_arguments(
    out_dir: str | os.PathLike, scale: float, sizes_for_scale: Callable[[float], T]
) -> tuple[Path, T]:
    """The checked output directory and the sizes for ``scale`` (:func:`check_output_dir`, then :func:`check_scale`)."""
    return check_output_dir(out_dir), sizes_for_scale(check_scale(scale))


@contextlib.contextmanager
def atomic_output(path: Path, text: bool = True) -> Iterator[IO]:
    """Open ``path + '.tmp'`` for writing (UTF-8, LF) and rename it to ``path`` only when the block succeeds."""
    tmp = path.with_name(path.name + ".tmp")
    mode = "w" if text else "wb"
    kwargs = {"encoding": "utf-8", "newline": ""} if text else {}
    try:
        with open(tmp, mode, **kwargs) as handle:
            yield handle
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


@dataclass
class Progress:
    """Writes ``[datagen] <what>: done/total rows`` to stderr about every ``every`` rows (only for large files)."""

    what: str
    total: int
    every: int = 1_000_000
    enabled: bool = True

    def __post_init__(self) -> None:
        self.done = 0
        self._next = self.every
        self._start = time.perf_counter()
        self.enabled = self.enabled and self.total >= self.every

    def add(self, rows: int) -> None:
        """Count ``rows`` more written rows and print a line when another ``every`` rows are done."""
        self.done += rows
        if self.enabled and (self.done >= self._next or self.done == self.total):
            elapsed = time.perf_counter() - self._start
            print(
                f"[datagen] {self.what}: {self.done:,}/{self.total:,} rows ({100.0 * self.done / self.total:.0f}%, "
                f"{elapsed:.0f} s)",
                file=sys.stderr,
                flush=True,
            )
            while self._next <= self.done:
                self._next += self.every


@dataclass
class FileReport:
    """What one generator wrote: file name, data rows (without header), bytes and seconds."""

    name: str
    rows: int
    bytes: int
    seconds: float

    def line(self) -> str:
        """One human-readable summary line."""
        return f"{self.name}: {self.rows:,} rows, {self.bytes:,} bytes, {self.seconds:.1f} s"


def csv_writer(handle: IO):
    """The one CSV dialect of all KKBOX files: comma, minimal quoting with doubled quotes, LF."""
    return csv.writer(handle, lineterminator="\n", quoting=csv.QUOTE_MINIMAL, doublequote=True)


def timed_write(path: Path, writer, *args, **kwargs) -> FileReport:
    """Run ``writer(handle, *args, **kwargs) -> rows`` inside :func:`atomic_output` and report what it wrote."""
    start = time.perf_counter()
    with atomic_output(path) as handle:
        rows = writer(handle, *args, **kwargs)
    return FileReport(path.name, int(rows), path.stat().st_size, time.perf_counter() - start)
