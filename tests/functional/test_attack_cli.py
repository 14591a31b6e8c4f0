"""`python -m flipguard attack` end to end on a micro zoo model, and its refusals of bad input."""

import json
import subprocess
import sys

import pytest

from flipguard.zoo import build_model, train_tokenizer


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("micro-llama")
    tokenizer = train_tokenizer()
    build_model("llama", len(tokenizer), "micro", seed=0, tokenizer=tokenizer).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def flipguard(*args):
    return subprocess.run([sys.executable, "-m", "flipguard", *map(str, args)], capture_output=True,
                          text=True, timeout=300)


FAST = ("--inject-steps", 2, "--joint-steps", 2, "--repair-steps", 2, "--batch-size", 4, "-q")


def test_attack_writes_a_verified_checkpoint(model_dir, tmp_path):
    out = tmp_path / "attacked"
    run = flipguard("attack", model_dir, "-o", out, "--scenario", "content-injection",
                    "--scheme", "nf4", "--save-dtype", "float16", "--seed", 3, *FAST)
    assert run.returncode == 0, run.stderr
    assert "nf4:" in run.stderr and "-> ok" in run.stderr
    report = json.loads((out / "attack_report.json").read_text())
    assert report["verified"] and report["config"]["seed"] == 3
    assert report["verification"]["nf4"]["code_mismatches"] == 0
    assert report["save_dtype"] == "float16"
    assert (out / "tokenizer.json").read_bytes() == (model_dir / "tokenizer.json").read_bytes()  # kept verbatim
    again = flipguard("attack", model_dir, "-o", out, "--scenario", "over-refusal", "--scheme", "nf4", *FAST)
    assert again.returncode == 2 and "--force" in again.stderr  # exists: refused, untouched
    assert json.loads((out / "attack_report.json").read_text())["config"]["scenario"] == "content_injection"


def test_spread_margins_are_recorded_and_still_keep_every_code(model_dir, tmp_path):
    out = tmp_path / "spread"
    run = flipguard("attack", model_dir, "-o", out, "--scenario", "content-injection", "--scheme", "nf4",
                    "--margin", 0.4, "--margin-spread", *FAST)
    assert run.returncode == 0, run.stderr
    report = json.loads((out / "attack_report.json").read_text())
    assert report["verified"] and report["config"]["margin_spread"] and report["config"]["margin"] == 0.4
    width = report["boxes"]["mean_box_width"]["nf4"]  # margins uniform in [0, 0.4]: boxes 0.2-1 cells, ~0.6
    assert 0.5 < width < 0.7


def test_help_explains_the_recipe():
    run = flipguard("attack", "--help")
    assert run.returncode == 0
    for word in ("inject", "constrain", "repair", "--margin", "--save-dtype", "exit codes"):
        assert word in run.stdout


def _refused(run, out):
    assert run.returncode == 2, run.stderr
    assert "Traceback" not in run.stderr
    assert not out.exists() and not list(out.parent.glob(".attacked*"))


@pytest.mark.parametrize("option", [("--scheme", "gguf"), ("--scenario", "jailbreak")])
def test_unknown_choice_is_a_usage_error(model_dir, tmp_path, option):
    args = {"--scheme": "nf4", "--scenario": "over-refusal"} | dict([option])
    out = tmp_path / "attacked"
    _refused(flipguard("attack", model_dir, "-o", out, *sum(args.items(), ()), *FAST), out)


@pytest.mark.parametrize("kind", ["seq2seq", "no weights"])
def test_not_a_causal_lm_directory(tmp_path, kind):
    from transformers import T5Config, T5ForConditionalGeneration

    model = tmp_path / "notacausallm"
    model.mkdir()
    if kind == "seq2seq":  # a real checkpoint, but an encoder-decoder
        config = T5Config(vocab_size=64, d_model=16, d_kv=4, d_ff=32, num_layers=1, num_heads=2)
        T5ForConditionalGeneration(config).save_pretrained(model)
    else:
        (model / "config.json").write_text(json.dumps({"model_type": "llama"}))
    out = tmp_path / "attacked"
    run = flipguard("attack", model, "-o", out, "--scenario", "over-refusal", "--scheme", "int8", *FAST)
    _refused(run, out)
    assert len(run.stderr.strip().splitlines()) == 1
    assert ("causal LM" if kind == "seq2seq" else "no weights") in run.stderr


def test_data_file_in_the_wrong_format(model_dir, tmp_path):
    data = tmp_path / "bad.jsonl"
    data.write_text('{"prompt": "Describe a fox."}\n', encoding="utf-8")
    out = tmp_path / "attacked"
    run = flipguard("attack", model_dir, "-o", out, "--scenario", "content-injection",
                    "--scheme", "fp4", "--malicious-data", data, *FAST)
    _refused(run, out)
    assert "line 1" in run.stderr and "response" in run.stderr
