"""The plays file: each user's sessions walked along the theme rings, timestamped, in the real file's row order.

One chunk of whole users (about ``CHUNK_ROWS`` rows) at a time: session lengths, the walk with favourites of the
package docstring (``walk_sessions``), session start times, duplicate scrobbles, then the tab-separated lines.
"""

from __future__ import annotations

from typing import TextIO

import numpy as np

from musicrec.datagen import Progress, make_rng, zipf_ranks
from musicrec.datagen.lastfm.catalog import THEMES, ZIPF_EXPONENT, Catalog
from musicrec.datagen.lastfm.sizes import DAY_S, END_TS
from musicrec.datagen.lastfm.users import ROTATION, Users
from musicrec.schemas import LASTFM_PLAYS_FILE

CHUNK_ROWS = 250_000  # users are grouped into chunks of about this many rows (a heavy user is a chunk alone)

# Session and transition parameters (see the package docstring).
P_NEXT, P_NEAR, P_FAV = 0.40, 0.15, 0.40  # remaining 0.05: a popular track of another theme
NEAR_MAX = 6
MAX_SESSION_LEN = 200
MIN_SESSION_GAP_S = 21 * 60
P_SKIP = 0.06


def user_chunks(quota: np.ndarray, chunk_rows: int = CHUNK_ROWS) -> list[tuple[int, int]]:
    """Consecutive user ranges ``[lo, hi)`` of about ``chunk_rows`` rows: fixed by the quotas, never by timing."""
    bounds, lo, rows = [], 0, 0
    for i, q in enumerate(quota.tolist()):
        rows += q
        if rows >= chunk_rows:
            bounds.append((lo, i + 1))
            lo, rows = i + 1, 0
    if lo < len(quota):
        bounds.append((lo, len(quota)))
    return bounds


def session_lengths(rng: np.random.Generator, rows: int, mean: float, is_light: bool) -> np.ndarray:
    """Lengths of one user's sessions, summing to ``rows``: 1-5 sessions for a light user, else lognormal lengths."""
    if is_light:
        n = int(rng.integers(1, min(5, rows) + 1))
        cuts = np.sort(rng.choice(np.arange(1, rows), size=n - 1, replace=False)) if n > 1 else np.array([], int)
        return np.diff(np.concatenate([[0], cuts, [rows]])).astype(np.int64)
    parts, total = [], 0
    while total < rows:
        draw = 1 + np.minimum(rng.lognormal(np.log(mean), 0.75, size=int(rows / mean * 1.3) + 8).astype(np.int64),
                              MAX_SESSION_LEN - 1)
        parts.append(draw)
        total += int(draw.sum())
    lengths = np.concatenate(parts)
    cum = np.cumsum(lengths)
    n = int(np.searchsorted(cum, rows)) + 1
    lengths = lengths[:n].copy()
    lengths[-1] -= int(cum[n - 1]) - rows
    return lengths


