"""The Last.fm job's configuration (conf/lastfm.yaml): one frozen dataclass per section, read with
``musicrec.config.typed``; every bad key or value is a ``ConfigError`` naming it.

``window.start`` / ``window.end`` may be YAML dates, datetimes or strings; they are normalized to the UTC string
``YYYY-MM-DDTHH:MM:SSZ``, which is what the manifest records. ``WindowConfig.bounds`` turns the window section into
the ``[start, end)`` instants the clean stage filters on.
"""

from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Mapping

from musicrec.columns import TEST, TRAIN, VALID
from musicrec.config import ConfigError, require, typed
from musicrec.schemas import LASTFM_PLAYS_FILE, LASTFM_TAGS_FILE


def _require_at_least(section: str, values: Any, minimum: int, *names: str) -> None:
    """Each named integer field of ``values`` is ``>= minimum`` (None passes: only optional fields allow it)."""
    for name in names:
        value = getattr(values, name)
        require(value is None or value >= minimum, f"{section}.{name}", value, f"must be an integer >= {minimum}")


@dataclass(frozen=True)
class InputConfig:
    plays_file: str = LASTFM_PLAYS_FILE
    tags_file: str = LASTFM_TAGS_FILE


@dataclass(frozen=True)
class CleanConfig:
    drop_untracked: bool = True
    drop_duplicates: bool = True
    max_rejected_fraction: float = 0.01

    def check(self) -> None:
        require(0 <= self.max_rejected_fraction <= 1, "clean.max_rejected_fraction", self.max_rejected_fraction,
                "must be a number in [0, 1]")


@dataclass(frozen=True)
class WindowConfig:
    start: Any = None  # normalized to "YYYY-MM-DDTHH:MM:SSZ" (or None) when the section is built
    end: Any = None
    first_months: int | None = None
    last_months: int | None = None

    def __post_init__(self) -> None:
        for name in ("start", "end"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, format_instant(parse_instant(value, f"window.{name}")))

    def check(self) -> None:
        _require_at_least("window", self, 1, "first_months", "last_months")
        require(self.first_months is None or self.last_months is None, "window.first_months", self.first_months,
                "window.first_months and window.last_months cannot both be set")

    def bounds(self, first_ts: dt.datetime | None, last_ts: dt.datetime | None
               ) -> tuple[dt.datetime | None, dt.datetime | None]:
        """The window as ``[start, end)`` instants (None = open).

        ``first_ts``/``last_ts`` are the first and last eligible play inside ``start``/``end`` (needed only for the
        month options): ``first_months = N`` keeps ``[first_ts, first_ts + N months)``, ``last_months = N`` keeps
        ``[last_ts - N months, last_ts]``; inside an explicit start/end the tighter bound wins.
        """
        start = parse_instant(self.start, "window.start") if self.start else None
        end = parse_instant(self.end, "window.end") if self.end else None
        if self.first_months and first_ts is not None:
            month_end = add_months(first_ts, self.first_months)
            end = month_end if end is None else min(end, month_end)
        if self.last_months and last_ts is not None:
            month_start = add_months(last_ts, -self.last_months)
            start = month_start if start is None else max(start, month_start)
        return start, end


@dataclass(frozen=True)
class SessionsConfig:
    gap_seconds: int = 1200
    min_sessions_per_user: int = 6

    def check(self) -> None:
        _require_at_least("sessions", self, 0, "gap_seconds", "min_sessions_per_user")


@dataclass(frozen=True)
class TagsConfig:
    required: bool = False
    top_k: int = 5
    drop_untagged: bool = True
    lowercase: bool = True
    min_tag_weight: int = 0

    def check(self) -> None:
        _require_at_least("tags", self, 1, "top_k")
        _require_at_least("tags", self, 0, "min_tag_weight")


@dataclass(frozen=True)
class VocabConfig:
    user_min_count: int = 1
    song_min_count: int = 1
    artist_min_count: int = 1
    tag_min_count: int = 1

    def check(self) -> None:
        _require_at_least("vocab", self, 1, "user_min_count", "song_min_count", "artist_min_count", "tag_min_count")


@dataclass(frozen=True)
class SequencesConfig:
    min_length: int = 2
    max_length: int = 50

    def check(self) -> None:
        _require_at_least("sequences", self, 1, "min_length", "max_length")
        require(self.max_length >= self.min_length, "sequences.max_length", self.max_length,
                f"must be >= sequences.min_length ({self.min_length})")


