"""Work spread over processes on one machine (``--workers N`` of scan and defend).

Tensors are dealt to ``N`` parts of about equal bytes, each keeping the checkpoint's order; each
part runs in a process of its own (``spawn``: a fresh interpreter, no threads inherited) with
``cores // N`` torch and numba threads, and the caller puts the parts' results back in the
checkpoint's order. Every per-tensor result depends only on the tensor and its name (seeds
included), so the output does not depend on ``N``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor

from flipguard.errors import UsageError


def check_workers(workers: int) -> int:
    """``workers`` as a whole number of at least 1; UsageError otherwise."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise UsageError(f"workers must be a whole number of at least 1, got {workers!r}.")
    return workers


def deal(sizes: Sequence[tuple[str, int]], parts: int) -> list[list[str]]:
    """Names split into at most ``parts`` lists of about equal total size (largest first to the
    lightest part); each list keeps the input order; empty lists are dropped."""
    loads = [0] * parts
    owner: dict[str, int] = {}
    for name, size in sorted(sizes, key=lambda item: -item[1]):
        k = loads.index(min(loads))
        owner[name], loads[k] = k, loads[k] + size
    out = [[name for name, _ in sizes if owner[name] == k] for k in range(parts)]
    return [part for part in out if part]


def _init(threads: int) -> None:
    import numba
    import torch

    torch.set_num_threads(threads)
    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))


def run_parts(function: Callable, parts: list[tuple], workers: int, meanwhile: Callable | None = None) -> list:
    """``[function(*args) for args in parts]``, each in a worker process (at most ``workers`` at
    once); results in the order of ``parts``. ``meanwhile()`` runs here while they work. A worker's
    exception is raised here."""
    import multiprocessing

    threads = max(1, (os.cpu_count() or 1) // workers)
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=min(workers, len(parts)), mp_context=context, initializer=_init,
                             initargs=(threads,)) as pool:
        futures = [pool.submit(function, *args) for args in parts]
        if meanwhile is not None:
            meanwhile()
        return [f.result() for f in futures]
