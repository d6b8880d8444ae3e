"""Stage configs: a dataclass per stage, YAML for defaults, `key=value` overrides from the CLI.

Precedence: dataclass defaults < YAML file < explicit CLI options < `--set key=value`.
Every field carries `metadata={"help": ...}`; `describe(cls)` turns them into `--help` text.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, TypeVar

from lifecycle.errors import UserError

T = TypeVar("T")


def field(default: Any = dataclasses.MISSING, help: str = "", **kw) -> Any:
    """A dataclass field with a one-line help string (shown by `--help`)."""
    if isinstance(default, (list, dict)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata={"help": help}, **kw)
    return dataclasses.field(default=default, metadata={"help": help}, **kw)


def _coerce(name: str, tp: Any, value: Any) -> Any:
    """Convert a YAML or string value to the field's annotated type, or raise a UserError naming it."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if value is None:
        return None
    if origin is typing.Union or str(origin) == "types.UnionType":
        non_none = [a for a in args if a is not type(None)]
        if isinstance(value, str) and value.lower() in ("none", "null") and type(None) in args:
            return None
        return _coerce(name, non_none[0], value) if len(non_none) == 1 else value
    if origin is list:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise UserError(f"config field '{name}' expects a list, got {value!r}")
        return [_coerce(name, args[0] if args else str, v) for v in value]
    if origin is dict:
        if isinstance(value, str) and value.lstrip().startswith("{"):
            value = _yaml_value(value)
        if not isinstance(value, dict):
            raise UserError(f"config field '{name}' expects a mapping, got {value!r}")
        return value
    try:
        if tp is bool:
            if isinstance(value, str):
                low = value.lower()
                if low in ("1", "true", "yes", "on"):
                    return True
                if low in ("0", "false", "no", "off"):
                    return False
                raise ValueError(value)
            return bool(value)
        if tp in (int, float, str):
            if tp is int and isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return tp(value)
    except (TypeError, ValueError):
        raise UserError(f"config field '{name}' expects {tp.__name__}, got {value!r}") from None
    return value


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def build(cls: type[T], yaml_path: str | Path | None = None, overrides: dict | None = None,
          sets: list[str] | None = None) -> T:
    """Make a config: defaults, then the YAML file, then `overrides` (non-None), then `key=value` strings."""
    values: dict[str, Any] = {}
    if yaml_path:
        values.update(load_yaml(yaml_path))
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    for item in sets or []:
        if "=" not in item:
            raise UserError(f"--set expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        k, v = k.strip(), v.strip()
        if "." in k:  # a nested field of a mapping: `--set bench.enabled=false`; the value is read as YAML
            top, *path = k.split(".")
            start = values.get(top) or _default(cls, top) or {}
            if isinstance(start, list):  # a list of names is a mapping of names to empty options
                start = {str(name): {} for name in start}
            node = values[top] = dict(start)
            for part in path[:-1]:
                node[part] = node = dict(node.get(part) or {})
            node[path[-1]] = _yaml_value(v)
        else:
            values[k] = v
    return from_dict(cls, values)


def _default(cls: type, name: str) -> Any:
    for f in dataclasses.fields(cls):
        if f.name == name:
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
            return None if f.default is dataclasses.MISSING else f.default
    return None


def _yaml_value(text: str) -> Any:
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def from_dict(cls: type[T], values: dict) -> T:
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise UserError(f"unknown {cls.__name__} field(s): {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
    kwargs = {k: _coerce(k, hints[k], v) for k, v in values.items()}
    return cls(**kwargs)


def load_yaml(path: str | Path) -> dict:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise UserError(f"config file {p} not found")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        raise UserError(f"config file {p} is not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {p} must hold a mapping of field: value")
    return data


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def describe(cls: type) -> str:
    """One line per field: name, default and help, for a command's `--help` epilog."""
    lines = [f"{cls.__name__} fields (YAML keys, or --set key=value):"]
    for f in dataclasses.fields(cls):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else "required")
        lines.append(f"  {f.name} = {default!r}: {f.metadata.get('help', '')}")
    return "\n\n".join(lines)
