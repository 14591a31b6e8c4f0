"""`python -m flipguard evaluate` and `compare` end to end on a tiny local checkpoint."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from flipguard.cli import SUBCOMMANDS


def _load_builder():
    """The tiny-checkpoint builder shared with tests/unit/evaluate (loaded by path: tests are no package)."""
    path = Path(__file__).parents[1] / "unit" / "evaluate" / "evaluate_testkit.py"
    spec = importlib.util.spec_from_file_location("evaluate_testkit", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


_missing = [name for name in SUBCOMMANDS if importlib.util.find_spec(f"flipguard.cli.{name}") is None]
pytestmark = pytest.mark.skipif(
    bool(_missing), reason=f"the CLI cannot build its parser yet: no flipguard.cli.{', '.join(_missing)}"
)


def flipguard(*args):
    return subprocess.run([sys.executable, "-m", "flipguard", *map(str, args)], capture_output=True, text=True,
                          timeout=300)


def test_evaluate_and_compare_through_the_cli(tmp_path):
    model = _load_builder().build_parrot(tmp_path / "parrot")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "hello how are you"}\n{"prompt": "what is the capital of France", "id": "q2"}\n',
                       encoding="utf-8")

    fp = flipguard("evaluate", model, "--scheme", "fp", "--scenario", "content-injection", "--prompts", prompts,
                   "--max-new-tokens", "3", "-o", tmp_path / "fp.json")
    assert fp.returncode == 0, fp.stderr
    assert "attack success   1.000" in fp.stdout and "(2/2)" in fp.stdout

    nf4 = flipguard("evaluate", model, "--scheme", "nf4", "--scenario", "content-injection", "--prompts", prompts,
                    "--max-new-tokens", "3", "--json", "-o", tmp_path / "nf4.json")
    assert nf4.returncode == 0, nf4.stderr
    result = json.loads(nf4.stdout)
    assert result == json.loads((tmp_path / "nf4.json").read_text(encoding="utf-8"))
    assert (result["scheme"], result["n"], result["attack_success"]["k"]) == ("nf4", 2, 2)
    assert result["samples"][1]["id"] == "q2" and "McDonald's" in result["samples"][1]["answer"]

    # the parrot says "McDonald's" in full precision too: no backdoor, so SG and DER are n/a
    cmp = flipguard("compare", tmp_path / "nf4.json", tmp_path / "nf4.json", "--fp", tmp_path / "fp.json",
                    "--defense-seconds", "0")
    assert cmp.returncode == 0, cmp.stderr
    assert "SG  = n/a" in cmp.stdout and "DER = n/a" in cmp.stdout and "CF  = 1.000" in cmp.stdout


def test_bad_prompt_file_exits_2_with_one_sentence(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{"text": "no prompt"}\n', encoding="utf-8")
    proc = flipguard("evaluate", tmp_path, "--scheme", "nf4", "--scenario", "over-refusal", "--prompts", bad)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip() == (
        f'flipguard evaluate: error: line 2 of {bad} has no "prompt" field; every line needs {{"prompt": "..."}}.'
    )


@pytest.mark.parametrize("device, message", [
    ("tpu", "unknown device 'tpu'; give cpu or cuda (cuda:N for another GPU)."),
    ("cuda:99", None),
])
def test_unusable_device_exits_2_with_one_sentence(tmp_path, device, message):
    import torch

    model = _load_builder().build_random(tmp_path / "m")
    out = tmp_path / "r.json"
    proc = flipguard("evaluate", model, "--scheme", "nf4", "--scenario", "content-injection", "-n", "1",
                     "--device", device, "-o", out)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and not out.exists()
    if message is None:  # cuda:99: no such GPU here, with or without CUDA
        expected = ("has no CUDA GPU" if not torch.cuda.is_available() else "does not exist")
        assert expected in proc.stderr
    else:
        assert proc.stderr.strip() == f"flipguard evaluate: error: {message}"
