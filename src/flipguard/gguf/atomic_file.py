"""Single output files that appear whole or not at all.

The file is written under a hidden temporary name beside the destination (same filesystem, so
the final ``os.replace`` is atomic) and renamed into place only when the writer finished; on any
exception the temporary file is removed and the destination is left as it was.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from os import PathLike
from pathlib import Path

from flipguard.errors import FlipGuardError

TEMP_MARK = ".flipguard-tmp-"  # ".<name>.flipguard-tmp-<hex>"


def checked_output_file(output: str | PathLike, force: bool, source: str | PathLike | None = None) -> Path:
    """``output`` as an absolute Path; FlipGuardError if it exists (without ``force``), is a
    directory, or is the ``source`` file itself."""
    output = Path(output).expanduser().absolute()
    if output.is_dir():
        raise FlipGuardError(f"Output {output} is a directory; give a file path for the GGUF file.")
    if source is not None and output.exists() and output.resolve() == Path(source).resolve():
        raise FlipGuardError(f"Output {output} is the input file; choose another output path.")
    if (output.exists() or output.is_symlink()) and not force:
        raise FlipGuardError(f"Output {output} already exists; choose a new path or pass force=True to replace it.")
    return output


@contextmanager
def atomic_output_file(output: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``output``; rename it to ``output`` when the block succeeds.

    The caller writes the whole file at the yielded path. Parents of ``output`` are created.
    """
    output.parent.mkdir(parents=True, exist_ok=True)
    temp = output.parent / f".{output.name}{TEMP_MARK}{uuid.uuid4().hex[:12]}"
    try:
        yield temp
        os.replace(temp, output)
    finally:
        if temp.exists() or temp.is_symlink():
            temp.unlink()
