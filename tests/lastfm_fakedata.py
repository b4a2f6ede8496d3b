"""Tiny deterministic Last.fm 1K-format data for the feature-job tests (plays TSV + track-tags TSV)."""

from __future__ import annotations

import datetime as dt
import random
import uuid
from pathlib import Path

from musicrec.schemas import LASTFM_PLAYS_FILE, LASTFM_TAGS_FILE


def _mbid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def write_lastfm_dataset(folder: Path, *, users: int = 12, seed: int = 7, with_tags: bool = True,
                         bad_lines: bool = True) -> dict:
    """Write ``folder/<plays file>`` (and ``track-tags.tsv``): each user gets 3..10 sessions of 1..8 plays, with
    untracked plays, a few exact duplicates, quotes in names, and (``bad_lines``) two malformed lines.

    Returns facts the tests check: number of lines, malformed lines (1-based line numbers) and tracks.
    """
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    artists = [(_mbid(rng), f'Artist "{i}"' if i % 5 == 0 else f"Artist {i}") for i in range(15)]
    tracks = [(_mbid(rng), rng.randrange(len(artists)), f"Track {i}") for i in range(60)]
    lines: list[str] = []
    base = dt.datetime(2008, 1, 1)
    for u in range(users):
        user = f"user_{u + 1:06d}"
        t = base + dt.timedelta(days=rng.randrange(0, 200))
        n_sessions = rng.randrange(3, 11)
        rows = []
        for _ in range(n_sessions):
            for _ in range(rng.randrange(1, 9)):
                track_mbid, artist_i, track_name = tracks[rng.randrange(len(tracks))]
                artist_mbid, artist_name = artists[artist_i]
                if rng.random() < 0.1:
                    track_mbid = ""  # untracked play
                if rng.random() < 0.05:
                    artist_mbid = ""
                row = f"{user}\t{t:%Y-%m-%dT%H:%M:%SZ}\t{artist_mbid}\t{artist_name}\t{track_mbid}\t{track_name}"
                rows.append(row)
                if rng.random() < 0.05:
                    rows.append(row)  # exact duplicate
                t += dt.timedelta(seconds=rng.randrange(60, 1201))
            t += dt.timedelta(seconds=rng.randrange(1201, 86400 * 3))
        lines.extend(reversed(rows))  # Last.fm files are newest first within a user
    bad = []
    if bad_lines:
        lines.insert(5, "user_000001\tnot-a-time\tx\ty\tz\tw")
        lines.insert(17, "user_000002\t2008-01-01T00:00:00Z\tonly four")
        bad = [6, 18]
    (folder / LASTFM_PLAYS_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")
    if with_tags:
        tag_names = ["rock", "Pop", "jazz", "indie", "electronic", "80s", "female vocalists", "chill"]
        tag_lines = ["traid\ttag\tcount"]
        for i, (track_mbid, _, _) in enumerate(tracks):
            if i % 7 == 3:
                continue  # some songs have no tags
            for tag in rng.sample(tag_names, rng.randrange(1, 8)):
                tag_lines.append(f"{track_mbid}\t{tag}\t{rng.randrange(0, 101)}")
        bad_tag_lines = []
        if bad_lines:
            tag_lines.insert(3, f"{tracks[0][0]}\trock\tlots")  # count is not an integer
            bad_tag_lines = [4]
        (folder / LASTFM_TAGS_FILE).write_text("\n".join(tag_lines) + "\n", encoding="utf-8")
    return {"lines": len(lines), "bad_lines": bad, "bad_tag_lines": bad_tag_lines if with_tags else [],
            "tracks": [t[0] for t in tracks]}
