"""flipguard.scan.html: the scan report as one self-contained page, built from real scans of the
bundled demo models (a clean zoo Llama and its NF4 content-injection backdoor)."""

from __future__ import annotations

import copy
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from flipguard.scan import scan_checkpoint
from flipguard.scan.report import to_dict
from flipguard.scan.html import COLOURS, to_html
from flipguard.scan.record import RECORD_FILE as DEFENSE_REPORT
from flipguard.scan.stats import BIN
from tests.docs import chromium

ASSETS = Path(__file__).resolve().parents[3] / "src" / "flipguard" / "demo" / "assets"
VOID = {"meta", "br", "hr", "img", "input", "link", "col", "area", "base", "wbr", "source"}
HOSTILE = '<script>alert(1)</script>"><img src=x onerror=alert(2)>&amp;'


@pytest.fixture(scope="module")
def scans():
    """The scan reports of the attacked NF4 and the clean demo model (objects, for the histograms)."""
    return {name: scan_checkpoint(ASSETS / name, progress=False) for name in ("nf4", "clean")}


@pytest.fixture(scope="module")
def reports(scans):
    return {name: to_dict(report) for name, report in scans.items()}


class Elements(HTMLParser):
    """Every start tag with its attributes, the text inside each id'd element, and tag balance."""

    def __init__(self):
        super().__init__()
        self.tags, self.stack, self.text_by_id, self.open_ids = [], [], {}, []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag not in VOID:
            self.stack.append(tag)
            self.open_ids.append(dict(attrs).get("id"))

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> does not close <{self.stack[-1:]}>"
        self.stack.pop()
        self.open_ids.pop()

    def handle_data(self, data):
        for ident in filter(None, self.open_ids):
            self.text_by_id[ident] = self.text_by_id.get(ident, "") + data


def parse(page: str) -> Elements:
    parser = Elements()
    parser.feed(page)
    parser.close()
    assert parser.stack == [], f"unclosed tags: {parser.stack}"
    return parser


def test_verdict_comes_first_and_names_the_scheme(reports):
    page = to_html(reports["nf4"])
    parsed = parse(page)
    body = [t for t, _ in parsed.tags]
    first_in_main = body[body.index("main") + 1]
    assert first_in_main == "header"
    header = dict(parsed.tags)["header"]
    assert header["id"] == "verdict" and "backdoor" in header["class"].split()
    assert COLOURS["backdoor"] in header["style"]
    verdict = parsed.text_by_id["verdict"]
    assert "Quantization-conditioned backdoor suspected, targeting NF4 (severity high)" in verdict
    assert f"{reports['nf4']['weights_scanned']:,} weights scanned" in verdict
    assert page.index('id="verdict"') < page.index('id="schemes"') < page.index('id="wall-distance"') \
        < page.index('id="structure"') < page.index('id="findings"')


def test_clean_verdict_says_it_is_no_proof(reports):
    parsed = parse(to_html(reports["clean"]))
    verdict = parsed.text_by_id["verdict"]
    assert verdict.strip().startswith("Clean: no trace of a quantization-conditioned backdoor found")
    assert "no proof" in verdict and "flipguard defend --policy dither" in verdict
    assert "No tensor was flagged." in parsed.text_by_id["findings"]


def test_scheme_table_holds_the_reports_numbers(reports):
    report = reports["nf4"]
    text = parse(to_html(report)).text_by_id["schemes"]
    for v in report["scheme_verdicts"]:
        assert f"{v['tensors_flagged']} / {v['tensors_scanned']}" in text
        assert f"{v['pooled']['share']:.3f}" in text
    assert text.count("TARGETED") == len(report["targeted"]) == 1


def test_every_finding_is_listed_with_its_tensor(reports):
    report = reports["nf4"]
    page = to_html(report)
    findings = parse(page).text_by_id["findings"]
    assert f"Findings ({len(report['findings'])}, strongest first)" in findings
    for f in report["findings"]:
        assert f["tensor"] in findings
    start = page.index('id="findings"')
    rows = re.findall(r"<tr>", page[start:page.index("</section>", start)])
    assert len(rows) == len(report["findings"]) + 1  # and the header


def test_every_string_from_the_report_is_escaped(reports):
    report = copy.deepcopy(reports["nf4"])
    report["path"] = HOSTILE
    report["notes"] = [HOSTILE, f"{DEFENSE_REPORT} {HOSTILE}"]
    report["tool"]["version"] = HOSTILE
    for item in report["findings"] + report["tensors"]:
        item["tensor"] = HOSTILE + item["tensor"]
    for f in report["findings"]:
        f["kind"] = HOSTILE
    for v in report["scheme_verdicts"]:
        v["severity"] = HOSTILE
    report["method"]["null"] = HOSTILE
    page = to_html(report)
    parsed = parse(page)
    assert {t for t, _ in parsed.tags} <= {
        "html", "head", "meta", "title", "style", "body", "main", "header", "h1", "h2", "p", "code", "strong",
        "section", "table", "tr", "th", "td", "div", "figure", "figcaption", "svg", "line", "polyline",
        "rect", "circle", "path", "text", "ul", "li",
    }
    assert "<script" not in page and "<img" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&amp;amp;" in page  # an entity in the input is shown as typed, not decoded
    assert all("onerror" not in attrs for _, attrs in parsed.tags)


