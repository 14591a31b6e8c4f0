"""What bitsandbytes itself computes, unpacked to one code per weight (the reference for tests)."""

from __future__ import annotations

import bitsandbytes.functional as F
import torch


def bnb_codes(scheme: str, w: torch.Tensor, load_dtype: torch.dtype | None = None):
    """(codes, absmax) from bitsandbytes for ``w`` cast as transformers would before quantizing."""
    w = w.to(load_dtype or w.dtype)
    if scheme == "int8":
        codes, scb, _ = F.int8_vectorwise_quant(w.to(torch.float16))
        return codes, scb
    packed, state = F.quantize_4bit(w, blocksize=64, quant_type=scheme)
    packed = packed.reshape(-1)
    codes = torch.stack([packed >> 4, packed & 15], dim=1).reshape(-1)[: w.numel()]
    return codes.view(w.shape), state.absmax


def bnb_dequantized(scheme: str, w: torch.Tensor) -> torch.Tensor:
    """float32 values the quantized layer computes with (bitsandbytes' own dequantization)."""
    if scheme == "int8":
        codes, scb, _ = F.int8_vectorwise_quant(w.to(torch.float16))
        return F.int8_vectorwise_dequant(codes, scb)
    packed, state = F.quantize_4bit(w, blocksize=64, quant_type=scheme)
    return F.dequantize_4bit(packed, state).float()
