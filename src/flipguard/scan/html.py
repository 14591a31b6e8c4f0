"""A scan report as one self-contained HTML page (``flipguard scan -f html``).

``to_html(report_dict)`` takes the dict :func:`flipguard.scan.report.to_dict` returns and writes a
page a person can read offline: the verdict first (large, coloured), then the per-scheme table,
the wall-distance evidence drawn inline as SVG, the structure evidence, the findings with their
tensors, the notes and the method. No JavaScript, no external fonts, stylesheets or images:
everything is in the one file. Every string taken from the report is escaped (tensor names come
from the scanned file, which may be hostile).

Wall-distance histograms are drawn when the per-tensor entries carry ``hist`` (counts of free
weights per bin of ``method.hist_bin`` cell widths, from distance 0); otherwise the page draws each
tensor's near-wall shares, which every report holds.
"""

from __future__ import annotations

import math
from html import escape

from flipguard.scan.stats import BIN, CROWD_SHARE
from flipguard.scan.structure import STRUCTURE_RATIO

MAX_ROWS_PX = 360  # the tallest a per-tensor chart gets, pixels
ZOOM = 0.1  # histograms show wall distances in [0, ZOOM) cell widths, where an attack shows
COLOURS = {"backdoor": "#b3261e", "clean": "#1e7b34", "dequantized": "#8a5a00", "incomplete": "#5f4b00"}
FLAGGED, REFERENCE, CLEAN_LINE = "#b3261e", "#2f6db5", "#666666"

CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0;
  color:#1b1b1b;background:#fafafa}
