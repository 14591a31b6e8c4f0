"""What the user's quantization targets mean for one checkpoint: which stored tensors they touch,
and under which scheme (cell) each of them is quantized.

Targets are named as users quantize:

- bitsandbytes at load time: ``int8``, ``fp4``, ``nf4`` — the ``nn.Linear`` weights transformers
  converts (:func:`flipguard.checkpoint.quantizable_tensors`), each under that one scheme;
- llama.cpp: an ftype as ``llama-quantize`` names it (``q4_k_m``, ``q8_0``, ``q6_k``, ``q4_0``, ...;
  ``q4_k`` is ``q4_k_m`` as there) — every tensor llama.cpp quantizes (embeddings and output
  included) under the ggml type the ftype's mixture gives it (:mod:`flipguard.gguf.targets`),
  computed on the values the converter writes (``outtype``, default the converter's choice);
- groups: ``bnb`` (int8, fp4, nf4), ``gguf`` (:data:`GGUF_TARGETS`), ``all`` (both).

A :class:`QuantPlan` lists the touched tensors in the checkpoint's order, each with the scheme
names (ggml type names for GGUF: the scan reports ``q4_k``/``q6_k``, the types an attack targets)
and the load dtype each is computed for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from flipguard.errors import UsageError

if TYPE_CHECKING:  # annotations only: importing the plan's names stays light
    import torch

BNB_TARGETS = ("int8", "fp4", "nf4")
GGUF_TARGETS = ("q8_0", "q6_k", "q5_k_m", "q4_k_m", "q4_0")  # the mixtures users run most
GROUPS = {"bnb": BNB_TARGETS, "gguf": GGUF_TARGETS, "all": BNB_TARGETS + GGUF_TARGETS}
DEFAULT_TARGETS = BNB_TARGETS + GGUF_TARGETS  # what scan and defend check when not told


def default_targets() -> tuple[str, ...]:
    """:data:`DEFAULT_TARGETS`, less the GGUF ones while their cells are not registered."""
    from flipguard.schemes import SCHEMES

    return DEFAULT_TARGETS if {"q8_0", "q4_0", "q4_k", "q5_k", "q6_k"} <= set(SCHEMES) else BNB_TARGETS


def gguf_ftypes() -> dict[str, str]:
    """Lower-case target name -> llama-quantize ftype name, aliases included (no float ftypes)."""
    from flipguard.gguf.ftypes import ALIASES, QUANTIZED_FTYPES

    names = {name.lower(): name for name in QUANTIZED_FTYPES}
    names.update({alias.lower(): target for alias, target in ALIASES.items()})
    return names


def check_targets(targets: list[str] | str | None, default=None) -> list[str]:
    """Target names lower-cased, groups expanded, aliases resolved, deduplicated, in order;
    UsageError names an unknown one (``None``: ``default``)."""
    if isinstance(targets, str):
        targets = targets.split(",")
    if targets is None:
        targets = default_targets() if default is None else default
    names = [str(t).strip().lower() for t in targets if str(t).strip()]
    if not names:
        raise UsageError(f"no scheme given; choose from {', '.join(known_targets())}.")
    out = []
    for name in names:
        if name in GROUPS:
            out.extend(GROUPS[name])
        elif name in BNB_TARGETS:
            out.append(name)
        elif name in _gguf_names():
            out.append(gguf_ftypes()[name].lower())
        else:
            raise UsageError(f"unknown scheme {name!r}; choose from {', '.join(known_targets())}.")
    return list(dict.fromkeys(out))


def known_targets() -> list[str]:
    """Every target name, groups first."""
    return [*GROUPS, *BNB_TARGETS, *_gguf_names()]


def _gguf_names() -> list[str]:
    try:
        return list(gguf_ftypes())
    except ImportError:  # pragma: no cover - flipguard.gguf is part of the package
        return []


@dataclass(frozen=True)
class PlannedTensor:
    """One stored tensor and the schemes it is quantized under (``schemes``: scheme name -> load
    dtype, None meaning the stored dtype). ``transposed``: stored as the transpose of the rows the
    quantizer reads (GPT-2 ``Conv1D``)."""

    tensor_name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    transposed: bool
    schemes: dict[str, torch.dtype | None]

    @property
    def quantized_shape(self) -> tuple[int, ...]:
        return tuple(reversed(self.shape)) if self.transposed else tuple(self.shape)


@dataclass
class QuantPlan:
    """The tensors the targets touch, in the checkpoint's order; ``outtype`` for GGUF targets."""

    targets: list[str]
    tensors: list[PlannedTensor] = field(default_factory=list)
    outtype: str | None = None
    skipped: list[str] = field(default_factory=list)  # targets left out, one sentence each

    @property
    def schemes(self) -> list[str]:
        """Every scheme any tensor is quantized under, bitsandbytes first."""
        seen = dict.fromkeys(s for t in self.tensors for s in t.schemes)
        return sorted(seen, key=lambda s: (s not in BNB_TARGETS, list(seen).index(s)))

    def by_name(self) -> dict[str, PlannedTensor]:
        return {t.tensor_name: t for t in self.tensors}


