"""Every bad input raises FlipGuardError with one sentence saying what is wrong and what to do."""

import json
import os
import pickle
import re

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, BitsAndBytesConfig

from flipguard.checkpoint import copy_checkpoint, open_checkpoint, quantizable_tensors
from flipguard.errors import FlipGuardError


def _refused(path, pattern):
    with pytest.raises(FlipGuardError) as caught:
        open_checkpoint(path)
    message = str(caught.value)
    assert re.search(pattern, message), message
    assert "\n" not in message and message.endswith(".")
    assert not re.search(r"\.\s+[A-Z]", message), f"more than one sentence: {message}"
    return message


def _shards(path):
    return sorted(path.glob("model-*.safetensors"))


def test_missing_path(tmp_path):
    _refused(tmp_path / "nope", "does not exist")


def test_file_instead_of_directory(fresh_checkpoint):
    path = fresh_checkpoint()
    message = _refused(path / "model.safetensors", "is a file, not a directory")
    assert str(path) in message


def test_directory_without_weights(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    _refused(tmp_path, "holds no weights")


def test_stray_safetensors_without_index(fresh_checkpoint):
    path = fresh_checkpoint()
    (path / "model.safetensors").rename(path / "consolidated.safetensors")
    _refused(path, "consolidated.safetensors but neither")


def test_truncated_shard(fresh_checkpoint):
    path = fresh_checkpoint()
    size = (path / "model.safetensors").stat().st_size
    os.truncate(path / "model.safetensors", size - 100)
    _refused(path, "truncated or corrupted")


def test_garbled_header(fresh_checkpoint):
    path = fresh_checkpoint()
    with open(path / "model.safetensors", "r+b") as handle:
        handle.seek(8)
        handle.write(b"#garbage#")
    _refused(path, "truncated or corrupted")


def test_empty_shard_file(fresh_checkpoint):
    path = fresh_checkpoint()
    (path / "model.safetensors").write_bytes(b"")
    _refused(path, "truncated or corrupted")


def test_index_points_at_missing_shard(fresh_checkpoint):
    path = fresh_checkpoint(shards=3)
    missing = _shards(path)[1]
    missing.unlink()
    _refused(path, f"lists shard '{missing.name}', which is missing")


def test_index_is_not_json(fresh_checkpoint):
    path = fresh_checkpoint(shards=3)
    (path / "model.safetensors.index.json").write_text("{oops")
    _refused(path, "not a valid index")


def test_index_points_outside_the_directory(fresh_checkpoint):
    path = fresh_checkpoint(shards=3)
    index = json.loads((path / "model.safetensors.index.json").read_text())
    first = next(iter(index["weight_map"]))
    index["weight_map"][first] = "../elsewhere.safetensors"
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    _refused(path, "outside the checkpoint directory")


def test_index_disagrees_with_shards(fresh_checkpoint):
    path = fresh_checkpoint(shards=3)
    index = json.loads((path / "model.safetensors.index.json").read_text())
    index["weight_map"]["model.layers.9.ghost.weight"] = _shards(path)[0].name
    (path / "model.safetensors.index.json").write_text(json.dumps(index))
    _refused(path, "ghost.*does not hold it")


def test_tensor_stored_in_two_shards(fresh_checkpoint):
    path = fresh_checkpoint(shards=3)
    first, second = _shards(path)[:2]
    tensors = load_file(second)
    tensors.update(dict(list(load_file(first).items())[:1]))
    save_file(tensors, second, metadata={"format": "pt"})
    _refused(path, "is stored in both")


class _Trap:
    """Unpickling this creates a marker file: proof that something was unpickled."""

    marker = None

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("name", ["pytorch_model.bin", "model.pt", "weights.pth", "last.ckpt"])
def test_pickle_only_checkpoint_is_refused_unread(fresh_checkpoint, tmp_path, name):
    path = fresh_checkpoint()
    (path / "model.safetensors").unlink()
    _Trap.marker = tmp_path / "unpickled"
    (path / name).write_bytes(pickle.dumps(_Trap()))
    message = _refused(path, "pickle")
    assert "weights_only=True" in message and "save_pretrained" in message and "safetensors" in message
    assert not _Trap.marker.exists()


def test_pickle_beside_safetensors_is_ignored(fresh_checkpoint, tmp_path):
    path = fresh_checkpoint()
    _Trap.marker = tmp_path / "unpickled"
    (path / "pytorch_model.bin").write_bytes(pickle.dumps(_Trap()))
    copy_checkpoint(path, tmp_path / "out")
    assert not _Trap.marker.exists() and not (tmp_path / "out" / "pytorch_model.bin").exists()


def test_missing_config(fresh_checkpoint):
    path = fresh_checkpoint()
    (path / "config.json").unlink()
    _refused(path, "no config.json")


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"hidden_size": 64}'])
def test_invalid_config(fresh_checkpoint, text):
    path = fresh_checkpoint()
    (path / "config.json").write_text(text)
    _refused(path, "not valid JSON|has no 'model_type'")


def test_config_with_quantization_config(fresh_checkpoint):
    path = fresh_checkpoint()
    config = json.loads((path / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    (path / "config.json").write_text(json.dumps(config))
    _refused(path, "already quantized.*quant_method=bitsandbytes.*full-precision")


@pytest.mark.parametrize("mode", ["load_in_4bit", "load_in_8bit"])
def test_checkpoint_saved_by_bitsandbytes(fresh_checkpoint, tmp_path, mode):
    source = fresh_checkpoint(with_tokenizer=False)
    model = AutoModelForCausalLM.from_pretrained(
        source, quantization_config=BitsAndBytesConfig(**{mode: True}), device_map="cpu"
    )
    model.save_pretrained(tmp_path / "quantized")
    _refused(tmp_path / "quantized", "already quantized")
    config = json.loads((tmp_path / "quantized" / "config.json").read_text())
    del config["quantization_config"]  # the tensors alone give it away
    (tmp_path / "quantized" / "config.json").write_text(json.dumps(config))
    _refused(tmp_path / "quantized", r"already quantized \(tensor '.*\.(absmax|SCB|quant_map)'")


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8])
def test_integer_weights_look_quantized(fresh_checkpoint, dtype):
    path = fresh_checkpoint(with_tokenizer=False)
    tensors = load_file(path / "model.safetensors")
    name = "model.layers.0.self_attn.q_proj.weight"
    tensors[name] = torch.zeros(tensors[name].shape, dtype=dtype)
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    _refused(path, f"already quantized.*{name}")


def test_nan_and_inf_are_not_errors(fresh_checkpoint, tmp_path):
    path = fresh_checkpoint(with_tokenizer=False)
    tensors = load_file(path / "model.safetensors")
    name = "model.layers.0.self_attn.q_proj.weight"
    tensors[name][0, 0] = float("nan")
    tensors[name][0, 1] = float("inf")
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    checkpoint = open_checkpoint(path)
    assert name in {t.tensor_name for t in quantizable_tensors(checkpoint)}
    copied = open_checkpoint(copy_checkpoint(checkpoint, tmp_path / "out"))
    assert torch.equal(copied.get(name).view(torch.int32), tensors[name].view(torch.int32))  # bit for bit
