"""The demo's PNG plots: wall distances (clean, attacked, defended) and security against fidelity."""

from __future__ import annotations

from pathlib import Path

from flipguard.demo.summary import DemoSummary
from flipguard.scan.plots import density as wall_density


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
