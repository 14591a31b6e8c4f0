"""`python -m flipguard defend` end to end on tiny checkpoints: output, report, exit codes."""

import json
import subprocess
import sys

import pytest
import torch

from flipguard.checkpoint import open_checkpoint
from tests.support.checkpoints import make_tiny_checkpoint


def flipguard(*args):
    """The real command in a subprocess (used once: it costs seconds of imports)."""
    env = {"OMP_NUM_THREADS": "1", "TORCHDYNAMO_DISABLE": "1", "HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin"}
    return subprocess.run([sys.executable, "-m", "flipguard", *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=env)


@pytest.fixture
def cli(capsys):
    """The same entry point in-process: (exit code, stdout, stderr)."""
    from flipguard.cli import main

    def call(*args):
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return call


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("m") / "qwen2", family="qwen2", dtype=torch.float16)


def test_defend_writes_checkpoint_report_and_summary(model, tmp_path):
    out = tmp_path / "defended"
    run = flipguard("defend", model, "-o", out, "--report", tmp_path / "report.json")
    assert run.returncode == 0, run.stderr
    assert "policy adaptive" in run.stdout and "codes changed" in run.stdout
    assert "int8" in run.stdout and "nf4" in run.stdout and "fp4" in run.stdout
    saved = json.loads((out / "flipguard_defense.json").read_text())
    assert saved == json.loads((tmp_path / "report.json").read_text())
    assert saved["schemes"] == ["int8", "fp4", "nf4"] and saved["depth_cell_widths"] == {"int8": 0.1, "fp4": 0.02, "nf4": 0.02}
    assert open_checkpoint(out).tensors.keys() == open_checkpoint(model).tensors.keys()
    for t in saved["tensors"]:
        for name, stats in t["schemes"].items():
            assert stats["flipped"] + sum(stats["unsafe"].values()) == stats["candidates"]
            assert stats["flipped"] <= stats["codes_changed"] or name != "nf4" or stats["flipped"] == 0


def test_report_dash_prints_the_json_report_alone(model, tmp_path, cli):
    code, out, err = cli("defend", model, "-o", tmp_path / "o", "--scheme", "int8", "--report", "-")
    assert code == 0, err
    assert json.loads(out) == json.loads((tmp_path / "o" / "flipguard_defense.json").read_text())
    assert not (tmp_path / "-").exists()


def test_one_scheme_and_a_policy_with_parameters(model, tmp_path, cli):
    code, out, err = cli("defend", model, "-o", tmp_path / "o", "--scheme", "nf4", "--policy", "ratio", "--r", "0.15",
                         "-q")
    assert code == 0, err
    assert out == ""
    saved = json.loads((tmp_path / "o" / "flipguard_defense.json").read_text())
    assert saved["schemes"] == ["nf4"] and saved["policy"] == {"name": "ratio", "r": 0.15}


@pytest.mark.parametrize("policy", ["ratio", "threshold", "adaptive", "dither", "balanced", "diffuse", "random",
                                    "gaussian"])
def test_every_policy_prints_its_summary(model, tmp_path, cli, policy):
    from flipguard.defend import POLICIES

    assert policy in POLICIES
    code, out, err = cli("defend", model, "-o", tmp_path / "o", "--scheme", "nf4", "--policy", policy)
    assert code == 0, err
    assert f"policy {policy}" in out and "codes changed" in out and "report:" in out
    if policy == "dither":  # no scan asked: every tensor rounded stochastically, and said so
        saved = json.loads((tmp_path / "o" / "flipguard_defense.json").read_text())
        assert all(t["plans"]["nf4"]["evidence"] == "always" for t in saved["tensors"])
        assert f"{len(saved['tensors'])} tensor/scheme pairs rounded stochastically without asking the scan" in out


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--scheme", "int4"], "unknown scheme"),
        (["--policy", "magic"], "unknown policy"),
        (["--policy", "ratio", "--r", "1.5"], "r must be between 0 and 1"),
        (["--policy", "ratio", "--r", "0"], "r must be between 0 and 1"),
        (["--policy", "threshold", "--tau", "-0.1"], "tau must be at least 0"),
        (["--policy", "gaussian", "--sigma", "-1"], "sigma must be at least 0"),
        (["--policy", "adaptive", "--r", "0.2"], "no parameter 'r'"),
        (["--reach", "0.7"], "reach must be above 0 and at most 0.5"),
        (["--policy", "threshold", "--reach", "0.1"], "no parameter 'reach'"),
        (["--depth", "0.7"], "depth must be between 0 and 0.5"),
    ],
)
def test_bad_options_exit_2_and_write_nothing(model, tmp_path, cli, extra, words):
    code, _, err = cli("defend", model, "-o", tmp_path / "out", *extra)
    assert code == 2
    assert words in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_bad_paths_exit_2_and_write_nothing(model, tmp_path, cli):
    code, _, err = cli("defend", model, "-o", model / "defended")
    assert code == 2 and "inside the input" in err
    assert not (model / "defended").exists()
    code, _, err = cli("defend", tmp_path / "nope", "-o", tmp_path / "out")
    assert code == 2 and len(err.strip().splitlines()) == 1
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    (broken / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{garbled")
    code, _, err = cli("defend", broken, "-o", tmp_path / "out")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()
    (tmp_path / "taken").mkdir()
    code, _, err = cli("defend", model, "-o", tmp_path / "taken")
    assert code == 2 and "already exists" in err
    pickle_only = tmp_path / "pickle"
    pickle_only.mkdir()
    (pickle_only / "config.json").write_text((model / "config.json").read_text())
    (pickle_only / "pytorch_model.bin").write_bytes(b"not read")
    code, _, err = cli("defend", pickle_only, "-o", tmp_path / "out2")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out2").exists()


def test_a_named_command_builds_its_own_parser_alone():
    code = ("import sys; from flipguard.cli import build_parser; p = build_parser('defend'); "
            "p.parse_args(['defend', 'm', '-o', 'o']); "
            "print(sorted(m for m in ('flipguard.cli.zoo', 'flipguard.cli.demo', 'flipguard.cli.attack') "
            "if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"  # the other commands' modules (and their imports) were not loaded
    help_text = flipguard("--help").stdout  # no command named: every command with its summary
    assert "defend    flip weights" in help_text and "zoo       build tiny test models" in help_text
