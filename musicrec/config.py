"""Sectioned YAML configuration with command-line overrides (``--set section.key=value``); never eval/exec."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


class ConfigError(ValueError):
    """A configuration file or override that cannot be used; the message names the file or key."""


def load_config(path: str | Path | None, default_name: str | None = None) -> dict:
    """Load a YAML config; ``path=None`` loads ``conf/<default_name>.yaml`` shipped with the project."""
    if path is None:
        if default_name is None:
            return {}
        path = CONF_DIR / f"{default_name}.yaml"
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    return data


def apply_overrides(config: dict, overrides: list[str] | None) -> dict:
    """Return a copy of ``config`` with ``section.key=value`` overrides applied; values are parsed as YAML scalars.

    An override must name an existing key, so a typo is an error instead of a silently ignored setting.
    """
    result = copy.deepcopy(config)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        dotted, raw = item.split("=", 1)
        keys = dotted.strip().split(".")
        node: Any = result
        for key in keys[:-1]:
            if not isinstance(node, dict) or key not in node:
                raise ConfigError(f"override {item!r}: unknown section {key!r}")
            node = node[key]
        if not isinstance(node, dict) or keys[-1] not in node:
            raise ConfigError(f"override {item!r}: unknown key {dotted!r} (known: {sorted(node) if isinstance(node, dict) else []})")
        node[keys[-1]] = yaml.safe_load(raw) if raw.strip() else None
    return result
