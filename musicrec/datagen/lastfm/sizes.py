"""How many rows, users and tracks to generate for a scale (see "Size" in the package docstring), and the time span
of the plays."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

REAL_ROWS = 19_098_853
REAL_USERS = 992
REAL_MISSING_IDS = 8  # ids user_000001..user_001000 with 8 missing
REAL_TRACKS = 960_000  # distinct track MBIDs, about
DEFAULT_SCALE = 0.003  # 57,297 rows, 54 users
MIN_USERS = 30
MIN_TRACKS = 3_000

FIRST_TS = int(np.datetime64("2005-02-14T00:00:00", "s").astype(np.int64))
END_TS = int(np.datetime64("2009-05-05T00:00:00", "s").astype(np.int64))  # exclusive; the real file ends 2009-05-04
DAY_S = 86_400


@dataclass(frozen=True)
class LastfmSizes:
    """How much to generate for a scale."""

    rows: int
    users: int
    id_space: int  # user ids run user_000001 .. user_{id_space}, with id_space - users ids missing
    tracks: int
    artists: int


def sizes_for_scale(scale: float) -> LastfmSizes:
    """Sizes for ``scale`` (fraction of the real row count): scale 1.0 gives 19,098,853 rows and 992 users."""
    users = max(MIN_USERS, round(REAL_USERS * math.sqrt(scale)))
    missing = max(1, round(users * REAL_MISSING_IDS / REAL_USERS))
    rows = max(round(REAL_ROWS * scale), 40 * users)
    tracks = max(MIN_TRACKS, round(REAL_TRACKS * scale))
    artists = max(400, round(tracks / 5.5))
    return LastfmSizes(rows=rows, users=users, id_space=users + missing, tracks=tracks, artists=artists)
