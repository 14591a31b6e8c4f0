"""quantizable_tensors on transformers architectures outside the zoo, against a real bnb load."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from flipguard.checkpoint import open_checkpoint, quantizable_tensors
from tests.support.checkpoints import OTHER_ARCHITECTURES, other_config

from .bnb_reference import load_quantized, quantized_modules


@pytest.mark.parametrize("model_type", OTHER_ARCHITECTURES)
def test_targets_match_what_bitsandbytes_quantizes(tmp_path, model_type):
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(other_config(model_type)).save_pretrained(tmp_path)
    ours = {t.module_name for t in quantizable_tensors(open_checkpoint(tmp_path))}
    for mode in ({"load_in_4bit": True}, {"load_in_8bit": True}):
        assert ours == quantized_modules(load_quantized(tmp_path, **mode)), mode
    if model_type == "falcon":
        assert not ours  # FalconLinear is not exactly nn.Linear: transformers leaves it unquantized
    else:
        assert len(ours) >= 8 and not any("lm_head" in name or "embed" in name for name in ours)
