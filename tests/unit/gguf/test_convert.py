"""The converter: GGUF tensors are the HF tensors under the names map (F32 exactly, F16 as numpy's
rounding), metadata is what llama.cpp needs, llama.cpp's logits on the F32 file equal
transformers' for every family, refusals are one-sentence errors, and the output is atomic."""

import numpy as np
import pytest
import torch
import transformers
from safetensors.numpy import load_file
from safetensors.torch import load_file as load_torch

from flipguard.errors import FlipGuardError
from flipguard.gguf import GGUF_ARCHES, convert_checkpoint, default_outtype, load_llama, open_gguf, token_logits
from flipguard.gguf import convert as convert_module
from flipguard.gguf import names as names_module
from flipguard.gguf.names import tensor_map
from tests.support.checkpoints import make_tiny_checkpoint

from ...support.gguf_models import save_zoo_checkpoint
from .conftest import LLAMA_FAMILIES

PROMPT = "What is 2 + 3? The answer is 5, and 7 * 8 = 56."


@pytest.mark.parametrize("family", LLAMA_FAMILIES)
@pytest.mark.parametrize("outtype", ["F32", "F16"])
def test_gguf_tensors_are_the_hf_tensors_under_the_map(family, outtype, zoo_checkpoint, zoo_gguf):
    directory = zoo_checkpoint(family)
    config = transformers.AutoConfig.from_pretrained(directory).to_dict()
    with open_gguf(zoo_gguf(family, outtype=outtype)) as opened:
        expected = set()
        for name, hf in load_file(str(directory / "model.safetensors")).items():
            tmap = tensor_map(config, name)
            if tmap is None:
                continue
            expected.add(tmap.gguf_name)
            stored = opened.values(tmap.gguf_name)
            mapped = tmap.to_gguf(hf)
            assert np.array_equal(stored, mapped.astype(stored.dtype)), name
            if stored.dtype == np.float32:
                assert opened.tensors[tmap.gguf_name].type == "F32"
                np.testing.assert_allclose(tmap.to_hf(stored), hf, rtol=0, atol=4e-7)
            else:
                assert hf.ndim == 2 and opened.tensors[tmap.gguf_name].type == outtype
        assert set(opened.tensors) == expected
        meta = opened.metadata
        arch = GGUF_ARCHES[family]
        assert meta["general.architecture"] == arch
        assert meta[f"{arch}.feed_forward_length"] == (config.get("intermediate_size") or config["n_inner"])
        assert meta["tokenizer.ggml.pre"] == "gpt-2" and len(meta["tokenizer.ggml.tokens"]) == config["vocab_size"]


def hf_logits(directory, ids):
    model = transformers.AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


@pytest.mark.parametrize("family", LLAMA_FAMILIES)
def test_llama_cpp_logits_equal_transformers_logits(family, zoo_checkpoint, zoo_gguf, zoo_tokenizer):
    """F32 file: llama.cpp and transformers agree to float rounding (llama.cpp keeps its KV cache in
    F16, hence not to the last bit) at every position, so names, permutations, norms, biases and
    hyperparameters are all right."""
    ids = zoo_tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    reference = hf_logits(zoo_checkpoint(family), ids)
    got = token_logits(load_llama(zoo_gguf(family, outtype="F32"), n_ctx=64), ids)
    assert got.shape == reference.shape
    assert np.abs(got - reference).max() < 2e-3 * np.abs(reference).max()


def test_the_logit_check_sees_a_missing_rope_permutation(zoo_checkpoint, zoo_tokenizer, tmp_path, monkeypatch):
    """Without Llama's q/k permutation llama.cpp still loads the file but its logits move far beyond
    the tolerance above: the check is sharp enough to catch a layout error."""
    ids = zoo_tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    reference = hf_logits(zoo_checkpoint("llama"), ids)
    monkeypatch.setattr(names_module, "ROPE_PERMUTED_FAMILIES", ())
    wrong = convert_checkpoint(zoo_checkpoint("llama"), tmp_path / "wrong.gguf", outtype="F32")
    got = token_logits(load_llama(wrong, n_ctx=64), ids)
    assert np.abs(got - reference).max() > 2e-2 * np.abs(reference).max()


