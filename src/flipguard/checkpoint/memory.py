"""Give memory freed by finished tensors back to the operating system."""

from __future__ import annotations

import ctypes


def release_freed_memory() -> None:
    """Hand memory freed by the last tensor back to the OS (glibc keeps freed chunks of tens of
    MB in its heaps otherwise, one heap per thread that allocated them, and the peak grows with
    every tensor of a large checkpoint)."""
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


def _load_libc():
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to trim
        return None


_LIBC = _load_libc()
