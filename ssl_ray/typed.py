"""Build typed dataclass trees from plain YAML dicts, with errors that name the field.

A config section is a `@dataclass(kw_only=True, slots=True)` whose fields are declared with
`setting(default, doc, ...)`: the doc is the one-line help text, the bounds are checked at
load. `from_dict` walks the type hints (nested sections, `X | None`, `Literal`, `list[X]`,
`dict[str, X]`, `bool/int/float/str`) and raises `ConfigError` with the dotted field path,
the value found and what is allowed.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import types
import typing
from typing import Any, Literal, Union

from ssl_ray.errors import ConfigError


def setting(
    default: Any = dataclasses.MISSING, doc: str = "", *, ge=None, gt=None, le=None, lt=None, operational: bool = False
):
    """A config field with a help line and optional numeric bounds (ge/gt/le/lt).

    `operational` settings say how work runs (resources, locations, retries), not what it
    produces: finished work never depends on them (`result_settings`)."""
    meta = {"doc": doc, "ge": ge, "gt": gt, "le": le, "lt": lt, "operational": operational}
    if isinstance(default, (list, dict)) or dataclasses.is_dataclass(default):
        value = default
        return dataclasses.field(default_factory=lambda: copy.deepcopy(value), metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def from_dict(cls: type, data: Any, path: str = "") -> Any:
    """Construct dataclass `cls` from `data`, validating every field recursively."""
    where = path or "config"
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of settings, found {_show(data)}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        key = str(unknown[0])
        close = difflib.get_close_matches(key, fields, n=1) or [f for f in fields if key.startswith(f)]
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"{_join(path, key)}: unknown setting (allowed: {', '.join(fields)}){hint}")
    kwargs = {}
    for name, f in fields.items():
        if name in data:
            kwargs[name] = _convert(hints[name], data[name], _join(path, name), f.metadata)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"{_join(path, name)}: required setting is missing")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as e:  # __post_init__ cross-field checks
        raise ConfigError(str(e)) from None


def to_dict(obj: Any) -> Any:
    """Plain dict/list form of a dataclass tree (for YAML output)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, list):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def result_settings(obj: Any, path: str = "") -> dict[str, Any]:
    """Dotted name -> value of every setting of a dataclass tree that changes what a run
    produces (operational settings and sections left out): what finished work is keyed by."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        if f.metadata.get("operational"):
            continue
        value, name = getattr(obj, f.name), _join(path, f.name)
        if dataclasses.is_dataclass(value):
            out.update(result_settings(value, name))
        else:
            out[name] = to_dict(value)
    return out


def field_docs(cls: type, path: str = "", operational: bool = False) -> list[tuple[str, str, Any, str, bool]]:
    """(dotted name, type, default, doc, operational) rows for a config reference."""
    rows = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        name = _join(path, f.name)
        tp = hints[f.name]
        ops = operational or bool(f.metadata.get("operational"))
        if dataclasses.is_dataclass(tp):
            rows.extend(field_docs(tp, name, ops))
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        rows.append((name, _type_name(tp), default, f.metadata.get("doc", ""), ops))
    return rows


def _convert(tp: Any, value: Any, path: str, meta: typing.Mapping) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, {} if value is None else value, path)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            return _convert(inner[0], value, path, meta)
        raise ConfigError(f"{path}: unsupported union type")  # not used by our config
    if origin is Literal:
        if value not in args:
            allowed = ", ".join(repr(a) for a in args)
            raise ConfigError(f"{path}: found {_show(value)}, allowed: {allowed}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected a list, found {_show(value)}")
        return [_convert(args[0], v, f"{path}[{i}]", meta) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{path}: expected a mapping, found {_show(value)}")
        return {
            _convert(args[0], k, f"{path} key", {}): _convert(args[1], v, f"{path}.{k}", meta) for k, v in value.items()
        }
    if tp is Any:
        return value
    return _check_bounds(_scalar(tp, value, path), path, meta)


def _scalar(tp: type, value: Any, path: str) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # dict keys such as class ids: `per_class: {0: 0.9}`
    else:
        raise ConfigError(f"{path}: unsupported type {tp!r}")
    raise ConfigError(f"{path}: expected {tp.__name__}, found {_show(value)}")


def _check_bounds(value: Any, path: str, meta: typing.Mapping) -> Any:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return value
    checks = [
        ("ge", ">=", lambda a, b: a >= b),
        ("gt", ">", lambda a, b: a > b),
        ("le", "<=", lambda a, b: a <= b),
        ("lt", "<", lambda a, b: a < b),
    ]
    for key, _sym, ok in checks:
        bound = meta.get(key)
        if bound is not None and not ok(value, bound):
            allowed = " and ".join(f"{s} {meta[k]}" for k, s, _ in checks if meta.get(k) is not None)
            raise ConfigError(f"{path}: {value!r} is out of range, allowed: {allowed}")
    return value


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if origin is Literal:
        return " or ".join(repr(a) for a in typing.get_args(tp))
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in typing.get_args(tp))}]"
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _show(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60] + '...' if len(text) > 60 else text}"


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name
