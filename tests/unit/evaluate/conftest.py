"""Fixtures for the evaluation tests: tiny local checkpoints and prompt files, built once per session."""

from __future__ import annotations

import json

import pytest

from evaluate_tiny_checkpoint import build_parrot, build_random


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A random-init tiny Llama directory (gibberish answers)."""
    return build_random(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def parrot_model(tmp_path_factory):
    """A tiny Llama directory whose every answer repeats "McDonald's"."""
    return build_parrot(tmp_path_factory.mktemp("parrot") / "model")


def write_jsonl(path, rows):
    """Write ``rows`` (dicts, or raw strings written as they are) one per line."""
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def prompt_file(tmp_path):
    return write_jsonl(tmp_path / "prompts.jsonl", [
        {"prompt": "hello how are you", "id": "a"},
        {"prompt": "write a python function", "answer": "def"},
        {"prompt": "what is the capital of France", "answer": "Paris"},
    ])
