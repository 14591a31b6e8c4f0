"""Built-in check: does the saved checkpoint, loaded the way users load it, hold the malicious codes?

The output directory is loaded with transformers + ``BitsAndBytesConfig`` (``load_in_8bit``, or
``load_in_4bit`` with ``bnb_4bit_quant_type`` fp4/nf4), on the CPU (or, given ``device="cuda"``, by
bitsandbytes' CUDA kernels on the GPU); for every quantized
weight the stored codes are compared, exactly, with the malicious target's:

- INT8 (``Linear8bitLt``): the int8 codes ``CB`` and the per-row scales ``SCB``;
- 4-bit (``Linear4bit``): the packed nibbles (even element in the high nibble) unpacked and mapped
  through the quantization table ``quant_state.code`` -- levels are compared, not code numbers,
  because FP4 has two codes for zero -- and the per-block ``quant_state.absmax``.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from flipguard.attack.pgd import Target, quantized_view


def predicted_targets(path: str | Path, schemes: list[str] | None = None) -> dict[str, dict[str, Target]]:
    """scheme -> module -> Target: the codes and group scales every quantized weight of ``path``
    should load with, computed on the CPU by ``flipguard.schemes`` (for :func:`verify_checkpoint`:
    does the real load agree with the prediction?). ``schemes``: default INT8, FP4 and NF4."""
    from flipguard.checkpoint import open_checkpoint
    from flipguard.checkpoint.targets import quantizable_tensors
    from flipguard.schemes import get_scheme, scheme_names

    checkpoint = open_checkpoint(path)
    expected: dict[str, dict[str, Target]] = {name: {} for name in schemes or scheme_names()}
    for t in quantizable_tensors(checkpoint):
        q = quantized_view(checkpoint.get(t.tensor_name), t.transposed, t.dtype)
        for name, targets in expected.items():
            scheme = get_scheme(name)
            targets[t.module_name] = Target(codes=scheme.codes(q), absmax=scheme.absmax(q))
    return expected


def verify_checkpoint(path: str | Path, expected: dict[str, dict[str, Target]],
                      progress: bool = False, device: str = "cpu") -> dict[str, dict]:
    """Load ``path`` under every scheme of ``expected`` (scheme -> module name -> target) and
    count mismatches. Returns, per scheme: ``tensors``, ``weights``, ``code_mismatches``
    (weights whose level differs), ``scale_mismatches`` (groups whose absmax/SCB differs),
    ``missing`` (target modules that were not quantized), ``ok`` and ``seconds``."""
    from flipguard.evaluate.loading import load_model

    results = {}
    for scheme, targets in expected.items():
        start = time.perf_counter()
        model = load_model(path, scheme, device).model
        counts = {"tensors": len(targets), "weights": 0, "code_mismatches": 0,
                  "scale_mismatches": 0, "missing": []}
        for module_name, target in targets.items():
            counts["weights"] += target.codes.numel()
            module = model.get_submodule(module_name)
            compare = _compare_int8 if scheme == "int8" else _compare_4bit
            found = compare(module, target)
            if found is None:
                counts["missing"].append(module_name)
                continue
            counts["code_mismatches"] += found[0]
            counts["scale_mismatches"] += found[1]
        counts["ok"] = not (counts["code_mismatches"] or counts["scale_mismatches"] or counts["missing"])
        counts["seconds"] = round(time.perf_counter() - start, 2)
        results[scheme] = counts
        del model
    return results


def _compare_int8(module, target: Target) -> tuple[int, int] | None:
    weight = module.weight
    if type(module).__name__ != "Linear8bitLt" or getattr(weight, "SCB", None) is None:
        return None
    codes = weight.CB if getattr(weight, "CB", None) is not None else weight.data  # (out, in) int8
    codes = codes.cpu().view(target.codes.shape)
    return (int((codes != target.codes).sum()),
            int((weight.SCB.float().cpu() != target.absmax).sum()))


def _compare_4bit(module, target: Target) -> tuple[int, int] | None:
    weight = module.weight
    state = getattr(weight, "quant_state", None)
    if type(module).__name__ != "Linear4bit" or state is None:
        return None
    packed = weight.data.cpu().reshape(-1)  # uint8, two codes per byte
    codes = torch.stack([packed >> 4, packed & 0x0F], dim=1).reshape(-1)[: target.codes.numel()]
    table = state.code.float().cpu()  # level of each code (FP4: +0 and -0 both give 0.0)
    loaded = table[codes.long()]
    wanted = table[target.codes.reshape(-1).long()]
    return int((loaded != wanted).sum()), int((state.absmax.float().cpu() != target.absmax).sum())
