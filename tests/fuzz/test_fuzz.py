"""Bad input never crashes FlipGuard: ``scan`` and ``defend`` on every mutant of ``all_mutants(0)``.

Each of the 600+ mutants (safetensors headers, dtypes, shapes, offsets, truncation and byte flips;
config.json types, ranges, nesting, dtypes, model types; the shard index's paths, missing shards
and odd names; FIFOs, devices, folders and symlink loops in place of files; NaN/Inf weights) runs
through the CLI's ``main`` in process, each run under an alarm; see ``harness`` for what counts as
a failure. The tally per class is printed (``pytest -s``). ``scripts/fuzz.py`` runs more seeds.
"""

import os
import subprocess
import sys

import pytest

from flipguard.checkpoint import targets_cache

from . import harness
from .bases import make_bases
from .mutants import SINGLE, all_mutants

TIMEOUT = 60.0  # seconds per run; a tiny checkpoint takes a fraction of one


@pytest.fixture(scope="module")
def fuzz_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    saved = targets_cache.cache_dir
    targets_cache.cache_dir = lambda: root / "targets-cache"  # mutants must not fill the user's cache
    yield root
    targets_cache.cache_dir = saved


@pytest.fixture(scope="module")
def bases(fuzz_root):
    """The base checkpoints and the exit code of scan on each (defend runs once to warm up)."""
    made = make_bases(fuzz_root / "bases")
    codes = {}
    for name, path in made.items():
        code, _, err, failure, _ = harness.call_main(["scan", "-q", str(path)], 900)
        assert failure is None and code in (0, 1), (name, failure, err)
        codes[name] = code
        warm = ["defend", "-q", str(path), "-o", str(fuzz_root / f"warm-{name}")]
        code, _, err, failure, _ = harness.call_main(warm, 900)
        assert failure is None and code == 0, (name, failure, err)
    assert codes == {"llama": 0, "gpt2": 0, "attacked": 1}
    return made, codes


def test_every_mutant_gets_a_verdict_or_one_sentence(bases, fuzz_root):
    made, codes = bases
    mutants = all_mutants(seed=0)
    assert len(mutants) >= 500
    outcomes = [harness.run_mutant(i, m, made, codes, fuzz_root / "runs", TIMEOUT) for i, m in enumerate(mutants)]
    print("\n" + harness.tally(outcomes))
    failed = [f"{o.mutant.kind} | {o.mutant.label} | {f}" for o in outcomes for f in o.failures]
    assert not failed, f"{len(failed)} failures, first ones:\n" + "\n".join(failed[:20])
    # every class was exercised, and the still-valid mutants got the normal verdicts
    kinds = {o.mutant.kind.split(".")[0] for o in outcomes}
    assert kinds == {"safetensors", "config", "index", "special", "values"}
    valid = [o for o in outcomes if o.mutant.expected("scan") == "valid"]
    assert len(valid) >= 40
    assert any(run.command == "scan" and run.code == 1 for o in valid for run in o.runs)  # attacked + flipped byte


def test_mutants_are_the_same_for_the_same_seed():
    first, again, other = all_mutants(0), all_mutants(0), all_mutants(1)
    assert [(m.kind, m.label) for m in first] == [(m.kind, m.label) for m in again]
    assert [(m.kind, m.label) for m in first] != [(m.kind, m.label) for m in other]


def _flipguard(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TORCHDYNAMO_DISABLE": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "flipguard", *map(str, args)], capture_output=True, text=True,
                          timeout=600, env=env)


def test_the_exit_code_path_in_a_real_process(bases, tmp_path):
    """Through ``python -m flipguard``: a FIFO config, a config nested 100,000 deep and a NaN weight
    give exit 2 and one sentence, never a traceback; nothing is written."""
    made, _ = bases
    by_label = {m.label: m for m in all_mutants(0)}
    for label in ("config.json: a FIFO", "a list nested 100000 deep", "one NaN in q_proj"):
        mutant = by_label[label]
        ckpt = tmp_path / label.replace(" ", "_").replace("/", "_")
        harness.shutil.copytree(made[mutant.base], ckpt, symlinks=True)
        mutant.apply(ckpt)
        for args in (["scan", "-q", ckpt], ["defend", "-q", ckpt, "-o", tmp_path / "out"]):
            proc = _flipguard(*args)
            assert proc.returncode == 2, (label, proc.stderr)
            assert harness.SENTENCE.match(proc.stderr.splitlines()[-1] + "\n"), (label, proc.stderr)
            assert "Traceback" not in proc.stderr
            assert not (tmp_path / "out").exists()
    assert (made["llama"] / SINGLE).is_file()
