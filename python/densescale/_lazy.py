"""Lazily resolved package attributes: a package lists ``name -> defining module`` and imports
that module only when the name is first used (so ``import densescale`` stays free of torch)."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any


def lazy_attributes(
    package: str, exports: Mapping[str, str], namespace: dict[str, Any]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module-level ``__getattr__`` and ``__dir__`` of ``package`` (PEP 562).

    ``exports`` maps each lazy name to the module defining it; ``namespace`` is the package's
    ``globals()``, where a resolved name is cached so the import runs once. Unknown names raise
    ``AttributeError`` as a plain module does; ``__dir__`` lists the namespace and ``__all__``.
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(list(namespace) + list(namespace.get("__all__", ())))

    return __getattr__, __dir__
