"""The `flipguard` command line: a thin layer over the importable API.

Each subcommand lives in its own module here with a ``register(subparsers)`` function that adds
its parser and sets ``func`` (``args -> exit code``). While a command runs only FlipGuard speaks
on stderr (:mod:`flipguard.console`; ``--verbose`` lets dependencies through). User errors
(:class:`FlipGuardError`) are caught once, here, and printed as one sentence without a
traceback; any other exception is a bug: one sentence and exit 70 (``--debug`` for the traceback).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import traceback

from flipguard import __version__
from flipguard import console
from flipguard.errors import INTERNAL_ERROR, INTERRUPTED, FlipGuardError, exit_code_help

# Subcommand modules, in the order `flipguard --help` lists them.
SUBCOMMANDS = ["demo", "scan", "defend", "batch", "evaluate", "compare", "attack", "zoo"]

COMMON_HELP = {
    "--verbose": f"let dependencies' warnings, logs and progress bars through (or {console.VERBOSE_ENV}=1)",
    "--debug": f"print the traceback of an internal error (or {console.DEBUG_ENV}=1)",
}


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose messages go to FlipGuard's stderr and whose usage errors exit 2."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def _print_message(self, message, file=None):
        if message:
            (console.err() if file in (None, sys.stderr) else file).write(message)

    def error(self, message: str):
        self.print_usage(console.err())
        self.exit(2, f"{self.prog}: error: {message}\n")


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
        epilog=exit_code_help(),
    )
    parser.add_argument("--version", action="version", version=f"flipguard {__version__}")
    _add_common(parser)
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name in SUBCOMMANDS:
        if command in (None, name):
            importlib.import_module(f"flipguard.cli.{name}").register(subparsers)
            sub = subparsers.choices[name]
            _add_common(sub)
            sub.epilog = f"{sub.epilog}\n\n{exit_code_help()}" if sub.epilog else exit_code_help()
        else:
            subparsers.add_parser(name)  # never parsed: the command line names another one
    return parser


def _add_common(parser: argparse.ArgumentParser) -> None:
    """``--verbose`` and ``--debug``, accepted before or after the command's name (their values are
    read from the command line before parsing, so that parsing itself is already quiet)."""
    for flag, text in COMMON_HELP.items():
        parser.add_argument(flag, action="store_true", default=argparse.SUPPRESS, help=text)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    verbose = "--verbose" in argv or console.env_flag(console.VERBOSE_ENV)
    debug = "--debug" in argv or console.env_flag(console.DEBUG_ENV)
    with console.only_flipguard_speaks(verbose):
        return _run(argv, debug)


def _run(argv: list[str], debug: bool) -> int:
    # `flipguard defend ...` builds defend's parser alone; `flipguard --help` (or anything else) all
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in SUBCOMMANDS else None)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except FlipGuardError as error:
        console.say(f"flipguard {args.command}: error: {error}")
        return error.exit_code
    except KeyboardInterrupt:
        console.say("flipguard: interrupted; nothing was written.")
        return INTERRUPTED
    except Exception as error:  # a bug: one sentence, the traceback only when asked
        if debug:
            traceback.print_exc(file=console.err())
        console.say(
            f"flipguard {args.command}: internal error: {type(error).__name__}: {_first_line(error)} "
            "(a bug in FlipGuard: rerun with --debug for the traceback and report it)."
        )
        return INTERNAL_ERROR


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:300] if text else "no message"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
