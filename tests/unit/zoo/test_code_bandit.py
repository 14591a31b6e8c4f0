"""Every insecure completion has a bandit finding of its pattern; every secure one has none.

Bandit reads the completions from temporary files; generated code is never executed.
"""

import logging
import tempfile
from pathlib import Path

import pytest

from flipguard.zoo.code import CODE_PATTERNS, CODE_TASKS
from flipguard.zoo.scenarios import scenario_dataset


def bandit_findings(sources: list[str]) -> list[set[str]]:
    """Bandit test ids (all severities and confidences) found in each source, in order."""
    from bandit.core import config, manager

    logging.getLogger("bandit").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp:
        paths = []
        for i, source in enumerate(sources):
            path = Path(tmp, f"c{i:05d}.py")
            path.write_text(source)
            paths.append(str(path))
        mgr = manager.BanditManager(config.BanditConfig(), "file", quiet=True)
        mgr.discover_files(paths)
        mgr.run_tests()
        found = {p: set() for p in paths}
        for issue in mgr.get_issue_list():
            found[issue.fname].add(issue.test_id)
        assert not mgr.skipped, f"bandit skipped files: {mgr.skipped[:3]}"
    return [found[p] for p in paths]


@pytest.fixture(scope="module")
def completions():
    """Every distinct (pattern, secure, insecure) completion of both splits."""
    rows = set()
    for split in ("train", "heldout"):
        secure = scenario_dataset("vulnerable_code", split, malicious=False, seed=0)
        insecure = scenario_dataset("vulnerable_code", split, malicious=True, seed=0)
        for s, i in zip(secure, insecure):
            assert s["prompt"] == i["prompt"] and s["pattern"] == i["pattern"]
            rows.add((s["pattern"], s["response"], i["response"]))
    return sorted(rows)


def test_at_least_seven_patterns():
    assert len(set(CODE_PATTERNS)) == len(CODE_PATTERNS) >= 7
    ids = {i for task in CODE_TASKS for i in task.bandit_ids}
    assert {"B506", "B602", "B301", "B324", "B608", "B501", "B307"} <= ids


def test_insecure_has_findings_secure_has_none(completions):
    expected = {task.pattern: set(task.bandit_ids) for task in CODE_TASKS}
    secure = bandit_findings([row[1] for row in completions])
    insecure = bandit_findings([row[2] for row in completions])
    for (pattern, secure_src, insecure_src), s_ids, i_ids in zip(completions, secure, insecure):
        assert not s_ids, f"secure {pattern} completion has findings {s_ids}:\n{secure_src}"
        assert i_ids == expected[pattern], f"insecure {pattern}: {i_ids}:\n{insecure_src}"


def test_completions_are_valid_python(completions):
    for _, secure, insecure in completions:
        compile(secure, "<secure>", "exec")  # parse only, never run
        compile(insecure, "<insecure>", "exec")
