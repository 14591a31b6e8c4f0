"""Scan a checkpoint: walk its quantizable tensors one at a time and collect the evidence."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from os import PathLike

import torch

from flipguard.checkpoint import TensorStream, open_checkpoint, quantizable_tensors
from flipguard.checkpoint.memory import release_freed_memory
from flipguard.console import progress_bar
from flipguard.errors import NothingScannableError
from flipguard.scan.detector import TensorEvidence, inspect_schemes
from flipguard.scan.record import check_record, read_record
from flipguard.scan.report import ScanReport
from flipguard.scan.verdict import ALPHA, Verdict, decide
from flipguard.schemes import get_scheme, scheme_names
from flipguard.validate import check_open_interval, check_schemes


def scan_tensors(
    tensors: Iterable[tuple[str, torch.Tensor]],
    schemes: list[str] | None = None,
    load_dtype: torch.dtype | None = None,
    alpha: float = ALPHA,
) -> tuple[Verdict, list[TensorEvidence]]:
    """Scan ``(name, weight)`` pairs (2-D, out × in, as the quantizer sees them)."""
    names = check_schemes(schemes, scheme_names())
    alpha = check_open_interval("alpha", alpha, 0, 1)
    objects = [get_scheme(s, load_dtype) for s in names]
    evidence = [e for name, w in tensors for e in inspect_schemes(name, w, objects)]
    return decide(evidence, names, alpha), evidence


def scan_checkpoint(
    path: str | PathLike,
    schemes: list[str] | None = None,
    skip_modules: list[str] | None = None,
    load_dtype: torch.dtype | None = None,
    alpha: float = ALPHA,
    progress: bool = True,
) -> ScanReport:
    """Scan every tensor of ``path`` that bitsandbytes would quantize, under each scheme.

    Memory stays near the largest tensor: tensors are read one at a time and each is inspected
    in chunks. Raises UsageError for an unknown scheme or an ``alpha`` outside (0, 1),
    FlipGuardError for unreadable input and NothingScannableError when the checkpoint has no
    quantizable tensor.
    """
    start = time.perf_counter()
    names = check_schemes(schemes, scheme_names())
    alpha = check_open_interval("alpha", alpha, 0, 1)
    checkpoint = open_checkpoint(path)
    targets = {t.tensor_name: t for t in quantizable_tensors(checkpoint, skip_modules)}
    if not targets:
        raise NothingScannableError(
            f"{checkpoint.path} has no tensor that bitsandbytes would quantize (no nn.Linear "
            "weights outside the skip list); there is nothing to scan."
        )
    weights = sum(torch.Size(t.shape).numel() for t in targets.values())
    bar = progress_bar("scan", total=weights, enabled=progress, unit="w", unit_scale=True)

    def quantizer_view(stream: TensorStream) -> Iterator[tuple[str, torch.Tensor]]:
        for name, tensor in stream:  # the next tensors are read while this one is scanned
            yield name, tensor.t().contiguous() if targets[name].transposed else tensor
            bar.update(tensor.numel())
            del tensor
            release_freed_memory()

    with TensorStream(checkpoint, names=[n for n in checkpoint.tensors if n in targets]) as stream:
        verdict, evidence = scan_tensors(quantizer_view(stream), names, load_dtype, alpha)
    bar.close()
    record, problem = read_record(checkpoint.path)
    defense = None
    if record is not None or problem is not None:
        defense = check_record(record, problem, evidence, {n: tuple(t.shape) for n, t in targets.items()})
    return ScanReport(
        path=str(checkpoint.path),
        schemes=names,
        verdict=verdict,
        evidence=evidence,
        defense=defense,
        seconds=time.perf_counter() - start,
        weights_scanned=weights,
        alpha=alpha,
        parameters={"schemes": names, "alpha": alpha, "skip_modules": skip_modules,
                    "load_dtype": str(load_dtype).removeprefix("torch.") if load_dtype else None},
    )
