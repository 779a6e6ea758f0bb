"""python-consul2's API layer (``consul.base``), loaded without its package's ``__init__``.

That ``__init__`` imports ``consul.std``, the library's requests-based client, and with it
requests and urllib3: about 60 ms of every command's start-up, the largest single part of a
restore's, for a transport statesync never uses (``transport.KeepAliveTransport`` is its own).
The package is registered unexecuted, and the names of its ``__init__`` are served on demand,
so that an ``import consul`` elsewhere still finds ``consul.Consul`` and the rest.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # what is loaded below, for type checkers and the declared-dependencies test
    import consul.base  # noqa: F401


def _package_attribute(name: str):
    if name == "Consul":
        return importlib.import_module("consul.std").Consul
    try:
        return getattr(importlib.import_module("consul.base"), name)
    except AttributeError:
        raise AttributeError(f"module 'consul' has no attribute {name!r}") from None


def _load():
    if "consul" not in sys.modules:
        spec = importlib.util.find_spec("consul")
        if spec is not None and spec.submodule_search_locations is not None:
            package = importlib.util.module_from_spec(spec)
            package.__getattr__ = _package_attribute  # type: ignore[method-assign]
            sys.modules["consul"] = package
    return importlib.import_module("consul.base")


consul_base = _load()
