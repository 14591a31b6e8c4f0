"""Prompt files: the JSONL format, and one clear sentence for each way a file can be wrong."""

import json
import sys
import types

import pytest
from evaluate_testkit import write_jsonl

from flipguard.errors import FlipGuardError
from flipguard.evaluate.prompts import load_prompts, zoo_prompts


def test_reads_prompts_answers_and_ids(prompt_file):
    items = load_prompts(prompt_file)
    assert [i.prompt for i in items][0] == "hello how are you"
    assert items[0].id == "a" and items[0].answer is None
    assert items[1].id == "2" and items[1].answer == "def"  # id defaults to the line number
    assert items[1].text == "write a python function\ndef"


def test_blank_lines_and_bom_and_extra_keys_are_fine(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b'{"prompt": "hi", "id": 7, "extra": 1}\n\n   \n{"prompt": "yo"}\n')
    items = load_prompts(path)
    assert [(i.prompt, i.id) for i in items] == [("hi", "7"), ("yo", "4")]


@pytest.mark.parametrize("rows, words", [
    ([{"prompt": "ok"}, {"answer": "5"}], ["line 2", '"prompt"']),
    ([{"prompt": "ok"}, "{not json"], ["line 2", "not JSON"]),
    (['["a list"]'], ["line 1", "not a JSON object"]),
    ([{"prompt": "  "}], ["line 1", "non-empty string"]),
    ([{"prompt": 3}], ["line 1", "non-empty string"]),
    ([{"prompt": "ok", "answer": 5}], ["line 1", '"answer"']),
    ([{"prompt": "ok", "id": [1]}], ["line 1", '"id"']),
])
def test_bad_lines_name_the_line(tmp_path, rows, words):
    path = write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(FlipGuardError) as err:
        load_prompts(path)
    message = str(err.value)
    assert all(w in message for w in words), message
    assert "\n" not in message


def test_not_utf8(tmp_path):
    path = tmp_path / "latin1.jsonl"
    path.write_bytes(json.dumps({"prompt": "café"}).encode("latin-1").replace(b"\\u00e9", b"\xe9"))
    with pytest.raises(FlipGuardError, match="not UTF-8"):
        load_prompts(path)


def test_empty_file_and_missing_file(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n", encoding="utf-8")
    with pytest.raises(FlipGuardError, match="holds no prompts"):
        load_prompts(empty)
    with pytest.raises(FlipGuardError, match="cannot read"):
        load_prompts(tmp_path / "missing.jsonl")


def _fake_zoo(monkeypatch, **functions):
    import flipguard

    zoo = types.ModuleType("flipguard.zoo")
    for name, fn in functions.items():
        setattr(zoo, name, fn)
    monkeypatch.setitem(sys.modules, "flipguard.zoo", zoo)
    monkeypatch.setattr(flipguard, "zoo", zoo, raising=False)


def test_zoo_prompts_come_from_heldout_prompts(monkeypatch):
    calls = []

    def heldout_prompts(scenario, n, seed):
        calls.append((scenario, n, seed))
        return [f"prompt {i}" for i in range(n)]

    _fake_zoo(monkeypatch, heldout_prompts=heldout_prompts)
    items = zoo_prompts("content-injection", 3, seed=5)
    assert calls == [("content_injection", 3, 5)]
    assert [(i.prompt, i.id) for i in items] == [("prompt 0", "1"), ("prompt 1", "2"), ("prompt 2", "3")]


def test_zoo_utility_items_carry_answers(monkeypatch):
    def utility_eval(n_per_task, seed):
        return [{"prompt": f"q{i}", "answer": f"a{i}", "task": "t"} for i in range(3 * n_per_task)]

    _fake_zoo(monkeypatch, utility_eval=utility_eval)
    items = zoo_prompts("utility", 4, seed=0)
    assert [(i.prompt, i.answer) for i in items] == [(f"q{i}", f"a{i}") for i in range(4)]


def test_without_a_zoo_the_error_asks_for_prompts(monkeypatch):
    _fake_zoo(monkeypatch)  # a zoo without held-out prompts
    with pytest.raises(FlipGuardError, match="pass --prompts FILE.jsonl"):
        zoo_prompts("over-refusal", 3, seed=0)
