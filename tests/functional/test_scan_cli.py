"""`flipguard scan` end to end on tiny checkpoints: verdicts, formats, exit codes, bad input."""

import hashlib
import json
import subprocess
import sys

import pytest
import torch

from flipguard.cli import main
from tests.support.fixtures import attack_checkpoint, dequantized_checkpoint
from tests.support.checkpoints import make_tiny_checkpoint


@pytest.fixture
def scan(capsys):
    """Run `flipguard scan -q ARGS` in process (the CLI's own main); returns code, stdout, stderr."""

    def run(*args, check_code=None):
        try:
            code = main(["scan", "-q", *map(str, args)])
        except SystemExit as stop:  # argparse usage errors
            code = stop.code
        out, err = capsys.readouterr()
        result = subprocess.CompletedProcess(args, code, out, err)
        if check_code is not None:
            assert code == check_code, out + err
        return result

    return run


def test_console_script_runs_as_a_process(zoo):
    proc = subprocess.run(
        [sys.executable, "-m", "flipguard", "scan", "-q", str(zoo / "attacked-nf4")],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 1, proc.stderr
    assert "VERDICT: quantization-conditioned backdoor suspected, targeting NF4" in proc.stdout


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    """Clean random-init checkpoints of four families and three dtypes, plus attacked copies."""
    root = tmp_path_factory.mktemp("scan")
    made = {}
    for family, dtype in [("llama", torch.float32), ("gpt2", torch.float16), ("qwen2", torch.bfloat16), ("phi", torch.float16)]:
        made[family] = make_tiny_checkpoint(root / family, family=family, dtype=dtype, hidden=128, layers=2, seed=3)
    for scheme in ("int8", "fp4", "nf4"):
        attack_checkpoint(made["llama"], root / f"attacked-{scheme}", [scheme], margin=0.05)
    dequantized_checkpoint(made["gpt2"], root / "dequantized-nf4", "nf4")
    return root


def test_clean_checkpoints_have_no_findings(scan, zoo):
    tensors = 0
    for family in ("llama", "gpt2", "qwen2", "phi"):
        proc = scan(zoo / family, "-f", "json", check_code=0)
        report = json.loads(proc.stdout)
        assert report["status"] == "clean" and report["findings"] == []
        tensors += len({t["tensor"] for t in report["tensors"]})
    assert tensors >= 40  # and ≥ 100 across the unit tests and benchmarks/scan_power.py


@pytest.mark.parametrize("scheme", ["int8", "fp4", "nf4"])
def test_attacked_checkpoint_is_flagged_and_the_scheme_named(scan, zoo, scheme):
    proc = scan(zoo / f"attacked-{scheme}", "-f", "json", check_code=1)
    report = json.loads(proc.stdout)
    assert report["status"] == "backdoor"
    assert report["targeted"] == [scheme]
    assert proc.returncode == 1
    scan(zoo / f"attacked-{scheme}", "--exit-zero", check_code=0)


def test_dequantized_checkpoint_is_reported_as_such(scan, zoo):
    proc = scan(zoo / "dequantized-nf4", "-f", "json", check_code=0)
    report = json.loads(proc.stdout)
    assert report["status"] == "dequantized" and report["dequantized_from"] == ["nf4"]


def test_output_file_sarif_and_plots(scan, zoo, tmp_path):
    out = tmp_path / "report.sarif"
    plots = tmp_path / "plots"
    scan(zoo / "attacked-int8", "--scheme", "int8", "-f", "sarif", "-o", out, "--plot", plots, check_code=1)
    sarif = json.loads(out.read_text())
    assert sarif["version"] == "2.1.0"
    assert {r["ruleId"] for r in sarif["runs"][0]["results"]} == {"FG-QCB-INT8"}
    pngs = sorted(plots.glob("*.png"))
    assert pngs and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


def test_scan_never_modifies_the_input(scan, zoo):
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (zoo / "llama").iterdir()}
    scan(zoo / "llama", check_code=0)
    after = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (zoo / "llama").iterdir()}
    assert before == after


def test_usage_errors_exit_2_with_flipguards_sentence(scan, zoo):
    # one exit-code table (flipguard.errors): usage errors are 2 like every other input error
    proc = scan(zoo / "llama", "--scheme", "nf5")
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("flipguard scan: error: unknown scheme 'nf5'; choose from bnb, gguf, all, "
                                          "int8, fp4, nf4, q8_0, q6_k")
    assert len(proc.stderr.strip().splitlines()) == 1
    proc = scan(zoo / "llama", "--alpha", "5")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "flipguard scan: error: alpha must be between 0 and 1 (exclusive), got 5.0."
    assert scan(zoo / "llama", "--format", "xml").returncode == 2
    assert scan().returncode == 2


def test_json_records_the_alpha_it_was_run_with(scan, zoo):
    proc = scan(zoo / "llama", "--alpha", "0.5", "-f", "json", check_code=0)
    assert json.loads(proc.stdout)["method"]["alpha"] == 0.5


