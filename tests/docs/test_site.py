"""The documentation site builds with ``--strict`` (no broken link, no missing page, every API name
resolves), holds every page of the nav, fetches nothing from outside, and renders in a browser."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.docs import chromium
from tests.docs.conftest import ROOT

API_NAMES = {  # a few names each API page must document (from the packages' __all__)
    "api/scan.html": ["scan_checkpoint", "scan_tensors", "ScanReport", "Verdict"],
    "api/defend.html": ["defend_checkpoint", "defend_tensor", "DefenseReport", "make_policy"],
    "api/evaluate.html": ["evaluate", "compare_results", "EvaluationResult", "wilson_interval"],
    "api/attack.html": ["attack_model", "AttackConfig", "AttackReport"],
    "api/schemes.html": ["get_scheme", "scheme_names", "Scheme"],
}
EXTERNAL = re.compile(r"""<(?:script|img|iframe|source|audio|video|embed)\b[^>]*\bsrc=["']?(?:https?:)?//"""
                      r"""|<link\b[^>]*\bhref=["']?(?:https?:)?//|url\(["']?(?:https?:)?//|@import""", re.I)


def nav_pages(nav) -> list[str]:
    """Every Markdown file named in mkdocs.yml's nav."""
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, dict):
        return [p for v in nav.values() for p in nav_pages(v)]
    return [p for item in nav for p in nav_pages(item)]


def config() -> dict:
    text = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def test_every_nav_page_is_built(site: Path):
    pages = nav_pages(config()["nav"])
    assert len(pages) >= 30
    for page in pages:
        built = site / Path(page).with_suffix(".html")
        assert built.is_file(), f"{page} is in the nav but was not built"
        assert "<article" in built.read_text(encoding="utf-8")


def test_every_docs_page_is_in_the_nav():
    pages = set(nav_pages(config()["nav"]))
    files = {str(p.relative_to(ROOT / "docs")) for p in (ROOT / "docs").rglob("*.md")}
    assert files == pages


def test_api_pages_document_the_public_names(site: Path):
    for page, names in API_NAMES.items():
        text = (site / page).read_text(encoding="utf-8")
        for name in names:
            assert re.search(rf'id="flipguard\.[a-z.]+\.{name}"', text), f"{name} missing from {page}"


def test_theme_fetches_no_fonts_and_no_analytics():
    cfg = config()
    assert cfg["theme"]["font"] is False
    assert "analytics" not in (cfg.get("extra") or {})


def test_built_pages_load_nothing_from_outside(site: Path):
    for html in site.rglob("*.html"):
        match = EXTERNAL.search(html.read_text(encoding="utf-8"))
        assert match is None, f"{html.relative_to(site)} loads an external resource: {match.group(0)}"
    for css in site.rglob("*.css"):
        assert not re.search(r"url\([\"']?(?:https?:)?//|@import", css.read_text(encoding="utf-8")), css


def test_changelog_page_holds_the_changelog(site: Path):
    text = (site / "changelog.html").read_text(encoding="utf-8")
    assert "0.1.0" in text and "Unreleased" in text


@pytest.mark.skipif(chromium.chromium() is None, reason=chromium.SKIP_REASON)
def test_home_page_renders_offline(site: Path, tmp_path: Path):
    png = tmp_path / "home.png"
    dom, requests = chromium.run((site / "index.html").as_uri(), screenshot=png, dump_dom=True)
    assert "FlipGuard finds and removes" in dom
    assert requests == [], f"the page fetched {requests}"
    assert png.is_file() and chromium.distinct_colours(png) > 50  # text, the picture, the theme
    chromium.run((site / "experiments" / "grid.html").as_uri(), screenshot=png)  # a long page with tables
    assert chromium.distinct_colours(png) > 20


@pytest.mark.skipif(chromium.chromium() is None, reason=chromium.SKIP_REASON)
def test_the_request_check_sees_an_external_fetch(tmp_path: Path):
    page = tmp_path / "external.html"
    page.write_text('<html><body><h1>x</h1><img src="https://example.invalid/a.png"></body></html>')
    dom, requests = chromium.run(page.as_uri(), dump_dom=True)
    assert "<h1>x</h1>" in dom
    assert requests == ["https://example.invalid/a.png"]


def test_readme_links_resolve():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text) + re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", text)
    relative = [link for link in links if not re.match(r"[a-z]+:", link)]
    assert len(relative) >= 10
    for link in relative:
        assert (ROOT / link).exists(), f"README links to {link}, which does not exist"


def test_readme_is_a_front_page():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 150
    setup = text.index("bash scripts/setup.sh && .venv/bin/flipguard demo")
    assert setup < text.index("bash scripts/test.sh") < text.index("## Quickstart")
    assert text.index("![") > setup  # the picture comes after the set-up commands
    assert "load average" not in text and "the day before" not in text
