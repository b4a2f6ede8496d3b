"""MovieLens 100K ratings written as a Last.fm 1K play log, so the Last.fm feature job and the session models can be
judged on real data that nobody here made (issue 13; the MovieLens figures of the NCF and SASRec papers use it).

    python -m musicrec.movielens --input ../shared/data/movielens-100k --out work/raw/movielens

Reads ``u.data`` (user, item, rating, unix time; tab separated), ``u.item`` (``|``-separated, latin-1: id, title,
dates, URL, 19 genre flags) and ``u.genre`` (``name|index``). Writes, in the formats of ``musicrec.schemas``:

- ``userid-timestamp-artid-artname-traid-traname.tsv``: one play per rating (every rating counts, as in the NCF
  paper's implicit-feedback protocol), ``user_000196`` style ids, ISO-8601 UTC timestamps, an empty artist id and
  name (movies have none), a stable MBID-like track id per movie (``uuid5`` of the movie id) and the title; rows in
  (user, time, movie) order.
- ``track-tags.tsv``: ``traid, tag, count`` with the movie's genres as tags (count 100 each; ``unknown`` is skipped).

Rows that do not parse stop the conversion with the file and line (the inputs are a fixed public dataset).
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import sys
import uuid
from pathlib import Path

from musicrec.schemas import LASTFM_PLAYS_FILE, LASTFM_TAGS_FILE

RATINGS_FILE, ITEMS_FILE, GENRES_FILE = "u.data", "u.item", "u.genre"
_NAMESPACE = uuid.UUID("6f2c1d8e-6a55-4d1b-9f61-3b8c8f0a7a10")  # fixed: the same track id on every run
GENRE_TAG_COUNT = 100


class ConversionError(ValueError):
    """A MovieLens file that is missing or does not parse; the message names the file and the line."""


def track_id(movie_id: int) -> str:
    """The MBID-like track id of a movie (stable across runs and machines)."""
    return str(uuid.uuid5(_NAMESPACE, f"movielens-100k/item/{movie_id}"))


def read_ratings(path: Path) -> list[tuple[int, int, int]]:
    """(user, item, unix time) per rating, in file order."""
    rows = []
    for line_no, line in enumerate(_lines(path, "utf-8"), start=1):
        fields = line.split("\t")
        try:
            user, item, _rating, ts = (int(f) for f in fields)
        except ValueError:
            raise ConversionError(f"{path} line {line_no}: expected 4 tab-separated integers, got {line!r}") from None
        rows.append((user, item, ts))
    return rows


def read_items(path: Path, genre_names: list[str]) -> dict[int, tuple[str, list[str]]]:
    """movie id -> (title, genre names), from ``u.item`` (latin-1, ``|`` separated, 19 genre flags at the end)."""
    items = {}
    for line_no, line in enumerate(_lines(path, "latin-1"), start=1):
        fields = line.split("|")
        flags = fields[-len(genre_names):]
        if len(fields) < 5 + len(genre_names) or not fields[0].isdigit() or set(flags) - {"0", "1"}:
            raise ConversionError(f"{path} line {line_no}: expected id|title|...|{len(genre_names)} genre flags")
        genres = [name for name, flag in zip(genre_names, flags) if flag == "1" and name != "unknown"]
        items[int(fields[0])] = (fields[1], genres)
    return items


def read_genres(path: Path) -> list[str]:
    """Genre names in index order, from ``u.genre`` (``name|index``; a trailing empty line is allowed)."""
    by_index = {}
    for line_no, line in enumerate(_lines(path, "latin-1"), start=1):
        name, _, index = line.partition("|")
        if not index.isdigit():
            raise ConversionError(f"{path} line {line_no}: expected name|index, got {line!r}")
        by_index[int(index)] = name
    return [by_index[i] for i in sorted(by_index)]


def convert(input_dir: Path, out_dir: Path) -> dict[str, int]:
    """Write the Last.fm-format play log and tags file of MovieLens 100K; returns the row counts."""
    input_dir, out_dir = Path(input_dir), Path(out_dir)
    genres = read_genres(_required(input_dir, GENRES_FILE))
    items = read_items(_required(input_dir, ITEMS_FILE), genres)
    ratings = read_ratings(_required(input_dir, RATINGS_FILE))
    unknown = sorted({item for _, item, _ in ratings} - set(items))
    if unknown:
        raise ConversionError(f"{input_dir / RATINGS_FILE}: movie ids not in {ITEMS_FILE}: {unknown[:5]}")
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / LASTFM_PLAYS_FILE, "w", encoding="utf-8", newline="") as handle:
        for user, item, ts in sorted(ratings, key=lambda r: (r[0], r[2], r[1])):
            when = dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
            title = items[item][0].replace("\t", " ")
            handle.write(f"user_{user:06d}\t{when}\t\t\t{track_id(item)}\t{title}\n")
    tag_rows = 0
    with open(out_dir / LASTFM_TAGS_FILE, "w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, delimiter="\t", lineterminator="\n")
        writer.writerow(["traid", "tag", "count"])
        for item in sorted(items):
            for genre in items[item][1]:
                writer.writerow([track_id(item), genre.lower(), GENRE_TAG_COUNT])
                tag_rows += 1
    return {"plays": len(ratings), "users": len({u for u, _, _ in ratings}), "movies": len(items), "tags": tag_rows}


def _required(folder: Path, name: str) -> Path:
    path = folder / name
    if not path.is_file():
        raise ConversionError(f"file {path} not found (expected the MovieLens 100K folder with {name})")
    return path


def _lines(path: Path, encoding: str):
    with open(path, encoding=encoding, newline="") as handle:
        for line in handle:
            line = line.rstrip("\r\n")
            if line:
                yield line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m musicrec.movielens", description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True, type=Path, help="the MovieLens 100K folder (u.data, u.item, u.genre)")
    parser.add_argument("--out", required=True, type=Path, help="output folder for the Last.fm-format files")
    args = parser.parse_args(argv)
    try:
        counts = convert(args.input, args.out)
    except ConversionError as exc:
        print(f"movielens: error: {exc}", file=sys.stderr)
        return 2
    print(f"[movielens] {counts['plays']:,} plays of {counts['users']:,} users on {counts['movies']:,} movies, "
          f"{counts['tags']:,} genre tags -> {args.out}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
