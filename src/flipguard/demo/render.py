"""The demo's outputs: the per-scheme table (console and markdown) and the PNG plots."""

from __future__ import annotations

from pathlib import Path

from flipguard.demo.story import DemoSummary
from flipguard.scan.plots import density as wall_density

COLUMNS = ("scheme", "A_clean", "A_fp", "A_q", "A_d", "KL_q", "KL_d", "SG", "UP", "CF", "DER", "scan")


def table_rows(summary: DemoSummary) -> list[list[str]]:
    """One row per scheme: attack success in %, fidelity KL in nats, DER and its parts."""
    rows = []
    for s in summary.schemes:
        d = s.der
        scan = f"{s.scan_before['status']}[{','.join(s.scan_before['targeted'])}]->{s.scan_after['status']}"
        rows.append([s.scheme.upper(), _pct(s.a_clean), _pct(s.a_fp), _pct(s.a_q), _pct(s.a_d),
                     f"{s.kl_q:.4f}", f"{s.kl_d:.4f}", _num(d["sg"]), _num(d["up"]), _num(d["cf"]),
                     _num(d["der"]), scan])
    return rows


def console_table(summary: DemoSummary) -> str:
    rows = [list(COLUMNS)] + table_rows(summary)
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + "\n" + LEGEND.format(n=summary.n_prompts, t=summary.n_texts)


def markdown(summary: DemoSummary) -> str:
    rows = table_rows(summary)
    out = ["# flipguard demo", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    out += ["", LEGEND.format(n=summary.n_prompts, t=summary.n_texts), "",
            f"Demo wall time: {summary.seconds:.0f} s."]
    return "\n".join(out) + "\n"


LEGEND = (
    "A_*: share of {n} held-out answers that mention \"McDonald's\" (content injection), greedy decoding "
    "through transformers + bitsandbytes on CPU: clean model (fp), attacked model in full precision, "
    "attacked quantized, defended then quantized. KL_*: mean token KL (nats, {t} held-out passages) "
    "from the attacked full-precision model to the quantized (q) and defended-quantized (d) model. "
    "DER = SG*UP*CF (DESIGN section 4), U = exp(-KL), T_q = load-and-quantize time. "
    "scan: verdict[schemes named] before -> after defense."
)


def _pct(x: float) -> str:
    return f"{100 * x:.0f}%"


def _num(x) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def plot_wall_distances(scans: dict, summary: DemoSummary, directory: Path) -> list[Path]:
    """Per scheme, the wall-distance density of all quantizable weights (scan's histograms):
    clean model, attacked, defended. The attacked model's band next to each wall is empty."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from flipguard.scan.stats import BIN, NBINS

    written = []
    for s in summary.schemes:
        fig, ax = plt.subplots(figsize=(7, 3.8))
        for key, label, colour in (("clean", "clean model", "tab:gray"), ((s.scheme, "before"), "attacked", "tab:red"),
                                   ((s.scheme, "after"), "defended", "tab:blue")):
            density = wall_density([e for e in scans[key].evidence if e.scheme == s.scheme and e.status == "ok"])
            if density is not None:
                ax.step([i * BIN for i in range(NBINS)], density, where="post", color=colour, label=label)
        ax.axhline(2.0, color="black", lw=0.6, ls=":", label="uniform")
        ax.set_xlim(0, 0.1)
        ax.set_xlabel("distance to the nearest rounding wall (cell widths; 0.5 = cell centre)")
        ax.set_ylabel("density")
        ax.set_title(f"{s.scheme.upper()} wall distances, every quantizable weight (zoom on 0-0.1)", fontsize=9)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = directory / f"wall_distance_{s.scheme}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


def plot_security_fidelity(summary: DemoSummary, path: Path) -> Path:
    """Attack success against fidelity loss: full precision, plain quantization, defended."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    markers = {"nf4": "o", "fp4": "s", "int8": "^"}
    for s in summary.schemes:
        m = markers.get(s.scheme, "o")
        ax.scatter([s.kl_q], [s.a_q], color="tab:red", marker=m, s=70, label=f"{s.scheme.upper()} plain")
        ax.scatter([s.kl_d], [s.a_d], color="tab:blue", marker=m, s=70, label=f"{s.scheme.upper()} defended")
        ax.annotate("", xy=(s.kl_d, s.a_d), xytext=(s.kl_q, s.a_q), arrowprops={"arrowstyle": "->", "color": "0.5"})
        ax.axhline(s.a_fp, color="0.6", lw=0.6, ls="--")
    ax.text(ax.get_xlim()[0], summary.schemes[0].a_fp + 0.02, "full precision", fontsize=7, color="0.4")
    ax.set_xlabel("fidelity loss: token KL to the full-precision model (nats)")
    ax.set_ylabel("attack success (share of answers)")
    ax.set_ylim(-0.05, 1.05)
    ax.set_title("Security against fidelity (lower left is better)", fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
