"""Plain-text renderings of an evaluation result and of a comparison, for the terminal."""

from __future__ import annotations

from flipguard.evaluate.compare import Comparison
from flipguard.evaluate.metrics import MeanEstimate, RateEstimate
from flipguard.evaluate.result import EvaluationResult


def _rate(r: RateEstimate) -> str:
    return f"{r.rate:.3f} [{r.low:.3f}, {r.high:.3f}] ({r.k}/{r.n})"


def _mean(m: MeanEstimate) -> str:
    return f"{m.value:.4g} [{m.low:.4g}, {m.high:.4g}] (n={m.n})"


def _part(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def format_result(result: EvaluationResult) -> str:
    """A few lines: what was run, the attack success, every rate and mean with its 95% interval."""
    lines = [f"{result.scenario} | {result.model} | {result.scheme} | n={result.n}"]
    if result.attack_success is not None:
        lines.append(f"  attack success   {_rate(result.attack_success)}")
    for name, r in result.rates.items():
        lines.append(f"  {name:<16} {_rate(r)}")
    for name, m in result.means.items():
        unit = " nats/token" if name in ("kl", "nll") else ""
        lines.append(f"  {name:<16} {_mean(m)}{unit}")
    if "phrase" in result.settings:
        lines.append(f"  phrase           {result.settings['phrase']!r}")
    times = ", ".join(f"{k} {v:.2f}" for k, v in result.timings.items())
    lines.append(f"  seconds          {times}")
    lines.append("  intervals: 95%, Wilson for rates, percentile bootstrap for means")
    return "\n".join(lines)


def format_comparison(cmp: Comparison) -> str:
    """SG, UP, CF and DER, each with its inputs, and the reason for every n/a."""
    d, i = cmp.der, cmp.der.inputs
    lines = [f"DER for {cmp.scenario} under {cmp.scheme}"]
    for role in ("fp", "undefended", "defended"):
        if role in cmp.attack:
            r = RateEstimate(**cmp.attack[role])
            lines.append(f"  A_{ {'fp': 'fp', 'undefended': 'q', 'defended': 'd'}[role]:<3} {role:<11} {_rate(r)}")
    lines.append(f"  SG  = {_part(d.sg):<6} clip((A_q - A_d) / (A_q - A_fp), 0, 1); n/a when A_q - A_fp < {i['min_gap']:g}")
    if cmp.utility:
        u = cmp.utility
        lines.append(f"  UP  = {_part(d.up):<6} min(1, U_d / U_q), U = {u['u']} ({u['metric']}): "
                     f"U_q = {u['undefended']:.4g}, U_d = {u['defended']:.4g}")
    else:
        lines.append(f"  UP  = {_part(d.up):<6} min(1, U_d / U_q)")
    t_d, t_q = cmp.times.get("t_d"), cmp.times.get("t_q")
    t_text = ", ".join(
        f"{name} = {'?' if v is None else f'{v:.3g} s'}" for name, v in (("T_d", t_d), ("T_q", t_q))
    )
    lines.append(f"  CF  = {_part(d.cf):<6} 1 / (1 + log10(1 + T_d / T_q)); {t_text}")
    lines.append(f"  DER = {_part(d.der):<6} SG * UP * CF")
    for part, why in d.reasons.items():
        lines.append(f"  {part.upper()} n/a: {why}")
    for note in cmp.notes:
        lines.append(f"  note: {note}")
    return "\n".join(lines)
