"""The quickstart runs exactly as printed: every fenced block marked ``title="quickstart"`` in the
README and the docs is extracted and run, in a scratch directory that holds the bundled demo models
at the path the quickstart names (``src/flipguard/demo/assets/``).

Shell blocks run line by line in bash, with ``flipguard`` standing for ``python -m flipguard`` of the
interpreter running the tests; a line's expected exit code is 0 unless its comment says
``exit N``. Python blocks need the top-level API (``flipguard.scan``, ``defend``, ``evaluate``,
``attack``, ``from_pretrained``) and skip, saying so, until it exists.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.docs.conftest import ROOT

SOURCES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^```(\w+)([^\n]*)\n(.*?)^```", re.M | re.S)
TOP_LEVEL_API = ("scan", "defend", "evaluate", "attack", "from_pretrained")
ASSETS = ROOT / "src" / "flipguard" / "demo" / "assets"


def quickstart_blocks(language: str) -> dict[Path, list[str]]:
    """File -> the bodies of its ``title="quickstart"`` blocks in ``language``."""
    found = {}
    for path in SOURCES:
        blocks = [m.group(3) for m in FENCE.finditer(path.read_text(encoding="utf-8"))
                  if m.group(1) == language and 'title="quickstart"' in m.group(2)]
        if blocks:
            found[path] = blocks
    return found


def expected_exit(line: str) -> int:
    match = re.search(r"#.*\bexit (\d+)", line)
    return int(match.group(1)) if match else 0


def scratch(tmp_path: Path) -> Path:
    """A directory where ``src/flipguard/demo/assets`` are the bundled models (linked, read-only use)."""
    (tmp_path / "src" / "flipguard" / "demo").mkdir(parents=True)
    (tmp_path / "src" / "flipguard" / "demo" / "assets").symlink_to(ASSETS, target_is_directory=True)
    return tmp_path


def environment() -> dict[str, str]:
    """This checkout's package first on the path, one thread, no hub."""
    paths = [str(ROOT / "src"), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "OMP_NUM_THREADS": "1",
            "NUMBA_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def test_readme_and_docs_print_the_same_quickstart():
    shell, python = quickstart_blocks("bash"), quickstart_blocks("python")
    assert ROOT / "README.md" in shell and ROOT / "docs" / "getting-started.md" in shell
    assert len({b for blocks in shell.values() for b in blocks}) == 1, "the shell quickstarts differ"
    assert len({b for blocks in python.values() for b in blocks}) == 1, "the Python quickstarts differ"


def test_shell_quickstart_runs_as_printed(tmp_path: Path):
    (block,) = {b for blocks in quickstart_blocks("bash").values() for b in blocks}
    cwd = scratch(tmp_path)
    define = f"flipguard() {{ {shlex.quote(sys.executable)} -m flipguard \"$@\"; }}"
    lines = [line for line in block.splitlines() if line.strip()]
    assert [line.split()[1] for line in lines] == ["scan", "defend", "evaluate", "attack"]
    for line in lines:
        proc = subprocess.run(["bash", "-c", f"{define}\n{line}"], cwd=cwd, env=environment(),
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == expected_exit(line), f"{line}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
        if line.split()[1] == "scan":
            assert "targeting NF4" in proc.stdout
        if line.split()[1] == "evaluate":
            assert re.search(r"attack success\s+0\.000", proc.stdout), proc.stdout
    assert (cwd / "defended" / "flipguard_defense.json").is_file()
    assert (cwd / "attacked" / "attack_report.json").is_file()


def test_python_quickstart_runs_as_printed(tmp_path: Path):
    import flipguard

    missing = [name for name in TOP_LEVEL_API if not callable(getattr(flipguard, name, None))]
    if missing:
        pytest.skip(f"the top-level API is not there yet: flipguard.{', flipguard.'.join(missing)}")
    (block,) = {b for blocks in quickstart_blocks("python").values() for b in blocks}
    proc = subprocess.run([sys.executable, "-c", block], cwd=scratch(tmp_path), env=environment(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "backdoor ['nf4']" in proc.stdout
