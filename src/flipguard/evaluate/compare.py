"""Compare an undefended and a defended model's results: SG, UP, CF and DER (DESIGN §4).

Inputs are :class:`~flipguard.evaluate.result.EvaluationResult` s of the same attack scenario:

- ``undefended``: the attacked model under the quantized scheme  -> A_q (and T_q, below);
- ``defended``: the defended model under the same scheme          -> A_d;
- ``fp`` (optional): the attacked model in full precision        -> A_fp; without it SG is n/a;
- ``utility_undefended`` / ``utility_defended`` (optional): ``utility`` results of the two
  quantized models -> U_q, U_d; without them UP is n/a.

Utility U must be higher-is-better for UP = min(1, U_d/U_q); per ``utility_metric``:

=============  ===========================================  ===============================
metric         U                                            so UP is
=============  ===========================================  ===============================
``fidelity``   exp(-KL), KL = mean token KL(P_fp ‖ P_q)      min(1, exp(KL_q - KL_d))
``accuracy``   task accuracy (a share)                      min(1, acc_d / acc_q)
``perplexity`` 1 / perplexity                               min(1, ppl_q / ppl_d)
=============  ===========================================  ===============================

The default is the first of fidelity, accuracy, perplexity that both utility results hold
(fidelity is the most sensitive, DESIGN §4). Times: T_d = ``defense_seconds`` (the defense's wall
time; without it CF is n/a); T_q = ``quantize_seconds``, by default the undefended result's
``load_s`` (reading and quantizing the checkpoint under the scheme). DER is n/a whenever a part is.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field

from flipguard.errors import FlipGuardError, UsageError
from flipguard.evaluate.metrics import DER, MIN_BACKDOOR_GAP, RateEstimate, defense_effectiveness
from flipguard.evaluate.result import EvaluationResult
from flipguard.evaluate.scenarios import ATTACK_SCENARIOS

UTILITY_METRICS = ("fidelity", "accuracy", "perplexity")
#: How each utility metric becomes a higher-is-better U (see the module docstring's table).
UTILITY_FORMULAS = {"fidelity": "exp(-KL)", "accuracy": "task accuracy", "perplexity": "1 / perplexity"}


@dataclass
class Comparison:
    """DER with its parts, and what each came from (rates with intervals, utilities, times)."""

    scenario: str
    scheme: str
    der: DER
    attack: dict = field(default_factory=dict)  # role -> RateEstimate dict (fp, undefended, defended)
    utility: dict = field(default_factory=dict)  # metric, U formula, undefended/defended values
    times: dict = field(default_factory=dict)  # t_d, t_q (s) and where T_q came from
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The JSON-ready record: DER, its parts and their inputs."""
        return asdict(self)

    def to_json(self, indent: int | None = 2) -> str:
        """The JSON ``flipguard compare --json`` prints."""
        return json.dumps(self.to_dict(), indent=indent, default=str)

    def to_console(self) -> str:
        """SG, UP, CF and DER, each with its inputs, and the reason for every n/a."""
        d, i = self.der, self.der.inputs
        lines = [f"DER for {self.scenario} under {self.scheme}"]
        for role in ("fp", "undefended", "defended"):
            if role in self.attack:
                r = RateEstimate(**self.attack[role])
                lines.append(f"  A_{ {'fp': 'fp', 'undefended': 'q', 'defended': 'd'}[role]:<3} {role:<11} {r.to_console()}")
        lines.append(f"  SG  = {_part(d.sg):<6} clip((A_q - A_d) / (A_q - A_fp), 0, 1); n/a when A_q - A_fp < {i['min_gap']:g}")
        if self.utility:
            u = self.utility
            lines.append(f"  UP  = {_part(d.up):<6} min(1, U_d / U_q), U = {u['u']} ({u['metric']}): "
                         f"U_q = {u['undefended']:.4g}, U_d = {u['defended']:.4g}")
        else:
            lines.append(f"  UP  = {_part(d.up):<6} min(1, U_d / U_q)")
        t_d, t_q = self.times.get("t_d"), self.times.get("t_q")
        t_text = ", ".join(
            f"{name} = {'?' if v is None else f'{v:.3g} s'}" for name, v in (("T_d", t_d), ("T_q", t_q))
        )
        lines.append(f"  CF  = {_part(d.cf):<6} 1 / (1 + log10(1 + T_d / T_q)); {t_text}")
        lines.append(f"  DER = {_part(d.der):<6} SG * UP * CF")
        for part, why in d.reasons.items():
            lines.append(f"  {part.upper()} n/a: {why}")
        for note in self.notes:
            lines.append(f"  note: {note}")
        return "\n".join(lines)


