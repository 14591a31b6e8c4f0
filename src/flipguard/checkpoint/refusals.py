"""Checkpoints FlipGuard refuses to read: already quantized by bitsandbytes (or another method).

A QCB defense must run on the full-precision weights *before* quantization; an already-quantized
checkpoint has lost the information the defense moves, so it is refused with a clear message.
"""

from __future__ import annotations

from pathlib import Path

import torch

from flipguard.errors import FlipGuardError

from .header import TensorInfo
from .messages import dtype_name

# Tensor-name suffixes that bitsandbytes writes next to quantized weights (4-bit and LLM.int8).
QUANT_STATE_SUFFIXES = (
    ".absmax",
    ".quant_map",
    ".nested_absmax",
    ".nested_quant_map",
    ".quant_state.bitsandbytes__nf4",
    ".quant_state.bitsandbytes__fp4",
    ".SCB",
    ".weight_format",
)
QUANTIZED_WEIGHT_DTYPES = (torch.uint8, torch.int8)  # packed 4-bit codes / int8 codes


def refuse_quantized(directory: Path, config: dict, tensors: dict[str, TensorInfo]) -> None:
    """Raise FlipGuardError when the config or the tensors show an already-quantized checkpoint."""
    what = _quantization_evidence(config, tensors)
    if what:
        raise FlipGuardError(
            f"{directory} is already quantized ({what}); FlipGuard needs the full-precision "
            "checkpoint (float32, float16 or bfloat16) that was published before quantization."
        )


def _quantization_evidence(config: dict, tensors: dict[str, TensorInfo]) -> str | None:
    quantization_config = config.get("quantization_config")
    if quantization_config is not None:  # even {} or []: transformers would take it for a quantizer's
        method = quantization_config.get("quant_method") if isinstance(quantization_config, dict) else None
        return f"config.json has a quantization_config, quant_method={method or 'unknown'}"
    for name, info in tensors.items():
        if name.endswith(QUANT_STATE_SUFFIXES):
            return f"tensor {name!r} is quantization state"
        if name.endswith(".weight") and info.dtype in QUANTIZED_WEIGHT_DTYPES:
            return f"tensor {name!r} is stored as {dtype_name(info.dtype)}"
    return None
