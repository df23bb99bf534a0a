"""The one configuration mechanism of the engine and the sidecar, and the settings they share.

Options are layered, each layer overriding the one before: the defaults of a
:class:`msgspec.Struct`, then a table of a TOML file, then ``<PREFIX><OPTION>`` environment
variables, then explicit overrides (the command's flags; ``None`` values are skipped). The
merged values are validated once, by :func:`msgspec.convert` against the struct's types and
constraints (``Annotated[int, msgspec.Meta(ge=1)]``) and its ``__post_init__``; anything wrong
raises :class:`ConfigError` naming the option.

Environment values are text: ``true``/``false`` (also ``1``/``0``, ``yes``/``no``,
``on``/``off``) for a flag, a number for a number, comma-separated for a tuple; a table option
(a ``dict`` field such as the engine's ``model``) takes one variable per key,
``<PREFIX><TABLE>__<KEY>``, its value read as a number or a flag where it parses as one.

>>> class Demo(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
...     port: Annotated[int, msgspec.Meta(ge=1, le=65535)] = 8080
...     origins: tuple[str, ...] = ()
...     model: dict[str, Any] = {}
>>> cfg = load(Demo, table="demo", env_prefix="DEMO_",
...            env={"DEMO_PORT": "9000", "DEMO_ORIGINS": "a,b", "DEMO_MODEL__DIM": "16"})
>>> cfg.port, cfg.origins, cfg.model
(9000, ('a', 'b'), {'dim': 16})
>>> load(Demo, table="demo", env_prefix="DEMO_", env={"DEMO_PORT": "0"})
Traceback (most recent call last):
...
recofast_sidecar.protocol.settings.ConfigError: option `port`: Expected `int` >= 1
"""

from __future__ import annotations

import logging
import math
import os
import re
import sys
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar

import msgspec

from recofast_sidecar.protocol.experiments import Experiment

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

T = TypeVar("T", bound=msgspec.Struct)

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")
_AT = re.compile(r" - at `\$\.([A-Za-z0-9_]+)[^`]*`$")


class ConfigError(ValueError):
    """A configuration file, variable or flag the options cannot take (the message names it)."""


def _kind(tp: Any) -> str:
    """``bool``, ``tuple``, ``dict`` or ``other``: how a text value of this type is read."""
    origin = typing.get_origin(tp)
    if origin is Annotated:
        return _kind(typing.get_args(tp)[0])
    if tp is bool:
        return "bool"
    if origin in (tuple, list) or tp in (tuple, list):
        return "tuple"
    if origin is dict or tp is dict:
        return "dict"
    if origin is typing.Union or origin is getattr(types, "UnionType", None):
        kinds = {_kind(a) for a in typing.get_args(tp) if a is not type(None)}
        return kinds.pop() if len(kinds) == 1 else "other"
    return "other"


def _auto(text: str) -> Any:
    """A table value from text: an int, a float, a flag, else the text."""
    for conv in (int, float):
        try:
            v = conv(text)
        except ValueError:
            continue
        if not (isinstance(v, float) and not math.isfinite(v)):
            return v
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    return text


def _from_text(name: str, kind: str, text: str) -> Any:
    if kind == "bool":
        low = text.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ConfigError(f"option `{name}`: expected true or false, got {text!r}")
    if kind == "tuple":
        return [x.strip() for x in text.split(",") if x.strip()]
    if text == "":
        return None
    return text


def read_table(path: str | os.PathLike[str], table: str) -> dict[str, Any]:
    """The ``[table]`` of a TOML file (empty when the file has none)."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: not valid TOML ({e})") from None
    got = data.get(table, {})
    if not isinstance(got, dict):
        raise ConfigError(f"{path}: [{table}] is not a table")
    return dict(got)


def load(
    cls: type[T],
    *,
    table: str,
    env_prefix: str,
    path: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    removed: Mapping[str, str] | None = None,
) -> T:
    """``cls`` from its defaults, the ``[table]`` of the TOML file at ``path``, the
    ``env_prefix`` variables of ``env`` (default :data:`os.environ`), then ``overrides``.

    ``removed`` names options that no longer exist, each with why: they are dropped with a
    warning instead of failing an old configuration file. Raises :class:`ConfigError`."""
    fields = {f.encode_name: f for f in msgspec.structs.fields(cls)}
    kinds = {name: _kind(f.type) for name, f in fields.items()}
    values: dict[str, Any] = {}
    tables: dict[str, dict[str, Any]] = {}
    for n, f in fields.items():
        if kinds[n] == "dict":
            default = f.default_factory() if f.default_factory is not msgspec.NODEFAULT else f.default
            if isinstance(default, dict):
                tables[n] = dict(default)
    if path is not None:
        for k, v in read_table(path, table).items():
            if kinds.get(k) == "dict" and isinstance(v, dict):
                tables.setdefault(k, {}).update(v)
            else:
                values[k] = v
    for key, raw in (os.environ if env is None else env).items():
        if not key.startswith(env_prefix):
            continue
        name = key[len(env_prefix) :].lower()
        head, sep, sub = name.partition("__")
        if sep and kinds.get(head) == "dict" and sub:
            tables.setdefault(head, {})[sub] = _auto(raw)
        elif name in fields and kinds[name] != "dict":
            values[name] = _from_text(name, kinds[name], raw)
    for k, v in (overrides or {}).items():
        if v is None:
            continue
        if kinds.get(k) == "dict" and isinstance(v, dict):
            tables.setdefault(k, {}).update(v)
        else:
            values[k] = v
    for k in list(values):
        if removed and k in removed:
            logging.getLogger("recofast.config").warning("option %r is ignored: %s", k, removed[k])
            del values[k]
        elif k not in fields:
            raise ConfigError(f"unknown {table} option {k!r}")
    values.update(tables)
    try:
        return msgspec.convert(values, cls, strict=False)
    except msgspec.ValidationError as e:
        msg = str(e)
        m = _AT.search(msg)
        if m:
            raise ConfigError(f"option `{m.group(1)}`: {msg[: m.start()]}") from None
        raise ConfigError(msg) from None


def replace(cfg: T, **changes: Any) -> T:
    """A copy of ``cfg`` with ``changes``, validated like a loaded configuration."""
    values = msgspec.structs.asdict(cfg)
    values.update(changes)
    try:
        return msgspec.convert(values, type(cfg), strict=False)
    except msgspec.ValidationError as e:
        raise ConfigError(str(e)) from None


# -- settings the engine hands the edges ---------------------------------------------------------


class SharedSettings(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=False):
    """Values the sidecar must take from the engine, not from its own configuration: they
    travel in the list store's meta record (and so in the KV mirror), written by the engine
    from its options. Unknown fields are ignored, so an older sidecar reads a newer engine's
    record."""

    timezone: str = "UTC"
    """The shop's time zone (the engine's ``timezone``): a request without ``hour`` is in the
    hour and weekday of the server clock there."""
    context_weight: float = 0.4
    """The weight of the context re-rank of personal lists (the model's ``w_ctx``)."""
    experiments: tuple[Experiment, ...] = ()
    """The running experiments (``[[experiments]]`` of ``recofast.toml``): the sidecar serves
    each user with the options of the user's variant."""


__all__ = ["ConfigError", "SharedSettings", "load", "read_table", "replace"]
