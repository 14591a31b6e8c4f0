"""`flipguard --help` and every `flipguard <command> --help` answer without importing torch, numpy or
transformers (each is a fresh process: what a user waits for), and exit 0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from flipguard.cli import SUBCOMMANDS

SRC = Path(__file__).resolve().parents[3] / "src"
HEAVY = ("torch", "numpy", "transformers")

# Runs the CLI as `flipguard` does, then prints the heavy packages left in sys.modules and the exit code.
PROGRAM = f"""
import sys
from flipguard.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as stop:
    code = stop.code
print("\\nIMPORTED", sorted({{m.split(".")[0] for m in sys.modules}} & {set(HEAVY)!r}), "EXIT", code)
"""


def run_cli(*args: str) -> tuple[list[str], int | str, str]:
    """(heavy packages imported, exit code, stdout) of ``flipguard ARGS`` in a fresh interpreter."""
    env = os.environ | {"PYTHONPATH": str(SRC), "COLUMNS": "200"}  # help lines unwrapped
    done = subprocess.run([sys.executable, "-c", PROGRAM, *args], capture_output=True, text=True,
                          timeout=120, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    last = done.stdout.rstrip().splitlines()[-1]
    assert last.startswith("IMPORTED "), done.stdout[-2000:]
    imported, code = last.removeprefix("IMPORTED ").rsplit(" EXIT ", 1)
    return eval(imported), int(code) if code.lstrip("-").isdigit() else code, done.stdout  # noqa: S307 (our own print)


@pytest.mark.parametrize("args", [["--help"], *[[name, "--help"] for name in SUBCOMMANDS], ["zoo", "build", "--help"]],
                         ids=lambda args: " ".join(args))
def test_help_imports_nothing_heavy(args):
    imported, code, out = run_cli(*args)
    assert code == 0
    assert out.startswith(f"usage: flipguard {' '.join(args[:-1])}".rstrip())
    assert imported == []


def test_the_top_level_help_lists_every_command_with_its_summary():
    from flipguard.cli import SUMMARIES

    imported, code, out = run_cli("--help")
    assert imported == [] and code == 0
    for name, summary in SUMMARIES.items():
        assert f"    {name:<8}  {summary}\n" in out


@pytest.mark.parametrize("args", [[], ["--version"], ["no-such-command"]], ids=lambda args: " ".join(args) or "none")
def test_no_command_imports_nothing_heavy(args):
    imported, code, _ = run_cli(*args)
    assert imported == []
    assert code == (0 if args == ["--version"] else 2)


def test_summaries_are_what_each_command_registers():
    """The static one-line helps of `flipguard --help` are the ones each command's parser gives."""
    from flipguard.cli import SUMMARIES, build_parser

    subparsers = build_parser()._subparsers._group_actions[0]
    helps = {action.dest: action.help for action in subparsers._choices_actions}
    assert helps == SUMMARIES
