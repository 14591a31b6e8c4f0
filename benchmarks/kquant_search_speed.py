"""Stage 1 of the k-quants (the scale search) per sub-block against the lockstep batch, and the
schemes' ``analyse`` / ``quantize``, on the same weights in one process.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/kquant_search_speed.py [--weights 1048576]

- *scalar*: ``search_sub`` for each sub-block in turn (``make_qkx2_quants`` per sub-block, the
  search before the batch and the one ``cell_search`` still uses), one thread;
- *batched*: ``search_all`` (``make_qkx2_quants_batch``: the 8 (Q4_K, Q5_K) or 16 (Q2_K)
  sub-blocks of a super-block in lockstep), one thread; its results are checked equal to the
  scalar ones bit for bit;
- ``analyse`` and ``quantize`` of the scheme (numba's threads), which now run the batch.

Times are the best of ``--repeat`` runs, in ms per 1M weights (float16 N(0, 0.02) weights).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from numba import njit

from flipguard.schemes import get_scheme
from flipguard.schemes.gguf import kquant_kernels as kq

KINDS = {"q2_k": 0, "q3_k": 1, "q4_k": 2, "q5_k": 3, "q6_k": 4}


@njit
def _scalar(kind, x, Ls, S, M):
    weights = np.empty(32, np.float32)
    aux = np.empty(32, np.int64)
    work = np.empty((3, 32), np.float32)
    for b in range(x.size // 256):
        for j in range(kq.NSUB[kind]):
            s, m = kq.search_sub(kind, x, 256 * b, j, Ls[b], weights, aux, work)
            S[b, j] = s
            M[b, j] = m


@njit
def _batched(kind, x, Ls, S, M):
    weights = np.empty(32, np.float32)
    aux = np.empty(32, np.int64)
    work = np.empty((3, 32), np.float32)
    for b in range(x.size // 256):
        kq.search_all(kind, x, 256 * b, Ls[b], S[b], M[b], weights, aux, work)


def _best(f, repeat):
    f()
    t = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        f()
        t.append(time.perf_counter() - t0)
    return min(t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", type=int, default=1 << 20, help="weights (a multiple of 2048)")
    p.add_argument("--types", default="q4_k,q5_k,q2_k,q6_k,q3_k")
    p.add_argument("--repeat", type=int, default=7)
    args = p.parse_args()
    w = (torch.randn(args.weights // 2048, 2048, generator=torch.Generator().manual_seed(0)) * 0.02).half()
    x = np.ascontiguousarray(w.float().reshape(-1).numpy())
    nb = x.size // 256
    per_m = 1e3 * (1 << 20) / x.size
    print(f"{x.size} float16 weights; ms per 1M weights (best of {args.repeat})")
    print(f"{'type':6} {'stage1 scalar':>14} {'stage1 batched':>15} {'speed-up':>9} {'analyse':>9} {'quantize':>9}")
    for name in args.types.split(","):
        kind = KINDS[name]
        out = []
        for f in (_scalar, _batched):
            a = (np.zeros((nb, 256), np.int64), np.zeros((nb, 16), np.float32), np.zeros((nb, 16), np.float32))
            out.append((_best(lambda: f(kind, x, *a), args.repeat), a))
        (ts, a), (tb, b) = out
        same = all(np.array_equal(u.view(np.uint8), v.view(np.uint8)) for u, v in zip(a, b))
        assert same, f"{name}: the batched search differs from the scalar one"
        s = get_scheme(name)
        ta = _best(lambda: s.analyse(w), args.repeat)
        tq = _best(lambda: s.quantize(w), args.repeat)
        print(f"{name:6} {ts * per_m:14.2f} {tb * per_m:15.2f} {ts / tb:8.2f}x {ta * per_m:9.2f} {tq * per_m:9.2f}")


if __name__ == "__main__":
    main()
