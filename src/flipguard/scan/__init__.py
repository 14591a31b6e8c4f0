"""Data-free detection of quantization-conditioned backdoors (see ``flipguard scan --help``).

    from flipguard.scan import scan_checkpoint
    report = scan_checkpoint("path/to/model")          # all three schemes
    report.verdict.status, report.verdict.targeted     # "backdoor", ["nf4"]
"""

from flipguard.entry import make_callable
from flipguard.scan.detector import TensorEvidence, inspect_tensor
from flipguard.scan.plots import plot_histograms
from flipguard.scan.report import FORMATS, ScanReport
from flipguard.scan.runner import scan_checkpoint, scan_tensors
from flipguard.scan.verdict import Finding, SchemeVerdict, Verdict, decide


__all__ = [
    "FORMATS",
    "Finding",
    "ScanReport",
    "SchemeVerdict",
    "TensorEvidence",
    "Verdict",
    "decide",
    "inspect_tensor",
    "plot_histograms",
    "scan_checkpoint",
    "scan_tensors",
]

make_callable(__name__, scan_checkpoint)  # flipguard.scan(path, ...) is scan_checkpoint(path, ...)
