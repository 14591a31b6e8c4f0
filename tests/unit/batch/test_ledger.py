"""results.jsonl: one line per key, appended whole, torn lines skipped; one batch per folder."""

import json
import os

import pytest

from flipguard.batch import Ledger, read_results
from flipguard.batch.ledger import locked
from flipguard.errors import FlipGuardError


def test_each_key_is_written_once_and_read_back(tmp_path):
    ledger = Ledger(tmp_path)
    assert ledger.append({"key": "a", "status": "clean"}) is True
    assert ledger.append({"key": "a", "status": "backdoor"}) is False
    assert ledger.append({"key": "b", "status": "error"}) is True
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert [json.loads(line)["key"] for line in lines] == ["a", "b"]
    assert Ledger(tmp_path).done == {"a": {"key": "a", "status": "clean"}, "b": {"key": "b", "status": "error"}}


def test_a_torn_line_is_skipped_and_the_next_starts_fresh(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text('{"key": "a", "status": "clean"}\n{"key": "b", "sta')  # a crash mid-write
    ledger = Ledger(tmp_path)
    assert list(ledger.done) == ["a"]
    ledger.append({"key": "c", "status": "clean"})
    assert dict(read_results(path)).keys() == {"a", "c"}
    assert path.read_text().endswith('"key": "c", "status": "clean"}\n')


def test_first_line_of_a_key_wins_and_junk_is_ignored(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text('{"key": "a", "n": 1}\n[1, 2]\n{"no": "key"}\n\n{"key": "a", "n": 2}\n')
    assert dict(read_results(path)) == {"a": {"key": "a", "n": 1}}
    assert dict(read_results(tmp_path / "absent.jsonl")) == {}


def test_lines_are_appended_with_one_write_each(tmp_path, monkeypatch):
    writes = []
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: writes.append(data) or real_write(fd, data))
    Ledger(tmp_path).append({"key": "a", "text": "x" * 100_000})
    assert len(writes) == 1 and writes[0].endswith(b"\n") and json.loads(writes[0])["text"] == "x" * 100_000


def test_two_batches_cannot_share_a_folder(tmp_path):
    with locked(tmp_path):
        with pytest.raises(FlipGuardError, match="another batch is writing to"):
            with locked(tmp_path):
                pass
    with locked(tmp_path):  # released
        pass
