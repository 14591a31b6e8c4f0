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

Where it can mislead: the errors are a fixed sawtooth of the weights, and under a 4-bit grid,
with a handful of cells per block, weights with strong low-rank structure of their own plus
outlier input features pass some of it to the errors (``benchmarks/structure_probe.py``: synthetic
weights with 90% of their variance in one direction and 30x outlier columns reach 1.56 under FP4
and 1.24 under NF4; INT8, whose cells are a small fraction of a row's range, stays at 1.006);
honest zoo checkpoints in three dtypes stay at or below 1.07 under every scheme and attacked
tensors at or above 1.30; no large trained checkpoint could be measured. Errors are taken from up
to ``SAMPLE_ROWS`` rows holding whole groups (:func:`_sample_rows`) and ``SAMPLE_COLS`` evenly
spaced columns, so the cost and the statistic's scale do not grow with the tensor; the shuffle is
a seeded draw.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from flipguard.schemes import Scheme

STRUCTURE_SCHEMES = ("int8", "fp4", "nf4")  # the schemes it is computed for
STRUCTURE_RATIO = 1.3  # sigma_1(E) over a shuffle's at or above which a tensor is flagged
SAMPLE_ROWS = 256
SAMPLE_COLS = 1024  # a squarer sample has a lower noise edge for the same cost
# smaller tensors are not measured: the smaller the sample, the noisier its largest singular value
# (i.i.d. weights, 200 draws per shape, benchmarks/structure_probe.py: at most 1.17 at 32x32, 1.11
# at 64x64, 1.07 at 128x128, against the 1.3 that flags)
MIN_SIDE = 32


def structure_ratio(w: torch.Tensor, scheme: Scheme, seed: int = 0) -> float | None:
    """The scan's statistic for ``w`` (2-D, as quantized): :func:`error_structure` of a sample of
    rows (whole groups, :func:`_sample_rows`) and evenly spaced columns; None for a scheme outside
    ``STRUCTURE_SCHEMES`` or a tensor smaller than ``MIN_SIDE``."""
    if scheme.name not in STRUCTURE_SCHEMES or min(w.shape) < MIN_SIDE:
        return None
    return error_structure(_sample_rows(w, scheme), scheme, seed, _evenly(w.shape[1], SAMPLE_COLS))


def _sample_rows(w: torch.Tensor, scheme: Scheme) -> torch.Tensor:
    """Up to ``SAMPLE_ROWS`` rows of ``w`` whose groups are the full tensor's: evenly spaced rows
    where every row holds whole groups (INT8's rows; 4-bit blocks when a row is a multiple of the
    block), else the first rows up to a group boundary (or all of them)."""
    n, cols = w.shape
    step = scheme.row_multiple(cols)  # rows per whole number of groups
    if step == 1:
        return w[_evenly(n, SAMPLE_ROWS)]
    rows = min(n, SAMPLE_ROWS) // step * step
    return w[:rows] if rows >= MIN_SIDE else w


def error_structure(w: torch.Tensor, scheme: Scheme, seed: int = 0, cols: torch.Tensor | None = None) -> float | None:
    """sigma_1 of the rounding errors ``u - 1/2`` of ``w`` (2-D, whole groups of ``scheme``; group
    maxima count as 0; only columns ``cols`` if given) over that of the same errors in a seeded
    random order; None if they are all equal."""
    e = scheme.rounding_errors(w.contiguous(), torch.arange(w.shape[1]) if cols is None else cols)
    e = e - e.mean()
    order = _shuffle(e.numel(), seed)
    shuffled = torch.from_numpy(e.numpy().reshape(-1)[order].reshape(e.shape))  # numpy's gather: twice torch's
    noise = _top_singular_value(shuffled)
    return _top_singular_value(e) / noise if noise > 0 else None


@functools.lru_cache(maxsize=8)  # tensors of one shape share a sample shape: drawn once per scan
def _shuffle(n: int, seed: int) -> np.ndarray:
    """The seeded random order of ``n`` errors (read only)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()


def _top_singular_value(e: torch.Tensor) -> float:
    """Largest singular value of ``e``: the root of the top eigenvalue of its smaller Gram matrix
    (a few milliseconds where a full SVD of the sample takes tens). torch's solver, on the
    threads torch is given (the callers give it one): scipy's ``dsyevr`` for the top index alone is
    faster on one thread but runs on its own BLAS threads, which cost 3x on two cores."""
    gram = e @ e.T if e.shape[0] <= e.shape[1] else e.T @ e
    return float(torch.linalg.eigvalsh(gram.double())[-1].clamp(min=0).sqrt())


def _evenly(n: int, most: int) -> torch.Tensor:
    """``min(n, most)`` evenly spaced indices in ``range(n)``."""
    if n <= most:
        return torch.arange(n)
    return torch.div(torch.arange(most) * n, most, rounding_mode="floor")
