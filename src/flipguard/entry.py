"""Callable packages: ``flipguard.scan(path)`` runs a scan while ``flipguard.scan`` stays the package.

``import flipguard`` imports nothing heavy; ``flipguard.scan``, ``flipguard.defend``,
``flipguard.evaluate`` and ``flipguard.attack`` are loaded on first use (``flipguard.__getattr__``)
and each is a package whose module object can be called as its main entry point.
"""

from __future__ import annotations

import inspect
import sys
import types
from collections.abc import Callable


def make_callable(module_name: str, function: Callable) -> None:
    """Let the (already imported) module ``module_name`` be called as ``function``.

    The module keeps every attribute it has; only its class changes, to a ``ModuleType`` subclass
    whose ``__call__`` forwards to ``function`` (same signature and docstring).
    """
    module = sys.modules[module_name]

    def __call__(self, *args, **kwargs):
        return function(*args, **kwargs)

    __call__.__doc__ = function.__doc__
    __call__.__signature__ = inspect.signature(function)
    module.__class__ = type("CallableModule", (types.ModuleType,), {"__call__": __call__})
