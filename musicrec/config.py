"""Configuration: sectioned YAML (``conf/*.yaml``), ``--set section.key=value`` overrides, typed dataclasses.

One mechanism for every job: ``load_config`` reads a YAML file, ``apply_overrides`` applies ``--set`` values (parsed as
YAML scalars, never eval/exec), and ``typed(cls, mapping, where)`` turns a section (or a whole file whose fields are
sections) into a frozen dataclass, checking every key and type against the dataclass's type hints and then its
``check()``. Every problem is one ``ConfigError`` naming the key and the value: no ``assert`` on user input (they
vanish under ``python -O``).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import types
import typing
from pathlib import Path
from typing import Any, Mapping

import yaml

CONF_DIR_ENV = "MUSICREC_CONF_DIR"  # where conf/*.yaml is when the package does not sit in a checkout


def conf_dir() -> Path:
    """The project's ``conf/``: ``$MUSICREC_CONF_DIR`` when set, else ``conf/`` next to the package. Under
    ``./spark-submit.sh`` the package is imported from the zip it ships, which holds no YAML files; the script
    sets the variable to the checkout's ``conf/``."""
    return Path(os.environ.get(CONF_DIR_ENV) or Path(__file__).resolve().parent.parent / "conf")


class ConfigError(ValueError):
    """A configuration file, section, key or value that cannot be used; the message names it."""


# ----------------------------------------------------------------------------------------------------------------
# YAML files and --set overrides
# ----------------------------------------------------------------------------------------------------------------
def load_config(path: str | Path | None, default_name: str | None = None) -> dict:
    """Load a YAML config; ``path=None`` loads ``conf/<default_name>.yaml`` shipped with the project."""
    if path is None:
        if default_name is None:
            return {}
        path = conf_dir() / f"{default_name}.yaml"
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
            known = sorted(node) if isinstance(node, dict) else []
            raise ConfigError(f"override {item!r}: unknown key {dotted!r} (known: {known})")
        try:
            node[keys[-1]] = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"override {item!r}: the value is not a YAML scalar: {exc}") from exc
    return result


# ----------------------------------------------------------------------------------------------------------------
# Typed sections
# ----------------------------------------------------------------------------------------------------------------
def typed(cls: type, values: Mapping[str, Any] | None, where: str = ""):
    """An instance of the dataclass ``cls`` from a mapping: defaults for missing keys, an unknown key, a value of
    the wrong type or a failed ``check()`` is a ``ConfigError`` naming ``where.key``.

    A field whose type is itself a dataclass is a section: its value is a mapping, typed the same way (so a whole
    YAML file is one call). Values are converted where nothing is lost: an int for a float, a whole float for an
    int, a list for a tuple, a date for a ``str`` field is not (declare such a field ``Any`` and check it).
    """
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where or 'the config'} must be a mapping of keys to values (got {values!r})")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    unknown = sorted(set(values) - set(names), key=str)
    if unknown:
        if all(dataclasses.is_dataclass(hints[n]) for n in names):
            raise ConfigError(f"unknown section {unknown[0]!r} (known: {', '.join(names)})")
        raise ConfigError(f"unknown key {_join(where, str(unknown[0]))} (known: {', '.join(names)})")
    kwargs = {}
    for name in names:
        key = _join(where, name)
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = typed(hint, values.get(name), key)
        elif name in values:
            kwargs[name] = coerce(values[name], hint, key)
    instance = cls(**kwargs)
    check = getattr(instance, "check", None)
    if check is not None:
        check()
    return instance


def coerce(value: Any, hint: Any, key: str) -> Any:
    """``value`` checked against the type ``hint`` and converted where the conversion is lossless."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in (o for o in options if o is not type(None)):
            try:
                return coerce(value, option, key)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: {value!r} is none of {hint}")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        item_type = typing.get_args(hint)[0]
        return tuple(coerce(item, item_type, f"{key}[{i}]") for i, item in enumerate(value))
    if origin is dict or hint is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return value
    return value


def require(condition: bool, key: str, value: Any, why: str) -> None:
    """Raise ``ConfigError("<key> = <value>: <why>")`` unless ``condition``; what ``check()`` methods call."""
    if not condition:
        raise ConfigError(f"{key} = {value!r}: {why}")


def as_dict(instance) -> dict:
    """A typed config back as plain YAML/JSON values (tuples -> lists, sections -> mappings), for the manifest and
    the logs."""
    def plain(value):
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(instance)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


__all__ = ["CONF_DIR_ENV", "ConfigError", "apply_overrides", "as_dict", "coerce", "conf_dir", "load_config", "require",
           "typed"]
