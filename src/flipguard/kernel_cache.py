"""Where numba keeps the compiled kernels: a directory keyed by the whole package's source.

numba's on-disk cache (``@njit(cache=True)``) is checked against the file that defines each
kernel only, while FlipGuard's kernels inline helpers from other modules (``scan.fast`` into
``defend.fast`` and ``defend.threshold_rows``, ``schemes.floatbits`` everywhere): after a
change to a helper alone, numba would load a kernel compiled with the old one, and a defense
could silently differ from what the code says. Keying the cache directory by every source
file's name, size and modification time makes any change start a fresh cache (older ones are
left where they are: delete ``~/.cache/flipguard/numba`` to reclaim the space). A
``NUMBA_CACHE_DIR`` set by the user is left alone.
"""

from __future__ import annotations

import hashlib
import os
import sys
from pathlib import Path


def source_key(root: Path) -> str:
    """Digest of the name, size and modification time of every ``.py`` file under ``root``."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        stat = path.stat()
        digest.update(f"{path.relative_to(root).as_posix()}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def use_keyed_cache() -> None:
    """Point numba's cache at ``<user cache>/flipguard/numba/<source key>`` unless the user chose
    one (or that directory cannot be made)."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return
    try:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
        path = base / "flipguard" / "numba" / source_key(Path(__file__).parent)
        path.mkdir(parents=True, exist_ok=True)
    except (OSError, RuntimeError):  # no home or not writable: numba's own default (no worse than before)
        return
    path = str(path)
    os.environ["NUMBA_CACHE_DIR"] = path
    config = sys.modules.get("numba.core.config")
    if config is not None:  # numba imported already: its config has read the environment
        config.CACHE_DIR = path
