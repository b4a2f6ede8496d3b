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

The API key is passed in by the caller (``cli.main``, i.e. ``jobs/fetch_tags.py``, reads it from ``LASTFM_API_KEY``).
It is sent to the API and nowhere else: never written to the cache or the output, and redacted from every message
this package prints.

Modules: ``plays`` (the input MBIDs), ``client`` (pylast, the rate limiter, errors and retries), ``cache`` (the
JSON-lines cache and the tags file written from it), ``job`` (:func:`fetch_tags`, the run) and ``cli`` (the command
line of ``jobs/fetch_tags.py``: arguments, API key, exit statuses).
"""

from musicrec.tagfetch.cache import (
    NOT_FOUND,
    TAGS_HEADER,
    TagCache,
    clean_tag_name,
    iter_cache,
    load_cached_mbids,
    write_tags_file,
)
from musicrec.tagfetch.client import (
    API_KEY_ENV,
    DEFAULT_API_ROOT,
    FATAL_STATUSES,
    NOT_FOUND_STATUSES,
    TRANSIENT_STATUSES,
    FetchAborted,
    RateLimiter,
    TrackNotFound,
    check_api_root,
    cleartext_warning,
    fetch_track_tags,
    make_network,
    redact,
)
from musicrec.tagfetch.job import FetchConfig, FetchSummary, fetch_tags
from musicrec.tagfetch.plays import N_PLAYS_FIELDS, TRACK_ID_FIELD, PlaysScan, read_track_mbids

__all__ = [
    "API_KEY_ENV",
    "DEFAULT_API_ROOT",
    "FATAL_STATUSES",
    "N_PLAYS_FIELDS",
    "NOT_FOUND",
    "NOT_FOUND_STATUSES",
    "TAGS_HEADER",
    "TRACK_ID_FIELD",
    "TRANSIENT_STATUSES",
    "FetchAborted",
    "FetchConfig",
    "FetchSummary",
    "PlaysScan",
    "RateLimiter",
    "TagCache",
    "TrackNotFound",
    "check_api_root",
    "cleartext_warning",
    "clean_tag_name",
    "fetch_tags",
    "fetch_track_tags",
    "iter_cache",
    "load_cached_mbids",
    "make_network",
    "read_track_mbids",
    "redact",
    "write_tags_file",
]
