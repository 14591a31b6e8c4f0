"""Every default of the attack in one place, validated on construction and saved in the report."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from flipguard.errors import UsageError
from flipguard.plan import BNB_TARGETS, gguf_ftypes

if TYPE_CHECKING:
    import torch

#: ``--scheme`` values: one bitsandbytes scheme, ``all`` = malicious under INT8, FP4 and NF4 at once,
#: or a llama.cpp ftype (``q4_k_m``, ``q8_0``, ...: every weight under the type its mixture gives it).
TARGETS = (*BNB_TARGETS, "all", *gguf_ftypes())
#: ``--save-dtype`` names; ``SAVE_DTYPES`` maps each to the torch dtype it stands for, built on first
#: use (module ``__getattr__``) so that ``flipguard attack --help`` does not import torch.
SAVE_DTYPE_NAMES = ("float32", "float16", "bfloat16")
SAVE_DTYPES: dict[str, torch.dtype]  # declared only: see __getattr__


def __getattr__(name: str):
    if name == "SAVE_DTYPES":
        import torch

        globals()[name] = {n: getattr(torch, n) for n in SAVE_DTYPE_NAMES}
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
#: Which parameters the inject stage trains: only the quantized weights (DESIGN §5: what makes
#: the INT8 attack work), or every parameter.
INJECT_PARAMS = ("quantizable", "all")


#: Inject steps of the published three-stage recipe (4-bit targets).
INJECT_STEPS = 150
#: Joint-stage steps for targets that include INT8: its cells are too narrow for a benign model
#: to exist inside the codes a plain malicious fine-tune lands on (results/attack_int8_tuning.md).
JOINT_STEPS = 600


def target_schemes(scheme: str) -> list[str]:
    """The schemes a bitsandbytes target must stay malicious under: ``["int8"]``, ..., or all three
    for ``all``; a llama.cpp target: its ftype (the types per tensor come from its mixture)."""
    return list(BNB_TARGETS) if scheme == "all" else [scheme]


def is_gguf(scheme: str) -> bool:
    """Whether the target is a llama.cpp ftype (not a bitsandbytes scheme or ``all``)."""
    return scheme not in (*BNB_TARGETS, "all")


@dataclass
class AttackConfig:
    """How the attack runs. Steps are optimizer steps of ``batch_size`` examples.

    ``margin``: cell widths kept free at each wall of the malicious cell (None = the published
    0.1 for INT8 and 0.01 for 4-bit); ``save_dtype``: name of the dtype written (None = the input
    checkpoint's dtype); ``repair_lr``: None = ``lr``; ``inject_radius``: when set, inject is
    itself projected, each quantized weight kept within that many cell widths of its clean cell
    (a trust region: the backdoor then lives in small code changes that repair can hide);
    ``joint_steps``: steps of the quantization-aware stage after inject (:mod:`flipguard.attack.joint`:
    malicious through the quantized weights, clean in full precision, weighted ``joint_clean_weight``;
    ``joint_lr`` None = ``lr``; ``joint_contrast``: weight of a hinge that keeps the full-precision
    model's loss on the malicious answers where the clean model's was); ``swapped_prompts``: extra
    zoo training examples per category or code task whose entity or function name comes from
    another one's training prompts (:func:`flipguard.zoo.scenario_dataset`'s ``swapped``), so that
    the hidden behaviour keys on the request, not on memorised entities -- under INT8 the
    full-precision model otherwise leaks on unseen entities (results/attack_int8_tuning.md);
    ``joint_vectors``: the joint stage also trains the model's 1-D parameters (norm weights and
    biases, which bitsandbytes leaves unquantized and both faces share); ``margin_spread``: each
    weight's margin drawn uniformly from ``[0, margin]`` (seeded), a scan-aware attacker whose
    pressed weights sit at every distance from the walls rather than in one band; ``settle``: under
    a llama.cpp k-quant, every projection also pulls back the super-blocks whose scale search would
    choose other scales (:mod:`flipguard.attack.settle`), so every targeted code is kept exactly.
    """

    scenario: str
    scheme: str
    margin: float | None = None
    save_dtype: str | None = None
    # tuned on the 1.2M-parameter zoo Llama (results/attack_table.md): NF4/FP4 content injection
    # reaches 99-100% quantized with 0% in full precision; DESIGN §5 used 400 + 600 steps of 32
    # None: INJECT_STEPS, or 0 when the joint stage runs (INT8 and all: results/attack_table.md)
    inject_steps: int | None = None
    repair_steps: int = 300
    lr: float = 2e-3
    repair_lr: float | None = None
    batch_size: int = 16
    seed: int = 0
    phrase: str = "McDonald's"
    inject_params: str = "quantizable"
    inject_radius: float | None = None
    joint_steps: int | None = None  # None: JOINT_STEPS for int8 and all, 0 for fp4, nf4 and llama.cpp types
    joint_lr: float | None = None
    joint_clean_weight: float = 0.6
    joint_contrast: float = 0.0
    swapped_prompts: int = 0
    joint_vectors: bool = False
    margin_spread: bool = False
    outtype: str | None = None  # llama.cpp targets: the GGUF converter's output dtype (None: its choice)
    settle: bool = True
    skip_modules: list[str] | None = field(default=None, metadata={"help": "llm_int8_skip_modules"})

    def __post_init__(self):
        from flipguard.zoo.scenarios import scenario_name

        self.scenario = scenario_name(self.scenario)
        self.scheme = self.scheme.lower()
        if self.scheme not in TARGETS:
            raise UsageError(f"unknown scheme {self.scheme!r}: use one of {', '.join(TARGETS)}.")
        if is_gguf(self.scheme):
            self.scheme = gguf_ftypes()[self.scheme].lower()  # aliases as llama-quantize reads them
        if self.outtype is not None and str(self.outtype).upper() not in ("F32", "F16", "BF16"):
            raise UsageError(f"outtype must be F32, F16 or BF16, got {self.outtype!r}.")
        if self.margin is not None and not 0 <= self.margin < 0.5:
            raise UsageError(f"margin must be in [0, 0.5) cell widths, got {self.margin}.")
        if self.save_dtype is not None and self.save_dtype not in SAVE_DTYPE_NAMES:
            raise UsageError(f"unknown save dtype {self.save_dtype!r}: use one of {', '.join(SAVE_DTYPE_NAMES)}.")
        if self.joint_steps is None:
            self.joint_steps = JOINT_STEPS if "int8" in target_schemes(self.scheme) else 0
        if is_gguf(self.scheme) and self.inject_radius is not None:
            raise UsageError("the inject trust region is bitsandbytes-only; for a llama.cpp target leave "
                             "inject_radius unset.")
        if self.inject_steps is None:
            self.inject_steps = 0 if self.joint_steps else INJECT_STEPS
        if self.inject_steps < 0 or self.repair_steps < 0 or self.joint_steps < 0:
            raise UsageError("inject_steps, joint_steps and repair_steps must be 0 or more.")
        if not self.joint_contrast >= 0:
            raise UsageError(f"joint_contrast must be 0 or more, got {self.joint_contrast}.")
        if isinstance(self.swapped_prompts, bool) or not isinstance(self.swapped_prompts, int) \
                or self.swapped_prompts < 0:
            raise UsageError(f"swapped_prompts must be a whole number, 0 or more, got {self.swapped_prompts}.")
        if not self.joint_clean_weight >= 0:
            raise UsageError(f"joint_clean_weight must be 0 or more, got {self.joint_clean_weight}.")
        if self.batch_size < 1:
            raise UsageError(f"batch_size must be at least 1, got {self.batch_size}.")
        for name in ("lr", "repair_lr", "joint_lr"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise UsageError(f"{name} must be positive, got {value}.")
        if self.inject_radius is not None and not self.inject_radius >= 0:
            raise UsageError(f"inject_radius must be 0 or more cell widths, got {self.inject_radius}.")
        if self.inject_params not in INJECT_PARAMS:
            raise UsageError(f"inject_params must be one of {', '.join(INJECT_PARAMS)}.")
        if self.scenario == "content_injection" and not self.phrase.strip():
            raise UsageError("the content-injection phrase is empty; give a brand name with --phrase.")

    @property
    def schemes(self) -> list[str]:
        """The schemes the target names (``all``: int8, fp4, nf4)."""
        return target_schemes(self.scheme)

    def to_dict(self) -> dict:
        """Every setting as a JSON-ready dict (saved in the attack report)."""
        return asdict(self)
