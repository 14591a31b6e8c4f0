"""Data-free defense against quantization-conditioned backdoors (see ``flipguard defend --help``).

    from flipguard.defend import defend_checkpoint
    report = defend_checkpoint("model", "model-defended")                  # adaptive, all schemes
    report = defend_checkpoint("model", "out", policy="gaussian", params={"sigma": 0.03})

Selected weights are pushed across their nearest rounding wall to a safe depth inside the
neighbouring cell (``flip``), scheme after scheme without undoing each other (``multischeme``),
as a policy chooses (``policies``); ``report`` says what was done.
"""

from flipguard.entry import make_callable
from flipguard.defend.api import check_depth, check_schemes, defend_checkpoint, defend_tensor
from flipguard.defend.flip import SAFE_DEPTH, flip_across_wall
from flipguard.defend.multischeme import SchemeStats, defend_matrix
from flipguard.defend.policies import DEFAULTS, POLICIES, Policy, make_policy
from flipguard.defend.report import REPORT_FILE, DefenseReport, TensorDefense

__all__ = [
    "DEFAULTS",
    "POLICIES",
    "REPORT_FILE",
    "SAFE_DEPTH",
    "DefenseReport",
    "Policy",
    "SchemeStats",
    "TensorDefense",
    "check_depth",
    "check_schemes",
    "defend_checkpoint",
    "defend_matrix",
    "defend_tensor",
    "flip_across_wall",
    "make_policy",
]

make_callable(__name__, defend_checkpoint)  # flipguard.defend(path, out, ...) is defend_checkpoint(...)
