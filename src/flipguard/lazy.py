"""Lazy package exports (PEP 562): a package's public names are imported when first used.

A package lists its public names as ordinary ``from ... import ...`` statements under
``if TYPE_CHECKING:`` (so type checkers, editors and the API docs see them, and the import graph
test counts them), and ends with::

    __getattr__, __dir__ = lazy_exports(__name__, __file__)

:func:`lazy_exports` reads those statements (the one list of which name lives where) and gives the
package a ``__getattr__`` that imports a name's module the first time the name is asked for, then
keeps the value on the package. ``from flipguard.scan import scan_checkpoint`` works as before; a
bare ``import flipguard.scan`` (or ``from flipguard.scan.verdict import ALPHA``) no longer imports
the whole package, so a command's ``--help`` needs neither torch nor numba.

Only the standard library is imported here.
"""

from __future__ import annotations

import ast
import importlib
import sys
from collections.abc import Callable
from pathlib import Path


def type_checking_imports(package: str, init_file: str) -> dict[str, tuple[str, str]]:
    """``{public name: (absolute module, name in that module)}`` for every ``from ... import ...``
    directly under an ``if TYPE_CHECKING:`` of ``init_file`` (the ``__init__.py`` of ``package``);
    relative imports are resolved against ``package``."""
    tree = ast.parse(Path(init_file).read_text(encoding="utf-8"), init_file)
    found: dict[str, tuple[str, str]] = {}
    for node in tree.body:
        if not (isinstance(node, ast.If) and _is_type_checking(node.test)):
            continue
        for statement in node.body:
            if not isinstance(statement, ast.ImportFrom):
                continue
            base = package.split(".")[: len(package.split(".")) - statement.level + 1] if statement.level else []
            module = ".".join([*base, *([statement.module] if statement.module else [])])
            for alias in statement.names:
                found[alias.asname or alias.name] = (module, alias.name)
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def lazy_exports(package: str, init_file: str) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """The ``__getattr__`` and ``__dir__`` of ``package``, whose names are those its
    ``init_file`` imports under ``if TYPE_CHECKING:`` (:func:`type_checking_imports`)."""
    sources = type_checking_imports(package, init_file)

    def __getattr__(name: str):
        if name not in sources:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module_name, original = sources[name]
        value = getattr(importlib.import_module(module_name), original)
        setattr(sys.modules[package], name, value)  # next time a plain attribute
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(sources))

    return __getattr__, __dir__
