"""Defend a checkpoint: walk its tensors, defend the quantizable ones, write the same layout.

    from flipguard.defend import defend_checkpoint
    report = defend_checkpoint("model", "model-defended")             # adaptive, int8+fp4+nf4
    report = defend_checkpoint("model", "out", policy="ratio", params={"r": 0.15}, schemes=["nf4"])

Every input is checked before anything is written; the output appears whole (temporary
directory renamed into place) or not at all; tensors stream one at a time.
"""

from __future__ import annotations

import time
from os import PathLike

import torch

from flipguard.checkpoint import CheckpointWriter, QuantTarget, TensorStream, open_checkpoint, quantizable_tensors
from flipguard.checkpoint.messages import dtype_name
from flipguard.console import progress_bar
from flipguard.defend.flip import safe_depth
from flipguard.defend.multischeme import CHUNK_ELEMENTS, defend_matrix
from flipguard.defend.policies import Policy, make_policy
from flipguard.defend.report import REPORT_FILE, DefenseReport, TensorDefense
from flipguard.errors import FlipGuardError, UsageError
from flipguard.schemes import Scheme, get_scheme, scheme_names
from flipguard.schemes.kernels.reads import all_finite


def check_schemes(schemes: list[str] | None) -> list[str]:
    """Scheme names, lower-cased and deduplicated; UsageError names an unknown one."""
    names = [s.strip().lower() for s in (schemes or scheme_names()) if s.strip()]
    for name in names:
        if name not in scheme_names():
            raise UsageError(f"unknown scheme {name!r}; choose from {', '.join(scheme_names())}.")
    if not names:
        raise UsageError(f"no scheme given; choose from {', '.join(scheme_names())}.")
    return list(dict.fromkeys(names))


NONFINITE = ("refuse", "keep")  # what defend_checkpoint does with a weight tensor holding NaN/Inf


def check_nonfinite(nonfinite: str) -> str:
    """One of ``NONFINITE``; UsageError otherwise."""
    if nonfinite not in NONFINITE:
        raise UsageError(f"unknown NaN/Inf policy {nonfinite!r}; choose from {', '.join(NONFINITE)}.")
    return nonfinite


def check_depth(depth: float | None) -> float | None:
    """None (each scheme's default) or a depth in (0, 0.5) cell widths; UsageError otherwise."""
    if depth is None:
        return None
    if not 0 < depth < 0.5:
        raise UsageError(f"depth must be between 0 and 0.5 cell widths (exclusive), got {depth}.")
    return float(depth)


def defend_tensor(
    name: str,
    w: torch.Tensor,
    schemes: list[Scheme],
    policy: Policy,
    transposed: bool = False,
    depth: float | None = None,
    max_elements: int = CHUNK_ELEMENTS,
    with_evidence: bool = False,
) -> TensorDefense:
    """Defend one stored weight ``w`` in place (float dtype, 2-D as stored) and say what was done.

    ``transposed``: GPT-2 ``Conv1D`` weight, quantized as its transpose. NaN/Inf tensors are left
    unchanged (status "nonfinite"). ``with_evidence``: measure the scan's evidence of ``w`` (before
    defending) even where the policy does not need it; it is kept in the result's ``evidence``.
    """
    result = TensorDefense(name, tuple(w.shape), dtype_name(w.dtype), transposed, "defended")
    wq = w.t() if transposed else w  # a view: defended in place
    evidence = {s.name: None for s in schemes}
    if policy.needs_evidence or with_evidence:
        from flipguard.scan.detector import inspect_schemes

        # the first scheme's scan checks for NaN/Inf (inside its kernel where it reads raw bits)
        evidence = {e.scheme: e for e in inspect_schemes(name, wq, schemes)}
        result.evidence = evidence
        finite = evidence[schemes[0].name].status != "nonfinite"
    else:
        finite = all_finite(w)
    if not finite:
        result.status = "nonfinite"
        return result
    plans = policy.plan_all(evidence)
    result.plans = {name_: plan.detail for name_, plan in plans.items()}
    noise_scale = None
    if policy.is_noise and policy.relative_to == "std":
        noise_scale = _std(w)
        result.plans = {s.name: {**plans[s.name].detail, "std": noise_scale} for s in schemes}
    result.schemes = defend_matrix(wq, schemes, plans, policy, name, depth, noise_scale, max_elements)
    return result