def plan_checkpoint(checkpoint, targets: list[str], skip_modules: list[str] | None = None,
                    load_dtype: torch.dtype | None = None, outtype: str | None = None,
                    strict: bool = True) -> QuantPlan:
    """The :class:`QuantPlan` of a safetensors ``checkpoint`` (``flipguard.checkpoint.Checkpoint``)
    for checked ``targets`` (:func:`check_targets`). ``skip_modules``/``load_dtype`` are
    transformers' (bitsandbytes targets); ``outtype`` the converter's (GGUF targets). ``strict``:
    a GGUF target FlipGuard cannot lay out for this architecture raises; otherwise it is left out
    and said in ``skipped`` (for targets the user did not name one by one)."""
    from flipguard.errors import FlipGuardError

    schemes: dict[str, dict[str, torch.dtype | None]] = {}
    layout: dict[str, bool] = {}
    bnb = [t for t in targets if t in BNB_TARGETS]
    plan = QuantPlan(targets=list(targets))
    if bnb:
        from flipguard.checkpoint import quantizable_tensors

        for t in quantizable_tensors(checkpoint, skip_modules):
            layout[t.tensor_name] = t.transposed
            schemes.setdefault(t.tensor_name, {}).update({s: load_dtype for s in bnb})
    for target in (t for t in targets if t not in BNB_TARGETS):
        from flipguard.gguf.targets import OUTTYPE_DTYPES, checkpoint_targets

        try:
            found, plan.outtype = checkpoint_targets(checkpoint, target.upper(), outtype)
        except FlipGuardError as err:
            if strict:
                raise
            plan.skipped.append(f"{target}: {err}")
            continue
        cast = OUTTYPE_DTYPES[plan.outtype]
        for t in found:
            if layout.setdefault(t.tensor_name, t.transposed) != t.transposed:
                raise RuntimeError(f"{t.tensor_name}: bitsandbytes and llama.cpp disagree on its layout")
            schemes.setdefault(t.tensor_name, {})[t.type] = cast if cast != t.dtype else None
    for name, info in checkpoint.tensors.items():
        if name in schemes:
            plan.tensors.append(PlannedTensor(name, tuple(info.shape), info.dtype, layout[name], schemes[name]))
    return plan


def plan_gguf_file(opened, targets: list[str]) -> QuantPlan:
    """The :class:`QuantPlan` of an opened F32/F16/BF16 GGUF file (GGUF targets only; tensors are
    stored in the rows llama.cpp quantizes, so nothing is transposed)."""
    from flipguard.gguf.targets import file_targets

    bnb = [t for t in targets if t in BNB_TARGETS]
    if bnb:
        raise UsageError(f"{opened.path} is a GGUF file, which bitsandbytes does not load; drop {', '.join(bnb)} "
                         "from --scheme (or scan the Hugging Face checkpoint).")
    schemes: dict[str, dict] = {}
    shapes: dict[str, tuple] = {}
    dtypes: dict[str, torch.dtype] = {}
    for target in targets:
        for t in file_targets(opened, target.upper()):
            schemes.setdefault(t.tensor_name, {})[t.type] = None
            shapes[t.tensor_name], dtypes[t.tensor_name] = t.shape, t.dtype
    plan = QuantPlan(targets=list(targets))
    for name in opened.tensors:
        if name in schemes:
            plan.tensors.append(PlannedTensor(name, shapes[name], dtypes[name], False, schemes[name]))
    return plan


class SchemeObjects:
    """Scheme objects by (name, load dtype), made once per scan (their tables are built once)."""

    def __init__(self):
        self.made: dict = {}

    def __call__(self, schemes: dict) -> list:
        """The scheme objects of a :class:`PlannedTensor`'s ``schemes`` (name -> load dtype)."""
        out = []
        for name, load_dtype in schemes.items():
            if (name, load_dtype) not in self.made:
                from flipguard.schemes import get_scheme

                self.made[(name, load_dtype)] = get_scheme(name, load_dtype)
            out.append(self.made[(name, load_dtype)])
        return out
