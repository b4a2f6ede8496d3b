"""Tests of the one configuration mechanism (musicrec/config.py): YAML, --set overrides, typed sections."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from musicrec.config import ConfigError, apply_overrides, as_dict, load_config, require, typed


@dataclass(frozen=True)
class Split:
    valid_fraction: float = 0.2
    names: tuple[str, ...] = ("train", "valid")

    def check(self) -> None:
        require(0.0 <= self.valid_fraction < 1.0, "split.valid_fraction", self.valid_fraction, "must be in [0, 1)")


@dataclass(frozen=True)
class Vocab:
    min_count: int = 1
    by_vocab: dict = field(default_factory=dict)
    cap: int | None = None
    anything: Any = None
    enabled: bool = True


@dataclass(frozen=True)
class Job:
    split: Split = field(default_factory=Split)
    vocab: Vocab = field(default_factory=Vocab)


@pytest.mark.unit
def test_typed_sections_defaults_conversions_and_as_dict():
    job = typed(Job, {"split": {"valid_fraction": 0, "names": ["a", "b", "c"]}, "vocab": {"min_count": 2.0}})
    assert job.split == Split(valid_fraction=0.0, names=("a", "b", "c")) and isinstance(job.split.valid_fraction, float)
    assert job.vocab.min_count == 2 and isinstance(job.vocab.min_count, int)
    assert typed(Job, None) == Job()
    assert as_dict(job) == {"split": {"valid_fraction": 0.0, "names": ["a", "b", "c"]},
                            "vocab": {"min_count": 2, "by_vocab": {}, "cap": None, "anything": None, "enabled": True}}
    assert typed(Vocab, {"cap": None, "anything": [1, "x"]}, "vocab").anything == [1, "x"]


@pytest.mark.unit
@pytest.mark.parametrize("values, message", [
    ({"spark": {}}, r"unknown section 'spark' \(known: split, vocab\)"),
    ({"split": {"valid_frac": 0.1}}, r"unknown key split\.valid_frac \(known: valid_fraction, names\)"),
    ({"split": {"valid_fraction": 1.5}}, r"split\.valid_fraction = 1\.5: must be in \[0, 1\)"),
    ({"split": {"valid_fraction": "high"}}, r"split\.valid_fraction: expected a number, got 'high'"),
    ({"split": {"valid_fraction": True}}, r"split\.valid_fraction: expected a number, got True"),
    ({"split": {"names": "train"}}, r"split\.names: expected a list"),
    ({"split": {"names": ["a", 3]}}, r"split\.names\[1\]: expected a string, got 3"),
    ({"vocab": {"min_count": 1.5}}, r"vocab\.min_count: expected an integer, got 1\.5"),
    ({"vocab": {"min_count": False}}, r"vocab\.min_count: expected an integer, got False"),
    ({"vocab": {"by_vocab": [1]}}, r"vocab\.by_vocab: expected a mapping"),
    ({"vocab": {"cap": "x"}}, r"vocab\.cap: expected an integer, got 'x'"),
    ({"vocab": {"enabled": "yes"}}, r"vocab\.enabled: expected true or false, got 'yes'"),
    ({"vocab": 3}, r"vocab must be a mapping"),
])
def test_typed_names_the_key_and_the_value(values, message):
    with pytest.raises(ConfigError, match=message):
        typed(Job, values)


@pytest.mark.unit
def test_load_config_and_overrides(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("split:\n  valid_fraction: 0.2  # comment\nvocab:\n  min_count: 1\n", encoding="utf-8")
    config = load_config(path)
    assert config == {"split": {"valid_fraction": 0.2}, "vocab": {"min_count": 1}}
    assert apply_overrides(config, ["vocab.min_count=5", "split.valid_fraction=0.1"]) == {
        "split": {"valid_fraction": 0.1}, "vocab": {"min_count": 5}}
    assert config["vocab"]["min_count"] == 1, "overrides return a copy"
    assert apply_overrides(config, ["vocab.min_count="])["vocab"]["min_count"] is None
    for bad, message in [("vocab.min_count", "must look like section.key=value"),
                         ("vocub.min_count=2", "unknown section 'vocub'"),
                         ("vocab.min=2", r"unknown key 'vocab\.min' \(known: \['min_count'\]\)"),
                         ("vocab.min_count=[1", "not a YAML scalar")]:
        with pytest.raises(ConfigError, match=message):
            apply_overrides(config, [bad])
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- a\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "bad.yaml").write_text("a: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    assert load_config(None, default_name="lastfm")["sessions"]["gap_seconds"] == 1200
