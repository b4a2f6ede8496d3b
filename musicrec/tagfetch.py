"""Fetch Last.fm top tags for the tracks of a Last.fm 1K plays file and write them as ``track-tags.tsv``.

The real Last.fm 1K dump has no tags; the seed analysis fetched them from the Last.fm API with pylast. This module
is that step, made safe to run for days against roughly a million track MBIDs:

* Input: the distinct non-empty track MBIDs of a plays TSV (streamed line by line, no header, 6 fields; see
  ``LASTFM_PLAYS_SCHEMA``), in order of first appearance.
* For each MBID: ``network.get_track_by_mbid(mbid)`` (HTTP ``track.getInfo``), then ``track.get_top_tags(limit=K)``
  (HTTP ``track.getTopTags`` by artist and title): two API requests per track. Every request waits on a
  :class:`RateLimiter` first (default 5 requests/s, Last.fm's published limit), so retries are paced too.
* Resumable: each finished track appends one JSON line to a cache file, flushed and fsynced, so a killed run
  loses at most the request in flight; a rerun skips every MBID already in the cache. A track Last.fm does not
  know (error 6) is cached as ``{"traid": .., "error": "not found"}`` and never asked again. Transient errors
  (network, HTTP 5xx, errors 8/11/16/29, malformed responses) are retried with exponential backoff a bounded
  number of times and then left out of the cache, so the next run asks again.
* Output: ``traid\\ttag\\tcount`` with a header (``LASTFM_TAGS_SCHEMA``), one row per (track, tag), tags of a track
  in descending count, at most K per track; written to a temporary file and renamed into place.

The API key is passed in by the caller (``jobs/fetch_tags.py`` reads it from ``LASTFM_API_KEY``). It is sent to the
API and nowhere else: never written to the cache or the output, and redacted from every message this module prints.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator
from urllib.parse import urlsplit

from musicrec.schemas import LASTFM_PLAYS_COLUMNS, LASTFM_TAGS_SCHEMA

API_KEY_ENV = "LASTFM_API_KEY"
DEFAULT_API_ROOT = "https://ws.audioscrobbler.com/2.0/"  # pylast's own ws_server for Last.fm
NOT_FOUND = "not found"

TRACK_ID_FIELD = LASTFM_PLAYS_COLUMNS.index("track_id")  # 4: MusicBrainz recording id, may be empty
N_PLAYS_FIELDS = len(LASTFM_PLAYS_COLUMNS)  # 6
TAGS_HEADER = "\t".join(f.name for f in LASTFM_TAGS_SCHEMA.fields)  # traid\ttag\tcount

# Last.fm error codes (https://www.last.fm/api/errorcodes); pylast's WSError.status is the code as a string
# (or the HTTP status as an int for 5xx responses), so everything is compared as strings.
NOT_FOUND_STATUSES = frozenset({"6"})  # "Track not found" / invalid parameters for this track
TRANSIENT_STATUSES = frozenset({"8", "11", "16", "29", "500", "502", "503", "504"})  # failed, offline, busy, rate
FATAL_STATUSES = frozenset({"4", "9", "10", "13", "14", "15", "26"})  # auth, invalid/suspended API key


class FetchAborted(RuntimeError):
    """The run cannot go on (bad or suspended API key, API unreachable for many tracks in a row); cache kept."""


class TrackNotFound(Exception):
    """Last.fm does not know this MBID (error 6)."""


# ----------------------------------------------------------------------------------------------------------------
# Input
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class PlaysScan:
    """What reading the plays file found (for the log)."""

    n_lines: int = 0
    n_malformed: int = 0  # lines with fewer than 6 tab-separated fields
    n_without_track_id: int = 0


def read_track_mbids(plays_path: Path | str) -> tuple[list[str], PlaysScan]:
    """The distinct non-empty track MBIDs of a Last.fm 1K plays TSV, in order of first appearance.

    Streams the file (it is 2.4 GB for the full dataset) with ``str.split`` rather than ``csv``: the names contain
    stray quote characters that a CSV reader would treat as quoting. Only one set of ids is held in memory.
    """
    scan = PlaysScan()
    seen: set[str] = set()
    mbids: list[str] = []
    with open(plays_path, encoding="utf-8", errors="replace", newline="") as plays:
        for line in plays:
            scan.n_lines += 1
            fields = line.rstrip("\r\n").split("\t")
            if len(fields) < N_PLAYS_FIELDS:
                scan.n_malformed += 1
                continue
            mbid = fields[TRACK_ID_FIELD].strip()
            if not mbid:
                scan.n_without_track_id += 1
            elif mbid not in seen:
                seen.add(mbid)
                mbids.append(mbid)
    return mbids, scan


# ----------------------------------------------------------------------------------------------------------------
# Cache: append-only JSON lines, one per finished track
# ----------------------------------------------------------------------------------------------------------------
def iter_cache(cache_path: Path | str) -> Iterator[dict]:
    """The cache's records in file order; a line cut short by a kill (not valid JSON) is skipped."""
    cache_path = Path(cache_path)
    if not cache_path.exists():
        return
    with open(cache_path, encoding="utf-8") as cache:
        for line in cache:
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(record, dict) and isinstance(record.get("traid"), str):
                yield record


