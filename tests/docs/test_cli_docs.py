"""The command pages say what ``--help`` says: their reference sections are what
``scripts/gen_cli_docs.py`` generates from the parsers now, so a changed option fails here until the
pages are regenerated (``python scripts/gen_cli_docs.py``)."""

from __future__ import annotations

import argparse
import importlib.util
import re
import shutil
import subprocess
import sys

import pytest

from flipguard.cli import SUBCOMMANDS
from tests.docs.conftest import ROOT

PAGES = ROOT / "docs" / "commands"


def generator():
    spec = importlib.util.spec_from_file_location("gen_cli_docs", ROOT / "scripts" / "gen_cli_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def recorded_python() -> str:
    """The Python version the committed pages were generated with (argparse's layout depends on it)."""
    versions = {m for page in PAGES.glob("*.md")
                for m in re.findall(r"\(Python (\d+\.\d+)\)", page.read_text(encoding="utf-8"))}
    assert len(versions) == 1, f"pages generated with several Pythons: {versions}"
    return versions.pop()


def test_every_command_has_a_page_with_a_generated_reference():
    gen = generator()
    for name in SUBCOMMANDS:
        text = (PAGES / f"{name}.md").read_text(encoding="utf-8")
        assert text.count(gen.BEGIN) == 1 and text.count(gen.END) == 1, name
        assert text.index(gen.BEGIN) < text.index(gen.END)


def test_pages_match_the_parsers():
    gen = generator()
    if gen.python_version() != recorded_python():
        pytest.skip(f"pages were generated with Python {recorded_python()}; argparse lays out help "
                    f"differently on {gen.python_version()}")
    stale = gen.stale_pages()
    assert not stale, "stale command pages (run: python scripts/gen_cli_docs.py): " + ", ".join(
        str(p.relative_to(ROOT)) for p in stale)


def test_every_option_is_on_its_page():
    parsers = generator().command_parsers()
    for name, parser in parsers.items():
        text = (PAGES / f"{name}.md").read_text(encoding="utf-8")
        for sub in generator().nested(parser):
            for action in sub._actions:
                if isinstance(action, argparse._HelpAction):
                    continue  # -h, --help: in the help text, not in the table
                for flag in action.option_strings:
                    assert f"`{flag}" in text, f"{flag} of flipguard {name} is not in its page's table"


def test_check_mode_fails_on_a_changed_option(tmp_path, monkeypatch):
    gen = generator()
    page = PAGES / "zoo.md"
    monkeypatch.setattr(gen, "PAGES", tmp_path)
    for name in SUBCOMMANDS:
        shutil.copy(PAGES / f"{name}.md", tmp_path / f"{name}.md")
    edited = page.read_text(encoding="utf-8").replace("--overwrite", "--overwrite-everything")
    (tmp_path / "zoo.md").write_text(edited, encoding="utf-8")
    stale = gen.stale_pages()
    assert list(stale) == [tmp_path / "zoo.md"]
    assert "--overwrite-everything" not in stale[tmp_path / "zoo.md"]


def test_script_check_exits_zero_on_the_committed_pages():
    gen = generator()
    if gen.python_version() != recorded_python():
        pytest.skip(f"pages were generated with Python {recorded_python()}")
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_cli_docs.py"), "--check"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
