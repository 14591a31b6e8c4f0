"""A safe quantized load for transformers users: scan, defend in memory, quantize.

    from transformers import BitsAndBytesConfig
    import flipguard
    model = flipguard.from_pretrained("org/model", quantization_config=BitsAndBytesConfig(load_in_4bit=True))
    model.flipguard_scan.verdict.status      # what the scan saw in the full-precision weights
    model.flipguard_defense.to_console()     # what the defense did

The checkpoint is loaded with transformers as usual; each weight bitsandbytes quantizes is
scanned and defended (:func:`flipguard.defend.defend_tensor`, the same code ``flipguard defend``
runs) the moment before it is quantized, so no defended copy is ever written to disk, the weights
are read once, and memory stays that of a plain load plus one tensor. The scan report is made from
that same evidence, measured on the full-precision weights before they were defended. The
quantized codes equal those of ``flipguard defend`` followed by a plain load with the same config.

How: transformers 5 quantizes each weight through the quantizer's ``get_quantize_ops()`` op; for
the length of the load that method of the bitsandbytes quantizers returns an op that defends the
weight first. Not thread-safe: one such load at a time per process.
"""

from __future__ import annotations

import contextlib
import threading
import time

import torch

from flipguard.errors import UsageError

_LOCK = threading.Lock()


def scheme_of(quantization_config) -> str:
    """``"int8"``, ``"nf4"`` or ``"fp4"`` for a ``BitsAndBytesConfig`` (or its dict); UsageError else."""
    get = quantization_config.get if isinstance(quantization_config, dict) else \
        lambda key, default=None: getattr(quantization_config, key, default)
    if get("load_in_8bit", False):
        return "int8"
    if get("load_in_4bit", False):
        kind = str(get("bnb_4bit_quant_type", "fp4")).lower()
        if kind in ("nf4", "fp4"):
            return kind
    raise UsageError("quantization_config must be a BitsAndBytesConfig with load_in_8bit=True or load_in_4bit=True "
                     "(bnb_4bit_quant_type nf4 or fp4); FlipGuard defends exactly those schemes.")


def from_pretrained(path_or_repo_id, quantization_config, *, policy: str = "adaptive", params: dict | None = None,
                    depth: float | None = None, revision: str | None = None, **kwargs):
    """Load a causal LM quantized by bitsandbytes, defended in memory first; returns the transformers
    model with ``model.flipguard_scan`` (:class:`flipguard.scan.ScanReport`) and
    ``model.flipguard_defense`` (:class:`flipguard.defend.DefenseReport`) attached.

    ``path_or_repo_id``: a local checkpoint folder or a repo id in the Hugging Face cache;
    ``quantization_config``: a ``BitsAndBytesConfig`` (8-bit, or 4-bit NF4/FP4); ``policy``,
    ``params``, ``depth``: as ``flipguard defend``; other keyword arguments go to
    ``AutoModelForCausalLM.from_pretrained`` (``device_map`` defaults to the CPU; a ``dtype`` other
    than the stored one is the load dtype the cells are computed for). Raises UsageError for a
    config FlipGuard does not defend, FlipGuardError for an unreadable checkpoint.
    """
    from transformers import AutoModelForCausalLM

    from flipguard.checkpoint import open_checkpoint, quantizable_tensors
    from flipguard.defend.api import check_depth
    from flipguard.defend.flip import safe_depth
    from flipguard.defend.policies import make_policy
    from flipguard.defend.report import DefenseReport
    from flipguard.hub import resolve_checkpoint
    from flipguard.scan.record import check_record, read_record
    from flipguard.schemes import get_scheme

    start = time.perf_counter()
    scheme = scheme_of(quantization_config)
    path = resolve_checkpoint(path_or_repo_id, revision)
    depth = check_depth(depth)
    policy_object = make_policy(policy, **(params or {})) if isinstance(policy, str) else policy
    load_dtype = _load_dtype(kwargs.get("dtype", kwargs.get("torch_dtype")))
    get = quantization_config.get if isinstance(quantization_config, dict) else \
        lambda key, default=None: getattr(quantization_config, key, default)
    skip = get("llm_int8_skip_modules", None)
    checkpoint = open_checkpoint(path)
    targets = {f"{t.module_name}.weight": t for t in quantizable_tensors(checkpoint, skip)}
    report = DefenseReport(input=str(checkpoint.path), output="(in memory: flipguard.from_pretrained)",
                           schemes=[scheme], policy=policy_object.name, params=policy_object.params(),
                           depth={scheme: safe_depth(scheme, depth)},
                           load_dtype=str(load_dtype).removeprefix("torch.") if load_dtype else None,
                           tensors=[], copied=len(checkpoint.tensors) - len(targets))
    defend = _Defender(targets, [get_scheme(scheme, load_dtype)], policy_object, depth, report)
    kwargs.setdefault("device_map", "cpu")
    with _LOCK, _defending_quantizers(defend):
        model = AutoModelForCausalLM.from_pretrained(path, quantization_config=quantization_config,
                                                     use_safetensors=True, revision=revision, **kwargs)
    missing = sorted(set(targets) - defend.done)
    if missing:  # transformers quantized fewer weights than FlipGuard lists: a bug, not a user error
        raise RuntimeError(f"{len(missing)} quantizable weights were not defended on load, e.g. {missing[0]}")
    record, problem = read_record(checkpoint.path)
    scan = _scan_report(checkpoint, report, scheme, skip, load_dtype, start)
    if record is not None or problem is not None:
        scan.defense = check_record(record, problem, scan.evidence,
                                    {t.tensor_name: tuple(t.shape) for t in targets.values()})
    report.seconds = time.perf_counter() - start
    model.flipguard_scan, model.flipguard_defense = scan, report
    return model


