"""Fetch Last.fm top tags for the tracks of a Last.fm 1K plays file (the real dump has no tags).

    LASTFM_API_KEY=... python jobs/fetch_tags.py --plays userid-timestamp-artid-artname-traid-traname.tsv \\
        --out data/lastfm/track-tags.tsv [--cache PATH] [--top-k 20] [--max-rps 5] [--limit N] [--api-root URL]

Resumable: finished tracks go to a JSON-lines cache (default ``<out>.cache.jsonl``), one line each, so a killed or
interrupted run continues where it stopped when rerun with the same --cache. The logic lives in
``musicrec.tagfetch``; the arguments, the API key (read from the environment) and the exit statuses are
``musicrec.tagfetch.cli`` (``main``).
"""

from __future__ import annotations

import sys

from musicrec.tagfetch.cli import main

if __name__ == "__main__":
    sys.exit(main())
