"""The checkpoint's ``config.json``: read as a plain dict and checked before anything builds from it.

transformers turns the config into a model skeleton (``checkpoint.targets``) and trusts its fields:
a head count of 0 divides by zero, a negative width creates a tensor of negative size, ten billion
layers never finish building. So every field transformers sizes modules with is checked here
first, by name, wherever it sits (sub-configs such as ``text_config`` use the same names):

- sizes (``vocab_size``, ``hidden_size``, ``n_embd``, ``intermediate_size``, ``head_dim``, ...):
  whole numbers from 1 to ``MAX_SIZE`` (or a list of them, one per layer); counts (layers, heads,
  experts) from 1 to ``MAX_COUNT``; null is left to transformers, whose config validators refuse it
  where a value is needed (that refusal is one sentence too, see ``targets.build_skeleton``);
- floats anywhere finite; epsilons, dropouts, ``initializer_range`` and ``rope_theta`` in range;
- ``dtype`` / ``torch_dtype`` a torch dtype name (transformers calls ``getattr(torch, name)``);
- token ids whole numbers (or lists of them, or null).

:func:`check_config_against_tensors` then bounds the counts by what the checkpoint stores (a model
with N layers stores at least N tensors), so a skeleton never has more modules than the file has
tensors; the skeleton's parameter shapes are compared with the stored shapes afterwards.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from pathlib import Path

from flipguard.errors import FlipGuardError

from .files import short
from .header import TensorInfo
from .jsonfile import read_json_file
from .layout import CONFIG_FILE

MAX_CONFIG_BYTES = 4 << 20  # bytes; real configs are a few kB, multimodal ones tens of kB
MAX_SIZE = 1 << 24  # widths and vocabularies (the largest real ones are near 2**18)
MAX_COUNT = 1 << 16  # layers, heads and experts before the bound by stored tensors
FIX = "restore the model's original config.json"

# Sizes transformers gives to nn.Linear / nn.Embedding / rotary tables, by config field name.
SIZES = {
    "vocab_size", "hidden_size", "n_embd", "d_model", "intermediate_size", "n_inner", "ffn_dim",
    "ffn_hidden_size", "head_dim", "kv_channels", "moe_intermediate_size", "shared_expert_intermediate_size",
    "word_embed_proj_dim", "embedding_size", "max_position_embeddings", "n_positions", "n_ctx",
    "seq_length", "rotary_dim", "rotary_emb_base_dim", "attention_head_size", "num_codebooks",
}
COUNTS = {
    "num_hidden_layers", "n_layer", "num_layers", "n_layers", "num_attention_heads", "n_head", "num_heads",
    "n_heads", "num_key_value_heads", "num_kv_heads", "multi_query_group_num", "num_experts",
    "num_local_experts", "n_routed_experts", "num_experts_per_tok", "n_shared_experts", "num_shared_experts",
}
# 0 means "none" or "derive it": dense configs of mixture-of-experts families, glm's head_dim.
MAY_BE_ZERO = {"rotary_dim", "head_dim", "num_experts", "num_local_experts", "n_routed_experts", "num_experts_per_tok",
               "n_shared_experts", "num_shared_experts"}
TOKEN_IDS = {"pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id", "sep_token_id"}
DTYPE_FIELDS = {"dtype", "torch_dtype"}
# float fields by name pattern: (what a valid value is, the test); only numbers are tested here
FLOAT_RANGES = (
    (re.compile(r"(^|_)(eps|epsilon)$|norm_eps"), "which must be at least 0", lambda v: v >= 0),
    (re.compile(r"dropout$|pdrop$"), "which must be from 0 to 1", lambda v: 0 <= v <= 1),
    (re.compile(r"^initializer_range$"), "which must be at least 0", lambda v: v >= 0),
    (re.compile(r"^(rope_theta|rotary_emb_base|rope_base)$"), "which must be above 0", lambda v: v > 0),
)
MODEL_TYPE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")  # "llama", "gpt_bigcode", "xlm-roberta"


def read_config(directory: Path) -> dict:
    """Return ``directory/config.json`` as a dict; raise FlipGuardError if missing or invalid.

    Valid means: a regular file of JSON (see :func:`~flipguard.checkpoint.jsonfile.read_json_file`)
    holding an object with a ``model_type`` that names an architecture, and whose fields pass
    :func:`check_config_values`.
    """
    path = directory / CONFIG_FILE
    if not (path.exists() or path.is_symlink()):
        raise FlipGuardError(
            f"{directory} has no {CONFIG_FILE}; copy the model's config.json next to its weights."
        )
    config = read_json_file(path, MAX_CONFIG_BYTES, FIX)
    if not isinstance(config, dict) or "model_type" not in config:
        raise FlipGuardError(
            f"{path} has no 'model_type'; {FIX} (it names the architecture, e.g. \"llama\")."
        )
    model_type = config["model_type"]
    if not isinstance(model_type, str) or not MODEL_TYPE.match(model_type):
        raise FlipGuardError(
            f"{path} has model_type {short(repr(model_type), 80)}, which is no architecture name; {FIX} "
            "(model_type names the architecture, e.g. \"llama\")."
        )
    check_config_values(config, path)
    return config


def check_config_values(config: dict, path: Path) -> None:
    """Raise FlipGuardError naming the first field transformers could not build a model from."""
    for where, key, value in _fields(config):
        problem = _problem(key, value)
        if problem:
            raise FlipGuardError(f"{path} has {where} = {short(repr(value), 60)}, {problem}; {FIX}.")


def check_config_against_tensors(config: dict, path: Path, tensors: dict[str, TensorInfo]) -> None:
    """Raise FlipGuardError when a count in the config exceeds what the checkpoint can hold.

    A model with N layers (heads, experts) stores at least N tensors or a dimension of at least N;
    a larger N describes another model, and building its skeleton could take minutes.
    """
    largest = max((size for info in tensors.values() for size in info.shape), default=0)
    bound = max(len(tensors), largest)
    for where, key, value in _fields(config):
        if key in COUNTS and type(value) is int and value > bound:
            raise FlipGuardError(
                f"{path} has {where} = {value}, more than the checkpoint's {len(tensors)} tensors (largest "
                f"dimension {largest}) can hold; use the config.json that belongs to these weights."
            )


def _fields(node: dict, prefix: str = "") -> Iterator[tuple[str, str, object]]:
    """Every (dotted path, key, value) of a config, nested objects and lists included."""
    for key, value in node.items():
        where = f"{prefix}{short(str(key), 60)}"
        yield where, key, value
        yield from _nested(value, where)


def _nested(value, where: str) -> Iterator[tuple[str, str, object]]:
    if isinstance(value, dict):
        yield from _fields(value, f"{where}.")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, float) and not math.isfinite(item):
                yield f"{where}[{i}]", "", item
            yield from _nested(item, f"{where}[{i}]")


def _problem(key: str, value) -> str | None:
    """What is wrong with ``value`` for field ``key``, or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return "which is not a finite number"
    if key in SIZES or key in COUNTS:
        limit = MAX_SIZE if key in SIZES else MAX_COUNT
        if isinstance(value, list) and value:  # one per layer (gemma3n's intermediate_size, OpenELM's heads)
            return next(filter(None, (_whole_number_problem(key, item, limit) for item in value)), None)
        return _whole_number_problem(key, value, limit)
    if key in DTYPE_FIELDS:
        if value is None or (isinstance(value, str) and _is_dtype_name(value)):
            return None
        return "which is no torch dtype name (e.g. \"float16\", \"bfloat16\", \"float32\")"
    if key in TOKEN_IDS:
        ids = value if isinstance(value, list) else [value]
        if all(i is None or type(i) is int for i in ids):
            return None
        return "which is not a token id (a whole number, a list of them, or null)"
    if type(value) in (int, float):  # other types: transformers' own validators accept or refuse them
        for pattern, valid, test in FLOAT_RANGES:
            if pattern.search(key) and not test(value):
                return valid
    return None


def _is_dtype_name(name: str) -> bool:
    """What transformers accepts: ``getattr(torch, name)`` is a dtype (it calls exactly that)."""
    import torch

    return not name.startswith("_") and isinstance(getattr(torch, name, None), torch.dtype)


def _whole_number_problem(key: str, value, limit: int) -> str | None:
    """None, and objects, are transformers' to judge (it derives n_inner from null, and its
    validators refuse a null vocab_size); a number must be whole and in range."""
    if value is None or isinstance(value, dict):
        return None
    if type(value) is float and value.is_integer():  # 1200.0: what some config classes write
        value = int(value)
    if type(value) is not int:
        return "which is not a whole number"
    if key in MAY_BE_ZERO and value == 0:
        return None
    if not 1 <= value <= limit:
        return f"outside 1 to {limit:,}"
    return None
