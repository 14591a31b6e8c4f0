"""The packages import their public names on first use (``flipguard.lazy``) and stay what they were:
every name of ``__all__`` is the object its module defines, ``flipguard.scan`` & co. are callable
as their entry points, and importing a package (or one light module of it) runs none of the rest."""

from __future__ import annotations

import importlib
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flipguard.lazy import type_checking_imports

SRC = Path(__file__).resolve().parents[3] / "src"
PACKAGES = ["flipguard.attack", "flipguard.batch", "flipguard.checkpoint", "flipguard.defend", "flipguard.demo",
            "flipguard.evaluate", "flipguard.gguf", "flipguard.scan", "flipguard.zoo"]


@pytest.mark.parametrize("name", PACKAGES)
def test_every_public_name_is_its_modules_object(name):
    package = importlib.import_module(name)
    sources = type_checking_imports(name, package.__file__)
    assert sorted(sources) == sorted(package.__all__)  # __all__ and the TYPE_CHECKING imports agree
    for public, (module, original) in sources.items():
        assert getattr(package, public) is getattr(importlib.import_module(module), original), public
        assert public in dir(package)


def test_an_unknown_name_is_an_attribute_error():
    import flipguard.scan

    with pytest.raises(AttributeError, match="module 'flipguard.scan' has no attribute 'nothing'"):
        flipguard.scan.nothing  # noqa: B018
    with pytest.raises(ImportError):
        exec("from flipguard.defend import nothing", {})  # noqa: S102 (a constant statement)


def test_relative_imports_are_resolved_against_the_package(tmp_path):
    init = tmp_path / "__init__.py"
    init.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import x as y, z\n"
                    "    from ..b import w\nfrom .c import not_lazy\n", encoding="utf-8")
    assert type_checking_imports("pkg.sub", str(init)) == {"y": ("pkg.sub.a", "x"), "z": ("pkg.sub.a", "z"),
                                                           "w": ("pkg.b", "w")}


@pytest.mark.parametrize("package, function", [("scan", "scan_checkpoint"), ("defend", "defend_checkpoint"),
                                               ("evaluate", "evaluate"), ("attack", "attack_model"),
                                               ("batch", "batch")])
def test_callable_packages_are_their_entry_points(package, function):
    module = importlib.import_module(f"flipguard.{package}")
    target = getattr(module, function)
    assert callable(module) and module.__call__ is target
    assert inspect.signature(module) == inspect.signature(target)  # the whole signature, first parameter too


def test_a_callable_package_calls_its_function(monkeypatch):
    import flipguard.scan
    from flipguard.scan import runner

    calls = []
    monkeypatch.setattr(flipguard.scan, "scan_checkpoint", lambda *a, **k: calls.append((a, k)) or "report")
    assert flipguard.scan("model", schemes=["nf4"]) == "report"
    assert calls == [(("model",), {"schemes": ["nf4"]})]
    assert runner.scan_checkpoint is not flipguard.scan.scan_checkpoint  # only the package's name was replaced


LIGHT = """
import sys
import flipguard.scan, flipguard.defend, flipguard.evaluate, flipguard.attack, flipguard.zoo
from flipguard.evaluate.metrics import MIN_BACKDOOR_GAP
from flipguard.attack.config import TARGETS
from flipguard.zoo.build import CleanRecipe
loaded = sorted(m for m in sys.modules if m.startswith(("flipguard.scan.", "flipguard.defend.")))
print(sorted({m.split(".")[0] for m in sys.modules} & {"torch", "numpy", "transformers"}), loaded)
"""


def test_importing_a_package_runs_none_of_it():
    env = os.environ | {"PYTHONPATH": str(SRC)}
    done = subprocess.run([sys.executable, "-c", LIGHT], capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[] []"
