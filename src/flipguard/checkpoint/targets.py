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
Its answer is cached (:mod:`~flipguard.checkpoint.targets_cache`), so it is built once per
config, set of tensor names, skip list and transformers version.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from flipguard.errors import FlipGuardError

from . import targets_cache
from .checkpoint import Checkpoint
from .files import short
from .messages import dtype_name, first_sentence

# Config keys transformers reads as the text model's config when they are not null.
TEXT_CONFIG_KEYS = ("decoder", "generator", "text_config", "text_encoder")

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
    left out. Raises FlipGuardError when the config cannot be built, a stored tensor's shape is
    not the one the config gives its parameter (a quantizable weight stored 1-D, 3-D, transposed
    ...), another converted module has no tensor in the checkpoint, or a target's dtype is not
    float32, float16 or bfloat16.

    The answer is the skeleton's (:func:`build_skeleton`), kept in a cache keyed by config.json,
    the tensor names, ``skip_modules`` and the transformers version
    (:mod:`~flipguard.checkpoint.targets_cache`): a checkpoint seen before costs no skeleton.
    """
    version = _require_transformers_5()
    key = targets_cache.key(checkpoint.config, list(checkpoint.tensors), skip_modules, version)
    entry = targets_cache.load(key, checkpoint.tensors)
    if entry is None:
        entry = _from_skeleton(checkpoint, skip_modules)
        targets_cache.store(key, entry)
    _check_shapes(checkpoint, entry.shapes)
    return [_target(checkpoint, *target) for target in entry.targets]


def _from_skeleton(checkpoint: Checkpoint, skip_modules: list[str] | None) -> targets_cache.Entry:
    """What the skeleton says: the converted modules' stored weights, and the shape the config
    gives every stored parameter."""
    from transformers.pytorch_utils import Conv1D

    model = build_skeleton(checkpoint)
    shapes = _parameter_shapes(checkpoint, model)
    _check_shapes(checkpoint, shapes)  # before a missing tensor: a wrong shape says more
    patterns = _modules_to_not_convert(model, skip_modules)
    targets = []
    for module_name, module in model.named_modules():
        if _is_converted(module_name, module, patterns):
            tensor_name = _stored_weight(checkpoint, model, module_name, module)
            if tensor_name is not None:
                targets.append((tensor_name, module_name, isinstance(module, Conv1D)))
    return targets_cache.Entry(targets=targets, shapes=shapes)


def _parameter_shapes(checkpoint: Checkpoint, model: nn.Module) -> dict[str, tuple[int, ...]]:
    """Stored tensor name -> the shape of the skeleton parameter it loads into (as stored: a
    ``Conv1D`` weight is ``(in, out)`` in both)."""
    shapes = {}
    for key, parameter in model.named_parameters(remove_duplicate=False):
        tensor_name = _find_tensor(checkpoint, key, model.base_model_prefix)
        if tensor_name is not None:
            shapes[tensor_name] = tuple(parameter.shape)
    return shapes


def _check_shapes(checkpoint: Checkpoint, shapes: dict[str, tuple[int, ...]]) -> None:
    """transformers refuses to load a tensor whose shape differs from its parameter's; so do we."""
    for tensor_name, shape in shapes.items():
        stored = checkpoint.tensors[tensor_name].shape
        if stored != tuple(shape):
            raise FlipGuardError(
                f"Tensor {short(repr(tensor_name))} in {checkpoint.tensors[tensor_name].shard} is stored with shape "
                f"{_shape(stored)}, but {checkpoint.path}/config.json gives it {_shape(shape)}; use the "
                "config.json that belongs to these weights, or save the model again."
            )


def _shape(shape: tuple[int, ...]) -> str:
    return f"({', '.join(map(str, shape))})" if len(shape) != 1 else f"({shape[0]},)"