def test_api_validates_its_own_arguments(zoo):
    from flipguard.errors import UsageError
    from flipguard.scan import scan_checkpoint

    with pytest.raises(UsageError, match="unknown scheme 'nf5'"):
        scan_checkpoint(zoo / "llama", schemes=["nf5"], progress=False)
    with pytest.raises(UsageError, match="alpha must be between 0 and 1"):
        scan_checkpoint(zoo / "llama", alpha=5, progress=False)


def _broken(tmp_path, zoo, kind):
    bad = tmp_path / kind
    if kind == "missing":
        return bad
    if kind == "empty":
        bad.mkdir()
        (bad / "config.json").write_text((zoo / "llama" / "config.json").read_text())
        return bad
    if kind == "truncated":
        bad.mkdir()
        (bad / "config.json").write_text((zoo / "llama" / "config.json").read_text())
        data = (zoo / "llama" / "model.safetensors").read_bytes()
        (bad / "model.safetensors").write_bytes(data[: len(data) // 2])
        return bad
    if kind == "pickle":
        bad.mkdir()
        (bad / "config.json").write_text((zoo / "llama" / "config.json").read_text())
        (bad / "pytorch_model.bin").write_bytes(b"not read")
        return bad
    if kind in ("quantized", "float64"):
        import shutil

        from safetensors.torch import load_file, save_file

        shutil.copytree(zoo / "llama", bad)
        if kind == "quantized":
            config = json.loads((bad / "config.json").read_text())
            config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
            (bad / "config.json").write_text(json.dumps(config))
        else:
            tensors = load_file(bad / "model.safetensors")
            name = next(n for n in tensors if n.endswith("q_proj.weight"))
            tensors[name] = tensors[name].double()
            save_file(tensors, bad / "model.safetensors", metadata={"format": "pt"})
        return bad
    if kind == "missing-shard":
        bad.mkdir()
        (bad / "config.json").write_text((zoo / "llama" / "config.json").read_text())
        index = {"metadata": {}, "weight_map": {"model.embed_tokens.weight": "model-00001-of-00002.safetensors"}}
        (bad / "model.safetensors.index.json").write_text(json.dumps(index))
        return bad
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["missing", "empty", "truncated", "pickle", "missing-shard", "quantized", "float64"])
def test_bad_input_is_one_sentence_and_exit_2(scan, zoo, tmp_path, kind):
    path = _broken(tmp_path, zoo, kind)
    out = tmp_path / "report.json"
    proc = scan(path, "-o", out)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("flipguard scan: error: ")
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_nonfinite_weights_are_reported_per_tensor(scan, zoo, tmp_path):
    from tests.support.fixtures import transform_quantizable

    def poison(name, w):
        w = w.clone()
        if name.endswith("layers.0.mlp.up_proj.weight"):
            w[0, 0] = float("nan")
        return w

    transform_quantizable(zoo / "llama", tmp_path / "nan", poison)
    proc = scan(tmp_path / "nan", "-f", "json")
    assert proc.returncode == 2
    report = json.loads(proc.stdout)
    assert any("NaN/Inf" in error and "up_proj" in error for error in report["errors"])
    assert report["status"] == "clean"  # the other tensors were still scanned
    # the reason is on stderr too, as FlipGuard's one sentence per broken tensor
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("flipguard scan: error: 1 tensor(s) hold NaN/Inf weights")
    assert "model.layers.0.mlp.up_proj.weight" in lines[0]


def test_nonfinite_weights_exit_2_even_beside_findings(scan, zoo, tmp_path):
    """A crash-free but incomplete scan never reads as 'findings' (1) or 'clean' (0)."""
    from tests.support.fixtures import transform_quantizable

    def poison(name, w):
        w = w.clone()
        if name.endswith("layers.1.mlp.up_proj.weight"):
            w[0, 0] = float("inf")
        return w

    transform_quantizable(zoo / "attacked-nf4", tmp_path / "inf", poison)
    proc = scan(tmp_path / "inf", "-f", "json")
    report = json.loads(proc.stdout)
    assert report["status"] == "backdoor"
    assert proc.returncode == 2 and report["exit_code"] == 2


def test_nothing_scannable_exits_3(scan, zoo, tmp_path):
    # bitsandbytes' skip list; llama.cpp would still quantize the embedding, so its types are left out
    proc = scan(zoo / "llama", "--scheme", "bnb",
                "--skip-modules", "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj,lm_head")
    assert proc.returncode == 3, proc.stderr


def test_all_zero_groups_are_scanned_without_error(scan, zoo, tmp_path):
    from tests.support.fixtures import transform_quantizable

    def prune(name, w):
        w = w.clone()
        w[:4] = 0  # whole rows (INT8 groups) and whole 64-blocks zero, as after pruning
        return w

    transform_quantizable(zoo / "llama", tmp_path / "pruned", prune)
    proc = scan(tmp_path / "pruned", "-f", "json", check_code=0)
    assert json.loads(proc.stdout)["status"] == "clean"
