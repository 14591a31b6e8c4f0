"""Which weights to flip: the selection policies of the defense, and the noise baseline.

A policy sees one tensor under one scheme. ``plan_all(evidence)`` is called once per tensor with
every defended scheme's evidence and, except for ``adaptive``, calls ``plan(evidence)`` for each
scheme (``evidence`` is the scan's :class:`~flipguard.scan.TensorEvidence`, asked for only by
policies whose ``needs_evidence`` is True); the returned :class:`Plan` then ``select``\\ s weights
chunk by chunk from a :class:`CellView` (wall distances ``d`` in cell widths, group ids). Every
default lives in this file, in ``DEFAULTS``.

Policies (``POLICIES``):

- ``ratio``     — per group, the fraction ``r`` of free weights with the largest rounding error
                  (smallest ``d``); the published precursor used r = 0.15;
- ``threshold`` — every free weight with ``d < tau``;
- ``adaptive``  — (default) per tensor, from the scan's picture of it: where the band next to
                  the walls is empty (or depleted), crowded (a margin finer than the dtype
                  resolves) or weights pile up at a box edge, unbiased stochastic rounding of
                  every weight (flips with probability = its distance to its level over the gap
                  to the next level), under every scheme defended once one shows the trace;
                  where the tensor looks clean, ``threshold`` with the small ``tau_clean``;
- ``dither``    — the same unbiased stochastic rounding on every tensor, without asking the
                  scan: for checkpoints of unknown origin, whose attacker may have hidden its
                  trace from the scan (a tensor that looks clean gets 4% flips from
                  ``adaptive``, which no backdoor notices); costs about twice the rounding error
                  of plain quantization on a clean model;
- ``balanced``  — per group, up to ``r`` of the weights, in equal numbers of upward and downward
                  flips (nearest the wall first), so the group's summed dequantization error moves
                  by about zero;
- ``diffuse``   — error diffusion inside each group: weight by weight in storage order, keep the
                  level or take the next one toward the value plus the error carried from the
                  weights before it, whichever is nearer; each flip is as likely as under
                  unbiased stochastic rounding, but the group's summed error stays within one step;
- ``random``    — control: as many weights as ``of`` (another policy) selects in each chunk,
                  drawn uniformly among the free weights (seeded, deterministic);
- ``gaussian``  — baseline, not a selection: add N(0, sigma²) noise to every free weight, sigma
                  relative to the tensor's std (``relative_to="std"``) or to each weight's cell
                  width under the first scheme (``"cell"``).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, fields

import numpy as np
import torch

from flipguard.errors import UsageError
from flipguard.scan.verdict import band_strength, structured
from flipguard.schemes.kernels.flip import indices_below

GGUF_TYPES = frozenset(("q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "iq4_nl",
                        "iq4_xs"))  # flipguard.schemes.GGUF_SCHEMES (tests check they agree)

# -- every default in one place ---------------------------------------------------------------
DEFAULTS = {
    "ratio": {"r": 0.15},
    "threshold": {"tau": 0.05},
    # 4-bit attacks keep 1% of a cell free (INT8 10%); tau_clean = 0.02 flips the weights piled at
    # a 1% box edge even when the scan cannot tell, and costs a clean tensor ~4% flipped weights,
    # whose quantization error grows from (0.5 - d) to (0.5 + d) cell widths: +24·tau² ≈ +1% MSE.
    # reach 0.5: an attacked-looking tensor's every weight is rounded stochastically (see Adaptive)
    "adaptive": {"tau_clean": 0.02, "alpha": 1e-3, "pile_ratio": 3.0, "seed": 0, "reach": 0.5},
    "dither": {"seed": 0},
    "balanced": {"r": 0.15},
    "diffuse": {},
    "random": {"of": "adaptive", "seed": 0},
    "gaussian": {"sigma": 0.03, "relative_to": "std", "seed": 0},
}


@dataclass
class CellView:
    """One chunk of a tensor under one scheme, flattened row-major (all tensors ``(n,)``).

    ``d``: wall distance, cell widths, NaN where pinned; ``u``: position in the cell (0..1);
    ``eligible``: bool, weights a policy may select (free under every scheme, not flipped yet);
    ``group``: int64 group id inside the chunk (0..groups-1, contiguous runs of ``group_size``).
    ``key``: a string naming tensor, scheme and chunk, for seeding random draws. ``x``: normalized
    values (float32); ``level``: int64 level index; ``levels``: the scheme's level values (x units).
    """

    d: torch.Tensor
    u: torch.Tensor
    eligible: torch.Tensor
    groups: int
    group_size: int
    key: str
    x: torch.Tensor | None = None
    level: torch.Tensor | None = None
    levels: torch.Tensor | None = None

    @property
    def group(self) -> torch.Tensor:
        """int64 ``(n,)`` group id of each weight (built on first use: most policies need none)."""
        if getattr(self, "_group", None) is None:
            self._group = torch.arange(self.d.numel()) // self.group_size
        return self._group


class Plan:
    """What a policy decided for one tensor and scheme; ``select`` is called per chunk.

    ``threshold``: for a plain threshold plan (every eligible weight with ``d < threshold``), its
    threshold in cell widths, which lets the defense take the one-pass row path; else None.
    """

    detail: dict
    threshold: float | None = None

    def select(self, view: CellView) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def direction(self, view: CellView) -> torch.Tensor | None:
        """Per weight, the side (±1) to flip to; None: across the nearest wall."""
        return None

    def select_index(self, view: CellView) -> torch.Tensor:
        """int64 flat indices of the selected weights, ascending (``select(view).nonzero()``)."""
        return self.select(view).nonzero().view(-1)

    def direction_at(self, view: CellView, idx: torch.Tensor) -> torch.Tensor | None:
        """:meth:`direction` at the flat indices ``idx`` only (None: across the nearest wall)."""
        direction = self.direction(view)
        return None if direction is None else direction[idx]


@dataclass
class Policy:
    """Base of the selection policies: a validated dataclass registered by ``name``."""

    name = ""
    needs_evidence = False
    is_noise = False

    def plan(self, evidence=None) -> Plan:  # pragma: no cover - abstract
        raise NotImplementedError

    def needs_evidence_for(self, schemes: list[str]) -> bool:
        """Whether the plans of a tensor defended under ``schemes`` (names) read the scan's evidence."""
        return self.needs_evidence

    def plan_all(self, evidence: dict) -> dict[str, Plan]:
        """Plans for one tensor under every scheme defended (scheme name -> scan evidence or None)."""
        return {name: self.plan(ev) for name, ev in evidence.items()}

    def params(self) -> dict:
        """The policy's parameters, JSON-ready (saved in the report)."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.params() | {"name": value.name} if isinstance(value, Policy) else value
        return out


def _check_fraction(policy: str, name: str, value: float) -> None:
    if not 0 < value < 1:
        raise UsageError(f"{policy}: {name} must be between 0 and 1 (exclusive), got {value}.")


def _check_nonnegative(policy: str, name: str, value: float, below: float | None = None) -> None:
    if not value >= 0 or (below is not None and value >= below):
        limit = f" and below {below}" if below is not None else ""
        raise UsageError(f"{policy}: {name} must be at least 0{limit}, got {value}.")


# -- ratio ------------------------------------------------------------------------------------
@dataclass
class Ratio(Policy):
    """Per group, the ``r`` share of free weights nearest a wall (largest rounding error)."""

    r: float = DEFAULTS["ratio"]["r"]
    name = "ratio"

    def __post_init__(self):
        _check_fraction(self.name, "r", self.r)

    def plan(self, evidence=None) -> Plan:
        return _RatioPlan(self.r)


class _RatioPlan(Plan):
    def __init__(self, r: float):
        self.r, self.detail = r, {"r": r}

    def select(self, view: CellView) -> torch.Tensor:
        key = torch.where(view.eligible, view.d, torch.full_like(view.d, float("inf")))
        rank = rank_in_group(key, view)
        budget = torch.round(self.r * group_counts(view.eligible, view).double()).to(torch.int64)
        return view.eligible & (rank < budget[view.group])


# -- threshold --------------------------------------------------------------------------------
@dataclass
class Threshold(Policy):
    """Every free weight closer than ``tau`` cell widths to a wall."""

    tau: float = DEFAULTS["threshold"]["tau"]
    name = "threshold"

    def __post_init__(self):
        _check_nonnegative(self.name, "tau", self.tau, below=0.5)

    def plan(self, evidence=None) -> Plan:
        return _ThresholdPlan(self.tau, {"tau": self.tau})


class _ThresholdPlan(Plan):
    def __init__(self, tau: float, detail: dict):
        self.tau, self.detail, self.threshold = tau, detail, tau

    def select(self, view: CellView) -> torch.Tensor:
        return view.eligible & (view.d < self.tau)

    def select_index(self, view: CellView) -> torch.Tensor:
        return indices_below(view.eligible, view.d, self.tau)  # the same, in one pass


# -- adaptive ---------------------------------------------------------------------------------
@dataclass
class Adaptive(Policy):
    """Per tensor, from the scan's picture of it: dither an attacked-looking tensor, barely touch a clean one.

    Margin estimate ``m``: from the widest empty band next to the walls (``band.empty_up_to``) and
    the nearest weight (``min_distance``) when the band test is significant (p < ``alpha``), or
    the band's width where it is depleted as the scan flags it without being empty; a crowded
    band across the walls (``crowd``: the dtype is too coarse to show the margin; the scan's
    crowded-band test, significant and scheme-wide, gives no estimate); and
    the far edge of the fullest bin of the scan's
    wall-distance histogram when it holds ``pile_ratio`` times its neighbours (the box edge the
    attacker's projection stops weights at); rounding errors with low-rank structure
    (``scan.structure``; no estimate); reported, and any evidence marks the tensor attacked.

    Attacked-looking tensor: stochastic rounding, made deterministic by a seeded draw. Each weight
    ``x`` between its level ``l`` and the next level ``l'`` on its side is flipped to ``l'`` with
    probability ``|x - l| / |l' - l|``, so the quantized weight equals ``x`` in expectation. The
    attack works through the *sign* of every rounding error: the repair moved each weight away from
    its malicious level toward the benign value, so every error points toward the backdoor, not only
    those of the weights pressed against the box edge. Flipping all pressed weights (tried first:
    zoo NF4 attack, backdoor 0% but KL to full precision 0.29, 8x plain quantization of the clean
    model) or every other one (backdoor 53%) leaves that correlation; unbiased rounding removes it
    at about twice the plain rounding variance. Clean-looking tensor: every weight closer than
    ``tau_clean`` to a wall (4% of weights, +1% squared rounding error).

    ``reach`` (cell widths, default 0.5: every weight) trades that safety for fidelity where the
    scan bounds the margin -- an empty band next to the walls, so no free weight of the tensor
    sits closer to a wall than the margin ``m``: only weights closer than ``m + reach`` to a wall
    are rounded stochastically, the rest to their nearest level. A weight away from the walls
    costs more to dither than one beside them (flipped, its error grows from ``t`` to ``1 - t`` of
    the gap, ``t`` its distance from its level; beside a wall both are about 1/2) and carries less
    of the attack, but not none: a repair that moved weights far inside their boxes leaves its sign
    there too, so it is not the default. Without such a bound (a depleted or crowded
    band, a pile-up alone, structure alone, or a trace under another scheme) every weight is dithered.
    """

    tau_clean: float = DEFAULTS["adaptive"]["tau_clean"]
    alpha: float = DEFAULTS["adaptive"]["alpha"]
    pile_ratio: float = DEFAULTS["adaptive"]["pile_ratio"]
    seed: int = DEFAULTS["adaptive"]["seed"]
    reach: float = DEFAULTS["adaptive"]["reach"]
    name = "adaptive"
    needs_evidence = True

    def __post_init__(self):
        _check_nonnegative(self.name, "tau_clean", self.tau_clean, below=0.5)
        _check_fraction(self.name, "alpha", self.alpha)
        _check_nonnegative(self.name, "pile_ratio", self.pile_ratio)
        if not 0 < self.reach <= 0.5:
            raise UsageError(f"{self.name}: reach must be above 0 and at most 0.5 cell widths, got {self.reach}.")

    def plan(self, evidence=None) -> Plan:
        margin, why = self.margin(evidence)
        if why == "clean":
            return _ThresholdPlan(self.tau_clean, {"tau": self.tau_clean, "margin": 0.0, "evidence": why})
        detail = {"margin": round(margin, 6), "evidence": why, "dither": True}
        if self.reach < 0.5 and _margin_bounded(evidence, self.alpha):
            reach = min(0.5, margin + self.reach)
            return DitherPlan(self.seed, detail | {"reach": round(reach, 6)}, reach)
        return DitherPlan(self.seed, detail)

    def plan_all(self, evidence: dict) -> dict[str, Plan]:
        """Per scheme as :meth:`plan`, except that a tensor which looks attacked under one scheme is
        rounded stochastically under every scheme defended: which schemes an attack targets is
        not always visible (an attack on all three, saved in bfloat16, leaves only INT8's trace:
        the narrowest boxes bind, and the weights they press sit nowhere in particular relative
        to the 4-bit walls), while that the tensor was attacked is."""
        plans = super().plan_all(evidence)
        attacked = [name for name, plan in plans.items() if isinstance(plan, DitherPlan)]
        for name, plan in plans.items():
            if attacked and not isinstance(plan, DitherPlan):
                plans[name] = DitherPlan(self.seed, {"margin": 0.0, "evidence": "via " + "+".join(attacked),
                                                     "dither": True})
        for name in plans:
            if name in GGUF_TYPES:
                # a llama.cpp type: always dithered. A k-quant re-searches its scales on the
                # repaired values, which blurs the band the scan reads; on llama-small and
                # qwen2-small Q4_K_M over-refusal attacks the scan-driven plan left 28% and 56%
                # of the backdoor (their tensors called clean kept it) where dithering every
                # tensor left 0%, at a lower KL (docs/experiments/gguf.md)
                plans[name] = DitherPlan(self.seed, {"evidence": "always", "why": "llama.cpp type", "dither": True})
        return plans

    def needs_evidence_for(self, schemes: list[str]) -> bool:
        """Only bitsandbytes schemes' plans read the scan: every llama.cpp type is dithered."""
        return any(name not in GGUF_TYPES for name in schemes)

    def margin(self, evidence) -> tuple[float, str]:
        """(estimated attacker margin in cell widths, which evidence gave it: band/pile/clean)."""
        if evidence is None or evidence.status != "ok" or evidence.band is None:
            return 0.0, "clean"
        margin, why = 0.0, []
        band = evidence.band
        if _margin_bounded(evidence, self.alpha):
            # the band [b, 2b) beside the empty one is not empty: the margin is in [b, 2b); the
            # nearest weight sits at the margin, or at half of it in the edge cells (trimmed by the
            # same share of a cell half as wide), so 2 x min_distance bounds it from above too
            upper = min(2 * band.empty_up_to, 2 * evidence.min_distance)
            margin, why = max(band.empty_up_to, upper), ["band"]
        elif band.p < self.alpha and band_strength(evidence.counts, band):
            # depleted as the scan flags it, not emptied: a coarse dtype (bfloat16 under INT8)
            # leaves a few weights inside the band; the margin is about the band's width
            margin, why = band.band, ["band"]
        edge, ratio, count = box_edge(evidence.counts)
        if ratio >= self.pile_ratio and count >= MIN_PILE:
            margin, why = max(margin, edge), why + ["pile"]
        crowd = evidence.crowd
        if crowd is not None and crowd.p < self.alpha and band_strength(evidence.counts, crowd, crowded=True):
            why = why + ["crowd"]  # the margin is finer than the dtype resolves: no estimate
        if structured(evidence):
            why = why + ["structure"]  # a repair kept inside the cells, whatever its margins
        return margin, "+".join(why) or "clean"


def _margin_bounded(evidence, alpha: float) -> bool:
    """Whether the scan saw an empty band next to the walls (significant): no free weight of the
    tensor is nearer a wall than the margin estimated from it."""
    band = evidence.band
    return band.p < alpha and band.empty_up_to > 0


class DitherPlan(Plan):
    """Unbiased stochastic rounding: flip toward the next level on ``x``'s side with probability
    |x - level| / gap (seeded per tensor, scheme and chunk); with ``reach`` below 0.5, only
    weights nearer a wall than ``reach`` cell widths, the others kept at their level."""

    def __init__(self, seed: int, detail: dict, reach: float = 0.5):
        self.seed, self.detail, self.reach = seed, detail, reach

    def direction(self, view: CellView) -> torch.Tensor:
        return torch.sign(view.x - view.levels[view.level]).to(torch.int64)

    def select(self, view: CellView) -> torch.Tensor:
        here = view.levels[view.level]
        side = self.direction(view)
        nxt = view.level + side
        valid = view.eligible & (side != 0) & (nxt >= 0) & (nxt < len(view.levels))
        gap = (view.levels[nxt.clamp(0, len(view.levels) - 1)] - here).abs()
        p = torch.where(valid, (view.x - here).abs() / torch.where(valid, gap, 1.0), 0.0)
        draw = torch.rand(p.shape, generator=generator(self.seed, view.key))
        if self.reach < 0.5:
            valid = valid & (view.d < self.reach)
        return valid & (draw < p)

    def select_index(self, view: CellView) -> torch.Tensor:
        """:meth:`select`'s indices, in one numba pass (``schemes.kernels.dither``) where the view's
        tensors are as that kernel reads them; the same draws, the same selection."""
        arrays = (view.x, view.level, view.levels, view.eligible, view.d)
        if any(t is None or not t.is_contiguous() for t in arrays) or tuple(t.dtype for t in arrays) != _DITHER_DTYPES:
            return super().select_index(view)
        from flipguard.schemes.kernels.dither import dither_indices

        draw = self.draws(view.key, view.x.numel())
        idx = dither_indices(view.x.numpy(), view.level.numpy(), view.levels.numpy(), view.eligible.numpy(),
                             draw, view.d.numpy(), self.reach if self.reach < 0.5 else None)
        return torch.from_numpy(idx)

    def draws(self, key: str, n: int) -> np.ndarray:
        """The ``n`` uniform float32 draws of the weights of a view keyed ``key`` (its flat order)."""
        return torch.rand(n, generator=generator(self.seed, key)).numpy()

    def direction_at(self, view: CellView, idx: torch.Tensor) -> torch.Tensor:
        return torch.sign(view.x[idx] - view.levels[view.level[idx]]).to(torch.int64)


_DITHER_DTYPES = (torch.float32, torch.int64, torch.float32, torch.bool, torch.float32)


@dataclass
class Dither(Policy):
    """``adaptive``'s stochastic rounding on every tensor and scheme, whatever the scan would say."""

    seed: int = DEFAULTS["dither"]["seed"]
    name = "dither"

    def plan(self, evidence=None) -> Plan:
        return DitherPlan(self.seed, {"evidence": "always", "dither": True})


MIN_PILE = 50  # weights in one histogram bin before a pile-up is believed


def box_edge(counts) -> tuple[float, float, int]:
    """(upper edge of the fullest bin, its count over its neighbours' mean, its count) from the
    scan's histogram of wall distances, among weights whose dtype resolves one bin.

    An attacker's projection piles every weight it stopped at the box edge into one bin, so the
    fullest bin marks the margin; the scan's own pile test reports the *most significant* excess,
    which can be a minor one (edge cells, trimmed by the same share of a narrower cell).
    """
    from flipguard.scan.stats import BANDS, BIN, NBINS, PILE_NEIGHBOURS, RESOLUTION_FACTOR

    j = next(i for i, b in enumerate(BANDS) if b / RESOLUTION_FACTOR >= BIN)
    hist = counts.resolved()[j].double()[: NBINS - PILE_NEIGHBOURS]  # leave out the on-level end
    k = int(hist.argmax())
    around = torch.cat([hist[max(0, k - PILE_NEIGHBOURS) : k], hist[k + 1 : k + 1 + PILE_NEIGHBOURS]])
    mean = float(around.mean()) if len(around) else 0.0
    ratio = float(hist[k]) / mean if mean > 0 else float("inf") if hist[k] > 0 else 0.0
    return (k + 1) * BIN, ratio, int(hist[k])


# -- balanced ---------------------------------------------------------------------------------
@dataclass
class Balanced(Policy):
    """Per group up to ``r`` of the free weights, as many flips up as down (nearest first)."""

    r: float = DEFAULTS["balanced"]["r"]
    name = "balanced"

    def __post_init__(self):
        _check_fraction(self.name, "r", self.r)

    def plan(self, evidence=None) -> Plan:
        return _BalancedPlan(self.r)


class _BalancedPlan(Plan):
    def __init__(self, r: float):
        self.r, self.detail = r, {"r": r}

    def select(self, view: CellView) -> torch.Tensor:
        inf = torch.full_like(view.d, float("inf"))
        up = view.eligible & (view.u >= 0.5)  # nearest wall above: the flip raises the level
        down = view.eligible & ~up
        rank_up = rank_in_group(torch.where(up, view.d, inf), view)
        rank_down = rank_in_group(torch.where(down, view.d, inf), view)
        budget = torch.round(self.r * group_counts(view.eligible, view).double()).to(torch.int64)
        pairs = torch.minimum(torch.minimum(group_counts(up, view), group_counts(down, view)), budget // 2)
        per_weight = pairs[view.group]
        return (up & (rank_up < per_weight)) | (down & (rank_down < per_weight))


# -- diffuse ----------------------------------------------------------------------------------
@dataclass
class Diffuse(Policy):
    """Error diffusion (one-dimensional, per group): the quantized group follows the weights' sum.

    Walking each group in storage order (along the input dimension, which the layer sums over),
    a weight keeps its level or moves to the next level on the side of its value plus the carried
    error, whichever is nearer, and passes its own error on. A weight at distance ``e`` from its
    level flips about as often as under stochastic rounding (``e`` over the gap), which breaks the
    attacker's per-weight alignment like ``adaptive``'s dither does, but the errors of a group
    cancel instead of adding up. Deterministic; pinned and blocked weights pass their error on.
    """

    name = "diffuse"

    def plan(self, evidence=None) -> Plan:
        return _DiffusePlan()


class _DiffusePlan(Plan):
    def __init__(self):
        self.detail = {"diffuse": True}
        self._last: tuple[str, torch.Tensor, torch.Tensor] | None = None

    def _decide(self, view: CellView) -> tuple[torch.Tensor, torch.Tensor]:
        """(selected mask, side ±1) of every weight of the chunk; cached for ``direction``."""
        if self._last is not None and self._last[0] == view.key:
            return self._last[1], self._last[2]
        n, size, groups = view.d.numel(), view.group_size, view.groups
        pad = groups * size - n
        levels = view.levels.double()
        top = len(levels) - 1

        def grid(t, fill):  # (groups, size), the last group padded
            return torch.cat([t, t.new_full((pad,), fill)]).view(groups, size)

        x, level = grid(view.x.double(), 0.0), grid(view.level, 0)
        here, eligible = levels[level], grid(view.eligible, False)
        carry = torch.zeros(groups, dtype=torch.float64)
        chosen = torch.zeros((groups, size), dtype=torch.bool)
        side = torch.ones((groups, size), dtype=torch.int64)
        for j in range(size):
            want = x[:, j] + carry
            s = torch.where(want >= here[:, j], 1, -1)
            nxt = level[:, j] + s
            ok = eligible[:, j] & (nxt >= 0) & (nxt <= top)
            other = levels[nxt.clamp(0, top)]
            flip = ok & ((want - other).abs() < (want - here[:, j]).abs())
            carry = want - torch.where(flip, other, here[:, j])
            chosen[:, j], side[:, j] = flip, s
        out = chosen.view(-1)[:n], side.view(-1)[:n]
        self._last = (view.key, *out)
        return out

    def select(self, view: CellView) -> torch.Tensor:
        return self._decide(view)[0]

    def direction(self, view: CellView) -> torch.Tensor:
        return self._decide(view)[1]


# -- random -----------------------------------------------------------------------------------
@dataclass
class Random(Policy):
    """Control: the count another policy (``of``) selects per chunk, drawn uniformly at random."""

    of: Policy | str = DEFAULTS["random"]["of"]
    seed: int = DEFAULTS["random"]["seed"]
    name = "random"

    def __post_init__(self):
        if isinstance(self.of, str):
            if self.of in ("random", "gaussian"):
                raise UsageError(f"random: 'of' must be a selection policy, not {self.of!r}.")
            self.of = make_policy(self.of)

    @property
    def needs_evidence(self) -> bool:  # type: ignore[override]
        return self.of.needs_evidence

    def needs_evidence_for(self, schemes: list[str]) -> bool:
        return self.of.needs_evidence_for(schemes)

    def plan(self, evidence=None) -> Plan:
        return _RandomPlan(self.of.plan(evidence), self.seed)

    def plan_all(self, evidence: dict) -> dict[str, Plan]:
        return {name: _RandomPlan(plan, self.seed) for name, plan in self.of.plan_all(evidence).items()}


class _RandomPlan(Plan):
    def __init__(self, base: Plan, seed: int):
        self.base, self.seed = base, seed
        self.detail = {"of": base.detail, "seed": seed}

    def select(self, view: CellView) -> torch.Tensor:
        count = int(self.base.select(view).sum())
        candidates = view.eligible.nonzero().view(-1)
        order = torch.randperm(len(candidates), generator=generator(self.seed, view.key))
        chosen = torch.zeros_like(view.eligible)
        chosen[candidates[order[:count]]] = True
        return chosen


# -- gaussian ---------------------------------------------------------------------------------
@dataclass
class Gaussian(Policy):
    """Baseline: N(0, (sigma·scale)²) noise on every free weight; scale = tensor std or cell width."""

    sigma: float = DEFAULTS["gaussian"]["sigma"]
    relative_to: str = DEFAULTS["gaussian"]["relative_to"]
    seed: int = DEFAULTS["gaussian"]["seed"]
    name = "gaussian"
    is_noise = True

    def __post_init__(self):
        _check_nonnegative(self.name, "sigma", self.sigma)
        if self.relative_to not in ("std", "cell"):
            raise UsageError(f"gaussian: relative_to must be 'std' or 'cell', got {self.relative_to!r}.")

    def plan(self, evidence=None) -> Plan:
        plan = Plan()
        plan.detail = {"sigma": self.sigma, "relative_to": self.relative_to}
        return plan


POLICIES: dict[str, type[Policy]] = {
    p.name: p for p in (Ratio, Threshold, Adaptive, Dither, Balanced, Diffuse, Random, Gaussian)
}


def make_policy(name: str, **params) -> Policy:
    """The policy registered as ``name`` with ``params``; UsageError names a bad name or value."""
    key = str(name).lower()
    if key not in POLICIES:
        raise UsageError(f"unknown policy {name!r}; choose one of {', '.join(POLICIES)}.")
    cls = POLICIES[key]
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise UsageError(f"policy {key} has no parameter {unknown[0]!r}; it takes {', '.join(sorted(known))}.")
    return cls(**params)


# -- per-group helpers ------------------------------------------------------------------------
def group_counts(mask: torch.Tensor, view: CellView) -> torch.Tensor:
    """int64 ``(groups,)``: how many weights of each group ``mask`` holds."""
    return torch.bincount(view.group[mask], minlength=view.groups)


def rank_in_group(key: torch.Tensor, view: CellView) -> torch.Tensor:
    """int64 rank of each weight's ``key`` inside its group (0 = smallest; ties by position)."""
    n, size = key.numel(), view.group_size
    padded = torch.full((view.groups * size,), float("inf"), dtype=key.dtype)
    padded[:n] = key
    order = torch.sort(padded.view(view.groups, size), dim=1, stable=True).indices
    ranks = torch.empty_like(order)
    ranks.scatter_(1, order, torch.arange(size).expand_as(order))
    return ranks.view(-1)[:n]


def generator(seed: int, key: str) -> torch.Generator:
    """A torch CPU generator seeded from ``seed`` and a string key (stable across runs)."""
    g = torch.Generator()
    g.manual_seed(zlib.crc32(f"{seed}:{key}".encode()) + (seed << 32))
    return g


__all__ = [
    "DEFAULTS",
    "POLICIES",
    "Adaptive",
    "Balanced",
    "CellView",
    "Diffuse",
    "Dither",
    "Gaussian",
    "Plan",
    "Policy",
    "Random",
    "Ratio",
    "Threshold",
    "make_policy",
]
