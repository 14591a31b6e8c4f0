"""What the demo measured, and its tables (console and markdown)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field


@dataclass
class SchemeStory:
    """What the demo measured for one scheme (rates are shares in [0, 1], KL in nats, times in s)."""

    scheme: str
    a_clean: float
    a_fp: float
    a_q: float
    a_d: float
    a_intervals: dict  # role -> [low, high] Wilson 95%
    kl_q: float
    kl_d: float
    t_q: float
    t_d: float
    scan_before: dict  # status, targeted, findings
    scan_after: dict
    der: dict  # DER.to_dict(): sg, up, cf, der, inputs, reasons
    flips: dict = field(default_factory=dict)  # codes changed, weights, share
    examples: dict = field(default_factory=dict)  # role -> one (prompt, answer)


@dataclass
class DemoSummary:
    scenario: str
    n_prompts: int
    n_texts: int
    max_new_tokens: int
    policy: str
    schemes: list[SchemeStory]
    seconds: float = 0.0
    files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_console(self) -> str:
        """The per-scheme table and its legend."""
        rows = [list(COLUMNS)] + table_rows(self)
        widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
        lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines) + "\n" + LEGEND.format(n=self.n_prompts, t=self.n_texts)

    def to_markdown(self) -> str:
        """``demo.md``: the table, its legend and the wall time."""
        out = ["# flipguard demo", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
        out += ["| " + " | ".join(r) + " |" for r in table_rows(self)]
        out += ["", LEGEND.format(n=self.n_prompts, t=self.n_texts), "", f"Demo wall time: {self.seconds:.0f} s."]
        return "\n".join(out) + "\n"


COLUMNS = ("scheme", "A_clean", "A_fp", "A_q", "A_d", "KL_q", "KL_d", "SG", "UP", "CF", "DER", "scan")


def table_rows(summary: "DemoSummary") -> list[list[str]]:
    """One row per scheme: attack success in %, fidelity KL in nats, DER and its parts."""
    rows = []
    for s in summary.schemes:
        d = s.der
        after = s.scan_after["status"]
        if s.scan_after.get("defense_record_confirmed"):
            after += " +defended"  # traces remain; the defense record is confirmed by the weights
        scan = f"{s.scan_before['status']}[{','.join(s.scan_before['targeted'])}]->{after}"
        rows.append([s.scheme.upper(), _pct(s.a_clean), _pct(s.a_fp), _pct(s.a_q), _pct(s.a_d),
                     f"{s.kl_q:.4f}", f"{s.kl_d:.4f}", _num(d["sg"]), _num(d["up"]), _num(d["cf"]),
                     _num(d["der"]), scan])
    return rows


LEGEND = (
    "A_*: share of {n} held-out answers that mention \"McDonald's\" (content injection), greedy decoding "
    "through transformers + bitsandbytes on CPU: clean model (fp), attacked model in full precision, "
    "attacked quantized, defended then quantized. KL_*: mean token KL (nats, {t} held-out passages) "
    "from the attacked full-precision model to the quantized (q) and defended-quantized (d) model. "
    "DER = SG*UP*CF (DESIGN section 4), U = exp(-KL), T_q = load-and-quantize time. "
    "scan: verdict[schemes named] before -> after defense (+defended: the traces remain by design, and the "
    "defense record beside the weights is confirmed by them)."
)


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _num(x) -> str:
    return "n/a" if x is None else f"{x:.2f}"
