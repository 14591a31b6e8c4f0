"""The on-disk cache of the compiled kernels: fresh while no source file of their folder, or of
this folder, changed.

numba's cache (``njit(cache=True)``) checks a compiled kernel against the file that defines it
only, while kernels inline helpers from other files (``floats`` into every one; ``fourbit`` and
``int8`` into ``flip`` and ``rows``; ``schemes/gguf/numerics`` into every llama.cpp kernel, and
``floats`` through it): after a change to a helper alone, numba would load a kernel compiled with
the old one, and a defense could silently differ from what the code says. Every numba kernel of
FlipGuard inlines only from its own folder and from this one (``schemes/kernels``, home of the
shared helpers; what the scan counts by comes in as arguments), so :func:`kernel` gives each
kernel numba's own cache with one change: its freshness stamp is numba's stamp of the defining
file together with a digest of every ``.py`` file of the defining file's folder and of this
folder (names and contents). Any change to either makes the kernels compile afresh (about a
minute for all), and the stale cache files are overwritten in place. Where the files are kept is
numba's choice as usual (``NUMBA_CACHE_DIR`` if set, else ``__pycache__`` beside the source, else
the user's cache). Nothing of numba's configuration or of the environment is changed: numba code
outside FlipGuard keeps numba's own cache.

Built on numba's caching classes (``numba.core.caching``); ``tests/unit/schemes/kernels/
test_cache.py`` changes a helper in a scratch folder and checks that a kernel inlining it is
compiled again, so a numba release that changes them fails there, not silently.
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import numba
from numba.core.caching import (
    CompileResultCacheImpl, FunctionCache, InTreeCacheLocator, UserProvidedCacheLocator, UserWideCacheLocator,
)


_HELPERS = Path(__file__).resolve().parent  # schemes/kernels: the helpers every kernel may inline


@functools.lru_cache(maxsize=None)  # per process: sources do not change under a running program
def folder_digest(folder: Path) -> str:
    """sha256 (hex) of the names and contents of every ``.py`` file directly in ``folder``."""
    digest = hashlib.sha256()
    for path in sorted(folder.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _folder_stamped(locator: type) -> type:
    """``locator`` (a numba cache locator) whose source stamp also covers the defining file's folder
    and the shared helpers' folder (this one)."""

    class FolderStamped(locator):
        def get_source_stamp(self):
            return (super().get_source_stamp(), folder_digest(Path(self._py_file).resolve().parent),
                    folder_digest(_HELPERS))

    FolderStamped.__name__ = FolderStamped.__qualname__ = f"FolderStamped{locator.__name__}"
    return FolderStamped


class _FolderStampedImpl(CompileResultCacheImpl):
    _locator_classes = [_folder_stamped(c) for c in (UserProvidedCacheLocator, InTreeCacheLocator,
                                                     UserWideCacheLocator)]


class _FolderStampedCache(FunctionCache):
    _impl_class = _FolderStampedImpl


def kernel(**options):
    """``numba.njit(**options)`` with an on-disk cache that is stale as soon as any source file of
    the kernel's folder changes (module docstring). ``cache`` must not be given."""
    if "cache" in options:
        raise TypeError("kernel() caches by itself; do not pass cache")

    def compile_(function):
        dispatcher = numba.njit(**options)(function)
        dispatcher._cache = _FolderStampedCache(dispatcher.py_func)  # what Dispatcher.enable_caching sets
        return dispatcher

    return compile_
