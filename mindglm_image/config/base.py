"""Dataclass base for configs stored as Hugging Face ``config.json``.

Known fields are typed and validated; keys we do not model (``architectures``, ``transformers_version``,
``_class_name`` ...) are kept in ``extra`` so that a load/save round trip writes the same JSON back.
"""
from __future__ import annotations

import dataclasses
import json
import os
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from ..atomic import write_json_atomic

T = TypeVar("T", bound="HFConfig")


class ConfigError(ValueError):
    """A config file or value that cannot describe a model."""


def _check_type(owner: str, name: str, value: Any, annotation: Any) -> Any:
    """Coerce JSON ints to floats where a float is declared; reject values of the wrong kind."""
    if value is None:
        return value
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        candidates = [a for a in args if a is not type(None)]
        for cand in candidates:
            try:
                return _check_type(owner, name, value, cand)
            except ConfigError:
                continue
        raise ConfigError(f"{owner}.{name}: {value!r} is not one of {candidates}; fix the value in config.json")
    base = origin or annotation
    if base is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if base in (int, float, str, bool, list, dict, tuple):
        if base is int and isinstance(value, bool):
            raise ConfigError(f"{owner}.{name}: expected int, got bool {value!r}; fix the value in config.json")
        if base is tuple and isinstance(value, list):
            return tuple(value)
        if not isinstance(value, base):
            raise ConfigError(
                f"{owner}.{name}: expected {base.__name__}, got {type(value).__name__} {value!r}; "
                "fix the value in config.json"
            )
    return value


def read_json_config(path: Path, what: str, missing_fix: str, invalid_fix: str,
                     error: type[ValueError] = ConfigError) -> dict:
    """The JSON object in ``path``; a missing or malformed file raises ``error`` naming ``what`` and the fix."""
    if not path.is_file():
        raise error(f"{what} not found: {path}; {missing_fix}")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise error(f"{path} is not valid JSON ({err}); {invalid_fix}") from None


@dataclasses.dataclass
class HFConfig:
    """Base of every model config: typed fields plus untouched extra keys."""

    #: nested sub-config classes by field name (e.g. ``text_config``)
    nested: ClassVar[dict[str, type["HFConfig"]]] = {}

    extra: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any]) -> T:
        if not isinstance(data, dict):
            raise ConfigError(f"{cls.__name__}: expected a JSON object, got {type(data).__name__}")
        hints = typing.get_type_hints(cls)
        names = [f.name for f in dataclasses.fields(cls) if f.name != "extra"]
        kwargs: dict[str, Any] = {}
        extra: dict[str, Any] = {}
        for key, value in data.items():
            if key in names:
                if key in cls.nested and value is not None:
                    value = cls.nested[key].from_dict(value)
                elif key not in cls.nested:
                    value = _check_type(cls.__name__, key, value, hints[key])
                kwargs[key] = value
            else:
                extra[key] = value
        for key, sub in cls.nested.items():
            if kwargs.get(key) is None:
                kwargs[key] = sub()
        obj = cls(**kwargs)
        obj.extra = extra
        obj._source_keys = list(data)
        obj.validate()
        return obj

    def validate(self) -> None:
        """Subclasses check cross-field constraints here and raise ``ConfigError``."""

    def to_dict(self) -> dict[str, Any]:
        """Fields then extras, in the order of the file this was read from; unset optional fields omitted."""
        source_keys = getattr(self, "_source_keys", [])
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name == "extra":
                continue
            value = getattr(self, f.name)
            if value is None and f.name not in source_keys:
                continue
            if isinstance(value, HFConfig):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        out.update(self.extra)
        order = {key: i for i, key in enumerate(source_keys)}
        return dict(sorted(out.items(), key=lambda kv: order.get(kv[0], len(order))))

    @classmethod
    def from_json_file(cls: type[T], path: str | os.PathLike) -> T:
        path = Path(path)
        data = read_json_config(path, "config file", "point to a model folder that holds config.json",
                                "restore it from the original checkpoint")
        try:
            return cls.from_dict(data)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from err

    def to_json_file(self, path: str | os.PathLike) -> None:
        write_json_atomic(path, self.to_dict())