def build_skeleton(checkpoint: Checkpoint) -> nn.Module:
    """The ``AutoModelForCausalLM`` of the checkpoint's config on the meta device, weights untied.

    Untied as in ``from_pretrained``, where the quantizer sees the model before tying. The
    config's values were checked when the checkpoint was opened (:mod:`~flipguard.checkpoint.config`);
    what only transformers knows -- the architecture, its sub-configs, its own field validators --
    is checked here, and its refusals become one sentence.
    """
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.initialization import no_tie_weights

    _check_architecture(checkpoint)
    try:
        config = AutoConfig.from_pretrained(
            str(checkpoint.path), local_files_only=True, trust_remote_code=False
        )
        with init_empty_weights(), no_tie_weights():
            return AutoModelForCausalLM.from_config(config, trust_remote_code=False)
    except _config_validation_errors() as err:  # a field transformers' own validators refuse
        raise FlipGuardError(
            f"transformers refuses {checkpoint.path}/config.json ({first_sentence(err)}); "
            "restore the model's original config.json."
        ) from err
    except (ValueError, KeyError, TypeError, OSError, AssertionError, ZeroDivisionError) as err:
        # what the config checks leave to the architecture: torch and transformers check some values
        # with assert (nn.Embedding's padding_idx: a pad_token_id outside the vocabulary, for the
        # families that pass it), and divide by others (a head_dim of 0 means "derive it" in glm
        # configs, but is a divisor in llama's rotary table)
        model_type = checkpoint.config.get("model_type")
        raise FlipGuardError(
            f"transformers cannot build a causal LM of model_type {model_type!r} from "
            f"{checkpoint.path}/config.json ({first_sentence(err)}); restore the model's original config.json, "
            "or upgrade transformers if the architecture is newer than it."
        ) from err


def _check_architecture(checkpoint: Checkpoint) -> None:
    """The model type must be one transformers knows, and its sub-configs objects it declares:
    transformers treats any non-null ``text_config`` (``decoder``, ...) as a config object."""
    import transformers
    from transformers import CONFIG_MAPPING

    config, path = checkpoint.config, f"{checkpoint.path}/config.json"
    model_type = config["model_type"]
    if model_type not in CONFIG_MAPPING:
        raise FlipGuardError(
            f"{path} has model_type {model_type!r}, which transformers {transformers.__version__} does not "
            "know; use a supported architecture or upgrade transformers."
        )
    declared = getattr(CONFIG_MAPPING[model_type], "sub_configs", {}) or {}
    for key in set(TEXT_CONFIG_KEYS) | set(declared):
        value = config.get(key)
        if value is None:
            continue
        if key not in declared:
            raise FlipGuardError(
                f"{path} has a {key!r}, which model_type {model_type!r} does not take; "
                "restore the model's original config.json."
            )
        if not isinstance(value, dict):
            raise FlipGuardError(
                f"{path} has a {key!r} that is not an object; restore the model's original config.json."
            )


def _config_validation_errors() -> tuple[type[BaseException], ...]:
    """The exception transformers' config classes raise for a field of the wrong type or range
    (huggingface_hub's strict dataclasses); none on versions without them."""
    try:
        from huggingface_hub.errors import StrictDataclassError
    except ImportError:  # pragma: no cover - older huggingface_hub
        return ()
    return (StrictDataclassError,)


def _require_transformers_5() -> str:
    """The helpers mirrored here (``should_convert_module``, ``all_tied_weights_keys``) are 5.x API.

    Returns the installed version, read from its package metadata: importing transformers costs
    half a second a cached answer does not need."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("transformers")
    except PackageNotFoundError:  # pragma: no cover - a dependency of flipguard
        found = "none"
    if not found.split(".")[0].isdigit() or int(found.split(".")[0]) < 5:
        raise FlipGuardError(
            f"FlipGuard lists quantized weights with transformers 5 but found {found}; "
            "install transformers>=5 (pip install -U transformers)."
        )
    return found


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


def _target(checkpoint: Checkpoint, tensor_name: str, module_name: str, transposed: bool) -> QuantTarget:
    info = checkpoint.tensors[tensor_name]
    if info.dtype not in QUANTIZABLE_DTYPES:
        raise FlipGuardError(
            f"Tensor {tensor_name!r} is {dtype_name(info.dtype)}, but bitsandbytes "
            "quantizes float32, float16 or bfloat16 weights; save the model in one of those dtypes."
        )
    if len(info.shape) != 2 or 0 in info.shape:  # pragma: no cover - the shape check comes first
        raise FlipGuardError(
            f"Tensor {tensor_name!r} is stored with shape {_shape(info.shape)}, but a weight bitsandbytes "
            "quantizes is a non-empty matrix; use the checkpoint's original files."
        )
    return QuantTarget(
        tensor_name=tensor_name,
        module_name=module_name,
        shape=info.shape,
        dtype=info.dtype,
        transposed=transposed,
    )
