"""ftypes.tensor_types predicts, tensor by tensor, the ggml type llama.cpp's llama_model_quantize
writes: for every zoo family llama.cpp loads (micro widths, where rows are not whole 256-blocks
and k-quants fall back; the ``small`` preset, where they apply) and for synthetic files with the
layer and head counts that trigger llama.cpp's other rules (GQA, 70B, Falcon, 8 experts)."""

import collections

import numpy as np

import pytest

from flipguard.gguf import FTYPES, open_gguf, quantize_gguf
from flipguard.gguf.ftypes import QUANTIZED_FTYPES
from flipguard.gguf.layout import predicted_types

from ...support.gguf_models import block_tensor_names, write_synthetic_gguf
from .conftest import LLAMA_FAMILIES

# Llama gets every ftype at micro width; the other families (same rules, other tensor names and
# shapes) a set that covers the output rule, each fallback and the GQA-dependent choices
MICRO_FTYPES = ("Q4_K_M", "Q3_K_M", "IQ4_XS", "IQ3_M", "Q6_K", "Q8_0", "Q2_K")
# at 256-multiple widths: the mixtures whose rules differ by tensor and layer
SMALL_FTYPES = ("Q4_K_M", "Q4_K_S", "Q5_K_M", "Q3_K_M", "Q3_K_L", "Q2_K", "IQ4_NL")


def quantized_types(path):
    with open_gguf(path) as opened:
        return {name: t.type for name, t in opened.tensors.items()}


def assert_prediction(source, tmp_path, names) -> dict[str, dict[str, str]]:
    """Quantize ``source`` to each ftype in ``names``; assert llama.cpp wrote the predicted type for
    every tensor; return the written types by ftype."""
    written = {}
    with open_gguf(source) as opened:
        for name in names:
            written[name] = quantized_types(quantize_gguf(source, tmp_path / f"{name}.gguf", name))
            predicted = predicted_types(opened, name)
            assert written[name] == predicted, (name, {k: (predicted.get(k), v) for k, v in written[name].items()
                                                       if predicted.get(k) != v})
    return written


@pytest.mark.parametrize("family", LLAMA_FAMILIES)
def test_micro_widths(family, zoo_gguf, tmp_path):
    """Hidden 64 / MLP 128: no row is a whole 256-block, so every k-quant falls back."""
    written = assert_prediction(zoo_gguf(family, "micro"), tmp_path, FTYPES if family == "llama" else MICRO_FTYPES)
    assert "Q4_K" not in written["Q4_K_M"].values() and "Q5_0" in written["Q4_K_M"].values()


@pytest.mark.parametrize("family", LLAMA_FAMILIES)
def test_small_preset(family, zoo_gguf, tmp_path):
    """The zoo's ``small`` preset (hidden 256, MLP 768) has every matrix row a whole number of
    256-blocks: besides matching the prediction, Q4_K_M writes only Q4_K and Q6_K (no fallback)."""
    written = assert_prediction(zoo_gguf(family, "small"), tmp_path, SMALL_FTYPES)
    counts = collections.Counter(t for t in written["Q4_K_M"].values() if t not in ("F32", "F16"))
    assert set(counts) == {"Q4_K", "Q6_K"}, counts
    # output (or tied embedding) + attn_v/attn_qkv and ffn_down of layers 2 and 3 of 4
    assert counts["Q6_K"] == 5


LLM_TYPE_70B_FTYPES = ("Q2_K", "Q3_K_S", "Q3_K_M", "Q4_K_S", "Q4_K_M", "IQ3_M")  # attn_v Q3_K/Q4_K -> Q5_K
SYNTHETIC = {
    # name: (arch, n_layer, n_head, n_head_kv, tensors, n_expert, ftypes)
    "llama-gqa4-33": ("llama", 33, 8, 2, block_tensor_names(33), 0, QUANTIZED_FTYPES),
    "llama-70b": ("llama", 80, 8, 2, block_tensor_names(80), 0, LLM_TYPE_70B_FTYPES),
    "qwen2-80": ("qwen2", 80, 8, 8, block_tensor_names(80), 0, LLM_TYPE_70B_FTYPES),
    "falcon-fused": ("falcon", 32, 8, 1, block_tensor_names(32, fused_qkv=True), 0, QUANTIZED_FTYPES),
    "llama-8-experts": ("llama", 16, 8, 8, block_tensor_names(16, n_expert=8), 8, QUANTIZED_FTYPES),
    "odd-widths": ("llama", 4, 4, 4, [("token_embd.weight", (96, 8)), ("output.weight", (96, 8))] + [
        (f"blk.{i}.{part}.weight", (ne0, 2)) for i in range(4)
        for part, ne0 in (("attn_q", 48), ("attn_k", 256), ("attn_v", 128), ("ffn_down", 512))], 0,
        QUANTIZED_FTYPES),
}


@pytest.mark.parametrize("case", sorted(SYNTHETIC))
def test_synthetic_models(case, tmp_path):
    """Layer and head counts the zoo does not have: GQA, llama.cpp's 70B rule, Falcon's own rules,
    8 experts, and rows of 48/96/128/512 weights (F16, legacy and k-quant fallbacks)."""
    arch, n_layer, n_head, n_head_kv, tensors, n_expert, ftypes = SYNTHETIC[case]
    source = write_synthetic_gguf(tmp_path / "model.gguf", arch, n_layer, n_head, n_head_kv, tensors, n_expert)
    written = assert_prediction(source, tmp_path, ftypes)
    assert len({tuple(sorted(types.items())) for types in written.values()}) == len(ftypes)  # all differ


@pytest.mark.parametrize("ftype_name", ["Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"])
def test_llama_cpp_quantizes_the_rows_the_reader_gives(ftype_name, zoo_gguf, tmp_path):
    """The reader's (ne1, ne0) float32 rows, quantized by gguf-py's numpy reference of a legacy type,
    are byte for byte what llama_model_quantize wrote: blocks run along ne0, row by row."""
    import gguf

    source = zoo_gguf("gpt2", "small")
    out = quantize_gguf(source, tmp_path / "q.gguf", ftype_name)
    with open_gguf(source) as f16, open_gguf(out) as quantized:
        checked = 0
        for name, t in quantized.tensors.items():
            if t.type == ftype_name:
                reference = gguf.quants.quantize(f16.float32(name), gguf.GGMLQuantizationType[ftype_name])
                assert np.array_equal(reference.reshape(-1), quantized.raw(name)), name
                checked += 1
    assert checked >= 17  # every quantized matrix but the Q6_K output
