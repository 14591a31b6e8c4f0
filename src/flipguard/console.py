"""What the command line says on stderr: FlipGuard's own lines, and nothing else.

Dependencies speak on their own: Python loggers and ``warnings`` (transformers, kernels,
bitsandbytes), progress bars of their own (transformers' "Writing model shards"), and C code
writing straight to file descriptor 2 (torch, llama.cpp). In normal use :func:`only_flipguard_speaks`
silences all of them for the length of a command: FlipGuard writes to :func:`err`, the stderr the
command started with, and everything else that writes to ``sys.stderr`` or to descriptor 2 goes to
the null device. With ``--verbose`` (or ``FLIPGUARD_VERBOSE=1``) nothing is silenced.

Every line FlipGuard writes on stderr starts with ``flipguard``: messages (``flipguard scan: error:
...``) and progress bars (:func:`progress_bar`, ``flipguard scan: 45%|...``) alike, so a test, a log
reader or a user can tell them from anything else.
"""

from __future__ import annotations

import logging
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

VERBOSE_ENV = "FLIPGUARD_VERBOSE"
DEBUG_ENV = "FLIPGUARD_DEBUG"
PROGRESS_ENV = "FLIPGUARD_PROGRESS"  # 1: draw progress bars even when stderr is no terminal (CI logs)

_stream: TextIO | None = None  # FlipGuard's stderr while dependencies are silenced


def err() -> TextIO:
    """The stream FlipGuard's own stderr lines go to (``sys.stderr`` when nothing is silenced)."""
    return _stream if _stream is not None else sys.stderr


def silenced() -> bool:
    """Whether dependencies are being silenced now (inside :func:`only_flipguard_speaks`, not verbose)."""
    return _stream is not None


def say(text: str) -> None:
    """Write one line (or several) of FlipGuard's on stderr; each should start with ``flipguard``."""
    print(text, file=err(), flush=True)


def interactive() -> bool:
    """Whether FlipGuard's stderr is a terminal (progress bars are drawn only there, or everywhere
    with ``FLIPGUARD_PROGRESS=1``)."""
    if env_flag(PROGRESS_ENV):
        return True
    try:
        return err().isatty()
    except (AttributeError, ValueError):
        return False


def env_flag(name: str) -> bool:
    """An environment switch: set and not one of '', '0', 'false', 'no'."""
    return os.environ.get(name, "").strip().lower() not in ("", "0", "false", "no")


def progress_bar(desc: str, iterable=None, total: int | None = None, enabled: bool = True, **kwargs):
    """A tqdm bar over ``iterable`` (or counting to ``total``) on FlipGuard's stderr, labelled
    ``flipguard <desc>``; drawn only when ``enabled``."""
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=f"flipguard {desc}", file=err(), disable=not enabled, **kwargs)


@contextmanager
def only_flipguard_speaks(verbose: bool = False) -> Iterator[TextIO]:
    """Silence every dependency's stderr output inside; yields the stream FlipGuard writes to.

    ``verbose``: silence nothing (for debugging). Restores ``sys.stderr``, descriptor 2, the
    logging switch and the warning filters on the way out, however the block ends.
    """
    global _stream
    if verbose or _stream is not None:  # verbose, or already inside (a command calling another)
        yield err()
        return
    original = sys.stderr
    saved_fd = _detach_fd2(original)
    own = os.fdopen(saved_fd, "w", buffering=1, encoding="utf-8", errors="backslashreplace") if saved_fd is not None else original
    null = open(os.devnull, "w", encoding="utf-8")
    previous_disable = logging.root.manager.disable
    _stream, sys.stderr = own, null
    logging.disable(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield own
    finally:
        own.flush()
        sys.stderr, _stream = original, None
        logging.disable(previous_disable)
        if saved_fd is not None:
            os.dup2(saved_fd, 2)
            own.close()
        null.close()


def _detach_fd2(stream: TextIO) -> int | None:
    """Point descriptor 2 at the null device when ``stream`` writes to it; returns a duplicate
    of the old descriptor 2 (for FlipGuard's own lines), or None when ``stream`` is no file on
    descriptor 2 (a test's capture): then only ``sys.stderr`` is swapped."""
    try:
        if stream.fileno() != 2:
            return None
    except (AttributeError, ValueError, OSError):
        return None
    stream.flush()
    saved = os.dup(2)
    null_fd = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null_fd, 2)
    os.close(null_fd)
    return saved