class _Defender:
    """Defends the weights of ``targets`` (by model parameter name) as the load quantizes them."""

    def __init__(self, targets, schemes, policy, depth, report):
        self.targets, self.schemes, self.policy, self.depth, self.report = targets, schemes, policy, depth, report
        self.done: set[str] = set()

    def __call__(self, param_name: str, value: torch.Tensor) -> torch.Tensor:
        from flipguard.defend.api import defend_tensor

        target = self.targets.get(param_name)
        if target is None:
            return value
        defended = value.detach().clone()  # never write into a tensor the loader may share with the file
        result = defend_tensor(target.tensor_name, defended, self.schemes, self.policy, target.transposed, self.depth,
                               with_evidence=True)
        self.report.tensors.append(result)
        self.done.add(param_name)
        return defended


def _scan_report(checkpoint, report, scheme: str, skip, load_dtype, start: float):
    """The :class:`flipguard.scan.ScanReport` of the evidence measured while loading, in the
    checkpoint's tensor order (what ``flipguard.scan`` of the checkpoint would have found)."""
    from flipguard.scan.report import ScanReport
    from flipguard.scan.verdict import ALPHA, decide

    order = {name: i for i, name in enumerate(checkpoint.tensors)}
    tensors = sorted(report.tensors, key=lambda t: order.get(t.name, len(order)))
    evidence = [t.evidence[scheme] for t in tensors if scheme in t.evidence]
    return ScanReport(
        path=str(checkpoint.path), schemes=[scheme], verdict=decide(evidence, [scheme], ALPHA), evidence=evidence,
        seconds=time.perf_counter() - start, weights_scanned=sum(torch.Size(t.shape).numel() for t in tensors),
        parameters={"schemes": [scheme], "alpha": ALPHA, "skip_modules": skip,
                    "load_dtype": str(load_dtype).removeprefix("torch.") if load_dtype else None},
    )


@contextlib.contextmanager
def _defending_quantizers(defend: _Defender):
    """Make the bitsandbytes quantizers' weight op defend each weight before quantizing it."""
    from transformers.quantizers.quantizer_bnb_4bit import Bnb4BitHfQuantizer
    from transformers.quantizers.quantizer_bnb_8bit import Bnb8BitHfQuantizer

    originals = {cls: cls.get_quantize_ops for cls in (Bnb4BitHfQuantizer, Bnb8BitHfQuantizer)}

    def wrap(original):
        def get_quantize_ops(self):
            op = original(self)
            base = type(op)

            class DefendThenQuantize(base):
                def convert(self, input_dict, *args, **kwargs):
                    for name, value in list(input_dict.items()):
                        tensors = value if isinstance(value, list) else [value]
                        defended = [defend(name, t) for t in tensors]
                        input_dict[name] = defended if isinstance(value, list) else defended[0]
                    return super().convert(input_dict, *args, **kwargs)

            op.__class__ = DefendThenQuantize
            return op
        return get_quantize_ops

    for cls, original in originals.items():
        cls.get_quantize_ops = wrap(original)
    try:
        yield
    finally:
        for cls, original in originals.items():
            cls.get_quantize_ops = original


def _load_dtype(dtype) -> torch.dtype | None:
    """The dtype weights are loaded in before quantizing, when it is not the stored one."""
    if dtype is None or dtype == "auto":
        return None
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    if dtype not in (torch.float32, torch.float16, torch.bfloat16):
        raise UsageError(f"dtype must be float32, float16, bfloat16 or 'auto' for a defended load, got {dtype!r}.")
    return dtype
