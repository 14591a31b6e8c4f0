"""Every family builds from its config, is untied, deterministic per seed, and runs forward."""

import pytest
import torch

from flipguard.errors import UsageError
from flipguard.zoo.models import FAMILIES, build_model


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_builds_and_runs_forward(family):
    model = build_model(family, vocab_size=300, size="micro", seed=1)
    assert model.get_input_embeddings().weight.data_ptr() != \
        model.get_output_embeddings().weight.data_ptr()
    assert model.config.tie_word_embeddings is False
    ids = torch.randint(0, 300, (2, 9))
    logits = model(input_ids=ids).logits  # (B, T, V)
    assert logits.shape == (2, 9, 300) and torch.isfinite(logits).all()
    twin = build_model(family, vocab_size=300, size="micro", seed=1)
    other = build_model(family, vocab_size=300, size="micro", seed=2)
    pairs = list(zip(model.state_dict().values(), twin.state_dict().values()))
    assert all(torch.equal(a, b) for a, b in pairs)
    assert not all(torch.equal(a, b) for a, b in
                   zip(model.state_dict().values(), other.state_dict().values()))


def test_tiny_llama_is_about_a_million_parameters():
    model = build_model("llama", vocab_size=1536)
    n = sum(p.numel() for p in model.parameters())
    assert 0.5e6 < n < 2e6
    hidden = model.config.hidden_size
    assert hidden % 64 == 0  # NF4/FP4 blocks of 64 stay inside one row


def test_unknown_family_or_size_is_a_user_error():
    with pytest.raises(UsageError, match="family"):
        build_model("mamba", 100)
    with pytest.raises(UsageError, match="size"):
        build_model("llama", 100, size="huge")
    assert build_model("GPT-2", 100, size="micro").config.model_type == "gpt2"
