"""In normal use only FlipGuard writes on stderr: every line there starts with ``flipguard``.

Each command runs as a user runs it (a process of its own) on a zoo model, with progress bars
forced on (``FLIPGUARD_PROGRESS=1``), so FlipGuard's own bars are checked too. A dependency that
starts logging, warning or drawing a bar fails here with its line quoted, not in some test about
device strings.
"""

import os
import re
import subprocess
import sys

import pytest

from flipguard.zoo import build_model, train_tokenizer


def flipguard(*args, env_extra=None):
    env = dict(os.environ, FLIPGUARD_PROGRESS="1", **(env_extra or {}))
    for name in ("FLIPGUARD_VERBOSE", "FLIPGUARD_DEBUG"):
        env.pop(name, None)
    return subprocess.run([sys.executable, "-m", "flipguard", *map(str, args)], capture_output=True,
                          text=True, timeout=900, env=env)


def foreign_lines(stderr: str) -> list[str]:
    """Lines (progress-bar redraws split on carriage returns) that are not FlipGuard's."""
    return [line for line in re.split(r"[\r\n]+", stderr) if line.strip() and not line.startswith("flipguard")]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("speaks") / "micro-llama"
    tokenizer = train_tokenizer()
    build_model("llama", len(tokenizer), "micro", seed=0, tokenizer=tokenizer).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_scan_defend_evaluate_attack_zoo_say_only_their_own_lines(model_dir, tmp_path):
    runs = {
        "scan": flipguard("scan", model_dir),
        "defend": flipguard("defend", model_dir, "-o", tmp_path / "defended"),
        "evaluate": flipguard("evaluate", model_dir, "--scheme", "nf4", "--scenario", "content-injection",
                              "-n", "2", "--max-new-tokens", "3", "-o", tmp_path / "eval.json"),
        "attack": flipguard("attack", model_dir, "-o", tmp_path / "attacked", "--scenario", "content-injection",
                            "--scheme", "nf4", "--inject-steps", 2, "--joint-steps", 2, "--repair-steps", 2,
                            "--batch-size", 4),
        "zoo": flipguard("zoo", "build", "--family", "llama", "--size", "micro", "--steps", "3",
                         "-o", tmp_path / "zoo-llama"),
    }
    for command, proc in runs.items():
        assert proc.returncode in (0, 1), f"{command}: exit {proc.returncode}: {proc.stderr[-2000:]}"
        assert foreign_lines(proc.stderr) == [], f"{command} let a dependency speak: {foreign_lines(proc.stderr)}"
    # the forced progress bars are FlipGuard's, labelled with the command
    assert "flipguard scan:" in runs["scan"].stderr and "flipguard defend:" in runs["defend"].stderr


def test_demo_says_only_its_own_lines(tmp_path):
    proc = flipguard("demo", "-o", tmp_path / "demo", "--prompts", "2", "--texts", "1", "--max-new-tokens", "4",
                     "--json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert foreign_lines(proc.stderr) == []
    assert "flipguard demo:" in proc.stderr  # the story (on stderr with --json)


def test_verbose_lets_dependencies_through(tmp_path):
    """A dependency's logger, a warning and C code writing to descriptor 2, with and without --verbose."""
    script = (
        "import logging, os, sys, warnings\n"
        "from flipguard import console\n"
        "with console.only_flipguard_speaks(verbose=%s):\n"
        "    logging.getLogger('some.dependency').warning('dependency log line')\n"
        "    warnings.warn('dependency warning')\n"
        "    os.write(2, b'C level line\\n')\n"
        "    print('dependency print', file=sys.stderr)\n"
        "    console.say('flipguard test: our line')\n"
    )
    quiet = subprocess.run([sys.executable, "-c", script % False], capture_output=True, text=True, timeout=120)
    loud = subprocess.run([sys.executable, "-c", script % True], capture_output=True, text=True, timeout=120)
    assert quiet.returncode == loud.returncode == 0, quiet.stderr + loud.stderr
    assert quiet.stderr == "flipguard test: our line\n"
    for text in ("dependency log line", "dependency warning", "C level line", "dependency print", "our line"):
        assert text in loud.stderr


def test_internal_error_is_one_sentence_and_exit_70(tmp_path, monkeypatch):
    """A bug (here: a scan raising an unexpected exception) never exits 0 or 1 and shows no traceback
    unless --debug asks for it."""
    from flipguard import cli
    import flipguard.scan as scan

    def broken(*args, **kwargs):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(scan, "scan_checkpoint", broken)
    import io
    from contextlib import redirect_stderr

    err = io.StringIO()
    with redirect_stderr(err):
        code = cli.main(["scan", str(tmp_path)])
    assert code == 70
    assert err.getvalue().strip() == ("flipguard scan: internal error: RuntimeError: simulated bug (a bug in "
                                      "FlipGuard: rerun with --debug for the traceback and report it).")
    err = io.StringIO()
    with redirect_stderr(err):
        assert cli.main(["scan", str(tmp_path), "--debug"]) == 70
    assert "Traceback" in err.getvalue() and "simulated bug" in err.getvalue()
