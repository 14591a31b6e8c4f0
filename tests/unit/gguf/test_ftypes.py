"""The ftype and ggml type tables agree with llama.cpp's and gguf-py's own constants; the pure
helpers behind the mixture rules behave as llama-quant.cpp's do."""

import gguf
import llama_cpp
import pytest

from flipguard.errors import FlipGuardError
from flipguard.gguf.ftypes import (
    ALIASES, FTYPES, ModelShape, TensorSpec, allows_quantization, category, ftype, llama_order, n_dims,
    tensor_types, use_more_bits,
)
from flipguard.gguf.ggml_types import GGML_TYPES, ggml_type


@pytest.mark.parametrize("name", sorted(FTYPES))
def test_ftype_ids_are_llama_h_ids(name):
    llama_name = "LLAMA_FTYPE_ALL_F32" if name == "F32" else f"LLAMA_FTYPE_MOSTLY_{name}"
    assert FTYPES[name].id == getattr(llama_cpp, llama_name)


@pytest.mark.parametrize("name", sorted(GGML_TYPES))
def test_ggml_type_rows_are_gguf_py_rows(name):
    reference = gguf.GGMLQuantizationType[name]
    assert GGML_TYPES[name].id == int(reference)
    assert (GGML_TYPES[name].block_size, GGML_TYPES[name].type_size) == gguf.GGML_QUANT_SIZES[reference]


def test_every_ftype_default_type_is_known():
    for f in FTYPES.values():
        assert ggml_type(f.default_type).name == f.default_type


def test_lookup_accepts_case_and_aliases_and_refuses_unknown():
    assert ftype("q4_k_m") is FTYPES["Q4_K_M"]
    for alias, target in ALIASES.items():
        assert ftype(alias) is FTYPES[target]
    with pytest.raises(FlipGuardError, match="Q2_K_S"):
        ftype("Q2_K_S")  # needs an importance matrix: not offered
    with pytest.raises(FlipGuardError):
        ggml_type("Q9_9")


def test_row_bytes_needs_whole_blocks():
    assert ggml_type("Q4_K").row_bytes(512) == 2 * 144
    with pytest.raises(ValueError):
        ggml_type("Q4_K").row_bytes(384)


def test_use_more_bits_matches_its_definition_for_many_layer_counts():
    for n in range(1, 100):
        for i in range(n):
            expected = i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2
            assert use_more_bits(i, n) == expected
    # in a 4-layer model (the zoo presets) the last two layers get more bits
    assert [use_more_bits(i, 4) for i in range(4)] == [False, False, True, True]


def test_categories_follow_llama_cpp_matching_order():
    assert category("output.weight") == "output"
    assert category("token_embd.weight") == "token_embd"
    assert category("blk.3.attn_qkv.weight") == "attn_qkv"
    assert category("blk.3.attn_v.weight") == "attn_v"
    assert category("blk.3.ffn_down_exps.weight") == "ffn_down"
    assert category("blk.3.attn_norm.weight") == "other"


def test_what_is_never_quantized():
    assert not allows_quantization("blk.0.attn_norm.weight", (256, 1))  # 1-D (ne1 = 1)
    assert not allows_quantization("blk.0.ffn_norm.weight", (256, 4))  # a norm, even 2-D
    assert not allows_quantization("position_embd.weight", (256, 64))
    assert not allows_quantization("blk.0.attn_q.bias", (256, 4))  # not a weight
    assert not allows_quantization("blk.0.ffn_gate_inp.weight", (256, 8))  # MoE router
    assert allows_quantization("blk.0.ffn_up.weight", (256, 4))
    assert n_dims((256, 1, 1)) == 1 and n_dims((256, 2, 1)) == 2 and n_dims((256, 1, 8)) == 3


def test_llama_order_puts_blocks_after_globals_and_numbers_numerically():
    names = ["blk.10.attn_q.weight", "output.weight", "blk.2.ffn_up.weight", "blk.2.attn_k.weight", "token_embd.weight"]
    assert llama_order(names) == ["output.weight", "token_embd.weight", "blk.2.attn_k.weight",
                                  "blk.2.ffn_up.weight", "blk.10.attn_q.weight"]


def test_output_rule_and_fallbacks_on_a_hand_made_model():
    """Shapes where each rule of llama-quant.cpp decides alone (checked against llama.cpp itself
    in test_quantize_layout.py)."""
    model = ModelShape("llama", n_layer=4, n_head=4, n_head_kv=4)
    tensors = [TensorSpec("output.weight", (256, 8), "F16"), TensorSpec("token_embd.weight", (256, 8), "F16"),
               TensorSpec("blk.0.attn_q.weight", (128, 8), "F16"), TensorSpec("blk.0.attn_k.weight", (48, 8), "F16"),
               TensorSpec("blk.0.attn_norm.weight", (256,), "F32")]
    types = tensor_types("Q4_K_M", model, tensors)
    assert types == {"output.weight": "Q6_K", "token_embd.weight": "Q4_K", "blk.0.attn_q.weight": "Q5_0",
                     "blk.0.attn_k.weight": "F16", "blk.0.attn_norm.weight": "F32"}
    tied = tensor_types("Q4_0", model, tensors[1:])
    assert tied["token_embd.weight"] == "Q6_K"  # tied: the embedding is the output
    assert tensor_types("F16", model, tensors)["blk.0.attn_norm.weight"] == "F32"
