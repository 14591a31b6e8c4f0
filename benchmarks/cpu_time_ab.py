"""CPU time (not wall time) of the per-tensor scan and defense against bitsandbytes' own quantization
of the same tensor, best of N, for comparing two source trees on a busy machine.

On a machine shared with other work, wall-clock timings of the same code move by 30% and more
from run to run; the CPU time a process itself spends (``time.process_time``, every thread of
it) moves by a few percent. Run this once per source tree, alternating, and compare the best
times (and each one's ratio to bitsandbytes, measured in the same process):

    for round in 1 2 3 4; do for src in /path/to/old/src src; do
      OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1 PYTHONPATH=$src .venv/bin/python benchmarks/cpu_time_ab.py 7
    done; done

Prints one JSON line: seconds per setting (``bnb <scheme>``, ``scan <scheme>``: ``inspect_tensor``,
``defend <schemes> <policy>``: ``defend_tensor`` on a copy) on a 4096 x 4096 float16 tensor.
"""

from __future__ import annotations

import json
import sys
import time
import warnings

import torch


def best(fn, repeats: int) -> float:
    """Smallest CPU time (s) of ``repeats`` calls of ``fn`` after a first one (compilation, caches)."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.process_time()
        fn()
        times.append(time.process_time() - start)
    return min(times)


def main() -> None:
    warnings.filterwarnings("ignore")
    import bitsandbytes.functional as F

    from flipguard.defend import defend_tensor, make_policy
    from flipguard.scan import inspect_tensor
    from flipguard.schemes import get_scheme

    repeats = int(sys.argv[1]) if len(sys.argv) > 1 else 7
    w = (torch.randn(4096, 4096, generator=torch.Generator().manual_seed(0)) * 0.02).half()
    out = {}
    for name in ("int8", "fp4", "nf4"):
        if name == "int8":
            out[f"bnb {name}"] = best(lambda: F.int8_vectorwise_quant(w), repeats)
        else:
            out[f"bnb {name}"] = best(lambda: F.quantize_4bit(w, blocksize=64, quant_type=name), repeats)
        scheme = get_scheme(name)
        out[f"scan {name}"] = best(lambda: inspect_tensor("w", w, scheme), repeats)
    for names in (["int8"], ["fp4"], ["nf4"], ["int8", "fp4", "nf4"]):
        schemes = [get_scheme(n) for n in names]
        for policy in ("adaptive", "threshold"):
            out[f"defend {'+'.join(names)} {policy}"] = best(
                lambda: defend_tensor("w", w.clone(), schemes, make_policy(policy)), repeats)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