def load_cached_mbids(cache_path: Path | str) -> set[str]:
    """MBIDs that need no request: fetched (with or without tags) or known to be missing on Last.fm."""
    return {record["traid"] for record in iter_cache(cache_path)}


class TagCache:
    """Appends one JSON line per track and flushes it to disk before the next request.

    If the file ends in a partial line (the previous run was killed mid-write), a newline is written first so the
    new records start on their own line; the partial one is skipped when reading.
    """

    def __init__(self, cache_path: Path | str) -> None:
        self.path = Path(cache_path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        needs_newline = self.path.exists() and self.path.stat().st_size > 0 and not _ends_with_newline(self.path)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())
        if needs_newline:
            self._file.write("\n")

    def add_tags(self, mbid: str, tags: list[list]) -> None:
        self._append({"traid": mbid, "tags": tags})

    def add_not_found(self, mbid: str) -> None:
        self._append({"traid": mbid, "error": NOT_FOUND})

    def _append(self, record: dict) -> None:
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> TagCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as f:
        f.seek(-1, os.SEEK_END)
        return f.read(1) == b"\n"


# ----------------------------------------------------------------------------------------------------------------
# Rate limiting
# ----------------------------------------------------------------------------------------------------------------
class RateLimiter:
    """At most ``max_rps`` calls per second: consecutive ``wait()`` returns are at least ``1 / max_rps`` apart.

    (A token bucket of capacity 1: no bursts, which is what Last.fm's "5 requests per second" asks for.)
    """

    def __init__(
        self,
        max_rps: float,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not max_rps > 0:
            raise ValueError(f"max_rps must be > 0, got {max_rps}")
        self.interval_s = 1.0 / max_rps
        self._clock = clock
        self._sleep = sleep
        self._next_at: float | None = None

    def wait(self) -> None:
        now = self._clock()
        if self._next_at is not None and now < self._next_at:
            self._sleep(self._next_at - now)
            now = self._clock()
        self._next_at = max(now, self._next_at or now) + self.interval_s


# ----------------------------------------------------------------------------------------------------------------
# pylast
# ----------------------------------------------------------------------------------------------------------------
def check_api_root(api_root: str):
    """``urlsplit(api_root)``; ValueError unless it is an absolute http(s) URL."""
    parts = urlsplit(api_root)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"the API root must be an http(s) URL such as {DEFAULT_API_ROOT}, got {api_root!r}")
    return parts


def make_network(api_key: str, api_root: str = DEFAULT_API_ROOT):
    """A ``pylast.LastFMNetwork`` whose requests go to ``api_root`` (for tests and mirrors).

    pylast builds each request URL as ``https://{ws_server[0]}{ws_server[1]}``, so ``ws_server`` takes the host
    (and port) and path of ``api_root``. pylast always uses https; for an ``http://`` root (a local test server)
    a transport is mounted for ``https://`` that sends the same request over plain http instead. pylast's own
    rate limiting and caching stay off: :class:`RateLimiter` paces requests and the JSON-lines cache resumes.
    """
    import pylast

    parts = check_api_root(api_root)
    network = pylast.LastFMNetwork(api_key=api_key)
    network.ws_server = (parts.netloc, parts.path or "/")
    if parts.scheme == "http":
        network.proxy = {"https://": _plain_http_transport(pylast)}
    return network


def _plain_http_transport(pylast_module):
    """An httpx transport that rewrites https:// requests to http:// (the HTTP client is the one pylast uses)."""
    httpx = pylast_module.httpx  # pylast 7 imports httpx2 under this name; earlier versions import httpx

    class PlainHTTPTransport(httpx.BaseTransport):
        def __init__(self) -> None:
            self._inner = httpx.HTTPTransport()

        def handle_request(self, request):
            request.url = request.url.copy_with(scheme="http")
            return self._inner.handle_request(request)

        def close(self) -> None:
            # pylast opens and closes a client per request, which closes mounted transports; keep ours reusable.
            pass

    return PlainHTTPTransport()


def fetch_track_tags(network, mbid: str, top_k: int, limiter: RateLimiter) -> list[list]:
    """``[[tag, count], ...]`` for one MBID (at most ``top_k``, Last.fm's order: descending count).

    Raises :class:`TrackNotFound` for an MBID Last.fm does not know, pylast's errors otherwise.
    """
    import pylast

    try:
        limiter.wait()
        track = network.get_track_by_mbid(mbid)  # HTTP track.getInfo?mbid=
        if not track.get_title() or not track.get_artist() or not track.get_artist().get_name():
            raise TrackNotFound(mbid)
        limiter.wait()
        top_tags = track.get_top_tags(limit=top_k)  # HTTP track.getTopTags?artist=&track=
    except pylast.WSError as exc:
        if str(exc.status) in NOT_FOUND_STATUSES:
            raise TrackNotFound(mbid) from exc
        raise
    return [[top.item.get_name(), _tag_count(top.weight)] for top in top_tags if top.item.get_name()]


