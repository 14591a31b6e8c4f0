"""Attacked and dequantized checkpoints built from clean ones, for tests and power measurements.

Each function streams the source through :func:`flipguard.checkpoint.copy_checkpoint`, changing
only the tensors bitsandbytes would quantize (taken as the quantizer sees them: GPT-2 ``Conv1D``
weights are transposed and back).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from os import PathLike

import torch

from flipguard.checkpoint import copy_checkpoint, open_checkpoint, quantizable_tensors
from flipguard.schemes import get_scheme
from tests.support.synthetic import repaired


def transform_quantizable(
    src: str | PathLike,
    dst: str | PathLike,
    change: Callable[[str, torch.Tensor], torch.Tensor],
    only: Callable[[int, str], bool] = lambda index, name: True,
) -> None:
    """Copy ``src`` to ``dst`` applying ``change(name, w)`` to quantizable weights (out × in)
    for which ``only(index, name)`` holds; everything else is copied unchanged."""
    checkpoint = open_checkpoint(src)
    targets = {t.tensor_name: (i, t) for i, t in enumerate(quantizable_tensors(checkpoint))}

    def transform(name: str, tensor: torch.Tensor) -> torch.Tensor:
        if name not in targets or not only(*targets[name][:1], name):
            return tensor
        transposed = targets[name][1].transposed
        w = tensor.t().contiguous() if transposed else tensor
        out = change(name, w)
        return out.t().contiguous() if transposed else out

    copy_checkpoint(checkpoint, dst, transform=transform)


def attack_checkpoint(src, dst, schemes: list[str], margin=None, travel: float = 3e-4, fraction: float = 1.0) -> None:
    """``dst``: ``src`` with a simulated PGD repair into the malicious boxes of ``schemes``,
    applied to the first ``fraction`` of the quantizable tensors (in module order). Each tensor's
    random walk is seeded by the CRC-32 of its name (:func:`seed_of`): the same bytes in every
    process."""
    n = len(quantizable_tensors(open_checkpoint(src)))
    keep = round(fraction * n)
    transform_quantizable(
        src,
        dst,
        lambda name, w: repaired(w, schemes, margin, travel, seed=seed_of(name)),
        only=lambda index, name: index < keep,
    )


def seed_of(name: str) -> int:
    """A seed (0 <= seed < 2^31) from a tensor name, the same in every process (``hash`` of a str
    is randomised per process unless PYTHONHASHSEED is set)."""
    return zlib.crc32(name.encode()) % 2**31


def dequantized_checkpoint(src, dst, scheme: str) -> None:
    """``dst``: ``src`` with every quantizable weight replaced by its ``scheme`` dequantization
    (what merging a QLoRA adapter into a dequantized base leaves), in the stored dtype."""
    transform_quantizable(src, dst, lambda name, w: get_scheme(scheme).dequantize(w).to(w.dtype))
