"""The command line of ``jobs/fetch_tags.py``: its arguments (``build_parser``) and ``main(argv)``, which checks them,
reads the API key from ``LASTFM_API_KEY``, prints the settings (never the key), runs :func:`fetch_tags` and returns
the exit status: 0 done, 1 some tracks failed or the run was aborted, 2 bad usage or input, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

from musicrec.tagfetch.client import (
    API_KEY_ENV, DEFAULT_API_ROOT, FetchAborted, check_api_root, cleartext_warning, redact,
)
from musicrec.tagfetch.job import FetchConfig, fetch_tags


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fetch_tags.py",
        description=(
            "Fetch each track's Last.fm top tags (track.getInfo by MBID, then track.getTopTags) for the distinct "
            "track MBIDs of a Last.fm 1K plays file, and write them as a 'traid<TAB>tag<TAB>count' file."
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=(
            f"The API key is read from the environment variable {API_KEY_ENV} (there is no flag for it).\n"
            "Exit codes: 0 done (every track cached, or --limit reached); 1 some tracks failed and stay uncached,\n"
            "or the run was aborted (rejected key, API unreachable); 2 bad usage or input; 130 interrupted.\n"
            "Rerun with the same --cache to continue; tracks Last.fm does not know are not asked again."
        ),
    )
    parser.add_argument("--plays", required=True, type=Path, help="Last.fm 1K plays TSV (no header, 6 fields)")
    parser.add_argument("--out", required=True, type=Path, help="tags TSV to write (replaced atomically)")
    parser.add_argument(
        "--cache", type=Path, default=None, help="JSON-lines cache to resume from (default: <out>.cache.jsonl)"
    )
    parser.add_argument("--top-k", type=int, default=20, help="tags kept per track, most used first (default 20)")
    parser.add_argument(
        "--max-rps", type=float, default=5.0, help="API requests per second, 2 per track (default 5, Last.fm's limit)"
    )
    parser.add_argument("--limit", type=int, default=None, help="fetch at most N not-yet-cached tracks this run")
    parser.add_argument("--retries", type=int, default=4, help="retries per track on transient errors (default 4)")
    parser.add_argument(
        "--api-root", default=DEFAULT_API_ROOT,
        help=f"web service root (default {DEFAULT_API_ROOT}; for mirrors/tests; plain http to another machine sends "
             "the API key unencrypted: a warning says so)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    api_key = os.environ.get(API_KEY_ENV, "").strip()
    if not api_key:
        print(
            f"fetch_tags.py: error: set the environment variable {API_KEY_ENV} to your Last.fm API key "
            "(https://www.last.fm/api/account/create)",
            file=sys.stderr,
        )
        return 2
    if not args.plays.is_file():
        print(f"fetch_tags.py: error: plays file not found: {args.plays}", file=sys.stderr)
        return 2
    if args.top_k < 1 or args.max_rps <= 0 or args.retries < 0 or (args.limit is not None and args.limit < 0):
        parser.print_usage(sys.stderr)
        print("fetch_tags.py: error: --top-k >= 1, --max-rps > 0, --retries >= 0 and --limit >= 0", file=sys.stderr)
        return 2
    try:
        check_api_root(args.api_root)
    except ValueError as exc:
        print(f"fetch_tags.py: error: --api-root: {exc}", file=sys.stderr)
        return 2
    warning = cleartext_warning(args.api_root)
    if warning:
        print(f"fetch_tags.py: warning: {warning}", file=sys.stderr, flush=True)
    cache = args.cache or args.out.with_name(args.out.name + ".cache.jsonl")
    config = FetchConfig(
        top_k=args.top_k,
        max_rps=args.max_rps,
        limit=args.limit,
        max_retries=args.retries,
        progress=not args.no_progress,
    )
    settings = {k: str(v) for k, v in vars(args).items()} | {"cache": str(cache)}  # no key among them
    print(f"[fetch_tags] settings: {json.dumps(settings, sort_keys=True)}", flush=True)

    try:
        summary = fetch_tags(args.plays, args.out, cache, api_key, api_root=args.api_root, config=config)
    except FetchAborted as exc:
        print(f"fetch_tags.py: error: {redact(str(exc), api_key)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"fetch_tags.py: interrupted; finished tracks are in {cache}, rerun to continue", file=sys.stderr)
        return 130
    print(json.dumps(asdict(summary), indent=2, sort_keys=True), flush=True)
    return 1 if summary.n_failed else 0
