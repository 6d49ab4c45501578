"""One registry for every backend, the built-in ones included.

Built-ins are registered by `longvid.backends.builtin.register_backends`, exactly
as a third-party package does through the `longvid.backends` entry-point group:

    [project.entry-points."longvid.backends"]
    mine = "my_pkg.longvid_plugin:register_backends"

where `register_backends(register)` calls `register(MyBackendClass)`. A backend class
has a `name`, `caps` (a `BackendCaps`) and a nested pydantic `Options` model (subclass
`BackendOptions`) for its presets' `options:`; see longvid/backends/base.py.
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any

from pydantic import BaseModel

from longvid.backends.base import Backend, BackendCaps, BackendOptions, caps_for
from longvid.errors import InputError

DEFAULT_PLUGINS = ("longvid.backends.builtin",)

_registry: dict[str, type[Backend]] = {}
_loaded = False


def register(backend: type[Backend]) -> None:
    options = getattr(backend, "Options", None)
    if not (isinstance(options, type) and issubclass(options, BaseModel)):
        raise ValueError(f"backend {backend.name!r} declares no `Options`: give its class a "
                         "nested `class Options(longvid.backends.base.BackendOptions)`")
    first = _registry.get(backend.name)
    if first is not None and first is not backend:
        raise ValueError(
            f"backend {backend.name!r} is registered twice: by {_where(first)} and by "
            f"{_where(backend)}; rename one of them, or uninstall the plugin that brings it")
    _registry[backend.name] = backend


def _where(backend: type) -> str:
    return f"{backend.__module__}.{backend.__qualname__}"


def _load_plugins() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in DEFAULT_PLUGINS:
        importlib.import_module(module).register_backends(register)
    for ep in entry_points(group="longvid.backends"):
        ep.load()(register)


def available() -> dict[str, type[Backend]]:
    _load_plugins()
    return dict(sorted(_registry.items()))


def backend_class(name: str) -> type[Backend]:
    backends = available()
    if name not in backends:
        raise InputError(f"unknown backend {name!r}",
                         "installed backends: " + ", ".join(backends))
    return backends[name]


def caps_of(preset: Any) -> BackendCaps:
    """The caps a preset plans with: its backend's, with the preset's window overrides."""
    return caps_for(backend_class(preset.backend).caps, preset.options)


__all__ = ["Backend", "BackendCaps", "BackendOptions", "available", "backend_class", "caps_of",
           "register"]
