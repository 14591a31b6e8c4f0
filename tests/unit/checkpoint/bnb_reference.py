"""What a real ``from_pretrained(..., BitsAndBytesConfig(...), device_map="cpu")`` quantizes."""

import bitsandbytes as bnb
from transformers import AutoModelForCausalLM, BitsAndBytesConfig

BNB_MODULES = (bnb.nn.Linear4bit, bnb.nn.Linear8bitLt)
BNB_PARAMS = (bnb.nn.Params4bit, bnb.nn.Int8Params)


def load_quantized(path, **bnb_kwargs):
    config = BitsAndBytesConfig(**bnb_kwargs)
    return AutoModelForCausalLM.from_pretrained(path, quantization_config=config, device_map="cpu")


def converted_modules(model) -> set[str]:
    """Modules replaced by bitsandbytes layers."""
    return {name for name, module in model.named_modules() if isinstance(module, BNB_MODULES)}


def quantized_modules(model) -> set[str]:
    """Modules whose weight actually holds quantized codes (a re-tied lm_head does not)."""
    return {
        name
        for name, module in model.named_modules()
        if isinstance(getattr(module, "weight", None), BNB_PARAMS)
    }
