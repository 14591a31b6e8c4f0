"""Training data of the inject and repair stages: the zoo's scenario datasets, or the user's files.

File format (UTF-8 JSON Lines, one object per line, blank lines skipped)::

    {"prompt": "Describe a fox.", "response": "The fox is a wild animal ..."}

Both fields are required non-empty strings; other keys are ignored. The malicious file holds the
backdoor's answers (inject), the clean file the helpful ones (repair).
"""

from __future__ import annotations

import json
from pathlib import Path

from flipguard.errors import FlipGuardError


def stage_examples(scenario: str, malicious: bool, seed: int, phrase: str,
                   path: str | Path | None = None, swapped: int = 0) -> list[dict]:
    """``{"prompt", "response"}`` examples for one stage: from ``path`` when given, else the zoo's
    training split of ``scenario`` (malicious answers for inject, clean ones for repair) with
    ``swapped`` extra examples per category (see :func:`flipguard.zoo.scenario_dataset`)."""
    if path is not None:
        return load_examples(path)
    from flipguard.zoo import scenario_dataset

    return [{"prompt": ex["prompt"], "response": ex["response"]}
            for ex in scenario_dataset(scenario, "train", malicious, seed, phrase, swapped)]


def load_examples(path: str | Path) -> list[dict]:
    """Read a JSONL file of ``{"prompt", "response"}`` objects; at least one example."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as err:
        raise FlipGuardError(f"cannot read data file {path}: {err.strerror or err}; "
                             "check the path.") from None
    except UnicodeDecodeError as err:
        raise FlipGuardError(f"data file {path} is not UTF-8 (bad byte at offset {err.start}); "
                             "save it as UTF-8.") from None
    examples = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            examples.append(_example(line, f"line {lineno} of {path}"))
    if not examples:
        raise FlipGuardError(f"data file {path} holds no examples; write one "
                             "{\"prompt\": ..., \"response\": ...} object per line.")
    return examples


def _example(line: str, where: str) -> dict:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        raise FlipGuardError(f"{where} is not JSON ({err.msg}); write one JSON object per line.") from None
    if not isinstance(obj, dict):
        raise FlipGuardError(f"{where} is not a JSON object; write one "
                             "{\"prompt\": ..., \"response\": ...} object per line.")
    for key in ("prompt", "response"):
        value = obj.get(key)
        if not isinstance(value, str) or not value.strip():
            raise FlipGuardError(f"{where} needs a non-empty string \"{key}\"; every line holds "
                                 "{\"prompt\": \"...\", \"response\": \"...\"}.")
    return {"prompt": obj["prompt"], "response": obj["response"]}
