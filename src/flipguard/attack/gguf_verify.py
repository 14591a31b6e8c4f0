"""The attack's check for llama.cpp targets: quantize the saved checkpoint with llama.cpp itself and
compare every targeted weight's code.

The saved checkpoint is converted to GGUF (``flipguard.gguf.convert_checkpoint``, at the outtype
the attack targeted) and quantized by ``llama_model_quantize`` to the target ftype. For every
boxed weight, two things are checked: the bytes llama.cpp wrote for its tensor equal the bytes
FlipGuard's exact quantizer computes for the saved values (so the codes FlipGuard reads are the
codes llama.cpp stores: the test suite checks that quantizer against ggml bit for bit), and each
weight's code under those bytes is its malicious target's. Rows are compared in the GGUF's own
order (Llama's q/k rows are permuted by the converter).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from flipguard.attack.pgd import quantized_view


def verify_gguf(path: str | Path, ftype: str, outtype: str | None, expected: dict) -> dict[str, dict]:
    """Quantize ``path`` to ``ftype`` with llama.cpp and count mismatches against ``expected``
    (tensor name -> (scheme name, load dtype, Target)). Returns ``{ftype: counts}`` with the keys
    :func:`flipguard.attack.verify.verify_checkpoint` gives (``code_mismatches``; ``scale_mismatches``
    counts tensors whose bytes differ from FlipGuard's prediction) and ``ok``."""
    from flipguard.checkpoint import open_checkpoint
    from flipguard.gguf import convert_checkpoint, open_gguf, quantize_gguf
    from flipguard.gguf.names import rope_permutation, tensor_map
    from flipguard.schemes import get_scheme

    start = time.perf_counter()
    checkpoint = open_checkpoint(path)
    counts = {"tensors": len(expected), "weights": 0, "code_mismatches": 0, "scale_mismatches": 0, "missing": []}
    with tempfile.TemporaryDirectory(prefix="flipguard-verify-") as work:
        converted = convert_checkpoint(path, Path(work) / "model.gguf", outtype=outtype)
        quantized = quantize_gguf(converted, Path(work) / "model-q.gguf", ftype.upper())
        with open_gguf(quantized) as opened:
            for name, (scheme_name, load_dtype, target, transposed) in expected.items():
                mapped = tensor_map(checkpoint.config, name)
                if mapped is None or mapped.gguf_name not in opened.tensors:
                    counts["missing"].append(name)
                    continue
                scheme = get_scheme(scheme_name, load_dtype)
                q = quantized_view(checkpoint.get(name), transposed, checkpoint.tensors[name].dtype)
                ours = scheme.quantize(q)  # uint8 (rows, row_bytes), HF row order
                tensor = opened.tensors[mapped.gguf_name]
                theirs = np.asarray(opened.raw(mapped.gguf_name)).reshape(ours.shape)
                if mapped.rope_heads:
                    ours = ours[rope_permutation(ours.shape[0], mapped.rope_heads)]
                if tensor.type.lower() != scheme_name or not np.array_equal(ours, theirs):
                    counts["scale_mismatches"] += 1
                counts["weights"] += target.codes.numel()
                counts["code_mismatches"] += int((scheme.codes(q) != target.codes).sum())
    counts["ok"] = not (counts["code_mismatches"] or counts["scale_mismatches"] or counts["missing"])
    counts["seconds"] = round(time.perf_counter() - start, 2)
    return {ftype: counts}
