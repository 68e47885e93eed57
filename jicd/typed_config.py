"""Strict dataclass configuration: YAML fills typed dataclasses, dotted overrides win.

The dataclasses are the schema. This module only knows how to turn nested dicts (from YAML and
``a.b=c`` command-line overrides) into those dataclasses, refusing unknown keys and values of the
wrong type with an error that names the key and the valid choices.

Precedence: command-line override > YAML file > its ``base:`` chain > dataclass default.
"""

from __future__ import annotations

import dataclasses
import types
from pathlib import Path
from typing import (
    TYPE_CHECKING,
    Any,
    Literal,
    TypeVar,
    Union,
    cast,
    get_args,
    get_origin,
    get_type_hints,
)

import yaml

from jicd.errors import UserError

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

T = TypeVar("T")


class ConfigError(UserError):
    """A configuration value or key is invalid; the message names the key."""


def from_dict(cls: type[T], data: dict[str, Any] | None, prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, recursively and strictly.

    Args:
        cls: a dataclass type (the schema).
        data: the values to set; missing keys keep their defaults.
        prefix: dotted path of ``cls`` inside the root config, used in error messages.

    Raises:
        ConfigError: on an unknown key, a wrong type or a value outside a ``Literal``.
    """
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {data!r}")
    hints = get_type_hints(cls)
    # ``T`` is unbound so callers keep their precise type; ``cls`` is a dataclass by contract
    # (``fields`` raises TypeError otherwise, as before).
    fields = dataclasses.fields(cast("type[DataclassInstance]", cls))
    names = [f.name for f in fields if f.init]
    unknown = sorted(set(data) - set(names))
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(
            f"unknown config key '{where}{unknown[0]}'; valid keys: {', '.join(names)}"
        )
    values = {k: _coerce(v, hints[k], f"{prefix}.{k}" if prefix else k) for k, v in data.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:
        if isinstance(err, ConfigError):
            raise
        raise ConfigError(f"{prefix or 'config'}: {err}") from None


def _coerce(value: Any, hint: Any, key: str) -> Any:
    """Check ``value`` against type ``hint`` (converting int→float and lists→tuples)."""
    origin = get_origin(hint)
    if dataclasses.is_dataclass(hint):
        # a type hint that is a dataclass is the class itself, never an instance
        return from_dict(cast("type[Any]", hint), value, key)
    if origin in (Union, types.UnionType):
        return _coerce_union(value, get_args(hint), key)
    if origin is Literal:
        choices = get_args(hint)
        if value not in choices:
            raise ConfigError(f"{key}: invalid value {value!r}; choose one of {list(choices)}")
        return value
    if origin in (list, tuple):
        return _coerce_sequence(value, hint, key)
    return _coerce_scalar(value, hint, key)


def _coerce_union(value: Any, options: tuple[Any, ...], key: str) -> Any:
    if value is None:
        if type(None) in options:
            return None
        raise ConfigError(f"{key}: must not be null")
    errors = []
    for option in options:
        if option is type(None):
            continue
        try:
            return _coerce(value, option, key)
        except ConfigError as err:
            errors.append(str(err))
    raise ConfigError(errors[0] if len(errors) == 1 else f"{key}: invalid value {value!r}")


def _coerce_sequence(value: Any, hint: Any, key: str) -> Any:
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{key}: expected a list, got {value!r}")
    args = get_args(hint)
    item_type = args[0] if args else Any
    items = [_coerce(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
    return tuple(items) if get_origin(hint) is tuple else items


def _coerce_scalar(value: Any, hint: Any, key: str) -> Any:
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{key}: expected {hint.__name__}, got {value!r}")
    if isinstance(hint, type) and not isinstance(value, hint):
        raise ConfigError(f"{key}: expected {hint.__name__}, got {value!r}")
    return value


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Turn ``["model.quality=3", "train.lr=2e-4"]`` into a nested dict (values parsed as YAML).

    A value YAML cannot parse (``train.init_from=@w.pt``) is taken as the plain string typed; a
    value with a YAML comment (``train.run_dir=runs/a #1``, which YAML would cut to ``runs/a``)
    is refused, naming the key, instead of being silently shortened.
    """
    nested: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key.path=value")
        path, raw = item.split("=", 1)
        node = nested
        parts = path.strip().split(".")
        if not all(parts):
            raise ConfigError(f"override {item!r}: empty key in {path.strip()!r}")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with an earlier override")
        node[parts[-1]] = _parse_value(raw, path.strip())
    return nested


def _parse_value(raw: str, key: str) -> Any:
    # YAML parsing turns "3" into 3 and "[1, 2]" into a list; "2e-4" stays a string in YAML 1.1,
    # so numbers in scientific notation are converted explicitly.
    if not raw.strip():
        return ""
    loader = yaml.SafeLoader(raw)
    try:
        node = loader.get_single_node()
        value = None if node is None else loader.construct_document(node)
    except yaml.constructor.ConstructorError as err:  # tags (!!python/…) are never constructed
        raise ConfigError(f"override {key}={raw!r}: {err.problem}") from None
    except yaml.YAMLError:
        return raw  # not YAML at all (e.g. "@w.pt"): the string as typed
    finally:
        loader.dispose()
    end = 0 if node is None else node.end_mark.index
    if raw[end:].strip():  # only a comment can follow the value inside one document
        raise ConfigError(
            f"override {key}={raw!r}: YAML would drop {raw[end:].strip()!r} as a comment; "
            f"quote the value ({key}='\"{raw}\"') to keep it"
        )
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Return ``base`` updated recursively with ``update`` (neither is modified)."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with a one-line error for a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML ({str(err).splitlines()[0]})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return data


BASE_KEY = "base"
MAX_BASE_DEPTH = 16


def read_recipe(path: str | Path) -> dict[str, Any]:
    """Read a YAML recipe with its ``base:`` chain merged in: the base's values, then this file's.

    ``base: other.yaml`` names another recipe by a path relative to this file's folder; the base
    may itself have a base. Mappings merge key by key (``deep_merge``); any other value — a list,
    a scalar, ``null`` — replaces the base's. The result has no ``base`` key, so it goes through
    ``from_dict``'s strict key check like any config.

    Raises:
        ConfigError: a missing or malformed file, a ``base`` that is not a file name, a cycle of
            bases, or a chain deeper than ``MAX_BASE_DEPTH`` (the message names the files).
    """
    return _read_chain(Path(path), ())


def _read_chain(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    key = path.resolve()
    if key in chain:
        names = " -> ".join(str(p) for p in (*chain, key))
        raise ConfigError(f"config bases form a cycle: {names}")
    if len(chain) >= MAX_BASE_DEPTH:
        raise ConfigError(f"{path}: more than {MAX_BASE_DEPTH} nested config bases")
    data = read_yaml(path)
    base = data.pop(BASE_KEY, None)
    if base is None:
        return data
    if not isinstance(base, str) or not base.strip():
        raise ConfigError(f"{path}: '{BASE_KEY}' must be the path of a YAML file, got {base!r}")
    base_path = path.parent / base
    if not base_path.is_file():
        raise ConfigError(f"{path}: base config not found: {base_path}")
    return deep_merge(_read_chain(base_path, (*chain, key)), data)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Dataclass → plain dict of YAML-friendly values (tuples become lists)."""

    def plain(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        return value

    return plain(dataclasses.asdict(cfg))


def to_yaml(cfg: Any) -> str:
    """The resolved configuration as YAML text."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


__all__ = [
    "ConfigError",
    "deep_merge",
    "from_dict",
    "parse_overrides",
    "read_recipe",
    "read_yaml",
    "to_dict",
    "to_yaml",
]