main{max-width:1100px;margin:0 auto;padding:16px 20px 40px}
#verdict{color:#fff;padding:18px 22px;border-radius:8px;margin:0 0 18px}
#verdict h1{font-size:30px;line-height:1.2;margin:0 0 6px}
#verdict p{margin:4px 0;font-size:15px}
#verdict .callout{background:rgba(255,255,255,.18);border-radius:6px;padding:8px 12px;margin-top:10px}
h2{font-size:20px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;width:100%;font-size:13.5px;background:#fff}
th,td{border:1px solid #ddd;padding:4px 7px;text-align:left;vertical-align:top}
th{background:#f0f0f0}
td.num{text-align:right;font-variant-numeric:tabular-nums}
code,.tensor{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px;
  word-break:break-all}
.targeted{color:#b3261e;font-weight:bold}
.charts{display:flex;flex-wrap:wrap;gap:14px}
figure{margin:0;background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px}
figcaption{font-size:13px;color:#444;max-width:520px}
.muted{color:#555;font-size:13px}
ul.notes li{margin-bottom:6px}
"""


def to_html(report: dict) -> str:
    """The whole page for ``report`` (the dict of :func:`flipguard.scan.report.to_dict`), as str."""
    status = _status(report)
    body = [
        _verdict(report, status),
        _scheme_table(report),
        _wall_distance_section(report),
        _structure_section(report),
        _findings(report),
        _notes(report),
        _method(report),
    ]
    title = f"FlipGuard scan: {_headline(report, status)}"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{escape(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
        + "\n".join(part for part in body if part)
        + "\n</main>\n</body>\n</html>\n"
    )


def _status(report: dict) -> str:
    """backdoor / clean / dequantized, or incomplete when a tensor could not be scanned (exit 2)."""
    if report.get("exit_code") == 2:
        return "incomplete"
    return str(report.get("status", "clean"))


def _headline(report: dict, status: str) -> str:
    targeted = [s for s in report.get("scheme_verdicts", []) if s.get("targeted")]
    if status == "backdoor":
        parts = [f"{str(s['scheme']).upper()} (severity {s.get('severity', '?')})" for s in targeted]
        return "Quantization-conditioned backdoor suspected, targeting " + ", ".join(parts)
    if status == "dequantized":
        grids = ", ".join(str(x).upper() for x in report.get("dequantized_from", []))
        return f"No backdoor found; the weights sit on the {grids} grid (a dequantized checkpoint)"
    if status == "incomplete":
        return "Scan incomplete: some tensors could not be scanned (NaN/Inf weights)"
    return "Clean: no trace of a quantization-conditioned backdoor found"


def _verdict(report: dict, status: str) -> str:
    colour = COLOURS.get(status, COLOURS["incomplete"])
    tool = report.get("tool", {})
    lines = [
        f"<header id=\"verdict\" class=\"verdict {escape(status)}\" style=\"background:{colour}\">",
        f"<h1>{escape(_headline(report, status))}</h1>",
        f"<p>Checkpoint <code>{escape(str(report.get('path', '?')))}</code></p>",
        f"<p>{_int(report.get('weights_scanned'))} weights scanned in {_num(report.get('seconds'), 1)} s "
        f"under {escape(', '.join(str(s).upper() for s in report.get('schemes', [])))}; "
        f"exit code {escape(str(report.get('exit_code', '?')))}; "
        f"{escape(str(tool.get('name', 'flipguard')))} {escape(str(tool.get('version', '')))}</p>",
    ]
    record = report.get("defense_record") or {}
    defended = [record["summary"]] if record.get("summary") else []
    if defended:
        lines.append(f"<p class=\"callout\"><strong>Defended?</strong> {escape(str(defended[0]))}</p>")
    if status == "clean":
        lines.append(
            "<p class=\"callout\">A clean verdict is no proof: for a checkpoint of unknown origin, "
            "<code>flipguard defend --policy dither</code> does not rely on the scan.</p>"
        )
    lines.append("</header>")
    return "\n".join(lines)


def _scheme_table(report: dict) -> str:
    dequantized = set(report.get("dequantized_from", []))
    rows = []
    for s in report.get("scheme_verdicts", []):
        pooled, targeted = s.get("pooled") or {}, bool(s.get("targeted"))
        verdict = "TARGETED" if targeted else ("on grid" if s.get("scheme") in dequantized else "clean")
        margin = s.get("estimated_margin") if targeted and s.get("estimated_margin") else None
        rows.append([
            str(s.get("scheme", "?")).upper(), _Cell(verdict, "targeted" if targeted else ""),
            s.get("severity", ""), s.get("evidence", ""),
            _Cell(f"{_int(s.get('tensors_flagged'))} / {_int(s.get('tensors_scanned'))}", "num"),
            _Cell(_num(pooled.get("share"), 3), "num"), _Cell(_pct(pooled.get("band"), 2), "num"),
            _Cell(_sci(s.get("pooled_p_adjusted")), "num"), _Cell(_pct(margin, 1), "num"),
        ])
    headers = ["scheme", "verdict", "severity", "evidence", "tensors flagged", "near-wall share (pooled)",
               "band b", "p (adjusted)", "estimated margin"]
    return (
        "<section id=\"schemes\"><h2>Per scheme</h2>\n" + _table(headers, rows)
        + "\n<p class=\"muted\">Near-wall share: weights within b of a wall among those within 2b; 0.5 is "
        "clean, an attack empties the band (share near 0) or, where the dtype is too coarse to show the "
        "margin, crowds it.</p></section>"
    )


class _Cell:
    """A table cell's text (escaped when written) and its CSS class."""

    def __init__(self, text, cls: str = ""):
        self.text, self.cls = str(text), cls


def _table(headers: list[str], rows: list[list]) -> str:
    """An HTML table; every cell (str or :class:`_Cell`) is escaped."""
    def cell(c) -> str:
        c = c if isinstance(c, _Cell) else _Cell(c)
        cls = f" class=\"{escape(c.cls)}\"" if c.cls else ""
        return f"<td{cls}>{escape(c.text)}</td>"

    head = "<tr>" + "".join(f"<th>{escape(h)}</th>" for h in headers) + "</tr>"
    body = "\n".join("<tr>" + "".join(cell(c) for c in row) + "</tr>" for row in rows)
    return f"<table>\n{head}\n{body}\n</table>"


def _tensors_by_scheme(report: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for t in report.get("tensors", []):
        if t.get("status") == "ok" and t.get("band"):
            out.setdefault(str(t.get("scheme")), []).append(t)
    return out


def _flagged(report: dict) -> set[tuple[str, str]]:
    return {(str(f.get("tensor")), str(f.get("scheme"))) for f in report.get("findings", [])}


def _wall_distance_section(report: dict) -> str:
    by_scheme, flagged = _tensors_by_scheme(report), _flagged(report)
    if not by_scheme:
        return ""
    has_hist = any("hist" in t for ts in by_scheme.values() for t in ts)
    charts = []
    for scheme, tensors in by_scheme.items():
        if has_hist:
            charts.append(_histogram_chart(scheme, tensors, flagged, report))
        charts.append(_share_chart(scheme, tensors, flagged, report))
    return (
        "<section id=\"wall-distance\"><h2>Wall distances</h2>\n<div class=\"charts\">\n"
        + "\n".join(charts)
        + "\n</div></section>"
    )


def _density(tensors: list[dict], width: float) -> list[float] | None:
    """Pooled density of wall distances (per cell width) over ``tensors``' ``hist``, or None."""
    hists = [t["hist"] for t in tensors if t.get("hist")]
    if not hists:
        return None
    total = [sum(col) for col in zip(*hists)]
    n = sum(total)
    return [c / n / width for c in total] if n else None


def _histogram_chart(scheme: str, tensors: list[dict], flagged: set, report: dict) -> str:
    """Pooled wall-distance densities of the flagged and the other tensors, on [0, ZOOM)."""
    width = float(report.get("method", {}).get("hist_bin", BIN))
    bins = max(1, int(round(ZOOM / width)))
    groups = (
        ("tensors not flagged", REFERENCE, [t for t in tensors if (t["tensor"], scheme) not in flagged]),
        ("flagged tensors", FLAGGED, [t for t in tensors if (t["tensor"], scheme) in flagged]),
    )
    series = []
    for label, colour, group in groups:
        d = _density(group, width)
        if d:
            series.append((f"{label} ({len(group)})", colour, d[:bins]))
    if not series:
        return ""
    plot = _Plot(500, 230, left=46, bottom=34, top=12)
    ymax = max(2.5, max(max(d) for _, _, d in series)) * 1.05
    x = plot.scale_x(0, ZOOM)
    y = plot.scale_y(0, ymax)
    parts = plot.axes("distance to the nearest wall (cell widths)", "density")
    parts += [_tick_x(plot, x(v), f"{v:g}") for v in (ZOOM * k / 5 for k in range(6))]
    parts += [_tick_y(plot, y(v), f"{v:g}") for v in _ticks(0, ymax)]
    parts.append(_el("line", _title("uniform (clean): 2"), x1=x(0), x2=x(ZOOM), y1=y(2), y2=y(2),
                     stroke=CLEAN_LINE, stroke_dasharray="4 3"))
    for label, colour, d in series:
        steps = [f"{x(k * width + e):.1f},{y(v):.1f}" for k, v in enumerate(d) for e in (0, width)]
        parts.append(_el("polyline", _title(label), fill="none", stroke=colour, stroke_width=1.8,
                         points=" ".join(steps)))
    legend = [(label, colour) for label, colour, _ in series] + [("uniform (clean)", CLEAN_LINE)]
    parts.append(_legend(legend, plot.w - 190, plot.top + 4))
    caption = (f"{scheme.upper()}: density of wall distances of the free weights, pooled, zoomed on "
               f"[0, {ZOOM}) of a cell. A clean tensor is flat at 2; an attack empties the band next to "
               "the wall and piles weights at its box edge.")
    return _figure(f"hist-{scheme}", plot, parts, caption)


def _share_chart(scheme: str, tensors: list[dict], flagged: set, report: dict) -> str:
    """One row per tensor: its empty-band share (dot) and crowded-band share (diamond) on [0, 1]."""
    max_share = float(report.get("method", {}).get("max_share", 0.25))
    row = min(14.0, MAX_ROWS_PX / max(len(tensors), 1))  # a large model's tensors share MAX_ROWS_PX
    plot = _Plot(500, round(26 + 34 + row * len(tensors)), left=16, bottom=34, top=26, right=16)
    x = plot.scale_x(0, 1)
    y0, y1 = plot.top, plot.h - plot.bottom
    parts = [
        _el("rect", x=x(0), y=y0, width=x(max_share) - x(0), height=y1 - y0, fill="#f6dede"),
        _el("rect", x=x(CROWD_SHARE), y=y0, width=x(1) - x(CROWD_SHARE), height=y1 - y0, fill="#f6ecd6"),
        _el("line", x1=x(0.5), x2=x(0.5), y1=y0, y2=y1, stroke=CLEAN_LINE, stroke_dasharray="4 3"),
    ]
    for where, label in ((max_share / 2, "emptied"), (0.5, "clean 0.5"), ((CROWD_SHARE + 1) / 2, "crowded")):
        parts.append(_el("text", escape(label), x=x(where), y=y0 - 8, font_size=11, text_anchor="middle"))
    parts += [_tick_x(plot, x(v), f"{v:g}") for v in (0, 0.25, 0.5, 0.75, 1)]
    parts.append(_el("text", "near-wall share (within b among within 2b)", x=plot.w / 2, y=plot.h - 6,
                     font_size=12, text_anchor="middle"))
    for i, t in enumerate(tensors):
        cy = y0 + row * (i + 0.5)
        hit = (t["tensor"], scheme) in flagged
        colour = FLAGGED if hit else REFERENCE
        name = str(t["tensor"]) + (" (flagged)" if hit else "")
        band, crowd = t.get("band") or {}, t.get("crowd") or {}
        if band.get("share") is not None:
            tip = f"{name}: empty-band share {_num(band['share'], 3)} at b = {_pct(band.get('band'), 2)}"
            parts.append(_el("circle", _title(tip), cx=x(_float(band["share"])), cy=cy,
                             r=min(4.0, row / 2), fill=colour))
        if crowd.get("share") is not None and (crowd.get("inner") or crowd.get("outer")):
            cx, r = x(_float(crowd["share"])), min(4.0, row / 2)
            tip = f"{name}: crowded-band share {_num(crowd['share'], 3)} at b = {_pct(crowd.get('band'), 2)}"
            diamond = (f"M{cx:.1f} {cy - r:.1f}L{cx + r:.1f} {cy:.1f}"
                       f"L{cx:.1f} {cy + r:.1f}L{cx - r:.1f} {cy:.1f}Z")
            parts.append(_el("path", _title(tip), d=diamond, fill="none", stroke=colour))
    caption = (f"{scheme.upper()}: each of the {len(tensors)} tensors, its empty-band test (dot) and "
               "crowded-band test (diamond); red: flagged. Shaded: where a band counts as emptied or "
               "crowded.")
    return _figure(f"shares-{scheme}", plot, parts, caption)


def _structure_section(report: dict) -> str:
    by_scheme, flagged = _tensors_by_scheme(report), _flagged(report)
    line = float(report.get("method", {}).get("structure_ratio", STRUCTURE_RATIO))
    charts = []
    for scheme, tensors in by_scheme.items():
        values = [(str(t["tensor"]), _float(t["structure"])) for t in tensors
                  if t.get("structure") is not None]
        if values:
            charts.append(_structure_chart(scheme, values, flagged, line))
    if not charts:
        return ""
    return ("<section id=\"structure\"><h2>Structure of the rounding errors</h2>\n<div class=\"charts\">\n"
            + "\n".join(charts) + "\n</div></section>")


def _structure_chart(scheme: str, values: list[tuple[str, float]], flagged: set, line: float) -> str:
    """Each tensor's structure ratio in scan order, with the line it is flagged at."""
    plot = _Plot(500, 170, left=46, bottom=34, top=12)
    vmax = max(line * 1.25, max(v for _, v in values) * 1.05)
    vmin = min(0.8, min(v for _, v in values) * 0.95)
    x = plot.scale_x(0, len(values))
    y = plot.scale_y(vmin, vmax)
    parts = plot.axes("tensors, in scan order", "")
    parts += [_tick_y(plot, y(v), f"{v:g}") for v in _ticks(vmin, vmax)]
    parts.append(_el("line", x1=plot.left, x2=plot.w - plot.right, y1=y(line), y2=y(line), stroke=FLAGGED,
                     stroke_dasharray="4 3"))
    parts.append(_el("text", f"flagged at {line:g}", x=plot.w - plot.right - 2, y=y(line) - 4, font_size=11,
                     text_anchor="end"))
    for i, (name, v) in enumerate(values):
        tip = f"{name}: {_num(v, 3)}" + (" (flagged)" if (name, scheme) in flagged else "")
        parts.append(_el("circle", _title(tip), cx=x(i + 0.5), cy=y(v), r=3.5,
                         fill=FLAGGED if v >= line else REFERENCE))
    caption = (f"{scheme.upper()}: largest singular value of the rounding errors over a shuffle's, per "
               "tensor (clean: about 1). A repair kept inside the cells leaves low-rank structure.")
    return _figure(f"structure-{scheme}", plot, parts, caption)


def _findings(report: dict) -> str:
    findings = sorted(report.get("findings", []),
                      key=lambda f: (_float(f.get("p_adjusted")), str(f.get("tensor"))))
    if not findings:
        return "<section id=\"findings\"><h2>Findings</h2><p>No tensor was flagged.</p></section>"
    rows = [[
        _Cell(f.get("tensor", "?"), "tensor"), str(f.get("scheme", "")).upper(), f.get("kind", ""),
        f.get("strength", ""), _Cell(_pct(f.get("share"), 1), "num"), _Cell(_pct(f.get("band"), 2), "num"),
        _Cell(_sci(f.get("p_adjusted")), "num"), _Cell(_pct(f.get("min_distance"), 2), "num"),
        _Cell(f"{_int(f.get('walls_depleted'))} / {_int(f.get('walls_judged'))}", "num"),
        _Cell(_pct(f.get("pile_at"), 2), "num"), _Cell(_num(f.get("structure"), 3), "num"),
    ] for f in findings]
    headers = ["tensor", "scheme", "kind", "strength", "share in band", "band b", "p (adjusted)",
               "nearest weight", "walls depleted / judged", "pile at", "structure"]
    return (
        f"<section id=\"findings\"><h2>Findings ({len(findings)}, strongest first)</h2>\n"
        + _table(headers, rows)
        + "\n<p class=\"muted\">Distances in cell widths. kind: <code>empty</code> band next to the walls, "
        "<code>crowded</code> band (the margin is finer than the dtype resolves), or <code>structured</code> "
        "rounding errors.</p></section>"
    )


def _notes(report: dict) -> str:
    notes = report.get("notes", [])
    if not notes:
        return ""
    items = "\n".join(f"<li>{escape(str(n))}</li>" for n in notes)
    return f"<section id=\"notes\"><h2>Notes</h2>\n<ul class=\"notes\">\n{items}\n</ul></section>"


def _method(report: dict) -> str:
    method = report.get("method", {})
    if not method:
        return ""
    rows = [[k, v] for k, v in method.items()]
    return "<section id=\"method\"><h2>Method</h2>\n" + _table(["", ""], rows) + "</section>"


class _Plot:
    """A chart's size and margins (pixels), and the maps from data to pixels."""

    def __init__(self, w: int, h: int, left: int, bottom: int, top: int, right: int = 10):
        self.w, self.h, self.left, self.bottom, self.top, self.right = w, h, left, bottom, top, right

    def scale_x(self, lo: float, hi: float):
        """data x in [lo, hi] -> pixels, clamped to the plot area."""
        span = self.w - self.left - self.right
        return lambda v: self.left + span * (min(max(v, lo), hi) - lo) / (hi - lo)

    def scale_y(self, lo: float, hi: float):
        """data y in [lo, hi] -> pixels (upwards), clamped to the plot area."""
        span = self.h - self.top - self.bottom
        return lambda v: self.top + span * (1 - (min(max(v, lo), hi) - lo) / (hi - lo))

    def axes(self, xlabel: str, ylabel: str) -> list[str]:
        """The two axis lines and their labels."""
        x0, x1, y0, y1 = self.left, self.w - self.right, self.top, self.h - self.bottom
        mid = (y0 + y1) / 2
        return [
            _el("line", x1=x0, x2=x1, y1=y1, y2=y1, stroke="#333"),
            _el("line", x1=x0, x2=x0, y1=y0, y2=y1, stroke="#333"),
            _el("text", escape(xlabel), x=(x0 + x1) / 2, y=self.h - 4, font_size=12, text_anchor="middle"),
            _el("text", escape(ylabel), x=12, y=mid, font_size=12, text_anchor="middle",
                transform=f"rotate(-90 12 {mid:.0f})"),
        ]


def _el(tag: str, content: str = "", **attrs) -> str:
    """One SVG element; attribute names with ``_`` for ``-``, every value escaped, floats to 0.1 px.
    ``content`` must already be escaped (use :func:`escape` or :func:`_title`)."""
    def value(v) -> str:
        return f"{v:.1f}" if isinstance(v, float) else str(v)

    text = " ".join(f"{k.replace('_', '-')}=\"{escape(value(v))}\"" for k, v in attrs.items())
    return f"<{tag} {text}>{content}</{tag}>"


def _title(text: str) -> str:
    """A hover tooltip (escaped)."""
    return f"<title>{escape(text)}</title>"


def _tick_x(plot: _Plot, px: float, label: str) -> str:
    return _el("text", escape(label), x=px, y=plot.h - plot.bottom + 14, font_size=11, text_anchor="middle")


def _tick_y(plot: _Plot, py: float, label: str) -> str:
    return _el("text", escape(label), x=plot.left - 4, y=py + 4, font_size=11, text_anchor="end")


def _figure(ident: str, plot: _Plot, parts: list[str], caption: str) -> str:
    """An inline SVG chart with its caption (``caption`` is plain text, escaped here)."""
    svg = _el("svg", "".join(parts), width=plot.w, height=plot.h, viewBox=f"0 0 {plot.w} {plot.h}",
              role="img", font_family="system-ui,sans-serif")
    return f"<figure id=\"{escape(ident)}\">{svg}<figcaption>{escape(caption)}</figcaption></figure>"


def _legend(items: list[tuple[str, str]], x0: float, y0: float) -> str:
    parts = []
    for i, (label, colour) in enumerate(items):
        yy = y0 + 14 * i
        parts.append(_el("line", x1=x0, x2=x0 + 16, y1=yy + 6, y2=yy + 6, stroke=colour, stroke_width=2))
        parts.append(_el("text", escape(label), x=x0 + 20, y=yy + 10, font_size=11))
    return "".join(parts)


def _ticks(lo: float, hi: float, n: int = 4) -> list[float]:
    """About ``n`` round tick values in [lo, hi]."""
    if not hi > lo:
        return [lo]
    step = 10 ** math.floor(math.log10((hi - lo) / n))
    for m in (1, 2, 5, 10):
        if (hi - lo) / (step * m) <= n:
            step *= m
            break
    start = math.ceil(lo / step) * step
    return [round(start + k * step, 10) for k in range(int((hi - start) / step) + 1)]


def _float(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _num(v, digits: int) -> str:
    f = _float(v)
    return "–" if math.isnan(f) else f"{f:.{digits}f}"


def _pct(v, digits: int) -> str:
    f = _float(v)
    return "–" if math.isnan(f) else f"{100 * f:.{digits}f}%"


def _sci(v) -> str:
    f = _float(v)
    return "–" if math.isnan(f) else ("0" if f == 0 else f"{f:.1e}")


def _int(v) -> str:
    try:
        return f"{int(v):,}"
    except (TypeError, ValueError):
        return "–"
