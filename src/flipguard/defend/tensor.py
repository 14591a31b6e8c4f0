"""Defending one tensor, and the report a defense fills in: shared by the safetensors and GGUF paths."""

from __future__ import annotations

import torch

from flipguard.checkpoint.messages import dtype_name
from flipguard.defend.flip import safe_depth
from flipguard.defend.multischeme import CHUNK_ELEMENTS, defend_matrix
from flipguard.defend.policies import Policy
from flipguard.defend.report import DefenseReport, TensorDefense
from flipguard.errors import UsageError
from flipguard.schemes import Scheme
from flipguard.schemes.gguf.scheme import GGUFScheme
from flipguard.schemes.kernels.reads import all_finite


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
    if policy.needs_evidence_for([s.name for s in schemes]) or with_evidence:
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
    gguf = [s for s in schemes if isinstance(s, GGUFScheme)]
    if not gguf:
        result.schemes = defend_matrix(wq, schemes, plans, policy, name, depth, noise_scale, max_elements)
        return result
    if policy.is_noise:
        raise UsageError(f"policy {policy.name!r} is a bitsandbytes baseline; for llama.cpp types use a flip "
                         "policy (adaptive, dither, threshold, ratio, ...).")
    result.schemes = _defend_with_gguf(wq, schemes, gguf, plans, policy, name, depth, noise_scale, max_elements)
    return result


def _defend_with_gguf(wq, schemes, gguf, plans, policy, name, depth, noise_scale, max_elements) -> dict:
    """GGUF passes first (coarse grids first, each leaving the weights earlier ones moved), then
    the bitsandbytes passes on the result; every GGUF count is taken on the final values."""
    from flipguard.defend.gguf_flip import defend_gguf_matrix

    work = wq if wq.is_contiguous() else wq.contiguous()
    original = work.clone() if len(schemes) > 1 else None  # later passes can change earlier codes
    alone = len(schemes) == 1
    locked = None if alone else torch.zeros(work.numel(), dtype=torch.bool)
    stats = {}
    for s in sorted(gguf, key=lambda s: len(s.levels)):
        stats[s.name], moved = defend_gguf_matrix(work, s, plans[s.name], name, safe_depth(s.name, depth), locked,
                                                  collect=not alone)
        if locked is not None:
            locked[moved] = True
    bnb = [s for s in schemes if not isinstance(s, GGUFScheme)]
    if bnb:
        stats.update(defend_matrix(work, bnb, plans, policy, name, depth, noise_scale, max_elements))
    if original is not None:
        step = max(1, max_elements // work.shape[1])
        for s in gguf:  # every GGUF count on the final values, chunk by chunk (bounded memory)
            stats[s.name].codes_changed = sum(
                int((s.codes(original[i:i + step]) != s.codes(work[i:i + step])).sum())
                for i in range(0, work.shape[0], step))
    if work is not wq:
        wq.copy_(work)
    return {s.name: stats[s.name] for s in schemes}


def new_report(source: str, plan, policy: Policy, depth: float | None, load_dtype, copied: int) -> DefenseReport:
    """The report of a defense of ``plan`` (filled in as tensors are defended)."""
    report = DefenseReport(
        input=source,
        output="",
        schemes=plan.schemes,
        policy=policy.name,
        params=policy.params(),
        depth={s: safe_depth(s, depth) for s in plan.schemes},
        load_dtype=dtype_name(load_dtype) if load_dtype else None,
        tensors=[],
        copied=copied,
    )
    if plan.targets != plan.schemes:
        report.notes.append(f"targets {', '.join(plan.targets)}: tensors defended under the types they are "
                            f"quantized with ({', '.join(plan.schemes)})"
                            + (f"; GGUF converter output {plan.outtype}" if plan.outtype else ""))
    return report


def nonfinite_refusal(where, name: str, tensor: torch.Tensor) -> str:
    bad = int((~torch.isfinite(tensor)).sum())
    return (
        f"Tensor {name!r} in {where} has {bad:,} NaN/Inf weight(s), "
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
