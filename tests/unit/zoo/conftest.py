import pytest

from flipguard.zoo.tokenizer import train_tokenizer


@pytest.fixture(scope="session")
def tokenizer():
    """The zoo tokenizer, trained once per test session (about a second)."""
    return train_tokenizer()
