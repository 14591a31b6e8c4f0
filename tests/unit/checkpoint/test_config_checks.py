"""The config checks refuse what transformers cannot build from, and nothing transformers writes."""

import json
import math

import pytest
from transformers import CONFIG_MAPPING

from flipguard.checkpoint.config import MODEL_TYPE, check_config_against_tensors, check_config_values
from flipguard.checkpoint.header import TensorInfo
from flipguard.checkpoint.jsonfile import MAX_DEPTH, nesting_depth
from flipguard.errors import FlipGuardError


def _default_configs():
    for model_type in sorted(CONFIG_MAPPING.keys()):
        try:
            text = CONFIG_MAPPING[model_type]().to_json_string()
        except Exception:  # noqa: BLE001 - a few config classes need arguments; nothing to check then
            continue
        yield model_type, text


def test_no_default_config_of_any_transformers_model_type_is_refused(tmp_path):
    """Every model type transformers 5 knows (800+, causal LMs and the others whose configs sit
    inside multimodal ones), with its defaults as save_pretrained writes them: nulls, per-layer
    lists, 0 experts, float sizes like 1200.0."""
    checked = 0
    for model_type, text in _default_configs():
        config = json.loads(text)
        assert MODEL_TYPE.match(config.get("model_type") or model_type), model_type
        assert nesting_depth(text) <= MAX_DEPTH, model_type
        check_config_values(config, tmp_path / "config.json")
        checked += 1
    assert checked > 700


@pytest.mark.parametrize("field, value, words", [
    ("vocab_size", 1.5, "not a whole number"), ("vocab_size", "abc", "not a whole number"),
    ("vocab_size", -1, "outside 1 to"), ("vocab_size", 10**12, "outside 1 to"), ("n_head", 0, "outside 1 to"),
    ("num_hidden_layers", [1, 0], "outside 1 to"), ("initializer_range", math.inf, "not a finite number"),
    ("rms_norm_eps", -1e-6, "at least 0"), ("attention_dropout", 1.5, "from 0 to 1"), ("rope_theta", 0, "above 0"),
    ("dtype", "float99", "no torch dtype name"), ("torch_dtype", "__class__", "no torch dtype name"),
    ("eos_token_id", "</s>", "not a token id"), ("text_config", {"hidden_size": 0}, "text_config.hidden_size"),
])
def test_a_field_transformers_cannot_build_from_is_named(tmp_path, field, value, words):
    with pytest.raises(FlipGuardError, match=words) as caught:
        check_config_values({"model_type": "llama", field: value}, tmp_path / "config.json")
    assert field in str(caught.value) and str(caught.value).endswith("restore the model's original config.json.")


@pytest.mark.parametrize("field, value", [("head_dim", 0), ("num_local_experts", 0), ("n_inner", None),
                                          ("vocab_size", None), ("max_position_embeddings", 1200.0),
                                          ("intermediate_size", [128, 256]), ("classifier_dropout", None),
                                          ("dtype", "bfloat16"), ("eos_token_id", [1, 2])])
def test_values_transformers_accepts_or_judges_itself_pass(tmp_path, field, value):
    check_config_values({"model_type": "llama", field: value}, tmp_path / "config.json")


def test_counts_are_bounded_by_the_stored_tensors(tmp_path):
    tensors = {f"t{i}": TensorInfo(f"t{i}", None, (64, 128), "model.safetensors", (0, 0)) for i in range(3)}
    check_config_against_tensors({"num_hidden_layers": 128}, tmp_path / "config.json", tensors)
    with pytest.raises(FlipGuardError, match="num_hidden_layers = 129, more than the checkpoint's 3 tensors"):
        check_config_against_tensors({"num_hidden_layers": 129}, tmp_path / "config.json", tensors)


def test_nesting_depth_ignores_brackets_inside_strings():
    assert nesting_depth('{"a": [1, {"b": "[[[[{{"}]}') == 3
    assert nesting_depth('"\\" [[["') == 0 and nesting_depth("[" * 100_000) == 100_000
