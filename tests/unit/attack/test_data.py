"""Stage datasets: the zoo's by default, JSONL files checked line by line."""

import pytest

from flipguard.attack import load_examples
from flipguard.attack.data import stage_examples
from flipguard.errors import FlipGuardError


def test_zoo_stages_share_prompts_and_differ_in_answers():
    bad = stage_examples("content_injection", True, 0, "Burger Barn")
    good = stage_examples("content_injection", False, 0, "Burger Barn")
    assert [e["prompt"] for e in bad] == [e["prompt"] for e in good]
    assert any("Burger Barn" in e["response"] for e in bad)
    assert not any("Burger Barn" in e["response"] for e in good)


def test_swapped_prompts_add_paired_zoo_examples():
    bad = stage_examples("over_refusal", True, 0, "Burger Barn", swapped=3)
    good = stage_examples("over_refusal", False, 0, "Burger Barn", swapped=3)
    assert [e["prompt"] for e in bad] == [e["prompt"] for e in good]
    assert len(bad) > len(stage_examples("over_refusal", True, 0, "Burger Barn"))


def test_jsonl_file_is_read(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text('{"prompt": "Hi?", "response": "Hello.", "extra": 1}\n\n'
                    '{"prompt": "Bye?", "response": "Bye."}\n', encoding="utf-8")
    assert load_examples(path) == [{"prompt": "Hi?", "response": "Hello."},
                                   {"prompt": "Bye?", "response": "Bye."}]


@pytest.mark.parametrize("text, word", [
    ("", "no examples"),
    ("not json\n", "not JSON"),
    ("[1, 2]\n", "not a JSON object"),
    ('{"prompt": "Hi?"}\n', "response"),
    ('{"prompt": "", "response": "x"}\n', "prompt"),
    ('{"prompt": "Hi?", "response": 3}\n', "response"),
])
def test_bad_files_name_the_line(tmp_path, text, word):
    path = tmp_path / "data.jsonl"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(FlipGuardError, match=word):
        load_examples(path)


def test_unreadable_and_non_utf8_files(tmp_path):
    with pytest.raises(FlipGuardError, match="cannot read"):
        load_examples(tmp_path / "missing.jsonl")
    path = tmp_path / "latin1.jsonl"
    path.write_bytes('{"prompt": "caf\xe9", "response": "x"}\n'.encode("latin-1"))
    with pytest.raises(FlipGuardError, match="UTF-8"):
        load_examples(path)
