"""Output directories that appear whole or not at all.

Everything is written into a temporary directory next to the output (same filesystem, so the
final ``rename`` is atomic) and renamed into place only on success. With ``force`` an existing
output is first renamed aside, then removed once the new one is in place.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from flipguard.errors import FlipGuardError

from .files import described, file_kind

TEMP_MARK = ".flipguard-tmp-"  # temporary output: ".<name>.flipguard-tmp-<hex>"
OLD_MARK = ".flipguard-old-"  # a forced output's predecessor while it is being replaced


def check_output_dir(output: Path, source: Path, force: bool) -> Path:
    """Return ``output`` made absolute; raise FlipGuardError if writing it could touch ``source``.

    Refused: the output equal to, inside, or containing the input directory; an existing output
    unless ``force``; a FIFO, socket or device at the output path even with it (as root, replacing
    ``-o /dev/null`` would rename the system's device away).
    """
    output = _absolute(output)
    source = source.resolve()
    if output == source or source in output.parents:
        raise FlipGuardError(
            f"Output {output} is inside the input checkpoint {source}; choose an output outside it."
        )
    if output in source.parents:
        raise FlipGuardError(
            f"Output {output} contains the input checkpoint {source}; choose an output outside it."
        )
    kind = file_kind(output)
    if kind not in ("file", "folder", "missing", "dangling symlink"):  # never rename a device away
        raise FlipGuardError(
            f"Output {output} is {described(kind)}, which FlipGuard never replaces; choose another path."
        )
    if (output.exists() or output.is_symlink()) and not force:
        raise FlipGuardError(
            f"Output {output} already exists; choose a new path or pass --force (force=True) to replace it."
        )
    return output


def _absolute(path: Path) -> Path:
    """Absolute path with the parent resolved but not a final symlink (a forced write replaces the link)."""
    path = path.expanduser().absolute()
    if path.name in ("", ".."):
        return path.resolve()
    return path.parent.resolve() / path.name


def make_temp_dir(output: Path) -> Path:
    """Create an empty hidden directory beside ``output`` (parents created as needed)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    temp = output.parent / f".{output.name}{TEMP_MARK}{uuid.uuid4().hex[:12]}"
    temp.mkdir()
    return temp


def move_into_place(temp: Path, output: Path, force: bool) -> None:
    """Rename ``temp`` to ``output``; with ``force`` swap out whatever was there."""
    if not (output.exists() or output.is_symlink()):
        os.rename(temp, output)
        return
    if not force:
        raise FlipGuardError(
            f"Output {output} appeared while writing; choose a new path or pass --force (force=True)."
        )
    old = output.parent / f".{output.name}{OLD_MARK}{uuid.uuid4().hex[:12]}"
    os.rename(output, old)
    try:
        os.rename(temp, output)
    except BaseException:
        os.rename(old, output)
        raise
    remove_path(old)


def remove_path(path: Path) -> None:
    """Remove a file, symlink or directory tree if it exists."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)
