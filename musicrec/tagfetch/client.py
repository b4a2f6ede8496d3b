"""The Last.fm API through pylast: the network, the rate limiter, one track's top tags, errors and retries.

Every request waits on a :class:`RateLimiter` first, so retries are paced too. Transient errors are retried with
exponential backoff a bounded number of times; a rejected API key aborts the run; the API key is redacted from every
message built from an exception.
"""

from __future__ import annotations

import ipaddress
import sys
import time
from typing import TYPE_CHECKING, Callable
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from musicrec.tagfetch.job import FetchConfig

API_KEY_ENV = "LASTFM_API_KEY"
DEFAULT_API_ROOT = "https://ws.audioscrobbler.com/2.0/"  # pylast's own ws_server for Last.fm

# Last.fm error codes (https://www.last.fm/api/errorcodes); pylast's WSError.status is the code as a string
# (or the HTTP status as an int for 5xx responses), so everything is compared as strings.
NOT_FOUND_STATUSES = frozenset({"6"})  # "Track not found" / invalid parameters for this track
TRANSIENT_STATUSES = frozenset({"8", "11", "16", "29", "500", "502", "503", "504"})  # failed, offline, busy, rate
FATAL_STATUSES = frozenset({"4", "9", "10", "13", "14", "15", "26"})  # auth, invalid/suspended API key


class FetchAborted(RuntimeError):
    """The run cannot go on (bad or suspended API key, API unreachable for many tracks in a row); cache kept."""


class TrackNotFound(Exception):
    """Last.fm does not know this MBID (error 6)."""


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


def check_api_root(api_root: str):
    """``urlsplit(api_root)``; ValueError unless it is an absolute http(s) URL."""
    parts = urlsplit(api_root)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"the API root must be an http(s) URL such as {DEFAULT_API_ROOT}, got {api_root!r}")
    return parts


def cleartext_warning(api_root: str) -> str | None:
    """The warning for an ``http://`` API root on another machine: every request carries the API key, and plain
    http sends it readable to anyone on the way. None for https and for loopback (a local test server)."""
    parts = check_api_root(api_root)
    if parts.scheme != "http":
        return None
    host = parts.hostname or ""
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        if host == "localhost":
            return None
    return (f"--api-root {api_root} is plain http: the API key in every request crosses the network unencrypted; "
            "use an https:// root")


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
    return [[top.item.get_name(), tag_count(top.weight)] for top in top_tags if top.item.get_name()]


def tag_count(weight) -> int:
    """pylast hands the count over as the XML text ("100"); Last.fm's counts are integers 0..100."""
    try:
        return int(float(weight))
    except (TypeError, ValueError):
        return 0


def fetch_with_retries(network, mbid: str, config: FetchConfig, limiter, api_key: str, bar):
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


def _is_transient(exc: Exception) -> bool:
    import pylast

    if isinstance(exc, pylast.WSError):
        return str(exc.status) in TRANSIENT_STATUSES
    return isinstance(exc, (pylast.NetworkError, pylast.MalformedResponseError))


def _is_fatal(exc: Exception) -> bool:
    import pylast

    return isinstance(exc, pylast.WSError) and str(exc.status) in FATAL_STATUSES


def _is_pylast_error(exc: Exception) -> bool:
    import pylast

    return isinstance(exc, pylast.PyLastError)


def redact(text: str, secret: str) -> str:
    """``text`` with every occurrence of ``secret`` replaced (for messages built from exceptions)."""
    return text.replace(secret, "***") if secret else text


def _describe(exc: Exception, api_key: str) -> str:
    text = str(exc)
    if not text.startswith(type(exc).__name__):
        text = f"{type(exc).__name__}: {text}"
    status = getattr(exc, "status", None)
    return redact(f"error {status}: {text}" if status is not None else text, api_key)
