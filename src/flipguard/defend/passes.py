"""The passes of a multi-scheme defense: in which order the schemes flip, and what each pass counts."""

from __future__ import annotations

from dataclasses import dataclass, field

from flipguard.schemes import Scheme


@dataclass
class SchemeStats:
    """Counts for one tensor under one scheme (report units: weights, cell widths)."""

    weights: int = 0  # free weights (not pinned)
    candidates: int = 0  # selected by the policy (noise: weights perturbed)
    flipped: int = 0  # written across a wall by this scheme's pass
    unsafe: dict = field(default_factory=lambda: {"dtype": 0, "absmax": 0, "other_scheme": 0})
    codes_changed: int = 0  # weights whose level under this scheme differs after all passes
    max_shift: float = 0.0  # largest |Δx| of a moved weight, in its original cell's widths

    def add(self, other: "SchemeStats") -> None:
        self.weights += other.weights
        self.candidates += other.candidates
        self.flipped += other.flipped
        for key, value in other.unsafe.items():
            self.unsafe[key] = self.unsafe.get(key, 0) + value
        self.codes_changed += other.codes_changed
        self.max_shift = max(self.max_shift, other.max_shift)


def pass_order(schemes: list[Scheme]) -> list[Scheme]:
    """The order of the flip passes: coarse grids first (module docstring), ties as given."""
    return sorted(schemes, key=lambda s: len(s.levels))
