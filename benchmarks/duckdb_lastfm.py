"""DuckDB reference for the core of the Last.fm 1K feature job: read, drop untracked, dedup, sessionize, write.

    python benchmarks/duckdb_lastfm.py --input PLAYS.tsv --output OUT_DIR [--threads 2] [--gap-seconds 1200]

Same rules as ``musicrec.features.lastfm``: six tab-separated fields, no quoting; rows without a track MBID are
dropped; exact duplicates (user, timestamp, track MBID) are dropped; per user in time order, a gap of MORE than
``gap_seconds`` starts a new session. Writes one row per session (user, session number, start, end, plays, track
ids in order) to ``OUT_DIR/sessions.parquet`` and prints a JSON summary (sessions before and after the
6-sessions-per-user filter), which ``bench_lastfm.py`` compares with the Spark job's stats.
It is the single-machine yardstick, not a second implementation to maintain: no rejects, tags, vocabularies.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import duckdb

CORE_SQL = """
CREATE OR REPLACE TEMP TABLE sessions AS
WITH raw AS (
    SELECT * FROM read_csv(
        $path, delim = '\t', header = false, quote = '', escape = '', auto_detect = false, null_padding = false,
        columns = {'user_id': 'VARCHAR', 'ts': 'VARCHAR', 'artist_id': 'VARCHAR', 'artist_name': 'VARCHAR',
                   'track_id': 'VARCHAR', 'track_name': 'VARCHAR'},
        ignore_errors = true)
),
tracked AS (
    SELECT user_id, try_strptime(ts, '%Y-%m-%dT%H:%M:%SZ') AS ts, track_id
    FROM raw
    WHERE track_id IS NOT NULL AND track_id <> ''
),
dedup AS (
    SELECT DISTINCT user_id, ts, track_id FROM tracked WHERE ts IS NOT NULL AND user_id IS NOT NULL
),
flagged AS (
    SELECT *,
        CASE WHEN lag(ts) OVER w IS NULL OR epoch(ts) - epoch(lag(ts) OVER w) > $gap THEN 1 ELSE 0 END AS is_new
    FROM dedup
    WINDOW w AS (PARTITION BY user_id ORDER BY ts, track_id)
),
numbered AS (
    SELECT *, sum(is_new) OVER (PARTITION BY user_id ORDER BY ts, track_id ROWS UNBOUNDED PRECEDING) AS session_seq
    FROM flagged
)
SELECT user_id, session_seq, min(ts) AS start_ts, max(ts) AS end_ts, count(*) AS plays,
       list(track_id ORDER BY ts, track_id) AS track_ids
FROM numbered
GROUP BY user_id, session_seq
"""


def run(input_path: Path, output_dir: Path, *, threads: int = 2, gap_seconds: int = 1200,
        min_sessions: int = 6, memory_limit: str | None = None) -> dict:
    """Run the core steps; return timings and counts."""
    output_dir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    con = duckdb.connect()
    con.execute(f"SET threads = {int(threads)}")
    if memory_limit:
        con.execute(f"SET memory_limit = '{memory_limit}'")
    con.execute("SET preserve_insertion_order = false")
    con.execute(CORE_SQL, {"path": str(input_path), "gap": int(gap_seconds)})
    sessionized = time.time()
    out_file = output_dir / "sessions.parquet"
    con.execute(f"COPY (SELECT * FROM sessions ORDER BY user_id, session_seq) TO '{out_file}' (FORMAT parquet)")
    written = time.time()
    sessions, plays = con.execute("SELECT count(*), sum(plays) FROM sessions").fetchone()
    kept_sessions, kept_plays, kept_users = con.execute(
        """SELECT count(*), sum(plays), count(DISTINCT user_id) FROM sessions
           WHERE user_id IN (SELECT user_id FROM sessions GROUP BY user_id HAVING count(*) >= $m)""",
        {"m": int(min_sessions)},
    ).fetchone()
    return {
        "engine": f"duckdb {duckdb.__version__}",
        "threads": threads,
        "sessions": int(sessions),
        "deduplicated_plays": int(plays or 0),
        "sessions_after_user_filter": int(kept_sessions),
        "plays_after_user_filter": int(kept_plays or 0),
        "users_after_user_filter": int(kept_users),
        "seconds_sessionize": round(sessionized - started, 2),
        "seconds_write": round(written - sessionized, 2),
        "seconds": round(written - started, 2),
        "output": str(out_file),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--input", required=True, type=Path, help="the plays TSV")
    parser.add_argument("--output", required=True, type=Path, help="output folder")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--gap-seconds", type=int, default=1200)
    parser.add_argument("--min-sessions", type=int, default=6)
    parser.add_argument("--memory-limit", default=None, help="e.g. 8GB (DuckDB's default: 80%% of RAM)")
    args = parser.parse_args(argv)
    if not args.input.is_file():
        print(f"duckdb_lastfm.py: error: file {args.input} not found", file=sys.stderr)
        return 2
    summary = run(args.input, args.output, threads=args.threads, gap_seconds=args.gap_seconds,
                  min_sessions=args.min_sessions, memory_limit=args.memory_limit)
    print(json.dumps(summary, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