def _tag_count(weight) -> int:
    """pylast hands the count over as the XML text ("100"); Last.fm's counts are integers 0..100."""
    try:
        return int(float(weight))
    except (TypeError, ValueError):
        return 0


def _is_transient(exc: Exception) -> bool:
    import pylast

    if isinstance(exc, pylast.WSError):
        return str(exc.status) in TRANSIENT_STATUSES
    return isinstance(exc, (pylast.NetworkError, pylast.MalformedResponseError))


def _is_fatal(exc: Exception) -> bool:
    import pylast

    return isinstance(exc, pylast.WSError) and str(exc.status) in FATAL_STATUSES


def redact(text: str, secret: str) -> str:
    """``text`` with every occurrence of ``secret`` replaced (for messages built from exceptions)."""
    return text.replace(secret, "***") if secret else text


# ----------------------------------------------------------------------------------------------------------------
# The job
# ----------------------------------------------------------------------------------------------------------------
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

    network = make_network(api_key, api_root)
    limiter = _CountingLimiter(RateLimiter(config.max_rps))
    bar = _progress_bar(config, total=summary.n_tracks, initial=summary.n_cached_before)
    consecutive_failures = 0
    try:
        with TagCache(cache_path) as cache:
            for mbid in todo:
                outcome = _fetch_one(network, mbid, config, limiter, api_key, bar)
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

    summary.n_remaining = summary.n_tracks - summary.n_cached_before - summary.n_fetched
    summary.n_tracks_with_tags, summary.n_tag_rows = write_tags_file(cache_path, set(mbids), out_path, config.top_k)
    summary.seconds = round(time.monotonic() - started, 3)
    log(
        f"wrote {summary.n_tag_rows} tag rows for {summary.n_tracks_with_tags} tracks to {out_path}; "
        f"{summary.n_remaining} tracks not fetched yet"
        + (" (rerun to continue)" if summary.n_remaining else "")
    )
    return summary


def _fetch_one(network, mbid: str, config: FetchConfig, limiter, api_key: str, bar):
    """Tags list, ``TrackNotFound`` (the class) for a missing track, or None after exhausting the retries."""
    delay_s = config.backoff_s
    for attempt in range(config.max_retries + 1):
        try:
            return fetch_track_tags(network, mbid, config.top_k, limiter)
        except TrackNotFound:
            return TrackNotFound
        except Exception as exc:  # pylast's errors; anything else is a bug and propagates below
            if _is_fatal(exc):
                raise FetchAborted(f"Last.fm rejected the request: {redact(str(exc), api_key)}") from None
            if not _is_transient(exc):
                if _is_pylast_error(exc):
                    bar.write(f"[fetch_tags] {mbid}: {_describe(exc, api_key)}; left for the next run", sys.stderr)
                    return None
                raise
            if attempt == config.max_retries:
                bar.write(
                    f"[fetch_tags] {mbid}: {_describe(exc, api_key)}; gave up after {attempt + 1} tries, "
                    f"left for the next run",
                    sys.stderr,
                )
                return None
            time.sleep(min(delay_s, config.max_backoff_s))
            delay_s *= 2
    return None


def _is_pylast_error(exc: Exception) -> bool:
    import pylast

    return isinstance(exc, pylast.PyLastError)


def _describe(exc: Exception, api_key: str) -> str:
    text = str(exc)
    if not text.startswith(type(exc).__name__):
        text = f"{type(exc).__name__}: {text}"
    status = getattr(exc, "status", None)
    return redact(f"error {status}: {text}" if status is not None else text, api_key)


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


# ----------------------------------------------------------------------------------------------------------------
# Output
# ----------------------------------------------------------------------------------------------------------------
def clean_tag_name(name: str) -> str:
    """Tab, newline and carriage return would break the TSV: replaced by spaces; ends stripped."""
    return re.sub(r"[\t\r\n]", " ", name).strip()


def write_tags_file(
    cache_path: Path | str, mbids: set[str], out_path: Path | str, top_k: int
) -> tuple[int, int]:
    """Write ``traid\\ttag\\tcount`` rows for the cached tracks in ``mbids`` atomically; returns (tracks, rows).

    Tracks appear in cache order (the first record of an MBID wins); a track's tags in descending count (ties in
    Last.fm's order), at most ``top_k``. Not-found tracks and tracks without tags have no rows.
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{out_path.name}.", suffix=".tmp", dir=out_path.parent)
    n_tracks = n_rows = 0
    written: set[str] = set()
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as out:
            out.write(TAGS_HEADER + "\n")
            for record in iter_cache(cache_path):
                mbid = record["traid"]
                if mbid not in mbids or mbid in written or not isinstance(record.get("tags"), list):
                    continue
                written.add(mbid)
                tags = [(clean_tag_name(str(name)), _tag_count(count)) for name, count in record["tags"]]
                tags = sorted((t for t in tags if t[0]), key=lambda t: -t[1])[:top_k]
                for name, count in tags:
                    out.write(f"{mbid}\t{name}\t{count}\n")
                n_rows += len(tags)
                n_tracks += bool(tags)
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, out_path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    return n_tracks, n_rows