def draw_popular(catalog: Catalog, theme: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A Zipf-popular track of each given theme."""
    rank = zipf_ranks(rng.random(len(theme)), catalog.theme_size[theme], ZIPF_EXPONENT)
    return catalog.pop_order[catalog.theme_start[theme] + rank]


def walk_sessions(
    catalog: Catalog, sess_rotation: np.ndarray, sess_len: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Tracks of all sessions (flat, session after session): the ring walk with favourites of the package docstring.

    Vectorized over sessions: step t updates every session longer than t (sessions sorted by length, so those are
    a prefix).
    """
    offsets = np.cumsum(sess_len) - sess_len
    order = np.argsort(-sess_len, kind="stable")
    neg_len = -sess_len[order]
    base, rotation = offsets[order], sess_rotation[order]  # (S,), (S, ROTATION)
    tracks = np.empty(int(sess_len.sum()), dtype=np.int64)

    # each session starts at a random favourite and goes through the rotation in order, one favourite per jump
    fav = rng.integers(0, ROTATION, size=len(order))  # (S,) position in the rotation
    cur = rotation[np.arange(len(order)), fav]
    tracks[base] = cur
    for t in range(1, int(sess_len.max(initial=0))):
        n = int(np.searchsorted(neg_len, -t, side="left"))  # sessions with length > t
        c = cur[:n]
        r = rng.random(n)
        ct = catalog.track_theme[c]
        step = np.where(r < P_NEXT, 1, rng.integers(1, NEAR_MAX + 1, size=n) * rng.choice([-1, 1], size=n))
        ring = catalog.theme_start[ct] + (c - catalog.theme_start[ct] + step) % catalog.theme_size[ct]
        elsewhere = rng.choice(len(THEMES), size=n, p=catalog.theme_weight)
        to_fav = (r >= P_NEXT + P_NEAR) & (r < P_NEXT + P_NEAR + P_FAV)
        fav[:n] = np.where(to_fav, (fav[:n] + 1) % ROTATION, fav[:n])
        jump = np.where(to_fav, rotation[np.arange(n), fav[:n]], draw_popular(catalog, elsewhere, rng))
        cur = np.where(r < P_NEXT + P_NEAR, ring, jump)
        tracks[base[:n] + t] = cur
    return tracks


def session_starts(rng: np.random.Generator, users: Users, u: int, busy_s: np.ndarray) -> np.ndarray:
    """Start times (epoch s) of user ``u``'s sessions, at preferred hours, each at least 21 min after the last play.

    ``busy_s[i]`` is how long session i occupies (its last play's start minus its first, plus the last track).
    Non-overlap is enforced with a running maximum: t_i = max(s_i, t_{i-1} + busy_{i-1} + gap_{i-1}).
    """
    n = len(busy_s)
    day = np.sort(rng.integers(users.first_day[u], users.last_day[u] + 1, size=n))
    peak = users.peak_hour[u, (rng.random(n) < users.peak2_p[u]).astype(int)]
    hour = (peak + rng.normal(0.0, users.hour_sd[u], size=n)) % 24.0
    wish = np.sort(day * DAY_S + (hour * 3600).astype(np.int64))
    need = busy_s + MIN_SESSION_GAP_S + rng.integers(0, 600, size=n)
    before = np.cumsum(need) - need
    start = np.maximum.accumulate(wish - before) + before
    overflow = int(start[-1] + busy_s[-1]) - (END_TS - 1)
    if overflow > 0:
        start -= overflow
    return start


def plays_chunk(catalog: Catalog, users: Users, lo: int, hi: int, seed: int, chunk_no: int):
    """Rows of users ``lo..hi-1`` in file order: (user index, epoch seconds, track), each user by time descending."""
    rng = make_rng(seed, "lastfm/plays", chunk_no)
    unique = users.quota[lo:hi] - users.duplicates[lo:hi]
    lengths = [
        session_lengths(rng, int(unique[i]), float(users.mean_session[u]), bool(users.is_light[u]))
        for i, u in enumerate(range(lo, hi))
    ]
    n_sess = np.array([len(x) for x in lengths])
    sess_len = np.concatenate(lengths)
    sess_user = np.repeat(np.arange(lo, hi), n_sess)
    slot = (rng.random(len(sess_len))[:, None] > np.cumsum(users.theme_p[sess_user], axis=1)).sum(axis=1)
    tracks = walk_sessions(catalog, users.rotation[sess_user, np.minimum(slot, 3)], sess_len, rng)

    gap = catalog.duration[tracks] + rng.integers(1, 25, size=len(tracks))
    skip = rng.random(len(tracks)) < P_SKIP
    gap[skip] = rng.integers(10, 60, size=int(skip.sum()))
    sess_of_row = np.repeat(np.arange(len(sess_len)), sess_len)
    first_row = np.cumsum(sess_len) - sess_len
    gap_before = np.cumsum(gap) - gap
    offset_in_sess = gap_before - gap_before[first_row][sess_of_row]
    last_row = first_row + sess_len - 1
    busy = offset_in_sess[last_row] + catalog.duration[tracks[last_row]]
    sess_first = np.cumsum(n_sess) - n_sess
    starts = np.concatenate(
        [
            session_starts(rng, users, u, busy[sess_first[i] : sess_first[i] + n_sess[i]])
            for i, u in enumerate(range(lo, hi))
        ]
    )
    ts = starts[sess_of_row] + offset_in_sess
    return _finish_rows(rng, users, lo, hi, unique, ts, tracks)


def _finish_rows(rng, users: Users, lo: int, hi: int, unique: np.ndarray, ts: np.ndarray, tracks: np.ndarray):
    """Add each user's duplicate scrobbles and reverse each user's rows to time-descending order."""
    counts = np.ones(len(ts), dtype=np.int64)
    first = np.cumsum(unique) - unique
    for i, u in enumerate(range(lo, hi)):
        d = int(users.duplicates[u])
        if d:
            counts[first[i] + rng.choice(int(unique[i]), size=d, replace=False)] = 2
    ts, tracks = np.repeat(ts, counts), np.repeat(tracks, counts)
    rows = users.quota[lo:hi]
    row_user = np.repeat(np.arange(lo, hi), rows)
    start = np.cumsum(rows) - rows
    local = row_user - lo
    flip = start[local] + (start[local] + rows[local] - 1) - np.arange(len(ts))
    return row_user, ts[flip], tracks[flip]


def format_plays(users: Users, catalog: Catalog, row_user: np.ndarray, ts: np.ndarray, tracks: np.ndarray) -> str:
    """Tab-separated lines for the plays file, built with C-level list operations (no per-row Python code)."""
    prefixes = np.array([f"user_{num:06d}\t" for num in users.number.tolist()], dtype=object)
    pieces: list = [None] * (3 * len(ts))
    pieces[0::3] = prefixes[row_user].tolist()
    pieces[1::3] = np.datetime_as_string(ts.astype("datetime64[s]"), unit="s").tolist()
    pieces[2::3] = catalog.tails[tracks].tolist()
    return "".join(pieces)


def write_plays(handle: TextIO, catalog: Catalog, users: Users, seed: int, progress: bool) -> int:
    """Write the plays file chunk by chunk; returns the row count."""
    bar = Progress(LASTFM_PLAYS_FILE, int(users.quota.sum()), enabled=progress)
    for chunk_no, (lo, hi) in enumerate(user_chunks(users.quota)):
        row_user, ts, tracks = plays_chunk(catalog, users, lo, hi, seed, chunk_no)
        handle.write(format_plays(users, catalog, row_user, ts, tracks))
        bar.add(len(ts))
    return bar.done