def test_page_is_self_contained(reports):
    for report in reports.values():
        page = to_html(report)
        lowered = page.lower()
        for needle in ("<script", "<link", "<img", "<iframe", "src=", "href=", "url(", "@import", "http:",
                       "https:", "//"):
            assert needle not in lowered, needle


def test_histograms_are_drawn_when_the_dict_holds_them(scans, reports):
    assert 'id="hist-' not in to_html(reports["nf4"])  # to_dict has no histogram (yet): shares only
    assert 'id="shares-nf4"' in to_html(reports["nf4"])
    report = copy.deepcopy(reports["nf4"])
    hists = {(e.name, e.scheme): e.counts.hist.sum(dim=0).tolist() for e in scans["nf4"].evidence}
    for t in report["tensors"]:
        t["hist"] = hists[(t["tensor"], t["scheme"])]
    report["method"]["hist_bin"] = BIN
    page = to_html(report)
    for scheme in ("int8", "fp4", "nf4"):
        assert f'id="hist-{scheme}"' in page
    nf4 = page[page.index('id="hist-nf4"'):page.index("</figure>", page.index('id="hist-nf4"'))]
    assert "flagged tensors (28)" in nf4 and "tensors not flagged" not in nf4
    int8 = page[page.index('id="hist-int8"'):page.index("</figure>", page.index('id="hist-int8"'))]
    assert "tensors not flagged (28)" in int8 and "flagged tensors" not in int8


def test_a_defended_checkpoint_says_so_beside_the_verdict(tmp_path):
    model = tmp_path / "defended-looking"
    shutil.copytree(ASSETS / "nf4", model)
    (model / DEFENSE_REPORT).write_text("{}")
    report = to_dict(scan_checkpoint(model, schemes=["nf4"], progress=False))
    verdict = parse(to_html(report)).text_by_id["verdict"]
    assert "backdoor suspected" in verdict and "Defended?" in verdict and "cannot be checked" in verdict


def test_incomplete_and_dequantized_verdicts(reports):
    report = copy.deepcopy(reports["clean"])
    report["exit_code"] = 2
    assert "Scan incomplete" in parse(to_html(report)).text_by_id["verdict"]
    report = copy.deepcopy(reports["clean"])
    report["status"], report["dequantized_from"] = "dequantized", ["nf4"]
    parsed = parse(to_html(report))
    assert "sit on the NF4 grid" in parsed.text_by_id["verdict"]
    assert "on grid" in parsed.text_by_id["schemes"]


@pytest.mark.skipif(chromium.chromium() is None, reason=chromium.SKIP_REASON)
def test_page_renders_offline_with_the_verdict_in_view(reports, tmp_path):
    page = tmp_path / "scan.html"
    page.write_text(to_html(reports["nf4"]), encoding="utf-8")
    png = tmp_path / "scan.png"
    dom, requests = chromium.run(page.as_uri(), size=(1280, 800), screenshot=png, dump_dom=True)
    assert requests == []
    assert "Quantization-conditioned backdoor suspected, targeting NF4" in dom
    assert chromium.distinct_colours(png) > 20
    red = tuple(int(COLOURS["backdoor"][i:i + 2], 16) for i in (1, 3, 5))
    assert chromium.pixel(png, 140, 24) == red  # the verdict's box, in the first screen


@pytest.mark.skipif(chromium.chromium() is None, reason=chromium.SKIP_REASON)
def test_verdict_box_ends_within_the_first_600_pixels(reports, tmp_path):
    # The test copy alone gets a one-line script that writes the verdict's box into the DOM.
    probe = ("<script>var r = document.getElementById('verdict').getBoundingClientRect();"
             "document.body.setAttribute('data-verdict', Math.round(r.top) + ' ' + Math.round(r.bottom));"
             "</script>")
    for name in ("nf4", "clean"):
        page = tmp_path / f"{name}.html"
        page.write_text(to_html(reports[name]).replace("</body>", probe + "</body>"), encoding="utf-8")
        dom, _ = chromium.run(page.as_uri(), size=(1280, 800), dump_dom=True)
        top, bottom = map(int, re.search(r'data-verdict="(-?\d+) (-?\d+)"', dom).groups())
        assert 0 <= top < bottom <= 600, (name, top, bottom)
