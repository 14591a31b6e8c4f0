"""`flipguard batch` end to end, as a user runs it (its own process, a real local Ray): exit codes,
the summary, a re-run that skips what is done, defend outputs as `flipguard defend` writes them,
and nothing on stderr but FlipGuard's own lines."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flipguard.cli import main

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # before ray is imported: loopback only
ray = pytest.importorskip("ray")

DEMO = Path("src/flipguard/demo/assets").resolve()
REV = "89abcdef0123456789abcdef0123456789abcdef"


def flipguard(*args, env_extra=None):
    env = dict(os.environ, FLIPGUARD_PROGRESS="1", **(env_extra or {}))
    for name in ("FLIPGUARD_VERBOSE", "FLIPGUARD_DEBUG"):
        env.pop(name, None)
    return subprocess.run([sys.executable, "-m", "flipguard", *map(str, args)], capture_output=True, text=True,
                          timeout=600, env=env)


def foreign_lines(stderr: str) -> list[str]:
    return [line for line in re.split(r"[\r\n]+", stderr) if line.strip() and not line.startswith("flipguard")]


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory):
    """A local hub cache holding org/tiny (the demo's FP4-attacked checkpoint) at refs/main."""
    repo = tmp_path_factory.mktemp("hub") / "models--org--tiny"
    snapshot = repo / "snapshots" / REV
    shutil.copytree(DEMO / "fp4", snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REV)
    return repo.parent


def test_scan_batch_cli_end_to_end(hub_cache, tmp_path):
    listing = tmp_path / "inputs.txt"
    listing.write_text(f"# the catalogue\n{DEMO / 'nf4'}\n\norg/tiny\n{tmp_path / 'absent'}\n")
    env = {"HF_HUB_CACHE": str(hub_cache)}
    out = tmp_path / "out"
    first = flipguard("batch", "scan", DEMO / "clean", "--from", listing, "-o", out, "--workers", 2,
                      "--scheme", "fp4,nf4", env_extra=env)
    assert first.returncode == 2, first.stderr[-3000:]
    assert foreign_lines(first.stderr) == [], first.stderr[-3000:]
    assert "flipguard batch: 100%" in first.stderr  # the progress bar, FlipGuard's
    assert f"flipguard batch: error: {tmp_path / 'absent'}: {tmp_path / 'absent'} does not exist" in first.stderr
    assert "clean 1" in first.stdout and "backdoor 2" in first.stdout and "error 1" in first.stdout
    assert "org/tiny: targeting FP4" in first.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["counts"] == {"backdoor": 2, "clean": 1, "error": 1} and summary["exit_code"] == 2
    assert [f["input"] for f in summary["failures"]] == [str(tmp_path / "absent")]
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert sorted(line["input"] for line in lines) == sorted(
        [str(DEMO / "clean"), str(DEMO / "nf4"), "org/tiny", str(tmp_path / "absent")])
    tiny = next(line for line in lines if line["input"] == "org/tiny")
    assert tiny["path"] == str((hub_cache / "models--org--tiny" / "snapshots" / REV).resolve())
    assert tiny["targeted"] == ["fp4"] and (out / tiny["report"]).is_file()

    # the same batch again: all done, no Ray started, the same answer
    again = flipguard("batch", "scan", DEMO / "clean", "--from", listing, "-o", out, "--scheme", "fp4,nf4",
                      "-f", "json", env_extra=env)
    assert again.returncode == 2 and foreign_lines(again.stderr) == []
    result = json.loads(again.stdout)
    assert result["ran"] == 0 and result["done_before"] == 4 and result["counts"] == summary["counts"]
    assert (out / "results.jsonl").read_text().count("\n") == 4
    # without the bad input (done already, so no Ray): findings exit 1 (0 with --exit-zero), clean 0
    for args, code in [([DEMO / "nf4"], 1), ([DEMO / "clean"], 0), ([DEMO / "nf4", "--exit-zero"], 0)]:
        assert main(["batch", "scan", *map(str, args), "-o", str(out), "--scheme", "fp4,nf4", "-q"]) == code


@pytest.fixture(scope="module")
def cluster():
    """A Ray cluster this process starts (on 127.0.0.1); the CLI joins it with --ray-address."""
    ray.init(address="local", num_cpus=2, log_to_driver=False, include_dashboard=False, logging_level="ERROR")
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


def test_defend_batch_cli_on_a_cluster_writes_what_defend_writes(cluster, tmp_path):
    proc = flipguard("batch", "defend", DEMO / "clean", DEMO / "nf4", "-o", tmp_path / "out", "--scheme", "nf4",
                     "--policy", "ratio", "--r", "0.1", "--ray-address", cluster)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert foreign_lines(proc.stderr) == [] and "defended 2" in proc.stdout
    for line in map(json.loads, (tmp_path / "out" / "results.jsonl").read_text().splitlines()):
        name = Path(line["input"]).name
        assert main(["defend", line["input"], "-o", str(tmp_path / name), "--scheme", "nf4", "--policy", "ratio",
                     "--r", "0.1", "-q"]) == 0
        produced = tmp_path / "out" / line["output"]
        assert sorted(p.name for p in produced.iterdir()) == sorted(p.name for p in (tmp_path / name).iterdir())
        for file in (tmp_path / name).iterdir():
            assert (produced / file.name).read_bytes() == file.read_bytes(), (name, file.name)


@pytest.mark.parametrize("args, message", [
    (["scan", "-o", "OUT"], "no checkpoint given"),
    (["scan", str(DEMO / "clean"), "-o", "OUT", "--policy", "ratio"], "belong to a defend job"),
    (["defend", str(DEMO / "clean"), "-o", "OUT", "--policy", "ratio", "--r", "3"], "r must be between 0 and 1"),
    (["scan", "--from", "/nonexistent/list.txt", "-o", "OUT"], "cannot read the input list"),
])
def test_usage_errors_exit_2_with_a_sentence(capsys, tmp_path, args, message):
    code = main(["batch", *[str(tmp_path / "out") if a == "OUT" else a for a in args]])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.startswith("flipguard batch: error: ")
    assert not (tmp_path / "out" / "results.jsonl").exists()


def test_batch_help_imports_neither_torch_nor_ray():
    code = ("import sys\nfrom flipguard.cli import main\ntry:\n    main(['batch', '--help'])\nexcept SystemExit:\n"
            "    pass\nprint(sorted(m for m in ('torch', 'ray', 'numba') if m in sys.modules), file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "--ray-address" in proc.stdout
    assert proc.stderr.strip().splitlines()[-1] == "[]"
