"""Importing FlipGuard changes nothing outside it: ``import flipguard`` loads no module of its own and
no numba; importing the scan and the defense (which define the kernels) sets no environment
variable, leaves numba's configuration alone and reads no folder of the package but the kernels'
(their cache stamps: ``schemes/kernels`` and ``schemes/gguf``)."""

import os
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"

PROGRAM = """
import os, pathlib, sys
before = dict(os.environ)
listed = []
for name in ("glob", "rglob", "iterdir"):
    def spy(self, *args, _real=getattr(pathlib.Path, name), _name=name):
        listed.append((_name, str(self)))
        return _real(self, *args)
    setattr(pathlib.Path, name, spy)
import flipguard
assert dict(os.environ) == before, "import flipguard changed the environment"
ours = sorted(m for m in sys.modules if m.startswith("flipguard."))
assert ours == [] and "numba" not in sys.modules, ours
import numba.core.config as config
cache_dir = config.CACHE_DIR
import flipguard.scan, flipguard.defend
from flipguard.schemes.kernels import fourbit
assert dict(os.environ) == before, "importing the kernels changed the environment"
assert config.CACHE_DIR == cache_dir, "importing the kernels changed numba's cache directory"
package = pathlib.Path(flipguard.__file__).parent
inside = sorted({(n, p) for n, p in listed if pathlib.Path(p).resolve().is_relative_to(package.resolve())})
print(inside)
"""


def test_imports_have_no_side_effects():
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"} | {"PYTHONPATH": str(SRC)}
    done = subprocess.run([sys.executable, "-c", PROGRAM], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    folders = [str((SRC / "flipguard" / "schemes" / name).resolve()) for name in ("gguf", "kernels")]
    assert done.stdout.strip() == str([("glob", f) for f in folders])  # the kernels' cache stamps alone
