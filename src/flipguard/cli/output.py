"""Writing command output: to stdout, or atomically to a file (complete or not at all)."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path


def emit(text: str, path: str | None) -> None:
    """Print ``text``, or write it to ``path`` through a temporary file renamed into place."""
    if path is None:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text if text.endswith("\n") else text + "\n")
        os.chmod(temp, 0o666 & ~_umask())  # as open() would have made it (mkstemp makes 0600)
        os.replace(temp, target)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