def _part(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def utility_value(result: EvaluationResult, metric: str) -> float | None:
    """U of a ``utility`` result under ``metric`` (table in the module docstring); None if not measured."""
    if metric == "fidelity":
        kl = result.means.get("kl")
        return None if kl is None else math.exp(-kl.value)
    if metric == "accuracy":
        acc = result.rates.get("task_accuracy")
        return None if acc is None else acc.rate
    if metric == "perplexity":
        ppl = result.means.get("perplexity")
        return None if ppl is None else 1.0 / ppl.value
    raise FlipGuardError(f"unknown utility metric {metric!r}; choose one of {', '.join(UTILITY_METRICS)}.")


def compare_results(
    undefended: EvaluationResult,
    defended: EvaluationResult,
    fp: EvaluationResult | None = None,
    utility_undefended: EvaluationResult | None = None,
    utility_defended: EvaluationResult | None = None,
    utility_metric: str | None = None,
    defense_seconds: float | None = None,
    quantize_seconds: float | None = None,
    min_gap: float = MIN_BACKDOOR_GAP,
) -> Comparison:
    """SG, UP, CF and DER of a defense from evaluation results (roles in the module docstring)."""
    for name, value in (("defense_seconds", defense_seconds), ("quantize_seconds", quantize_seconds)):
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
            raise UsageError(f"{name} must be a number of seconds, not negative, got {value!r}.")
    _check_attack_pair(undefended, defended, fp)
    notes = []
    if undefended.n != defended.n or undefended.settings.get("prompts_source") != defended.settings.get("prompts_source"):
        notes.append("the undefended and defended results used different prompt sets")
    u_q = u_d = None
    utility: dict = {}
    if (utility_undefended is None) != (utility_defended is None):
        raise FlipGuardError("give utility results for both the undefended and the defended model, or for neither.")
    if utility_undefended is not None:
        for role, res in (("undefended", utility_undefended), ("defended", utility_defended)):
            if res.scenario != "utility" or res.scheme != undefended.scheme:
                raise FlipGuardError(
                    f"the {role} utility result is {res.scenario} under {res.scheme}; it must be a utility "
                    f"result under {undefended.scheme}."
                )
        metric = utility_metric or _default_metric(utility_undefended, utility_defended)
        u_q, u_d = utility_value(utility_undefended, metric), utility_value(utility_defended, metric)
        if u_q is None or u_d is None:
            raise FlipGuardError(f"the utility results do not both measure {metric}; pick another --utility-metric.")
        utility = {"metric": metric, "u": UTILITY_FORMULAS[metric], "undefended": u_q, "defended": u_d}
    t_q = quantize_seconds if quantize_seconds is not None else undefended.timings.get("load_s")
    times = {
        "t_d": defense_seconds,
        "t_q": t_q,
        "t_q_source": "given" if quantize_seconds is not None else "undefended result's load_s",
    }
    der = defense_effectiveness(
        a_fp=None if fp is None else fp.attack_success.rate,
        a_q=undefended.attack_success.rate,
        a_d=defended.attack_success.rate,
        u_q=u_q, u_d=u_d, t_d=defense_seconds, t_q=t_q, min_gap=min_gap,
    )
    attack = {"undefended": undefended.attack_success.to_dict(), "defended": defended.attack_success.to_dict()}
    if fp is not None:
        attack["fp"] = fp.attack_success.to_dict()
    return Comparison(
        scenario=undefended.scenario, scheme=undefended.scheme, der=der,
        attack=attack, utility=utility, times=times, notes=notes,
    )


def _default_metric(a: EvaluationResult, b: EvaluationResult) -> str:
    for metric in UTILITY_METRICS:
        if utility_value(a, metric) is not None and utility_value(b, metric) is not None:
            return metric
    raise FlipGuardError("the two utility results share no measure (fidelity, accuracy or perplexity).")


def _check_attack_pair(undefended: EvaluationResult, defended: EvaluationResult, fp: EvaluationResult | None) -> None:
    """One sentence per way the three results cannot be compared."""
    for role, res in (("undefended", undefended), ("defended", defended), ("fp", fp)):
        if res is not None and (res.scenario not in ATTACK_SCENARIOS or res.attack_success is None):
            raise FlipGuardError(
                f"the {role} result is a {res.scenario} result; compare needs attack results "
                f"({', '.join(ATTACK_SCENARIOS)})."
            )
    if defended.scenario != undefended.scenario:
        raise FlipGuardError(
            f"the undefended result is {undefended.scenario} but the defended one is {defended.scenario}; "
            "compare results of the same scenario."
        )
    if undefended.scheme == "fp" or defended.scheme != undefended.scheme:
        raise FlipGuardError(
            f"the undefended ({undefended.scheme}) and defended ({defended.scheme}) results must use the same "
            "quantized scheme (int8, fp4 or nf4)."
        )
    if fp is not None and (fp.scheme != "fp" or fp.scenario != undefended.scenario):
        raise FlipGuardError(
            f"--fp must be a {undefended.scenario} result in full precision (scheme fp), not {fp.scenario} under {fp.scheme}."
        )
    phrases = {r.settings.get("phrase") for r in (undefended, defended, fp) if r is not None}
    if len(phrases) > 1:
        raise FlipGuardError(f"the results count different phrases ({', '.join(sorted(map(str, phrases)))}); use one.")
