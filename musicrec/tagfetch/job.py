"""The run: read the plays' MBIDs, fetch every one not yet in the cache, then write the tags file from the cache."""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from musicrec.tagfetch.cache import TagCache, load_cached_mbids, write_tags_file
from musicrec.tagfetch.client import (
    DEFAULT_API_ROOT,
    FetchAborted,
    RateLimiter,
    TrackNotFound,
    fetch_with_retries,
    make_network,
)
from musicrec.tagfetch.plays import read_track_mbids


@dataclass
class FetchConfig:
    top_k: int = 20  # tags kept per track (Last.fm returns up to 100, most used first)
    max_rps: float = 5.0  # API requests per second (each track is 2 requests)
    limit: int | None = None  # fetch at most this many not-yet-cached tracks in this run (None: all)
    max_retries: int = 4  # retries of a track after a transient error, then it is left for the next run
    backoff_s: float = 1.0  # first retry delay; doubles per retry
    max_backoff_s: float = 60.0
    max_consecutive_failures: int = 10  # this many tracks in a row failing transiently aborts the run
    progress: bool = True  # tqdm bar on stderr


@dataclass
class FetchSummary:
    n_tracks: int = 0  # distinct track MBIDs in the plays file
    n_cached_before: int = 0  # of those, already in the cache when the run started
    n_fetched: int = 0  # fetched in this run (with or without tags)
    n_not_found: int = 0  # cached as not found in this run
    n_failed: int = 0  # transient errors left uncached in this run (a rerun retries them)
    n_remaining: int = 0  # still not in the cache after this run (failed + left out by --limit)
    n_requests: int = 0  # API requests sent in this run, retries included
    n_tag_rows: int = 0  # rows written to the tags file
    n_tracks_with_tags: int = 0
    seconds: float = 0.0
    scan: dict = field(default_factory=dict)


def fetch_tags(
    plays_path: Path | str,
    out_path: Path | str,
    cache_path: Path | str,
    api_key: str,
    api_root: str = DEFAULT_API_ROOT,
    config: FetchConfig | None = None,
    log: Callable[[str], None] | None = None,
) -> FetchSummary:
    """Fetch tags for every plays MBID not yet in the cache, then write the tags file from the cache.

    Raises :class:`FetchAborted` (cache kept, no tags file written) when the key is rejected or the API keeps
    failing; ``KeyboardInterrupt`` passes through with the cache intact.
    """
    config = config or FetchConfig()
    if config.top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {config.top_k}")
    log = log or _stderr_log
    started = time.monotonic()
    summary = FetchSummary()

    mbids, todo = _plan(plays_path, cache_path, config, summary, log)
    network = make_network(api_key, api_root)
    _fetch_into_cache(network, todo, cache_path, api_key, config, summary)

    summary.n_remaining = summary.n_tracks - summary.n_cached_before - summary.n_fetched
    summary.n_tracks_with_tags, summary.n_tag_rows = write_tags_file(cache_path, set(mbids), out_path, config.top_k)
    summary.seconds = round(time.monotonic() - started, 3)
    log(
        f"wrote {summary.n_tag_rows} tag rows for {summary.n_tracks_with_tags} tracks to {out_path}; "
        f"{summary.n_remaining} tracks not fetched yet"
        + (" (rerun to continue)" if summary.n_remaining else "")
    )
    return summary


def _plan(
    plays_path: Path | str, cache_path: Path | str, config: FetchConfig, summary: FetchSummary, log
) -> tuple[list[str], list[str]]:
    """All distinct MBIDs of the plays file and those to fetch in this run (not cached, at most ``config.limit``)."""
    mbids, scan = read_track_mbids(plays_path)
    summary.scan = asdict(scan)
    summary.n_tracks = len(mbids)
    cached = load_cached_mbids(cache_path)
    todo = [mbid for mbid in mbids if mbid not in cached]
    summary.n_cached_before = summary.n_tracks - len(todo)
    if config.limit is not None:
        todo = todo[: max(config.limit, 0)]
    log(
        f"{summary.n_tracks} distinct track MBIDs in {plays_path} ({scan.n_lines} lines, {scan.n_without_track_id} "
        f"without a track id, {scan.n_malformed} malformed); {summary.n_cached_before} already in {cache_path}; "
        f"fetching {len(todo)} at <= {config.max_rps:g} requests/s (2 per track)"
    )
    return mbids, todo


def _fetch_into_cache(
    network, todo: list[str], cache_path: Path | str, api_key: str, config: FetchConfig, summary: FetchSummary
) -> None:
    """Fetch each MBID of ``todo`` and append the outcome to the cache; aborts after too many failures in a row."""
    limiter = _CountingLimiter(RateLimiter(config.max_rps))
    bar = _progress_bar(config, total=summary.n_tracks, initial=summary.n_cached_before)
    consecutive_failures = 0
    try:
        with TagCache(cache_path) as cache:
            for mbid in todo:
                outcome = fetch_with_retries(network, mbid, config, limiter, api_key, bar)
                if outcome is None:
                    summary.n_failed += 1
                    consecutive_failures += 1
                    if consecutive_failures >= config.max_consecutive_failures:
                        raise FetchAborted(
                            f"{consecutive_failures} tracks in a row failed with transient errors; is the API "
                            f"reachable? The cache is kept: rerun later to continue"
                        )
                else:
                    consecutive_failures = 0
                    summary.n_fetched += 1
                    if outcome is TrackNotFound:
                        summary.n_not_found += 1
                        cache.add_not_found(mbid)
                    else:
                        cache.add_tags(mbid, outcome)
                bar.update(1)
                bar.set_postfix(not_found=summary.n_not_found, failed=summary.n_failed, refresh=False)
    finally:
        bar.close()
        summary.n_requests = limiter.count


class _CountingLimiter:
    """Wraps a limiter to count the requests it let through."""

    def __init__(self, limiter: RateLimiter) -> None:
        self._limiter = limiter
        self.count = 0

    def wait(self) -> None:
        self._limiter.wait()
        self.count += 1


def _progress_bar(config: FetchConfig, total: int, initial: int):
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=initial,
        unit="track",
        desc="fetch_tags",
        file=sys.stderr,
        disable=not config.progress,
        mininterval=1.0 if sys.stderr.isatty() else 30.0,  # a log file gets a line per 30 s, not per second
        smoothing=0.05,
    )


def _stderr_log(message: str) -> None:
    print(f"[fetch_tags] {message}", file=sys.stderr, flush=True)
