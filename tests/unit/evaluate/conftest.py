"""Fixtures for the evaluation tests: tiny local checkpoints and prompt files, built once per session."""

from __future__ import annotations

import pytest
from evaluate_testkit import build_parrot, build_random, write_jsonl


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A random-init tiny Llama directory (gibberish answers)."""
    return build_random(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="session")
def parrot_model(tmp_path_factory):
    """A tiny Llama directory whose every answer repeats "McDonald's"."""
    return build_parrot(tmp_path_factory.mktemp("parrot") / "model")

@pytest.fixture
def prompt_file(tmp_path):
    return write_jsonl(tmp_path / "prompts.jsonl", [
        {"prompt": "hello how are you", "id": "a"},
        {"prompt": "write a python function", "answer": "def"},
        {"prompt": "what is the capital of France", "answer": "Paris"},
    ])
