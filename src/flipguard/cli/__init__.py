"""The `flipguard` command line: a thin layer over the importable API.

Each subcommand lives in its own module here with a ``register(subparsers)`` function that adds
its parser and sets ``func`` (``args -> exit code``). User errors (:class:`FlipGuardError`) are
caught once, here, and printed as one sentence without a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from flipguard import __version__
from flipguard.errors import FlipGuardError

# Subcommand modules, in the order `flipguard --help` lists them.
SUBCOMMANDS = ["demo", "scan", "defend", "evaluate", "compare", "attack", "zoo"]


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose usage errors exit with ``usage_exit_code`` (scan uses 4)."""

    def __init__(self, *args, usage_exit_code: int = 2, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)
        self.usage_exit_code = usage_exit_code

    def error(self, message: str):
        self.print_usage(sys.stderr)
        self.exit(self.usage_exit_code, f"{self.prog}: error: {message}\n")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The whole parser; with ``command`` (a subcommand's name) only that subcommand's module is
    imported and the others get bare parsers: their modules pull in much of torch, transformers and
    scipy to show their defaults, seconds of start-up a command that does not need them should not
    wait for."""
    parser = Parser(
        prog="flipguard",
        description=(
            "Find and remove quantization-conditioned backdoors: checkpoints that behave well in "
            "full precision and turn malicious once quantized (bitsandbytes INT8, FP4, NF4)."
        ),
    )
    parser.add_argument("--version", action="version", version=f"flipguard {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name in SUBCOMMANDS:
        if command in (None, name):
            importlib.import_module(f"flipguard.cli.{name}").register(subparsers)
        else:
            subparsers.add_parser(name)  # never parsed: the command line names another one
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # `flipguard defend ...` builds defend's parser alone; `flipguard --help` (or anything else) all
    parser = build_parser(argv[0] if argv and argv[0] in SUBCOMMANDS else None)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 4
    try:
        return int(args.func(args) or 0)
    except FlipGuardError as err:
        print(f"flipguard {args.command}: error: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("flipguard: interrupted; nothing was written.", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
