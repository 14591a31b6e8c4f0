"""`flipguard.from_pretrained`: the same quantized codes as `flipguard defend` + a plain load."""

import pytest
import torch

DEMO = "src/flipguard/demo/assets"


def quantized_state(model) -> dict[str, torch.Tensor]:
    """Every bitsandbytes weight's stored bytes and scales (4-bit: packed codes + absmax; 8-bit: CB + SCB)."""
    import bitsandbytes as bnb

    out = {}
    for name, module in model.named_modules():
        if isinstance(module, bnb.nn.Linear4bit):
            out[name] = module.weight.data.clone()
            out[f"{name}.absmax"] = module.weight.quant_state.absmax.clone()
        elif isinstance(module, bnb.nn.Linear8bitLt):
            out[name] = module.weight.data.clone()
            out[f"{name}.SCB"] = module.weight.SCB.clone()
    return out


def config_for(scheme: str):
    from transformers import BitsAndBytesConfig

    if scheme == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=scheme)


@pytest.mark.parametrize("scheme, model", [("nf4", "nf4"), ("fp4", "fp4"), ("int8", "nf4")])
def test_codes_equal_defend_then_plain_load(scheme, model, tmp_path):
    from transformers import AutoModelForCausalLM

    import flipguard

    defended = flipguard.from_pretrained(f"{DEMO}/{model}", quantization_config=config_for(scheme))
    assert defended.flipguard_scan.parameters["schemes"] == [scheme]
    # the scan made while loading is the scan of the checkpoint
    separate = flipguard.scan(f"{DEMO}/{model}", schemes=[scheme], progress=False)
    assert defended.flipguard_scan.to_dict()["findings"] == separate.to_dict()["findings"]
    assert defended.flipguard_scan.verdict.status == separate.verdict.status
    flips = defended.flipguard_defense.totals()[scheme].flipped
    assert flips > 0  # the attacked demo model is defended, not just loaded
    flipguard.defend(f"{DEMO}/{model}", tmp_path / "out", schemes=[scheme], progress=False)
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "out", quantization_config=config_for(scheme),
                                                 device_map="cpu", use_safetensors=True)
    mine, theirs = quantized_state(defended), quantized_state(plain)
    assert mine.keys() == theirs.keys() and len(mine) > 0
    for name in mine:
        assert torch.equal(mine[name], theirs[name]), name
    undefended = AutoModelForCausalLM.from_pretrained(f"{DEMO}/{model}", quantization_config=config_for(scheme),
                                                      device_map="cpu", use_safetensors=True)
    assert any(not torch.equal(mine[n], t) for n, t in quantized_state(undefended).items())


def test_refuses_configs_it_does_not_defend():
    from transformers import BitsAndBytesConfig

    import flipguard
    from flipguard.errors import UsageError

    with pytest.raises(UsageError, match="load_in_8bit=True or load_in_4bit=True"):
        flipguard.from_pretrained(f"{DEMO}/nf4", quantization_config=BitsAndBytesConfig())
