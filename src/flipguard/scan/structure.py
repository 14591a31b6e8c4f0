"""A second trace of an attack: rounding errors with low-rank structure (maths only; no files).

The attacker's repair stage moves every weight toward a benign value but never across a wall of
its malicious cell (the box). Its moves follow the gradients of the clean loss, so they share a
few directions across rows and columns; clamped inside the cells, they stay visible in the matrix
of rounding errors ``E = u - 1/2`` (each weight's position in its cell). An honest update -- a
fine-tune, a merged LoRA adapter -- crosses walls freely, and the errors of a weight whose
position in its cell is uniform average to zero whatever the update, so ``E`` stays close to
independent noise. The statistic: the largest singular value of ``E`` over that of the same
entries in a random order (about 1 without structure, Marchenko-Pastur). It does not look at how
far weights sit from the walls, so an attacker who spreads its margins at random (``flipguard
attack --margin-spread``) to empty no band still shows it.

Computed for INT8 only (``STRUCTURE_SCHEMES``): an INT8 cell is a small fraction of a row's range,
so the errors are a sawtooth over dozens of cells that keeps none of the weights' own structure;
a 4-bit grid has a handful of cells per block, and weights with strong low-rank structure of their
own plus outlier input features pass some of it to the errors (``benchmarks/structure_probe.py``:
up to 1.56 under FP4 and 1.24 under NF4 on synthetic weights, against at most 1.006 under INT8;
honest zoo checkpoints in three dtypes at most 1.07 under every scheme; attacked tensors at least 1.30).
Errors are taken from up to ``SAMPLE_ROWS`` evenly spaced rows and ``SAMPLE_COLS`` evenly spaced
columns (INT8 groups are rows, so a row sample keeps every scale); the order is a seeded draw.
"""

from __future__ import annotations

import torch

from flipguard.schemes import Scheme

STRUCTURE_SCHEMES = ("int8",)
STRUCTURE_RATIO = 1.3  # sigma_1(E) over a shuffle's at or above which a tensor is flagged
SAMPLE_ROWS = 128
SAMPLE_COLS = 2048
MIN_SIDE = 16  # smaller samples give a noisy largest singular value


def structure_ratio(w: torch.Tensor, scheme: Scheme, seed: int = 0) -> float | None:
    """The scan's statistic for ``w`` (2-D, as quantized): :func:`error_structure` of a sample of
    evenly spaced rows and columns; None for a scheme outside ``STRUCTURE_SCHEMES`` or a tensor
    smaller than ``MIN_SIDE``."""
    if scheme.name not in STRUCTURE_SCHEMES or min(w.shape) < MIN_SIDE:
        return None
    return error_structure(w[_evenly(w.shape[0], SAMPLE_ROWS)], scheme, seed, _evenly(w.shape[1], SAMPLE_COLS))


def error_structure(w: torch.Tensor, scheme: Scheme, seed: int = 0, cols: torch.Tensor | None = None) -> float | None:
    """sigma_1 of the rounding errors ``u - 1/2`` of ``w`` (2-D, whole groups of ``scheme``; group
    maxima count as 0; only columns ``cols`` if given) over that of the same errors in a seeded
    random order; None if they are all equal."""
    grouped = scheme.group(w.contiguous())
    _, u, _ = scheme.position(grouped.x)
    e = torch.where(grouped.pinned, 0.0, u.float() - 0.5).reshape(w.shape)
    e = e[:, cols] if cols is not None else e
    e = e - e.mean()
    order = torch.randperm(e.numel(), generator=torch.Generator().manual_seed(seed))
    shuffled = e.reshape(-1)[order].reshape(e.shape)
    noise = _top_singular_value(shuffled)
    return _top_singular_value(e) / noise if noise > 0 else None


def _top_singular_value(e: torch.Tensor) -> float:
    """Largest singular value of ``e``: the root of the top eigenvalue of its smaller Gram matrix
    (a few milliseconds where a full SVD of the sample takes tens)."""
    gram = e @ e.T if e.shape[0] <= e.shape[1] else e.T @ e
    return float(torch.linalg.eigvalsh(gram.double())[-1].clamp(min=0).sqrt())


def _evenly(n: int, most: int) -> torch.Tensor:
    """``min(n, most)`` evenly spaced indices in ``range(n)``."""
    if n <= most:
        return torch.arange(n)
    return torch.div(torch.arange(most) * n, most, rounding_mode="floor")
