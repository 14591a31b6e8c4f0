"""`evaluate` and `compare` subcommands, run in-process through their own parsers."""

import json

import pytest
from evaluate_testkit import attack_result as attack
from evaluate_testkit import utility_result as utility
from evaluate_testkit import write_jsonl

from flipguard.cli import build_parser
from flipguard.errors import FlipGuardError


def run(argv):
    """The command's own parser, as `flipguard` builds it (epilog with the exit codes included)."""
    args = build_parser(argv[0]).parse_args(argv)
    return args.func(args)


def test_help_documents_the_prompt_format_and_choices(capsys):
    with pytest.raises(SystemExit):
        run(["evaluate", "--help"])
    out = capsys.readouterr().out
    for words in ('{"prompt":', '"answer"', "content-injection", "nf4", "--max-new-tokens", "exit codes", "95%"):
        assert words in out
    with pytest.raises(SystemExit):
        run(["compare", "--help"])
    out = capsys.readouterr().out
    for words in ("SG  = clip", "DER = SG * UP * CF", "--fp", "--defense-seconds", "exp(-KL)"):
        assert words in out


def test_evaluate_writes_json_and_prints_it(parrot_model, prompt_file, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert run(["evaluate", str(parrot_model), "--scheme", "nf4", "--scenario", "content-injection",
                "--prompts", str(prompt_file), "--max-new-tokens", "2", "--json", "-o", str(out), "-q"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text(encoding="utf-8"))
    assert printed["attack_success"]["rate"] == 1.0 and printed["settings"]["prompts_source"] == str(prompt_file)


def test_evaluate_summary_and_user_errors(parrot_model, prompt_file, tmp_path, capsys):
    assert run(["evaluate", str(parrot_model), "--scheme", "fp", "--scenario", "over-refusal",
                "--prompts", str(prompt_file), "--max-new-tokens", "1", "-q"]) == 0
    assert "attack success   0.000" in capsys.readouterr().out
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "ok"}, {"id": 2}])
    with pytest.raises(FlipGuardError, match="line 2"):
        run(["evaluate", str(parrot_model), "--scheme", "fp", "--scenario", "over-refusal", "--prompts", str(bad)])
    with pytest.raises(FlipGuardError, match="batch_size must be a whole number of at least 1"):
        run(["evaluate", str(parrot_model), "--scheme", "fp", "--scenario", "over-refusal",
             "--prompts", str(prompt_file), "--batch-size", "0"])
    with pytest.raises(FlipGuardError, match="unknown scheme 'int4'"):  # the API names the bad scheme
        run(["evaluate", str(parrot_model), "--scheme", "int4", "--scenario", "utility"])


def test_compare_prints_parts_and_json(tmp_path, capsys):
    paths = {}
    for name, res in {"und": attack("nf4", 15), "def": attack("nf4", 3), "fp": attack("fp", 0),
                      "und_u": utility("nf4", 0.02, 8, 10.0), "def_u": utility("nf4", 0.05, 6, 12.5)}.items():
        paths[name] = str(tmp_path / f"{name}.json")
        res.save(paths[name])
    assert run(["compare", paths["und"], paths["def"], "--fp", paths["fp"],
                "--utility", paths["und_u"], paths["def_u"], "--defense-seconds", "18"]) == 0
    text = capsys.readouterr().out
    assert "SG  = 0.800" in text and "CF  = 0.500" in text and "DER = 0.388" in text
    out = tmp_path / "cmp.json"
    assert run(["compare", paths["und"], paths["def"], "--json", "-o", str(out)]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads(out.read_text(encoding="utf-8"))
    assert printed["der"]["sg"] is None and printed["der"]["der"] is None and "sg" in printed["der"]["reasons"]
    with pytest.raises(FlipGuardError, match="defense_seconds must be a number of seconds, not negative"):
        run(["compare", paths["und"], paths["def"], "--defense-seconds", "-1"])
    with pytest.raises(FlipGuardError, match="needs attack results"):
        run(["compare", paths["und"], paths["und_u"]])
