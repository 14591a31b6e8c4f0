"""Scan a checkpoint: walk its quantizable tensors one at a time and collect the evidence."""

from __future__ import annotations

import time
from collections.abc import Iterable
from os import PathLike

import torch

from flipguard.checkpoint import TensorStream, open_checkpoint
from flipguard.checkpoint.memory import release_freed_memory
from flipguard.console import progress_bar
from flipguard.errors import NothingScannableError
from flipguard.scan.detector import SCAN_SAMPLE, TensorEvidence, inspect_schemes
from flipguard.scan.record import check_record, read_record
from flipguard.scan.report import ScanReport
from flipguard.scan.verdict import ALPHA, Verdict, decide
from flipguard.hub import resolve_checkpoint
from flipguard.plan import BNB_TARGETS, SchemeObjects, check_targets, plan_checkpoint, plan_gguf_file
from flipguard.schemes import get_scheme, scheme_names
from flipguard.validate import check_open_interval, check_schemes
from flipguard.workers import check_workers, deal, run_parts


def scan_tensors(
    tensors: Iterable[tuple[str, torch.Tensor]],
    schemes: list[str] | None = None,
    load_dtype: torch.dtype | None = None,
    alpha: float = ALPHA,
) -> tuple[Verdict, list[TensorEvidence]]:
    """Scan ``(name, weight)`` pairs (2-D, as the quantizer reads them) under scheme (cell) names
    such as ``nf4`` or ``q4_k`` (default: the bitsandbytes three)."""
    names = check_schemes(schemes, scheme_names(), default=list(BNB_TARGETS))
    alpha = check_open_interval("alpha", alpha, 0, 1)
    objects = [get_scheme(s, load_dtype) for s in names]
    evidence = [e for name, w in tensors for e in inspect_schemes(name, w, objects)]
    return decide(evidence, names, alpha), evidence


def scan_checkpoint(
    path: str | PathLike,
    schemes: list[str] | str | None = None,
    skip_modules: list[str] | None = None,
    load_dtype: torch.dtype | None = None,
    alpha: float = ALPHA,
    progress: bool = True,
    outtype: str | None = None,
    workers: int = 1,
    full: bool = False,
) -> ScanReport:
    """Scan every tensor of ``path`` that the quantizations ``schemes`` touch, under the cells each
    one quantizes it with.

    ``path``: a Hugging Face checkpoint folder (or a repo id in the Hugging Face cache), or an
    F32/F16/BF16 ``.gguf`` file. ``schemes``: quantization targets (:mod:`flipguard.plan`): int8,
    fp4, nf4, llama.cpp ftypes (q4_k_m, q8_0, ...), or groups bnb/gguf/all (default: all; a GGUF
    target the architecture has no llama.cpp layout for is left out, with a note).
    ``skip_modules``/``load_dtype`` as transformers' (bitsandbytes); ``outtype`` the GGUF
    converter's output dtype (default the converter's choice). ``workers``: processes the tensors
    are dealt to (:mod:`flipguard.workers`; the report does not depend on it). ``full``: measure
    every weight; by default a tensor larger than :data:`~flipguard.scan.detector.SCAN_SAMPLE`
    weights is measured on evenly spaced whole rows holding about that many (NaN/Inf are looked
    for everywhere), which keeps the scan's power (millions of weights per tensor) at a fraction
    of the time. Memory stays near
    the largest tensor per worker: tensors are read one at a time. Raises UsageError for an unknown scheme or an
    ``alpha`` outside (0, 1), FlipGuardError for unreadable input and NothingScannableError when
    nothing would be quantized.
    """
    start = time.perf_counter()
    targets = check_targets(schemes)
    alpha = check_open_interval("alpha", alpha, 0, 1)
    workers = check_workers(workers)
    source = resolve_checkpoint(path)
    if source.suffix == ".gguf":
        return _scan_gguf_file(source, targets, alpha, progress, start)
    checkpoint = open_checkpoint(source)
    plan = plan_checkpoint(checkpoint, targets, skip_modules, load_dtype, outtype, strict=schemes is not None)
    planned = plan.by_name()
    if not planned:
        raise NothingScannableError(
            f"{checkpoint.path} has no tensor that {', '.join(targets)} would quantize (no weight outside the "
            "skip list); there is nothing to scan."
        )
    weights = sum(torch.Size(t.shape).numel() for t in plan.tensors)
    bar = progress_bar("scan", total=weights, enabled=progress, unit="w", unit_scale=True)
    names = [t.tensor_name for t in plan.tensors]
    sample = None if full else SCAN_SAMPLE
    if workers > 1 and len(names) > 1:
        sizes = [(n, torch.Size(planned[n].shape).numel()) for n in names]
        parts = deal(sizes, workers)
        with bar:
            found = {}
            for part in run_parts(scan_part, [(str(checkpoint.path), p, {n: planned[n] for n in p}, None, sample)
                                              for p in parts], workers):
                found.update(part)
                bar.update(sum(torch.Size(planned[n].shape).numel() for n in part))
        evidence = [e for n in names for e in found[n]]
    else:
        with bar:
            evidence = [e for part in [scan_part(checkpoint, names, planned, bar, sample)] for n in names for e in part[n]]
    verdict = decide(evidence, plan.schemes, alpha)
    record, problem = read_record(checkpoint.path)
    defense = None
    if record is not None or problem is not None:
        defense = check_record(record, problem, evidence, {t.tensor_name: t.shape for t in plan.tensors})
    return ScanReport(
        path=str(checkpoint.path),
        schemes=plan.schemes,
        verdict=verdict,
        evidence=evidence,
        defense=defense,
        notes=[f"not scanned: {reason}" for reason in plan.skipped],
        seconds=time.perf_counter() - start,
        weights_scanned=weights,
        alpha=alpha,
        parameters={"targets": targets, "schemes": plan.schemes, "alpha": alpha, "skip_modules": skip_modules,
                    "load_dtype": str(load_dtype).removeprefix("torch.") if load_dtype else None,
                    "outtype": plan.outtype, "sample": sample},
    )


