"""What a batch does to each checkpoint: the job spec, and the plain function that does it.

A :class:`Job` is a validated, frozen description (``scan`` or ``defend`` and their options) that
travels to every Ray task; its :attr:`Job.hash` keys the results, so a result made with other
options (or another FlipGuard version) is never taken for this job's. :func:`run_item` is an
ordinary function — the same calls ``flipguard scan`` and ``flipguard defend`` make — that the
runner maps over checkpoints as Ray tasks; it knows nothing about Ray.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from flipguard import __version__
from flipguard.errors import FlipGuardError, UsageError

JOBS = ("scan", "defend")
LOAD_DTYPES = ("float32", "float16", "bfloat16")
DEFENDED_DIR = "defended"  # defended checkpoints: <out>/defended/<name>/
REPORTS_DIR = "reports"  # full scan reports: <out>/reports/<name>.json


@dataclass(frozen=True)
class Job:
    """One job for every checkpoint of a batch, validated on construction (UsageError names the
    bad field).

    ``kind``: "scan" or "defend". ``schemes``: scheme names (None: all). ``alpha``: scan's
    family-wise error rate (None: scan's default; scan only). ``policy``/``params``/``depth``:
    defend's policy by name with its parameters, and the safe depth in cell widths (None: each
    scheme's default); defend only. ``skip_modules``/``load_dtype`` as for scan and defend
    (``load_dtype`` by name: "float32", "float16", "bfloat16").
    """

    kind: str = "scan"
    schemes: tuple[str, ...] | None = None
    alpha: float | None = None
    policy: str | None = None
    params: dict = field(default_factory=dict)
    depth: float | None = None
    skip_modules: tuple[str, ...] | None = None
    load_dtype: str | None = None

    def __post_init__(self):
        from flipguard.schemes import scheme_names
        from flipguard.validate import check_open_interval, check_schemes

        if self.kind not in JOBS:
            raise UsageError(f"unknown batch job {self.kind!r}; choose from {', '.join(JOBS)}.")
        set_ = object.__setattr__  # frozen: normalise once, here
        set_(self, "schemes", tuple(check_schemes(self.schemes, scheme_names())))
        if self.skip_modules is not None:
            set_(self, "skip_modules", tuple(str(m) for m in self.skip_modules))
        if self.load_dtype is not None and self.load_dtype not in LOAD_DTYPES:
            raise UsageError(f"unknown load_dtype {self.load_dtype!r}; choose from {', '.join(LOAD_DTYPES)}.")
        if self.kind == "scan":
            if self.policy is not None or self.params or self.depth is not None:
                raise UsageError("policy, params and depth belong to a defend job; a scan job takes none of them.")
            if self.alpha is not None:
                set_(self, "alpha", check_open_interval("alpha", self.alpha, 0, 1))
        else:
            from flipguard.defend import check_depth, make_policy

            if self.alpha is not None:
                raise UsageError("alpha belongs to a scan job; a defend job sets its policy's alpha in params.")
            set_(self, "policy", self.policy or "adaptive")
            set_(self, "params", dict(self.params or {}))
            make_policy(self.policy, **self.params)  # UsageError names a bad policy or parameter
            set_(self, "depth", check_depth(self.depth))

    def to_dict(self) -> dict:
        """The job as JSON-ready values; for defend, the policy's parameters with its defaults
        filled in (``--r 0.15`` and no ``--r`` are the same job)."""
        out = asdict(self)
        out["schemes"] = list(self.schemes)
        out["skip_modules"] = list(self.skip_modules) if self.skip_modules is not None else None
        if self.kind == "defend":
            from flipguard.defend import make_policy

            out["params"] = make_policy(self.policy, **self.params).params()
        return out

    @property
    def hash(self) -> str:
        """16 hex digits of SHA-256 over the job and FlipGuard's version: results key on it."""
        text = json.dumps({"flipguard": __version__, **self.to_dict()}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def run_item(path: str, name: str, job: Job, out: str) -> dict:
    """Run ``job`` on the checkpoint directory ``path``; return its result line (a dict).

    ``name``: the checkpoint's safe name (its outputs are ``<out>/defended/<name>/`` and, for a
    scan, the full report the runner writes to ``<out>/reports/<name>.json``). A FlipGuardError
    (a bad checkpoint) is a result with status "error" and its sentence, not an exception; any
    other exception is a bug and propagates. The scan's full JSON report travels back in the
    result's ``"report_json"`` so that workers need not share the output folder for a scan.
    """
    import flipguard.defend  # noqa: F401 - imported before the clock starts (a worker's first task
    import flipguard.scan  # noqa: F401 - pays for torch and the kernels, not the checkpoint)

    start = time.perf_counter()
    try:
        line = _scan(path, job) if job.kind == "scan" else _defend(path, name, job, Path(out))
    except FlipGuardError as error:
        line = {"status": "error", "exit_code": error.exit_code, "error": str(error)}
    line["seconds"] = round(time.perf_counter() - start, 3)
    return line


def _torch_dtype(name: str | None):
    import torch

    return getattr(torch, name) if name else None


def _scan(path: str, job: Job) -> dict:
    from flipguard.scan import scan_checkpoint
    from flipguard.scan.verdict import ALPHA

    report = scan_checkpoint(
        path,
        schemes=list(job.schemes),
        skip_modules=list(job.skip_modules) if job.skip_modules is not None else None,
        load_dtype=_torch_dtype(job.load_dtype),
        alpha=ALPHA if job.alpha is None else job.alpha,
        progress=False,
    )
    return {
        "status": report.verdict.status,
        "exit_code": report.exit_code,
        "targeted": report.verdict.targeted,
        "dequantized_from": report.verdict.dequantized_from,
        "findings": len(report.findings),
        "errors": report.errors,
        "skipped": len(report.skipped),
        "weights_scanned": report.weights_scanned,
        "report_json": report.to_json(),
    }


def _defend(path: str, name: str, job: Job, out: Path) -> dict:
    from flipguard.checkpoint.atomic import OLD_MARK, TEMP_MARK, remove_path
    from flipguard.defend import defend_checkpoint

    target = out / DEFENDED_DIR / name
    # a worker killed mid-write leaves its temporary directory (or, mid-swap, the old target)
    # beside the target: the retry removes it, and force lets it replace a target an earlier
    # attempt renamed into place before it died
    for mark in (TEMP_MARK, OLD_MARK):
        for stale in target.parent.glob(f".{name}{mark}*"):
            remove_path(stale)
    report = defend_checkpoint(
        path,
        target,
        schemes=list(job.schemes),
        policy=job.policy,
        params=job.params,
        depth=job.depth,
        skip_modules=list(job.skip_modules) if job.skip_modules is not None else None,
        load_dtype=_torch_dtype(job.load_dtype),
        force=True,
        progress=False,
    )
    looked_attacked = sum(
        plan.get("evidence", "clean") not in ("clean", "always") for t in report.tensors for plan in t.plans.values()
    )
    return {
        "status": "defended",
        "exit_code": 0,
        "output": f"{DEFENDED_DIR}/{name}",
        "tensors": len(report.tensors),
        "looked_attacked": looked_attacked,
        "flipped": {scheme: stats.flipped for scheme, stats in report.totals().items()},
        "skipped": len(report.skipped),
    }
