"""Scan a checkpoint: walk its quantizable tensors one at a time and collect the evidence."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from os import PathLike

import torch

from flipguard.checkpoint import TensorStream, open_checkpoint, quantizable_tensors
from flipguard.checkpoint.memory import release_freed_memory
from flipguard.console import progress_bar
from flipguard.errors import FINDINGS, INPUT_ERROR, OK, NothingScannableError
from flipguard.scan.detector import TensorEvidence, inspect_schemes
from flipguard.scan.verdict import ALPHA, Verdict, decide
from flipguard.schemes import get_scheme, scheme_names
from flipguard.validate import check_open_interval, check_schemes


@dataclass
class ScanReport:
    """Everything a scan found. ``notes`` are per-tensor problems that did not stop the scan."""

    path: str
    schemes: list[str]
    verdict: Verdict
    evidence: list[TensorEvidence] = field(repr=False)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    weights_scanned: int = 0
    alpha: float = ALPHA

    @property
    def errors(self) -> list[str]:
        """Tensors that could not be scanned (NaN/Inf weights), one sentence each."""
        return list(dict.fromkeys(_note(e) for e in self.evidence if e.status == "nonfinite"))

    @property
    def exit_code(self) -> int:
        """2 when a tensor could not be scanned (NaN/Inf: the scan is incomplete, whatever else it
        found), else 1 findings, else 0 clean (or dequantized)."""
        if self.errors:
            return INPUT_ERROR
        return FINDINGS if self.verdict.status == "backdoor" else OK


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
    notes = [_note(e) for e in evidence if e.status in ("nonfinite", "degenerate")]
    if verdict.status == "backdoor" and (checkpoint.path / DEFENSE_REPORT).is_file():
        notes.append(DEFENDED_NOTE)
    return ScanReport(
        path=str(checkpoint.path),
        schemes=names,
        verdict=verdict,
        evidence=evidence,
        notes=list(dict.fromkeys(notes)),
        seconds=time.perf_counter() - start,
        weights_scanned=weights,
        alpha=alpha,
    )


#: What ``flipguard defend`` writes beside the weights (kept in step with flipguard.defend.report).
DEFENSE_REPORT = "flipguard_defense.json"
DEFENDED_NOTE = (
    f"this directory holds {DEFENSE_REPORT}: `flipguard defend` lands every weight it flips a safe depth "
    "inside the new cell, which leaves the same empty band next to the walls, so defended checkpoints "
    "are flagged too. The file proves nothing by itself (anyone can write it): to be sure, defend the "
    "original checkpoint yourself."
)


def _note(e: TensorEvidence) -> str:
    if e.status == "nonfinite":
        return (f"{e.name}: {e.nonfinite} NaN/Inf weight(s), so it was not scanned; the checkpoint is broken: "
                "re-export it from a model without them.")
    return f"{e.name}: every group is all-zero or a lone absmax; no free weight to scan."
