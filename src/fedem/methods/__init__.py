"""Method registry: key -> class. A new baseline is one module and one line here."""

from fedem.errors import ConfigError
from fedem.methods.base import Method, MethodContext
from fedem.methods.fedem import FedEM
from fedem.methods.fedmf import FedMF
from fedem.methods.local import Local
from fedem.methods.negcount import NegCount

METHODS: dict[str, type[Method]] = {cls.name: cls for cls in (FedEM, FedMF, Local, NegCount)}


def get_method(key: str) -> type[Method]:
    if key not in METHODS:
        raise ConfigError(f"unknown method '{key}'; valid methods: {', '.join(sorted(METHODS))}")
    return METHODS[key]


__all__ = ["METHODS", "Method", "MethodContext", "get_method"]
