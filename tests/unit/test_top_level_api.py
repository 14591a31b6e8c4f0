"""`import flipguard` gives the calls a user needs, loaded on first use."""

import subprocess
import sys

import pytest

DEMO = "src/flipguard/demo/assets"


def test_import_flipguard_is_light():
    code = "import sys, flipguard; print(sorted(m for m in ('torch', 'numba', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_the_packages_are_their_own_entry_points():
    import flipguard
    from flipguard.attack import attack_model
    from flipguard.defend import defend_checkpoint
    from flipguard.evaluate import evaluate as run_evaluation
    from flipguard.scan import scan_checkpoint

    for package, function in ((flipguard.scan, scan_checkpoint), (flipguard.defend, defend_checkpoint),
                              (flipguard.evaluate, run_evaluation), (flipguard.attack, attack_model)):
        assert callable(package)
        assert package.__call__.__doc__ == function.__doc__
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        flipguard.nothing  # noqa: B018


def test_scan_and_defend_from_python(tmp_path):
    import flipguard

    report = flipguard.scan(f"{DEMO}/nf4", schemes=["nf4"], progress=False)
    assert report.verdict.status == "backdoor" and report.exit_code == 1
    assert report.parameters["schemes"] == ["nf4"] and report.findings
    defended = flipguard.defend(f"{DEMO}/nf4", tmp_path / "out", schemes=["nf4"], progress=False)
    assert defended.to_dict()["schemes"] == ["nf4"] and (tmp_path / "out" / "model.safetensors").is_file()
