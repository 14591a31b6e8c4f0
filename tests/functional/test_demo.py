"""`python -m flipguard demo` end to end on the bundled models (reduced prompt counts, NF4 only)."""

import json
import subprocess
import sys

import pytest


def flipguard(*args):
    return subprocess.run([sys.executable, "-m", "flipguard", *map(str, args)], capture_output=True, text=True,
                          timeout=900)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    proc = flipguard("demo", "-o", out, "--schemes", "nf4", "--prompts", "10", "--texts", "4", "--json")
    return proc, out


def test_demo_tells_the_story(demo_run):
    proc, out = demo_run
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads(proc.stdout)
    (story,) = summary["schemes"]
    assert story["scheme"] == "nf4"
    assert story["a_fp"] <= story["a_clean"] + 0.2  # looks clean in full precision
    assert story["a_q"] >= 0.6  # malicious once quantized (bundled model: 90% on 40 prompts)
    assert story["a_d"] <= 0.2  # defended
    assert story["scan_before"]["status"] == "backdoor" and story["scan_before"]["targeted"] == ["nf4"]
    assert story["kl_d"] < story["kl_q"]
    der = story["der"]
    assert der["der"] == pytest.approx(der["sg"] * der["up"] * der["cf"])
    # the story is told on stderr, step by step, and ends with the table
    for step in ("full precision", "quantized to NF4", "scan verdict", "defended in", "DER", "A_fp"):
        assert step in proc.stderr


def test_demo_writes_report_and_plots_atomically(demo_run):
    proc, out = demo_run
    assert proc.returncode == 0
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    for name in ("demo.md", "summary.json", "wall_distance_nf4.png", "security_fidelity.png",
                 "scan/nf4-before.json", "scan/nf4-after.json"):
        assert name in names
    assert any(n.startswith("scan/nf4/") and n.endswith(".png") for n in names)  # scan's own histograms
    assert not any(n.startswith(("models/", "defended/")) for n in names)  # models are not kept
    assert [p.name for p in out.parent.iterdir()] == ["run"]  # no temporary sibling left
    assert (out / "wall_distance_nf4.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| NF4 |" in (out / "demo.md").read_text()


def test_existing_output_is_refused_without_force(tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    proc = flipguard("demo", "-o", out)
    assert proc.returncode == 2
    assert "already exists" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_prompt_count_is_one_sentence(tmp_path):
    proc = flipguard("demo", "-o", tmp_path / "x", "--prompts", "0")
    assert proc.returncode == 2
    assert "--prompts must be at least 1" in proc.stderr and "Traceback" not in proc.stderr
