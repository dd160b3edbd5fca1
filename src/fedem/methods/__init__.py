"""The methods: one module each, `fedem.methods.<key without dashes>`, holding one `Method` subclass
whose `name` is the key; its hyper-parameters are `$defs.method.<key>` of config.schema.yaml. That
schema entry is the list of implemented methods, so adding a baseline touches no registry, and
this module imports no method (nor torch) until one is asked for."""

from __future__ import annotations

import importlib
from pathlib import Path

from fedem.config import load_schema
from fedem.errors import ConfigError

METHODS: tuple[str, ...] = tuple(load_schema()["$defs"]["method"])


def module_name(key: str) -> str:
    return f"{__name__}.{key.replace('-', '')}"


def module_file(key: str) -> Path:
    """The method's source file, found without importing it (the code hash needs no torch)."""
    return Path(__file__).with_name(f"{key.replace('-', '')}.py")


def get_method(key: str):
    """The Method class implementing `key` (a base method, not a config variant)."""
    if key not in METHODS:
        raise ConfigError(f"unknown method '{key}'; valid methods: {', '.join(sorted(METHODS))}")
    module = importlib.import_module(module_name(key))
    from fedem.methods.base import Method

    found = [
        obj
        for obj in vars(module).values()
        if isinstance(obj, type) and issubclass(obj, Method) and getattr(obj, "name", None) == key
    ]
    if len(found) != 1:
        raise ConfigError(
            f"module {module.__name__} must define exactly one Method with name '{key}' (found {len(found)})"
        )
    return found[0]


__all__ = ["METHODS", "get_method", "module_file", "module_name"]
