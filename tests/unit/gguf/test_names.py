"""HF <-> GGUF tensor maps: names agree with gguf-py's own name table, value maps invert exactly,
index maps agree with value maps, and Llama's q/k permutation turns HF's half-split rotary
embedding into llama.cpp's adjacent-pair one."""

from dataclasses import replace

import gguf
import numpy as np
import pytest
from safetensors.numpy import load_file

from flipguard.errors import FlipGuardError
from flipguard.gguf.names import GGUF_ARCHES, hf_tensor_map, inverse_permutation, rope_permutation, tensor_map
from flipguard.checkpoint import open_checkpoint

from .conftest import LLAMA_FAMILIES


def hf_tensors(directory):
    return load_file(str(directory / "model.safetensors"))


@pytest.mark.parametrize("family", LLAMA_FAMILIES)
def test_names_agree_with_gguf_py_and_invert(family, zoo_checkpoint):
    directory = zoo_checkpoint(family)
    config = open_checkpoint(directory).config
    arch = next(a for a, name in gguf.MODEL_ARCH_NAMES.items() if name == GGUF_ARCHES[family])
    reference = gguf.get_tensor_name_map(arch, config.get("num_hidden_layers") or config["n_layer"])
    mapped = 0
    for name in hf_tensors(directory):
        tmap = tensor_map(config, name)
        if tmap is None:
            continue
        mapped += 1
        assert tmap.gguf_name == reference.get_name(name, try_suffixes=(".weight", ".bias")), name
        assert hf_tensor_map(config, tmap.gguf_name) == tmap
    assert mapped > 10


@pytest.mark.parametrize("family", LLAMA_FAMILIES)
def test_value_and_index_maps_round_trip(family, zoo_checkpoint):
    directory = zoo_checkpoint(family)
    config = open_checkpoint(directory).config
    n_moved = 0
    for name, hf in hf_tensors(directory).items():
        tmap = tensor_map(config, name)
        if tmap is None:
            continue
        g = tmap.to_gguf(hf)
        assert g.shape == tmap.gguf_shape(hf.shape) and g.dtype == hf.dtype
        back = tmap.to_hf(g)
        if tmap.offset:
            np.testing.assert_allclose(back, hf, rtol=0, atol=np.spacing(np.float32(4)))  # float32 +1 -1
        else:
            assert np.array_equal(back, hf)
        # index maps: carry every HF element's flat index through the value map
        hf_cols = hf.shape[1] if hf.ndim == 2 else 1
        ids = replace(tmap, offset=0.0).to_gguf(np.arange(hf.size).reshape(hf.shape))
        ids = ids.reshape(ids.shape[0], -1)  # vectors as (n, 1)
        rows, cols = np.meshgrid(np.arange(ids.shape[0]), np.arange(ids.shape[1]), indexing="ij")
        hr, hc = tmap.hf_coordinates(rows, cols, ids.shape[0])
        assert np.array_equal(hr * hf_cols + hc, ids)
        gr, gc = tmap.gguf_coordinates(hr, hc, ids.shape[0])
        assert np.array_equal(gr, rows) and np.array_equal(gc, cols)
        n_moved += bool(tmap.transpose or tmap.rope_heads)
    assert (n_moved > 0) == (family in ("llama", "gpt2"))  # q/k permuted; Conv1D transposed


def test_what_is_not_written_and_what_is_refused():
    gpt2 = {"model_type": "gpt2", "tie_word_embeddings": True, "n_head": 2}
    assert tensor_map(gpt2, "lm_head.weight") is None  # tied: llama.cpp reuses token_embd
    assert tensor_map(gpt2, "transformer.h.0.attn.bias") is None  # causal-mask buffer
    assert tensor_map(gpt2, "transformer.h.0.attn.c_attn.weight").transpose  # Conv1D (in, out)
    assert not tensor_map({**gpt2, "model_type": "gpt_bigcode"}, "transformer.h.0.attn.c_attn.weight").transpose
    with pytest.raises(FlipGuardError, match="layout"):
        tensor_map(gpt2, "transformer.h.0.mlp.extra.weight")
    with pytest.raises(FlipGuardError, match="model_type"):
        tensor_map({"model_type": "mamba"}, "x.weight")
    with pytest.raises(FlipGuardError, match="counterpart"):
        hf_tensor_map(gpt2, "blk.0.ffn_gate.weight")


def hf_rope(x, pos, base=10000.0):
    """transformers' rotary embedding of one head (rotate_half: pairs (i, i + d/2))."""
    d = len(x)
    inv = base ** (-np.arange(0, d, 2) / d)
    angle = np.concatenate([pos * inv, pos * inv])
    rotated = np.concatenate([-x[d // 2:], x[: d // 2]])
    return x * np.cos(angle) + rotated * np.sin(angle)


def adjacent_pair_rope(x, pos, base=10000.0):
    """llama.cpp's LLAMA_ROPE_TYPE_NORM of one head: pairs (2i, 2i + 1) turned by angle pos * base^(-2i/d)."""
    d = len(x)
    out = x.copy()
    for i in range(d // 2):
        a = pos * base ** (-2 * i / d)
        out[2 * i] = x[2 * i] * np.cos(a) - x[2 * i + 1] * np.sin(a)
        out[2 * i + 1] = x[2 * i] * np.sin(a) + x[2 * i + 1] * np.cos(a)
    return out


def test_rope_permutation_makes_llama_cpp_rope_equal_hf_rope():
    n_heads, head_dim = 3, 8
    perm = rope_permutation(n_heads * head_dim, n_heads)
    assert sorted(perm) == list(range(n_heads * head_dim))
    assert np.array_equal(perm[inverse_permutation(perm)], np.arange(len(perm)))
    q = np.random.default_rng(0).standard_normal(n_heads * head_dim)
    for pos in (0, 1, 5):
        hf = np.concatenate([hf_rope(h, pos) for h in q.reshape(n_heads, head_dim)])
        cpp = np.concatenate([adjacent_pair_rope(h, pos) for h in q[perm].reshape(n_heads, head_dim)])
        np.testing.assert_allclose(cpp, hf[perm], atol=1e-12)
    with pytest.raises(ValueError):
        rope_permutation(10, 3)
