"""How many threads the kernels (and torch) run on: one for small work, side by side for serial kernels."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numba
import torch

PARALLEL_FROM = 1 << 20  # weights; below this, one thread is faster than several


@contextmanager
def threads_for(weights: int):
    """One thread (torch and numba) while working on fewer than ``PARALLEL_FROM`` weights.

    Threads gain nothing on small tensors and, on a busy machine, OpenMP threads spinning at the
    end of every tiny parallel region make each operation 10-100 times slower.
    """
    if weights >= PARALLEL_FROM:
        yield
        return
    with one_thread():
        yield


@contextmanager
def one_thread():
    """torch and numba on one thread inside, their thread counts restored after."""
    torch_threads, numba_threads = torch.get_num_threads(), numba.get_num_threads()
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(torch_threads)
        numba.set_num_threads(numba_threads)


def side_by_side(work, items: list, threads: int) -> list:
    """``[work(item) for item in items]``, in order, on up to ``threads`` threads; each worker's own
    torch and numba calls run on one thread meanwhile. For work whose kernels are serial
    (``nogil``) or torch's, which release the GIL: a ``parallel=True`` kernel must not be called
    from these threads."""
    threads = min(threads, len(items))
    if threads <= 1:
        return [work(item) for item in items]
    with one_thread(), ThreadPoolExecutor(threads) as pool:
        return list(pool.map(work, items))
