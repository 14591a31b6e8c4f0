"""quantizable_tensors against what transformers + bitsandbytes really quantize on load."""

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModel, LlamaForCausalLM

from flipguard.checkpoint import open_checkpoint, quantizable_tensors
from flipguard.errors import FlipGuardError
from tests.support.checkpoints import FAMILIES, tiny_config

from .bnb_reference import converted_modules, load_quantized, quantized_modules

MODES = [{"load_in_4bit": True}, {"load_in_8bit": True}]


def _assert_matches_bnb(path, skip_modules=None):
    targets = quantizable_tensors(open_checkpoint(path), skip_modules=skip_modules)
    ours = {target.module_name for target in targets}
    assert ours, "expected some quantizable tensors"
    for mode in MODES:
        model = load_quantized(path, llm_int8_skip_modules=skip_modules, **mode)
        assert ours == quantized_modules(model), mode
    return targets, model


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("family", FAMILIES)
def test_default_skip_list_matches_bitsandbytes(fresh_checkpoint, family, tied):
    path = fresh_checkpoint(family=family, tie_word_embeddings=tied, with_tokenizer=False)
    targets, model = _assert_matches_bnb(path)
    assert {t.module_name for t in targets} == converted_modules(model)
    never = ("lm_head", "embed", "wte", "wpe")
    assert not any(word in t.module_name for t in targets for word in never)
    assert all(t.transposed == (family == "gpt2") for t in targets)


@pytest.mark.parametrize("tied", [True, False], ids=["tied", "untied"])
@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_user_skip_list_replaces_the_default(fresh_checkpoint, family, tied):
    path = fresh_checkpoint(family=family, tie_word_embeddings=tied, with_tokenizer=False)
    skip = ["q_proj"] if family == "llama" else ["c_proj"]
    targets, _ = _assert_matches_bnb(path, skip_modules=skip)
    names = {t.module_name for t in targets}
    assert not any(name.endswith(skip[0]) for name in names)
    # The default no longer protects lm_head: it is quantized when the file stores it (untied);
    # a tied lm_head is re-tied to the float embedding after loading, so nothing of it is quantized.
    assert ("lm_head" in names) == (not tied)


def test_keep_in_fp32_modules_are_skipped_even_with_a_user_list(fresh_checkpoint, monkeypatch):
    path = fresh_checkpoint(with_tokenizer=False)
    monkeypatch.setattr(LlamaForCausalLM, "_keep_in_fp32_modules", ["o_proj"])
    for skip in (None, ["q_proj"]):
        targets, _ = _assert_matches_bnb(path, skip_modules=skip)
        assert not any(t.module_name.endswith("o_proj") for t in targets)


def test_conv1d_targets_are_flagged_transposed(sharded_checkpoint):
    checkpoint = open_checkpoint(sharded_checkpoint)
    targets = quantizable_tensors(checkpoint)
    c_attn = next(t for t in targets if t.module_name == "transformer.h.0.attn.c_attn")
    assert c_attn.transposed and c_attn.shape == (64, 192) and c_attn.quantized_shape == (192, 64)
    assert c_attn.dtype == torch.bfloat16
    assert c_attn.tensor_name == "transformer.h.0.attn.c_attn.weight"


def test_checkpoint_keys_without_base_model_prefix(tmp_path):
    path = tmp_path / "base"
    AutoModel.from_config(tiny_config("llama")).save_pretrained(path)  # keys "layers.0...."
    targets, _ = _assert_matches_bnb(path)
    assert targets[0].tensor_name.startswith("layers.0.")
    assert targets[0].module_name.startswith("model.layers.0.")


def test_stored_tied_lm_head_is_quantized_when_not_skipped(fresh_checkpoint):
    path = fresh_checkpoint(tie_word_embeddings=True, with_tokenizer=False)
    tensors = load_file(path / "model.safetensors")
    tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"].clone()
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    targets, _ = _assert_matches_bnb(path, skip_modules=["q_proj"])
    assert "lm_head.weight" in {t.tensor_name for t in targets}


def test_unsupported_weight_dtype_names_the_tensor(fresh_checkpoint):
    path = fresh_checkpoint(dtype=torch.float64, with_tokenizer=False)
    with pytest.raises(FlipGuardError, match=r"'model\.layers\.0\.self_attn\.q_proj\.weight' is float64"):
        quantizable_tensors(open_checkpoint(path))


def test_unknown_architecture_is_a_user_error(fresh_checkpoint):
    path = fresh_checkpoint(with_tokenizer=False)
    config = json.loads((path / "config.json").read_text())
    config["model_type"] = "no_such_model"
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(FlipGuardError, match="no_such_model"):
        quantizable_tensors(open_checkpoint(path))


def test_config_that_does_not_match_the_weights(fresh_checkpoint):
    path = fresh_checkpoint(with_tokenizer=False)
    tensors = load_file(path / "model.safetensors")
    del tensors["model.layers.1.mlp.up_proj.weight"]
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(FlipGuardError, match=r"module 'model\.layers\.1\.mlp\.up_proj'"):
        quantizable_tensors(open_checkpoint(path))


def test_headless_checkpoint_with_a_user_skip_list(tmp_path):
    """No lm_head stored: transformers would quantize a random one; nothing of the file is touched."""
    path = tmp_path / "base"
    AutoModel.from_config(tiny_config("llama", tie_word_embeddings=False)).save_pretrained(path)
    ours = {t.module_name for t in quantizable_tensors(open_checkpoint(path), skip_modules=["q_proj"])}
    real = quantized_modules(load_quantized(path, load_in_4bit=True, llm_int8_skip_modules=["q_proj"]))
    assert ours == real - {"lm_head"}