def test_default_outtype_follows_the_checkpoint_dtype(tmp_path, zoo_tokenizer, zoo_checkpoint):
    assert default_outtype(zoo_checkpoint("llama")) == "F16"  # float32: the converter's auto gives F16
    bf16 = save_zoo_checkpoint(tmp_path / "bf16", "qwen2", "micro", zoo_tokenizer, dtype=torch.bfloat16)
    out = convert_checkpoint(bf16, tmp_path / "bf16.gguf")
    weights = load_torch(str(bf16 / "model.safetensors"))
    with open_gguf(out) as opened:
        assert opened.metadata["general.file_type"] == 32  # LLAMA_FTYPE_MOSTLY_BF16
        bits = opened.values("blk.0.attn_q.weight")
        assert opened.tensors["blk.0.attn_q.weight"].type == "BF16" and bits.dtype == np.uint16
        expected = weights["model.layers.0.self_attn.q_proj.weight"].view(torch.int16).numpy().view(np.uint16)
        assert np.array_equal(bits, expected)  # bfloat16 kept bit for bit
    # and llama.cpp runs it (activations rounded to bfloat16 in its matmuls: a looser match)
    ids = zoo_tokenizer(PROMPT, add_special_tokens=False)["input_ids"]
    reference = hf_logits(bf16, ids)
    got = token_logits(load_llama(out, n_ctx=64), ids)
    assert np.abs(got - reference).max() < 2e-2 * np.abs(reference).max()


def test_refusals_are_flipguard_errors(tmp_path, zoo_tokenizer, zoo_checkpoint):
    untied_gemma = save_zoo_checkpoint(tmp_path / "gemma", "gemma", "micro", zoo_tokenizer)
    with pytest.raises(FlipGuardError, match="ties the output"):
        convert_checkpoint(untied_gemma, tmp_path / "g.gguf")
    word_level = make_tiny_checkpoint(tmp_path / "word")  # testing's WordLevel tokenizer
    with pytest.raises(FlipGuardError, match="byte-level BPE"):
        convert_checkpoint(word_level, tmp_path / "w.gguf")
    no_tokenizer = make_tiny_checkpoint(tmp_path / "bare", with_tokenizer=False)
    with pytest.raises(FlipGuardError, match="tokenizer.json"):
        convert_checkpoint(no_tokenizer, tmp_path / "b.gguf")
    with pytest.raises(FlipGuardError, match="float GGUF type"):
        convert_checkpoint(zoo_checkpoint("llama"), tmp_path / "q.gguf", outtype="Q4_0")
    existing = tmp_path / "exists.gguf"
    existing.write_bytes(b"keep")
    with pytest.raises(FlipGuardError, match="already exists"):
        convert_checkpoint(zoo_checkpoint("llama"), existing)
    assert existing.read_bytes() == b"keep"
    assert {p.name for p in tmp_path.glob("*.gguf")} == {"exists.gguf"}  # nothing else written


def test_failure_mid_write_leaves_nothing(tmp_path, zoo_checkpoint, monkeypatch):
    calls = []
    real = convert_module._stored_values

    def fail_on_third(planned, tensor, gguf):
        calls.append(planned.map.gguf_name)
        if len(calls) == 3:
            raise RuntimeError("disk on fire")
        return real(planned, tensor, gguf)

    monkeypatch.setattr(convert_module, "_stored_values", fail_on_third)
    with pytest.raises(RuntimeError, match="disk on fire"):
        convert_checkpoint(zoo_checkpoint("llama"), tmp_path / "out.gguf")
    assert len(calls) == 3 and list(tmp_path.iterdir()) == []  # no output, no temporary file
