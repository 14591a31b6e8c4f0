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
from pathlib import Path

import torch

from flipguard.checkpoint import CheckpointWriter, TensorStream, open_checkpoint
from flipguard.console import progress_bar
from flipguard.defend.policies import Policy, make_policy
from flipguard.defend.tensor import defend_tensor, new_report, nonfinite_refusal
from flipguard.defend.report import REPORT_FILE, DefenseReport
from flipguard.errors import FlipGuardError, UsageError
from flipguard.hub import resolve_checkpoint
from flipguard.plan import BNB_TARGETS, SchemeObjects, check_targets, plan_checkpoint
from flipguard.workers import check_workers, deal, run_parts


def check_schemes(schemes: list[str] | str | None) -> list[str]:
    """Quantization targets (:func:`flipguard.plan.check_targets`; default the bitsandbytes three:
    defend what you deploy); UsageError names an unknown one."""
    return check_targets(schemes, default=BNB_TARGETS)


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
    outtype: str | None = None,
    workers: int = 1,
) -> DefenseReport:
    """Write ``out``: the checkpoint at ``path`` with every weight the ``schemes`` quantize defended.

    ``path``: a Hugging Face checkpoint folder (or a repo id in the Hugging Face cache) — ``out``
    is a folder in the same layout — or an F32/F16/BF16 ``.gguf`` file — ``out`` is a GGUF file
    with the same metadata and tensor order, its report beside it. ``schemes``: quantization
    targets (:mod:`flipguard.plan`): "int8", "fp4", "nf4", llama.cpp ftypes ("q4_k_m", "q8_0",
    ...) or groups "bnb", "gguf", "all" (default bnb: one checkpoint safe under each of the three;
    a llama.cpp target defends every tensor it quantizes under the ggml type its mixture gives
    it, on the values the converter writes at ``outtype``, default the converter's); ``policy``:
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

    ``workers``: processes the quantized tensors are dealt to (:mod:`flipguard.workers`); each
    writes its tensors straight into the output's shards, and the output is byte-identical to one
    worker's.
    """
    start = time.perf_counter()
    targets = check_schemes(schemes)
    depth = check_depth(depth)
    nonfinite = check_nonfinite(nonfinite)
    workers = check_workers(workers)
    if isinstance(policy, str):
        policy = make_policy(policy, **(params or {}))
    source = resolve_checkpoint(path)
    if source.suffix == ".gguf":
        from flipguard.defend.gguf_file import defend_gguf_file

        return defend_gguf_file(source, out, targets, policy, depth, force, progress, nonfinite, start)
    checkpoint = open_checkpoint(source)
    plan = plan_checkpoint(checkpoint, targets, skip_modules, load_dtype, outtype)
    planned = plan.by_name()
    if not planned:
        raise FlipGuardError(
            f"{checkpoint.path} has no tensor that {', '.join(targets)} would quantize (no weight outside the "
            "skip list); there is nothing to defend."
        )
    report = new_report(str(checkpoint.path), plan, policy, depth, load_dtype, len(checkpoint.tensors) - len(planned))
    weights = sum(torch.Size(t.shape).numel() for t in plan.tensors)
    bar = progress_bar("defend", total=weights, enabled=progress, unit="w", unit_scale=True)
    with bar, CheckpointWriter(out, like=checkpoint, force=force) as writer:
        report.output = str(writer.path)
        order = list(checkpoint.tensors)
        if workers > 1 and len(planned) > 1:
            names = [n for n in order if n in planned]
            parts = deal([(n, torch.Size(planned[n].shape).numel()) for n in names], workers)
            jobs = [(str(checkpoint.path), str(writer.temp_dir), part, {n: planned[n] for n in part}, policy, depth,
                     nonfinite) for part in parts]
            done = {}
            for result in run_parts(defend_part, jobs, workers,
                                    meanwhile=lambda: [writer.copy_unchanged(n) for n in order if n not in planned]):
                done.update(result)
            writer.written_elsewhere(names)
            report.tensors = [done[n] for n in names]
            report.notes += [f"{n}: NaN/Inf weights; left unchanged." for n in names if done[n].status == "nonfinite"]
            bar.update(weights)
            writer.write_file(REPORT_FILE, report.to_json())
        else:
            _defend_serial(checkpoint, planned, writer, report, policy, depth, nonfinite, bar)
            writer.write_file(REPORT_FILE, report.to_json())
    report.seconds = time.perf_counter() - start
    return report


def defend_part(path: str, temp_dir: str, names: list[str], planned: dict, policy: Policy, depth, nonfinite: str):
    """Defend tensors ``names`` of the checkpoint at ``path`` (in a worker process) and write them into
    the output being made in ``temp_dir``; returns their :class:`TensorDefense`, by name."""
    from flipguard.checkpoint.writer import write_into

    checkpoint, objects, done = open_checkpoint(path), SchemeObjects(), {}
    with TensorStream(checkpoint, names=names) as stream:
        for name, tensor in stream:
            t = planned[name]
            result = defend_tensor(name, tensor, objects(t.schemes), policy, t.transposed, depth)
            if result.status == "nonfinite" and nonfinite == "refuse":
                raise FlipGuardError(nonfinite_refusal(checkpoint.path / checkpoint.tensors[name].shard, name, tensor))
            write_into(Path(temp_dir) / checkpoint.tensors[name].shard, checkpoint, name, tensor)
            done[name] = result
            del tensor
    return done


def _defend_serial(checkpoint, planned: dict, writer, report, policy, depth, nonfinite: str, bar) -> None:
    """Every planned tensor in this process, streamed: read ahead and written behind on threads;
    the other tensors copied file to file meanwhile, never held in memory."""
    order, objects = list(checkpoint.tensors), SchemeObjects()
    with TensorStream(checkpoint, names=[n for n in order if n in planned], writer=writer,
                      copies=[n for n in order if n not in planned]) as stream:
        for name, tensor in stream:
            t = planned[name]
            done = defend_tensor(name, tensor, objects(t.schemes), policy, t.transposed, depth)
            report.tensors.append(done)
            if done.status == "nonfinite":
                if nonfinite == "refuse":
                    raise FlipGuardError(nonfinite_refusal(checkpoint.path / checkpoint.tensors[name].shard,
                                                            name, tensor))
                report.notes.append(f"{name}: NaN/Inf weights; left unchanged.")
            bar.update(tensor.numel())
            stream.write(name, tensor)
            del tensor
