"""The seeded fixtures give the same bytes in every process (string hashes are randomised per
process: a seed taken from ``hash(name)`` would not)."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

from tests.support.checkpoints import make_tiny_checkpoint

ROOT = Path(__file__).resolve().parents[2]

ATTACK = """
import hashlib, sys
from tests.support.fixtures import attack_checkpoint
attack_checkpoint(sys.argv[1], sys.argv[2], ["nf4", "int8"], margin=0.05)
print(hashlib.sha256(open(sys.argv[2] + "/model.safetensors", "rb").read()).hexdigest())
"""


def _attack_in_a_process(src: Path, dst: Path, hash_seed: str) -> str:
    env = os.environ | {"PYTHONHASHSEED": hash_seed, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)])}
    done = subprocess.run([sys.executable, "-c", ATTACK, str(src), str(dst)], env=env, capture_output=True, text=True,
                          check=True)
    return done.stdout.split()[-1]


def test_attack_checkpoint_is_the_same_under_any_hash_seed(tmp_path):
    src = make_tiny_checkpoint(tmp_path / "clean", with_tokenizer=False)
    first = _attack_in_a_process(src, tmp_path / "a", "1")
    second = _attack_in_a_process(src, tmp_path / "b", "2")
    clean = hashlib.sha256((src / "model.safetensors").read_bytes()).hexdigest()
    assert first != clean  # the attack changed the weights
    assert first == second
