"""Micro zoo models (random weights, zoo tokenizer with its chat template), built once a session."""

import pytest

from flipguard.zoo import build_model, train_tokenizer


@pytest.fixture(scope="session")
def zoo_tokenizer():
    return train_tokenizer()


@pytest.fixture(scope="session")
def micro_model(tmp_path_factory, zoo_tokenizer):
    """``micro_model(family)`` -> directory of a random-init micro model of that zoo family."""
    built = {}

    def make(family: str = "llama"):
        if family not in built:
            path = tmp_path_factory.mktemp(f"micro-{family}")
            model = build_model(family, len(zoo_tokenizer), "micro", seed=0, tokenizer=zoo_tokenizer)
            model.save_pretrained(path)
            zoo_tokenizer.save_pretrained(path)
            built[family] = path
        return built[family]

    return make
