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
    order; converted modules with no stored weight (tied ``lm_head``, headless checkpoint) are
    left out. Raises FlipGuardError when the config cannot be built, another converted module has
    no tensor in the checkpoint, or a target's dtype is not float32, float16 or bfloat16.
    """
    _require_transformers_5()
    model = build_skeleton(checkpoint)
    patterns = _modules_to_not_convert(model, skip_modules)
    targets = []
    for module_name, module in model.named_modules():
        if _is_converted(module_name, module, patterns):
            tensor_name = _stored_weight(checkpoint, model, module_name, module)
            if tensor_name is not None:
                targets.append(_target(checkpoint, tensor_name, module_name, module))
    return targets


def build_skeleton(checkpoint: Checkpoint) -> nn.Module:
    """The ``AutoModelForCausalLM`` of the checkpoint's config on the meta device, weights untied.

    Untied as in ``from_pretrained``, where the quantizer sees the model before tying.
    """
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.initialization import no_tie_weights

    try:
        config = AutoConfig.from_pretrained(
            str(checkpoint.path), local_files_only=True, trust_remote_code=False
        )
        with init_empty_weights(), no_tie_weights():
            return AutoModelForCausalLM.from_config(config, trust_remote_code=False)
    except (ValueError, KeyError, TypeError, OSError) as err:
        model_type = checkpoint.config.get("model_type")
        raise FlipGuardError(
            f"transformers cannot build a causal LM of model_type {model_type!r} from "
            f"{checkpoint.path}/config.json ({first_line(err)}); "
            "use a supported architecture or upgrade transformers."
        ) from err


def _require_transformers_5() -> None:
    """The helpers mirrored here (``should_convert_module``, ``all_tied_weights_keys``) are 5.x API."""
    import transformers

    if int(transformers.__version__.split(".")[0]) < 5:
        raise FlipGuardError(
            f"FlipGuard lists quantized weights with transformers 5 but found {transformers.__version__}; "
            "install transformers>=5 (pip install -U transformers)."
        )


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


def _stored_weight(
    checkpoint: Checkpoint, model: nn.Module, module_name: str, module: nn.Module
) -> str | None:
    """The checkpoint tensor holding ``module``'s weight; None when nothing of it is stored.

    Not stored and fine: a tied weight (re-tied to its float source after loading) and the
    output embedding of a headless checkpoint. Any other missing weight means the config does
    not describe these tensors.
    """
    key = f"{module_name}.weight"
    tensor_name = _find_tensor(checkpoint, key, model.base_model_prefix)
    if tensor_name is not None:
        return tensor_name
    if key in model.all_tied_weights_keys or module is model.get_output_embeddings():
        return None
    raise FlipGuardError(
        f"config.json describes module {module_name!r} but {checkpoint.path} has no tensor {key}; "
        "use the config.json that belongs to these weights."
    )


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

