"""`checkpoint_targets`: which HF tensors llama.cpp quantizes, to which type, in which layout."""

import pytest

from flipguard.checkpoint import open_checkpoint
from flipguard.gguf import open_gguf, quantize_gguf
from flipguard.gguf.targets import checkpoint_targets, file_targets

from .conftest import LLAMA_FAMILIES


@pytest.mark.parametrize("family", LLAMA_FAMILIES)
@pytest.mark.parametrize("ftype_name", ["Q4_K_M", "Q8_0"])
def test_hf_targets_are_what_llama_cpp_quantizes(family, ftype_name, zoo_checkpoint, zoo_gguf, tmp_path):
    checkpoint = open_checkpoint(zoo_checkpoint(family, "micro"))
    targets, outtype = checkpoint_targets(checkpoint, ftype_name)
    assert outtype == "F16"  # float32 zoo weights: the converter's default
    out = quantize_gguf(zoo_gguf(family, "micro"), tmp_path / "q.gguf", ftype_name)
    with open_gguf(out) as quantized, open_gguf(zoo_gguf(family, "micro")) as source:
        written = {n: t.type.lower() for n, t in quantized.tensors.items() if t.type not in ("F32", "F16", "BF16")}
        assert {t.gguf_name: t.type for t in targets} == written
        for t in targets:  # the stored tensor, transposed where the converter transposes, has the GGUF's rows
            assert t.quantized_shape == source.tensors[t.gguf_name].shape
            assert t.tensor_name in checkpoint.tensors
    assert {t.gguf_name: t.type for t in file_targets(open_gguf(zoo_gguf(family, "micro")), ftype_name)} == written


def test_gpt2_conv1d_weights_are_transposed(zoo_checkpoint):
    targets, _ = checkpoint_targets(open_checkpoint(zoo_checkpoint("gpt2", "micro")), "Q8_0")
    by_name = {t.tensor_name: t for t in targets}
    assert by_name["transformer.h.0.mlp.c_fc.weight"].transposed
    assert not by_name["lm_head.weight"].transposed if "lm_head.weight" in by_name else True


def test_outtype_is_checked(zoo_checkpoint):
    from flipguard.errors import FlipGuardError

    with pytest.raises(FlipGuardError, match="not a float GGUF type"):
        checkpoint_targets(open_checkpoint(zoo_checkpoint("llama", "micro")), "Q8_0", outtype="Q4_0")