def defend_checkpoint(
    path: str | PathLike,
    out: str | PathLike,
    schemes: list[str] | None = None,
    policy: str | Policy = "adaptive",
    params: dict | None = None,
    depth: float | None = None,
    skip_modules: list[str] | None = None,
    load_dtype: torch.dtype | None = None,
    force: bool = False,
    progress: bool = False,
    nonfinite: str = "refuse",
) -> DefenseReport:
    """Write ``out``: the checkpoint at ``path`` with every quantizable weight defended.

    ``schemes``: "int8", "fp4", "nf4" (default all; one checkpoint safe under each); ``policy``:
    a name from ``POLICIES`` with ``params``, or a :class:`Policy`; ``depth``: cell widths a
    flipped weight keeps from the walls of its new cell (None: ``SAFE_DEPTH`` per scheme);
    ``skip_modules``/``load_dtype`` as
    transformers' ``llm_int8_skip_modules`` / ``dtype``. Non-quantizable tensors and companion
    files are copied unchanged; ``REPORT_FILE`` is added. Raises FlipGuardError (nothing written)
    for bad options, an unreadable checkpoint, or an output inside the input or already there
    without ``force``. ``progress``: a progress bar (weights defended) on stderr.

    ``nonfinite``: what to do with a quantizable tensor holding NaN or Inf, which no quantizer
    can round and no defense can move: ``"refuse"`` (default) raises FlipGuardError naming it,
    and nothing is written; ``"keep"`` copies it unchanged, undefended, with a note in the report.
    """
    start = time.perf_counter()
    names = check_schemes(schemes)
    depth = check_depth(depth)
    nonfinite = check_nonfinite(nonfinite)
    if isinstance(policy, str):
        policy = make_policy(policy, **(params or {}))
    objects = [get_scheme(s, load_dtype) for s in names]
    checkpoint = open_checkpoint(path)
    targets: dict[str, QuantTarget] = {t.tensor_name: t for t in quantizable_tensors(checkpoint, skip_modules)}
    if not targets:
        raise FlipGuardError(
            f"{checkpoint.path} has no tensor that bitsandbytes would quantize (no nn.Linear weights "
            "outside the skip list); there is nothing to defend."
        )
    report = DefenseReport(
        input=str(checkpoint.path),
        output="",
        schemes=names,
        policy=policy.name,
        params=policy.params(),
        depth={s: safe_depth(s, depth) for s in names},
        load_dtype=dtype_name(load_dtype) if load_dtype else None,
        tensors=[],
        copied=len(checkpoint.tensors) - len(targets),
    )
    weights = sum(torch.Size(t.shape).numel() for t in targets.values())
    bar = progress_bar("defend", total=weights, enabled=progress, unit="w", unit_scale=True)
    with bar, CheckpointWriter(out, like=checkpoint, force=force) as writer:
        report.output = str(writer.path)
        # file order; the next tensors are read and the last ones written while this one is
        # defended; the others are copied file to file meanwhile, never held in memory
        order = list(checkpoint.tensors)
        with TensorStream(checkpoint, names=[n for n in order if n in targets], writer=writer,
                          copies=[n for n in order if n not in targets]) as stream:
            for name, tensor in stream:
                done = defend_tensor(name, tensor, objects, policy, targets[name].transposed, depth)
                report.tensors.append(done)
                if done.status == "nonfinite":
                    if nonfinite == "refuse":
                        raise FlipGuardError(_nonfinite_refusal(checkpoint, name, tensor))
                    report.notes.append(f"{name}: NaN/Inf weights; left unchanged.")
                bar.update(tensor.numel())
                stream.write(name, tensor)
                del tensor
        writer.write_file(REPORT_FILE, report.to_json())
    report.seconds = time.perf_counter() - start
    return report


def _nonfinite_refusal(checkpoint, name: str, tensor: torch.Tensor) -> str:
    bad = int((~torch.isfinite(tensor)).sum())
    return (
        f"Tensor {name!r} in {checkpoint.path / checkpoint.tensors[name].shard} has {bad:,} NaN/Inf weight(s), "
        "which no quantizer can round and no defense can move, so nothing was written; repair the checkpoint, "
        "or pass --nonfinite keep (nonfinite=\"keep\") to copy such tensors unchanged and undefended."
    )


def _std(w: torch.Tensor) -> float:
    """Standard deviation of ``w`` in float64, row chunk by row chunk (bounded memory)."""
    total, squares, n = 0.0, 0.0, w.numel()
    for rows in torch.split(w.reshape(w.shape[0], -1), max(1, (1 << 20) // max(1, w[0].numel()))):
        r = rows.double()
        total += float(r.sum())
        squares += float((r * r).sum())
    mean = total / n
    return max(0.0, squares / n - mean * mean) ** 0.5
