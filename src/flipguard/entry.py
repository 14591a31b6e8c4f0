"""Callable packages: ``flipguard.scan(path)`` runs a scan while ``flipguard.scan`` stays the package.

``import flipguard`` imports nothing heavy; ``flipguard.scan``, ``flipguard.defend``,
``flipguard.evaluate`` and ``flipguard.attack`` are loaded on first use (``flipguard.__getattr__``)
and each is a package whose module object can be called as its main entry point. The entry point
is named, not passed: it is looked up on the package when first called (so a lazy package,
:mod:`flipguard.lazy`, imports its module only then).
"""

from __future__ import annotations

import inspect
import sys
import types
from collections.abc import Callable


class _EntryPoint:
    """The ``__call__`` of a callable package: its function, or the package's attribute of that name
    looked up at each use. On the package it is that function (``flipguard.scan.__call__`` is
    ``scan_checkpoint``); ``inspect.signature(flipguard.scan)`` gives the function's signature."""

    def __init__(self, module_name: str, function: str | Callable):
        self.module_name, self.function = module_name, function

    def resolve(self) -> Callable:
        """The function the package is called as."""
        if callable(self.function):
            return self.function
        return getattr(sys.modules[self.module_name], self.function)

    def __get__(self, module, owner=None):
        return self if module is None else self.resolve()

    def __call__(self, module, *args, **kwargs):  # through the class: CallableModule.__call__(module, ...)
        return self.resolve()(*args, **kwargs)

    @property
    def __signature__(self) -> inspect.Signature:
        signature = inspect.signature(self.resolve())
        bound = inspect.Parameter("module", inspect.Parameter.POSITIONAL_ONLY)  # inspect drops it as self
        return signature.replace(parameters=[bound, *signature.parameters.values()])


def make_callable(module_name: str, function: str | Callable) -> None:
    """Let the (already imported) module ``module_name`` be called as ``function``: a function, or
    the name of one of the module's attributes, looked up when the module is called (a lazy
    package's attribute is imported then).

    The module keeps every attribute it has; only its class changes, to a ``ModuleType`` subclass
    whose ``__call__`` forwards to the function.
    """
    module = sys.modules[module_name]
    entry = _EntryPoint(module_name, function)
    module.__class__ = type("CallableModule", (types.ModuleType,), {"__call__": entry})
