"""The resumable store: an append-only JSON-lines cache (one line per finished track) and the tags file built from it.

Each record is flushed and fsynced before the next request, so a killed run loses at most the request in flight; a
line cut short by a kill is skipped when reading. The tags file is written to a temporary file and renamed into
place.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator

from musicrec.schemas import LASTFM_TAGS_SCHEMA
from musicrec.tagfetch.client import tag_count

NOT_FOUND = "not found"
TAGS_HEADER = "\t".join(f.name for f in LASTFM_TAGS_SCHEMA.fields)  # traid\ttag\tcount


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
                tags = [(clean_tag_name(str(name)), tag_count(count)) for name, count in record["tags"]]
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
