"""Which checkpoint tensors bitsandbytes quantizes when transformers loads the model.

This mirrors, and where it can *calls*, the installed transformers (5.x):

- ``HfQuantizer.get_modules_to_not_convert(model, llm_int8_skip_modules, model._keep_in_fp32_modules)``
  gives the skip patterns: with no user list, ``get_keys_to_not_convert`` (tied-weight keys, the
  last parameter's module, the output embedding ``lm_head``); a user list *replaces* that default;
  ``_keep_in_fp32_modules`` is added in both cases.
- ``replace_with_bnb_linear`` converts each module that ``should_convert_module`` lets through and
  whose type is exactly ``nn.Linear``, or a GPT-2 style ``Conv1D`` (whose stored ``(in, out)``
  weight is transposed before quantizing). Embeddings are never converted.
- A tied weight that the file does not store (``lm_head`` tied to the input embedding) is re-tied
  after loading to the embedding's float parameter, so nothing of it is quantized.

The skeleton is built on the meta device (``accelerate.init_empty_weights``): no weight memory.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from flipguard.errors import FlipGuardError

from .checkpoint import Checkpoint
from .messages import dtype_name, first_line

QUANTIZABLE_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


@dataclass(frozen=True)
class QuantTarget:
    """One weight tensor that ``load_in_4bit`` / ``load_in_8bit`` would quantize.

    ``shape`` and ``dtype`` are as stored in the checkpoint. ``transposed`` is True for a GPT-2
    style ``Conv1D`` weight, stored ``(in_features, out_features)``: bitsandbytes quantizes its
    transpose, so rows (INT8) and row-major blocks (4-bit) run over ``quantized_shape``.
    """

    tensor_name: str  # key in the safetensors files
    module_name: str  # module path in the transformers model, e.g. "model.layers.0.mlp.up_proj"
    shape: tuple[int, ...]
    dtype: torch.dtype
    transposed: bool = False

    @property
    def quantized_shape(self) -> tuple[int, ...]:
        """Shape of the matrix bitsandbytes quantizes: ``(out_features, in_features)``."""
        return tuple(reversed(self.shape)) if self.transposed else self.shape


def quantizable_tensors(checkpoint: Checkpoint, skip_modules: list[str] | None = None) -> list[QuantTarget]:
    """List the weights transformers quantizes with ``BitsAndBytesConfig(load_in_4bit/8bit=True)``.

    ``skip_modules`` acts as ``llm_int8_skip_modules``: ``None`` keeps transformers' default skip
    list; a list replaces it (``_keep_in_fp32_modules`` still applies). Targets come in module
    order. Raises FlipGuardError when the config cannot be built, a converted module has no tensor
    in the checkpoint, or a target's dtype is not float32, float16 or bfloat16.
    """
    model = build_skeleton(checkpoint)
    patterns = _modules_to_not_convert(model, skip_modules)
    targets = []
    for module_name, module in model.named_modules():
        if not _is_converted(module_name, module, patterns):
            continue
        tensor_name = _find_tensor(checkpoint, f"{module_name}.weight", model.base_model_prefix)
        if tensor_name is None and f"{module_name}.weight" in model.all_tied_weights_keys:
            continue  # re-tied to the (unquantized) source after loading
        if tensor_name is None:
            raise FlipGuardError(
                f"config.json describes module {module_name!r} but {checkpoint.path} has no tensor "
                f"{module_name}.weight; use the config.json that belongs to these weights."
            )
        targets.append(_target(checkpoint, tensor_name, module_name, module))
    return targets


def build_skeleton(checkpoint: Checkpoint) -> nn.Module:
    """The ``AutoModelForCausalLM`` of the checkpoint's config on the meta device, weights untied.

    Untied as in ``from_pretrained``, where the quantizer sees the model before tying.
    """
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(str(checkpoint.path), local_files_only=True, trust_remote_code=False)
        with init_empty_weights(), _no_tie_weights():
            return AutoModelForCausalLM.from_config(config, trust_remote_code=False)
    except (ValueError, KeyError, TypeError, OSError) as err:
        model_type = checkpoint.config.get("model_type")
        raise FlipGuardError(
            f"transformers cannot build a causal LM of model_type {model_type!r} from "
            f"{checkpoint.path}/config.json ({first_line(err)}); use a supported architecture or upgrade transformers."
        ) from err


def _no_tie_weights():
    try:
        from transformers.initialization import no_tie_weights
    except ImportError:  # older transformers tie in post_init; the skip list is the same for lm_head
        return contextlib.nullcontext()
    return no_tie_weights()


def _modules_to_not_convert(model: nn.Module, skip_modules: list[str] | None) -> list[str]:
    from transformers.quantizers.base import HfQuantizer

    skip = None if skip_modules is None else list(skip_modules)
    return HfQuantizer.get_modules_to_not_convert(model, skip, model._keep_in_fp32_modules)


def _is_converted(module_name: str, module: nn.Module, patterns: list[str]) -> bool:
    """``replace_with_bnb_linear``'s test: not skipped, and exactly ``nn.Linear`` or a ``Conv1D``."""
    from transformers.pytorch_utils import Conv1D
    from transformers.quantizers.quantizers_utils import should_convert_module

    if not should_convert_module(module_name, patterns):
        return False
    return isinstance(module, Conv1D) or type(module) is nn.Linear


def _find_tensor(checkpoint: Checkpoint, key: str, prefix: str) -> str | None:
    """The checkpoint's name for model key ``key``, with or without the base-model prefix."""
    bare = key.removeprefix(f"{prefix}.") if prefix else key
    for candidate in (key, bare, f"{prefix}.{bare}" if prefix else key):
        if candidate in checkpoint.tensors:
            return candidate
    return None


def _target(checkpoint: Checkpoint, tensor_name: str, module_name: str, module: nn.Module) -> QuantTarget:
    from transformers.pytorch_utils import Conv1D

    info = checkpoint.tensors[tensor_name]
    if info.dtype not in QUANTIZABLE_DTYPES:
        raise FlipGuardError(
            f"Tensor {tensor_name!r} is {dtype_name(info.dtype)}, but bitsandbytes "
            "quantizes float32, float16 or bfloat16 weights; save the model in one of those dtypes."
        )
    return QuantTarget(
        tensor_name=tensor_name,
        module_name=module_name,
        shape=info.shape,
        dtype=info.dtype,
        transposed=isinstance(module, Conv1D),
    )

