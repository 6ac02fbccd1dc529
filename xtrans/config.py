"""Frozen, nested dataclass configs loaded from YAML with strict key and type checks.

A recipe's ``conf/*.yaml`` maps onto a tree of frozen dataclasses. Loading refuses an unknown
(for example misspelt) key and a value of the wrong type, naming the key path and the file, so
that a typo never silently falls back to a default::

    cfg = load_config("conf/stage2a.yaml", TrainConfig)
    cfg.model.encoder.num_layers

Types are checked with typeguard against the dataclass annotations; ``None`` means
"unlimited" or "absent" (``Optional[...]`` fields), never ``-1``.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from pathlib import Path
from typing import Any, Mapping, Type, TypeVar

import typeguard
import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file does not match its schema.

    Attributes:
        key: dotted path of the offending key (``model.encoder.num_layers``).
        source: the file (or ``"<dict>"``) the value came from.
        reason: what is wrong and what to change.
    """

    def __init__(self, key: str, source: str, reason: str):
        self.key, self.source, self.reason = key, source, reason
        super().__init__(f"{source}: key '{key}': {reason}")


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _optional_inner(tp: Any) -> Any:
    """Returns X for Optional[X] (Union[X, None]) when X is a dataclass, else None."""
    if typing.get_origin(tp) is typing.Union or str(typing.get_origin(tp)) == "types.UnionType":
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1 and _is_dataclass_type(args[0]):
            return args[0]
    return None


def _to_tuple(value: Any, tp: Any) -> Any:
    """YAML gives lists; frozen configs hold tuples (hashable, immutable)."""
    if typing.get_origin(tp) is tuple and isinstance(value, list):
        return tuple(value)
    inner = [a for a in typing.get_args(tp) if typing.get_origin(a) is tuple]
    if inner and isinstance(value, list):
        return tuple(value)
    return value


_EXP_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def from_dict(cls: Type[T], data: Mapping[str, Any], source: str = "<dict>", prefix: str = "") -> T:
    """Builds dataclass ``cls`` from a mapping, refusing unknown keys and wrong types.

    Args:
        cls: a (frozen) dataclass type; nested dataclass fields are built recursively.
        data: the parsed YAML mapping.
        source: file name used in error messages.
        prefix: dotted key path of ``data`` inside the whole file (for messages).

    Raises:
        ConfigError: naming the key path and the file.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(prefix.rstrip(".") or "<root>", source, f"expected a mapping, found {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        key = f"{prefix}{unknown[0]}"
        raise ConfigError(key, source, f"unknown key (known keys here: {', '.join(sorted(fields))})")
    kwargs = {}
    for name, value in data.items():
        tp = hints[name]
        path = f"{prefix}{name}"
        sub = tp if _is_dataclass_type(tp) else _optional_inner(tp)
        if sub is not None and value is not None:
            value = from_dict(sub, value, source, prefix=f"{path}.")
        else:
            value = _to_tuple(value, tp)
            if isinstance(value, int) and not isinstance(value, bool) and tp is float:
                value = float(value)
            if isinstance(value, str) and (tp is float or float in typing.get_args(tp)) and _EXP_FLOAT.fullmatch(value):
                value = float(value)  # "3e-3": YAML 1.1 reads a float without a dot as a string
            try:
                typeguard.check_type(value, tp)
            except typeguard.TypeCheckError as err:
                raise ConfigError(path, source, f"wrong type: {err}") from None
        kwargs[name] = value
    missing = [n for n, f in fields.items() if n not in kwargs
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"{prefix}{missing[0]}", source, "required key is missing")
    try:
        return cls(**kwargs)
    except (ValueError, TypeError) as err:  # __post_init__ validation
        raise ConfigError(prefix.rstrip(".") or "<root>", source, str(err)) from None


def load_config(path: str | Path, cls: Type[T], overrides: Mapping[str, Any] | None = None) -> T:
    """Loads a YAML file into dataclass ``cls``.

    Args:
        path: the YAML file.
        cls: the root dataclass.
        overrides: dotted-key overrides applied after reading (``{"optim.lr": 1e-4}``).
    """
    path = Path(path)
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return from_dict(cls, data, source=str(path))


def parse_overrides(items: "list[str]") -> dict:
    """Command-line overrides ``["a.b=1", "c=null"]`` -> ``{"a.b": 1, "c": None}`` (values parsed as YAML).

    Raises:
        ValueError: for an item without ``=`` (naming ``--set``).
    """
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set: expected KEY=VALUE, found {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def load_overrides(path: str | Path) -> dict:
    """A YAML file of dotted-key overrides (``{"model.encoder.preset": "wavlm_large"}``), e.g. a
    recipe's ``conf/variants/<name>.yaml``: what changes in every stage's config for a variant.

    Raises:
        ConfigError: when the file is not a mapping of dotted keys to values (naming the key and file).
    """
    path = Path(path)
    with open(path, encoding="utf-8") as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise ConfigError("<root>", str(path), f"expected a mapping of dotted keys to values, found "
                                               f"{type(data).__name__}")
    for key, value in data.items():
        if not isinstance(key, str) or not key or isinstance(value, dict):
            raise ConfigError(str(key), str(path), "expected a dotted key (model.encoder.preset) with a value, "
                                                   "found a nested mapping or an empty key; write one line per key")
    return dict(data)


def to_dict(cfg: Any) -> dict:
    """The inverse of :func:`from_dict`: a plain dict (tuples become lists) for YAML/checkpoints."""
    def convert(v):
        if dataclasses.is_dataclass(v):
            return {f.name: convert(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, tuple):
            return [convert(x) for x in v]
        return v
    return convert(cfg)


def save_config(cfg: Any, path: str | Path) -> None:
    """Writes ``cfg`` as YAML (readable by :func:`load_config`)."""
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(to_dict(cfg), f, sort_keys=False)