def scan_part(checkpoint, names: list[str], planned: dict, bar=None,
              sample: int | None = None) -> dict[str, list[TensorEvidence]]:
    """The evidence of tensors ``names`` of ``checkpoint`` (a ``Checkpoint`` or its path, in a
    worker process) under their planned schemes, by name."""
    if not hasattr(checkpoint, "tensors"):
        checkpoint = open_checkpoint(checkpoint)
    objects, found = SchemeObjects(), {}
    with TensorStream(checkpoint, names=names) as stream:
        for name, tensor in stream:  # the next tensors are read while this one is scanned
            t = planned[name]
            w = tensor.t().contiguous() if t.transposed else tensor
            found[name] = inspect_schemes(name, w, objects(t.schemes), sample=sample)
            if bar is not None:
                bar.update(tensor.numel())
            del tensor, w
            release_freed_memory()
    return found


def _scan_gguf_file(path, targets: list[str], alpha: float, progress: bool, start: float) -> ScanReport:
    """:func:`scan_checkpoint` of an F32/F16/BF16 GGUF file (its tensors are the rows llama.cpp reads)."""
    from flipguard.gguf import open_gguf

    with open_gguf(path, float_only=True) as opened:
        plan = plan_gguf_file(opened, [t for t in targets if t not in BNB_TARGETS] if len(targets) > 1 else targets)
        if not plan.tensors:
            raise NothingScannableError(f"{path} has no tensor that {', '.join(plan.targets)} would quantize.")
        weights = sum(torch.Size(t.shape).numel() for t in plan.tensors)
        objects, evidence = SchemeObjects(), []
        with progress_bar("scan", total=weights, enabled=progress, unit="w", unit_scale=True) as bar:
            for t in plan.tensors:
                w = opened.tensor(t.tensor_name)
                evidence += inspect_schemes(t.tensor_name, w, objects(t.schemes))
                bar.update(w.numel())
                del w
    record, problem = read_record(path)
    defense = None
    if record is not None or problem is not None:
        defense = check_record(record, problem, evidence, {t.tensor_name: t.shape for t in plan.tensors})
    return ScanReport(
        path=str(path), schemes=plan.schemes, verdict=decide(evidence, plan.schemes, alpha), evidence=evidence,
        defense=defense,
        notes=[f"not scanned: {t} (bitsandbytes does not load GGUF files)" for t in targets if t in BNB_TARGETS],
        seconds=time.perf_counter() - start, weights_scanned=weights, alpha=alpha,
        parameters={"targets": plan.targets, "schemes": plan.schemes, "alpha": alpha},
    )