GLOBAL_TIME, LEAVE_ONE_OUT = "global_time", "leave_one_out"  # split.protocol (docs/DATA_CONTRACT.md)
SPLIT_PROTOCOLS = (GLOBAL_TIME, LEAVE_ONE_OUT)


@dataclass(frozen=True)
class SplitConfig:
    protocol: str = GLOBAL_TIME
    valid_fraction: float = 0.1
    test_fraction: float = 0.1

    def check(self) -> None:
        require(self.protocol in SPLIT_PROTOCOLS, "split.protocol", self.protocol, f"must be one of {SPLIT_PROTOCOLS}")
        fractions = (self.valid_fraction, self.test_fraction)
        require(min(fractions) >= 0 and sum(fractions) < 1, "split.valid_fraction, split.test_fraction", fractions,
                "must be >= 0 and sum to less than 1")

    def required(self) -> list[str]:
        """The splits that must have sessions: train, and valid / test when their fraction asks for them (always with
        the leave-one-out protocol)."""
        if self.protocol == LEAVE_ONE_OUT:
            return [TRAIN, VALID, TEST]
        return [TRAIN] + [split for split, fraction in ((VALID, self.valid_fraction), (TEST, self.test_fraction))
                          if fraction > 0]

    def hint(self) -> str:
        """The split settings an empty split depends on, for its error message."""
        if self.protocol == LEAVE_ONE_OUT:  # a user is evaluated once it has 3 plays of songs in the vocabulary
            return f"split.protocol={LEAVE_ONE_OUT} (valid and test need a user with at least 3 plays)"
        return f"split.valid_fraction={self.valid_fraction}, split.test_fraction={self.test_fraction}"


@dataclass(frozen=True)
class StatsConfig:
    column_stats: bool = True


@dataclass(frozen=True)
class SparkConfig:
    partitions: int = 8

    def check(self) -> None:
        _require_at_least("spark", self, 1, "partitions")


@dataclass(frozen=True)
class LastfmConfig:
    input: InputConfig = field(default_factory=InputConfig)
    clean: CleanConfig = field(default_factory=CleanConfig)
    window: WindowConfig = field(default_factory=WindowConfig)
    sessions: SessionsConfig = field(default_factory=SessionsConfig)
    tags: TagsConfig = field(default_factory=TagsConfig)
    vocab: VocabConfig = field(default_factory=VocabConfig)
    sequences: SequencesConfig = field(default_factory=SequencesConfig)
    split: SplitConfig = field(default_factory=SplitConfig)
    stats: StatsConfig = field(default_factory=StatsConfig)
    spark: SparkConfig = field(default_factory=SparkConfig)


def resolve_config(config: Mapping[str, Any] | None) -> LastfmConfig:
    """The defaults overlaid with ``config`` (a YAML mapping of sections, possibly partial) and checked."""
    return typed(LastfmConfig, config)


# ---------------------------------------------------------------------------------------------------------------
# Instants
# ---------------------------------------------------------------------------------------------------------------
def parse_instant(value: Any, key: str) -> dt.datetime:
    """A naive UTC instant from a YAML value: a date, a datetime, or a string ``YYYY-MM-DD[THH:MM[:SS]][Z]``."""
    if isinstance(value, dt.datetime):
        return value if value.tzinfo is None else value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    if isinstance(value, dt.date):
        return dt.datetime(value.year, value.month, value.day)
    text = str(value).strip().rstrip("Z").replace(" ", "T")
    for fmt in ("%Y-%m-%dT%H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%d"):
        try:
            return dt.datetime.strptime(text, fmt)
        except ValueError:
            pass
    raise ConfigError(f"{key} = {value!r}: must be a date or time like 2008-01-01 or 2008-01-01T00:00:00Z")


def format_instant(instant: dt.datetime) -> str:
    """ISO-8601 UTC string, as Last.fm writes timestamps."""
    return instant.strftime("%Y-%m-%dT%H:%M:%SZ")


def add_months(instant: dt.datetime, months: int) -> dt.datetime:
    """``instant`` moved by whole calendar months, the day clamped to the month's length (like Spark add_months)."""
    month_index = instant.year * 12 + (instant.month - 1) + months
    year, month = divmod(month_index, 12)
    day = min(instant.day, calendar.monthrange(year, month + 1)[1])
    return instant.replace(year=year, month=month + 1, day=day)
