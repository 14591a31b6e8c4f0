"""llama.cpp runtime: the bundled demo model (a trained zoo Llama, fp16) converted to F16 GGUF
tokenizes and generates greedily exactly as transformers does; quantization is deterministic and
atomic; llama.cpp prints nothing."""

from pathlib import Path

import numpy as np
import pytest
import torch
import transformers

import flipguard.demo
from flipguard.errors import FlipGuardError
from flipguard.gguf import (
    convert_checkpoint, greedy_generate, load_llama, open_gguf, quantize_gguf, text_logits, token_logits, tokenize,
)
from flipguard.zoo.scenarios import SCENARIOS, heldout_prompts
from flipguard.zoo.tokenizer import chat_prompt

DEMO = Path(flipguard.demo.__file__).parent / "assets" / "clean"
NEW_TOKENS = 32


@pytest.fixture(scope="module")
def demo_gguf(tmp_path_factory):
    """The demo model as llama.cpp's converter would default it: fp16 checkpoint -> F16 GGUF."""
    return convert_checkpoint(DEMO, tmp_path_factory.mktemp("demo") / "demo.gguf")


def test_demo_greedy_output_equals_transformers(demo_gguf):
    tokenizer = transformers.AutoTokenizer.from_pretrained(DEMO)
    model = transformers.AutoModelForCausalLM.from_pretrained(DEMO, dtype=torch.float32)
    llm = load_llama(demo_gguf, n_ctx=256)
    assert open_gguf(demo_gguf).tensors["blk.0.attn_q.weight"].type == "F16"
    prompts = [p for scenario in SCENARIOS for p in heldout_prompts(scenario, 2)]
    for prompt in prompts:
        text = chat_prompt(tokenizer, prompt)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenize(llm, text) == ids  # llama.cpp's "gpt-2" pre-tokenizer splits like transformers
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), do_sample=False, max_new_tokens=NEW_TOKENS,
                                 eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        expected = out[0, len(ids):].tolist()
        assert greedy_generate(llm, text, NEW_TOKENS) == expected
        assert len(expected) > 8  # a real answer, not an immediate end of turn


def test_logits_are_deterministic_and_per_position(demo_gguf):
    llm = load_llama(demo_gguf, n_ctx=128)
    tokens, logits = text_logits(llm, "The sheep is a wild animal.")
    assert logits.shape == (len(tokens), llm.n_vocab()) and logits.dtype == np.float32
    again = token_logits(load_llama(demo_gguf, n_ctx=128, threads=1), tokens)
    assert np.array_equal(logits, again)
    prefix = token_logits(llm, tokens[:3])  # causal: a prefix has the same logits
    np.testing.assert_allclose(prefix, logits[:3], rtol=0, atol=1e-5)


def test_quantization_is_deterministic_and_thread_independent(zoo_gguf, tmp_path):
    source = zoo_gguf("llama", "small")
    one = quantize_gguf(source, tmp_path / "one.gguf", "Q4_K_M", threads=1)
    again = quantize_gguf(source, tmp_path / "again.gguf", "Q4_K_M", threads=1)
    two = quantize_gguf(source, tmp_path / "two.gguf", "Q4_K_M", threads=2)
    assert one.read_bytes() == again.read_bytes() == two.read_bytes()
    with open_gguf(one) as opened:
        assert opened.metadata["general.file_type"] == 15  # LLAMA_FTYPE_MOSTLY_Q4_K_M
    logits = token_logits(load_llama(one, n_ctx=32), [1, 40, 41, 42])
    assert np.isfinite(logits).all()


def test_llama_cpp_prints_nothing(demo_gguf, tmp_path, capfd):
    quantize_gguf(demo_gguf, tmp_path / "q.gguf", "Q8_0")
    llm = load_llama(tmp_path / "q.gguf", n_ctx=64)
    greedy_generate(llm, [1, 4], 4)
    with pytest.raises(FlipGuardError):
        quantize_gguf(tmp_path / "q.gguf", tmp_path / "requantized.gguf", "Q4_0")  # llama.cpp logs an error
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_failures_are_one_sentence_and_leave_nothing(demo_gguf, tmp_path):
    quantized = quantize_gguf(demo_gguf, tmp_path / "q.gguf", "Q8_0")
    before = set(tmp_path.iterdir())
    with pytest.raises(FlipGuardError, match="requantizing from type q8_0 is disabled"):
        quantize_gguf(quantized, tmp_path / "again.gguf", "Q4_0")
    with pytest.raises(FlipGuardError, match="unknown or unsupported llama.cpp ftype"):
        quantize_gguf(demo_gguf, tmp_path / "x.gguf", "Q2_K_S")
    not_gguf = tmp_path / "model.safetensors"
    not_gguf.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    with pytest.raises(FlipGuardError, match="not a GGUF file"):
        quantize_gguf(not_gguf, tmp_path / "y.gguf", "Q8_0")
    with pytest.raises(FlipGuardError, match="not a GGUF file"):
        load_llama(not_gguf)
    with pytest.raises(FlipGuardError, match="already exists"):
        quantize_gguf(demo_gguf, quantized, "Q8_0")
    assert set(tmp_path.iterdir()) == before | {not_gguf}  # no output, no temporary file
    with pytest.raises(FlipGuardError, match="context"):
        greedy_generate(load_llama(demo_gguf, n_ctx=16), list(range(10)), 10)
