"""A kernel's on-disk cache goes stale when any file of its folder changes (schemes.kernels.cache)."""

import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[4] / "src"

HELPER = "import numba\n\n@numba.njit(inline='always')\ndef value():\n    return {}\n"
KERNELS = """import numba
from flipguard.schemes.kernels.cache import kernel
from scratch.helper import value

@kernel()
def ours():
    return value()

@numba.njit(cache=True)
def numbas():
    return value()
"""
RUN = ("from scratch.kernels import ours, numbas; "
       "print(ours(), numbas(), sum(ours.stats.cache_hits.values()), sum(numbas.stats.cache_hits.values()))")


def _run(root: Path, env: dict) -> list[str]:
    done = subprocess.run([sys.executable, "-c", RUN], cwd=root, env=env, capture_output=True, text=True, check=True)
    return done.stdout.split()


def test_a_changed_helper_compiles_the_kernel_again(tmp_path):
    package = tmp_path / "scratch"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "helper.py").write_text(HELPER.format(1))
    (package / "kernels.py").write_text(KERNELS)
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["PYTHONPATH"] = os.pathsep.join([str(SRC), str(tmp_path)])
    first = _run(tmp_path, env)
    assert first[:2] == ["1", "1"]
    again = _run(tmp_path, env)
    assert again == ["1", "1", "1", "1"]  # both loaded from their caches, nothing changed
    (package / "helper.py").write_text(HELPER.format(2))  # the helper alone: kernels.py is unchanged
    after = _run(tmp_path, env)
    assert after[0] == "2" and after[2] == "0"  # ours: compiled again with the new helper
    assert after[1] == "1"  # numba's own cache: the kernel compiled with the old helper (why ours exists)
    (package / "helper.py").write_text(HELPER.format(1))  # back: fresh again, compiled once more
    assert _run(tmp_path, env)[0] == "1"


def test_a_user_cache_directory_is_used(tmp_path):
    package = tmp_path / "scratch"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "helper.py").write_text(HELPER.format(3))
    (package / "kernels.py").write_text(KERNELS)
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "mine"), PYTHONPATH=os.pathsep.join([str(SRC), str(tmp_path)]))
    assert _run(tmp_path, env)[:2] == ["3", "3"]
    assert any(p.suffix == ".nbi" and p.name.startswith("kernels.ours") for p in (tmp_path / "mine").rglob("*"))
    assert not (package / "__pycache__").exists() or not any((package / "__pycache__").glob("*.nbi"))


def test_a_kernel_outside_this_folder_is_also_stamped_with_the_shared_helpers():
    from flipguard.schemes.gguf import moves  # inlines gguf/numerics, which inlines kernels/floats
    from flipguard.schemes.kernels.cache import folder_digest

    stamp = moves.targets._cache._impl.locator.get_source_stamp()
    schemes = SRC / "flipguard" / "schemes"
    assert folder_digest((schemes / "gguf").resolve()) in stamp
    assert folder_digest((schemes / "kernels").resolve()) in stamp  # a change to floats.py compiles it again
