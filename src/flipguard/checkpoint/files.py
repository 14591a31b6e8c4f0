"""What a path in a checkpoint folder is, found with ``stat`` before anything opens it.

Opening a FIFO for reading blocks until someone writes to it, a symlink to ``/dev/zero`` reads
for ever, and a symlink loop fails only at ``open``: every file FlipGuard reads is checked here
first, and anything but a regular file is refused with a sentence that names it.
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from flipguard.errors import FlipGuardError

MAX_NAME_CHARS = 255  # NAME_MAX on Linux: longer file names cannot exist
MAX_PATH_CHARS = 1024  # a relative name in an index longer than this is no real shard name


def file_kind(path: Path | str) -> str:
    """``"file"``, ``"folder"``, ``"missing"``, ``"dangling symlink"``, ``"symlink loop"``,
    ``"FIFO"``, ``"socket"``, ``"character device"``, ``"block device"``, ``"name too long"`` or
    ``"unreadable entry"``; symlinks are followed (the kind of what they point at)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "dangling symlink" if os.path.islink(path) else "missing"
    except NotADirectoryError:
        return "missing"
    except OSError as error:
        return {errno.ELOOP: "symlink loop", errno.ENAMETOOLONG: "name too long"}.get(error.errno, "unreadable entry")
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "folder"
    for test, kind in ((stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device")):
        if test(mode):
            return kind
    return "unreadable entry"  # pragma: no cover - no other file types on Linux


def described(kind: str) -> str:
    """``"FIFO"`` -> ``"a FIFO"``, ``"symlink loop"`` -> ``"a symlink loop"``, ``"missing"`` -> ``"missing"``."""
    if kind in ("missing", "name too long"):
        return kind
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def require_regular_file(path: Path, fix: str) -> None:
    """Raise FlipGuardError unless ``path`` is a regular file (or a symlink to one).

    ``fix`` ends the sentence: what the user should do (e.g. "restore the model's config.json").
    """
    kind = file_kind(path)
    if kind != "file":
        raise FlipGuardError(f"{short(str(path))} is {described(kind)}, not a regular file; {fix}.")


def short(text: str, limit: int = 120) -> str:
    """``text`` as is, or its start and length when it is longer than ``limit`` characters."""
    if len(text) <= limit:
        return text
    return f"{text[: limit - 40]}...({len(text)} characters)"
