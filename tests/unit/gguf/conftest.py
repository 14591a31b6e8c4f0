"""Fixtures for the GGUF tests: zoo checkpoints of every family llama.cpp loads, converted once
per session. Skipped as a whole when the optional llama-cpp-python or gguf packages are missing.
"""

from pathlib import Path

import pytest
import torch

pytest.importorskip("gguf")
pytest.importorskip("llama_cpp")

from flipguard.gguf import convert_checkpoint  # noqa: E402
from flipguard.zoo.tokenizer import train_tokenizer  # noqa: E402

from ...support.gguf_models import save_zoo_checkpoint  # noqa: E402

# every zoo family that llama.cpp 0.3.36 loads; Gemma only with tied embeddings (llama.cpp's gemma
# graph always reuses token_embd as the output), the zoo's other families as the zoo builds them
LLAMA_FAMILIES = ("llama", "qwen2", "phi", "gemma", "starcoder2", "gpt_bigcode", "gpt2")
TIED = {"gemma": True}


@pytest.fixture(scope="session")
def zoo_tokenizer():
    """The zoo's byte-level BPE tokenizer (trained once, well under a second)."""
    return train_tokenizer()


# hidden and intermediate sizes multiples of 256: llama.cpp gives Q4_K_M its k-quants
KQUANT_SIZES = {"hidden_size": 256, "intermediate_size": 512, "num_hidden_layers": 1}


@pytest.fixture(scope="session")
def kquant_checkpoint(tmp_path_factory, zoo_tokenizer):
    """A one-layer random-init Llama of 256/512 (Q4_K_M gives it Q4_K and Q6_K tensors); read only."""
    return save_zoo_checkpoint(tmp_path_factory.mktemp("llama256"), "llama", "micro", zoo_tokenizer, **KQUANT_SIZES)


@pytest.fixture(scope="session")
def zoo_checkpoint(tmp_path_factory, zoo_tokenizer):
    """Factory ``zoo_checkpoint(family, size="micro")`` -> a saved random-init checkpoint (cached)."""
    cache: dict[tuple, Path] = {}

    def make(family: str, size: str = "micro") -> Path:
        key = (family, size)
        if key not in cache:
            directory = tmp_path_factory.mktemp(f"{family}-{size}")
            cache[key] = save_zoo_checkpoint(directory, family, size, zoo_tokenizer, tie=TIED.get(family))
        return cache[key]

    return make


@pytest.fixture(scope="session")
def zoo_gguf(tmp_path_factory, zoo_checkpoint):
    """Factory ``zoo_gguf(family, size="micro", outtype="F16")`` -> its converted GGUF (cached)."""
    cache: dict[tuple, Path] = {}

    def make(family: str, size: str = "micro", outtype: str = "F16") -> Path:
        key = (family, size, outtype)
        if key not in cache:
            out = tmp_path_factory.mktemp("gguf") / f"{family}-{size}-{outtype}.gguf"
            cache[key] = convert_checkpoint(zoo_checkpoint(family, size), out, outtype=outtype)
        return cache[key]

    return make


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread per test (tiny models; the machine is shared), restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
