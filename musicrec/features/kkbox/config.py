"""The KKBOX job's configuration: one frozen dataclass per section of conf/kkbox.yaml (which mirrors these
defaults; tests check that they agree), read with ``musicrec.config.typed`` (an unknown key or a value of the wrong
type is a ``ConfigError``) and checked by each section's ``check()`` (``musicrec.config.require``).

    cfg = resolve_config(load_config(None, "kkbox"))
    as_dict(cfg)  # the resolved sections, as recorded in the manifest
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from musicrec import schemas
from musicrec.config import require, typed
from musicrec.features.kkbox.columns import CATEGORICAL_VOCABS, MULTI_VALUED_VOCABS, PERSON_VOCAB

# The separators artist_name / composer / lyricist really use in KKBOX's songs.csv (counted on the 39,999-row real
# sample: "|" 10,305 fields, "/" 1,462, "&" 1,065, "+" 358, ";" 189, "、" 143, "\" 56, "feat." 107 and "featuring"
# 24, "×" 20, " x " 19, full-width "＆／＋，" 60, "ft." 1). " and ", " with " and "," are NOT separators there:
# they occur inside band names ("Of Monsters and Men", "Relax with Smooth Jazz", "莫非，這就是愛情 原聲帶").
DEFAULT_PERSON_SEPARATORS = (
    r"\|", "/", r"\\", ";", "&", r"\+", "、", "＆", "／", "＋", "，", "×",
    r"\s[xX]\s",
    r"(?i:\bfeat\.|\bfeaturing\b|\bft\.)",
)


@dataclasses.dataclass(frozen=True)
class InputConfig:
    multiline_files: tuple[str, ...] = (schemas.KKBOX_EXTRA_FILE,)

    def check(self) -> None:
        unknown = set(self.multiline_files) - set(schemas.KKBOX_FILES)
        require(not unknown, "input.multiline_files", self.multiline_files, f"unknown files {sorted(unknown)}")


@dataclasses.dataclass(frozen=True)
class CleanConfig:
    max_rejected_fraction: float = 0.01  # more rejected rows than this share of any one input file fails the job

    def check(self) -> None:
        require(0.0 <= self.max_rejected_fraction <= 1.0, "clean.max_rejected_fraction", self.max_rejected_fraction,
                "must be a number in [0, 1]")


@dataclasses.dataclass(frozen=True)
class SplitConfig:
    valid_fraction: float = 0.2

    def check(self) -> None:
        require(0.0 <= self.valid_fraction < 1.0, "split.valid_fraction", self.valid_fraction, "must be in [0, 1)")


@dataclasses.dataclass(frozen=True)
class VocabConfig:
    min_count: int = 1
    min_count_by_vocab: dict = dataclasses.field(
        default_factory=lambda: {"song": 2, "artist": 2, "composer": 2, "lyricist": 2, "person": 2}
    )

    def check(self) -> None:
        _require_positive("vocab.min_count", self.min_count)
        known = set(CATEGORICAL_VOCABS) | set(MULTI_VALUED_VOCABS) | {PERSON_VOCAB}
        for name, value in self.min_count_by_vocab.items():
            require(name in known and isinstance(value, int) and value >= 1,
                    "vocab.min_count_by_vocab", self.min_count_by_vocab,
                    f"{name!r}: names must be vocabularies ({', '.join(sorted(known))}) and values integers >= 1")

    def min_count_of(self, vocab_name: str) -> int:
        """The minimum train-part count of a token of ``vocab_name``."""
        return int(self.min_count_by_vocab.get(vocab_name, self.min_count))


@dataclasses.dataclass(frozen=True)
class MultiValuedConfig:
    max_multi: int = 8
    genre_separators: tuple[str, ...] = (r"\|",)
    person_separators: tuple[str, ...] = DEFAULT_PERSON_SEPARATORS
    shared_person_vocab: bool = False

    def check(self) -> None:
        _require_positive("multi_valued.max_multi", self.max_multi)
        require(bool(self.genre_separators), "multi_valued.genre_separators", self.genre_separators,
                "must not be empty")
        require(bool(self.person_separators), "multi_valued.person_separators", self.person_separators,
                "must not be empty")


@dataclasses.dataclass(frozen=True)
class NumericConfig:
    age_min: int = 10
    age_max: int = 80
    log1p_counts: bool = True
    isrc_year_pivot: int = 18

    def check(self) -> None:
        require(self.age_min <= self.age_max, "numeric.age_min", self.age_min,
                f"must be <= numeric.age_max ({self.age_max})")
        require(0 <= self.isrc_year_pivot <= 100, "numeric.isrc_year_pivot", self.isrc_year_pivot, "must be in 0..100")


@dataclasses.dataclass(frozen=True)
class OutputConfig:
    rows_per_file: int = 1_000_000
    min_files: int = 2

    def check(self) -> None:
        _require_positive("output.rows_per_file", self.rows_per_file)
        _require_positive("output.min_files", self.min_files)


@dataclasses.dataclass(frozen=True)
class KkboxConfig:
    """The resolved job configuration, one field per section of conf/kkbox.yaml."""

    input: InputConfig = dataclasses.field(default_factory=InputConfig)
    clean: CleanConfig = dataclasses.field(default_factory=CleanConfig)
    split: SplitConfig = dataclasses.field(default_factory=SplitConfig)
    vocab: VocabConfig = dataclasses.field(default_factory=VocabConfig)
    multi_valued: MultiValuedConfig = dataclasses.field(default_factory=MultiValuedConfig)
    numeric: NumericConfig = dataclasses.field(default_factory=NumericConfig)
    output: OutputConfig = dataclasses.field(default_factory=OutputConfig)


def resolve_config(config: Mapping[str, Any] | None) -> KkboxConfig:
    """The defaults overlaid with ``config`` (a YAML mapping of sections, possibly partial) and checked."""
    return typed(KkboxConfig, config)


def _require_positive(key: str, value: int) -> None:
    require(value >= 1, key, value, "must be an integer >= 1")


__all__ = ["DEFAULT_PERSON_SEPARATORS", "KkboxConfig", "resolve_config"]
