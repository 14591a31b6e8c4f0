import pytest
import torch

from flipguard.zoo.tokenizer import train_tokenizer


@pytest.fixture(scope="session")
def tokenizer():
    """The zoo tokenizer, trained once per test session (about a second)."""
    return train_tokenizer()


@pytest.fixture(autouse=True)
def one_thread():
    """Micro models are too small to gain from threads, and on a shared 2-core machine a second
    thread waiting at every barrier makes them many times slower; restored after each test."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
