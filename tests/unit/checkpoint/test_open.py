"""open_checkpoint: headers only; names, dtypes, shapes, shards and metadata; tensors one at a time."""

import json

import torch
from safetensors.torch import load_file

import flipguard.checkpoint.header as header_module
from flipguard.checkpoint import open_checkpoint


def _all_tensors(directory):
    tensors = {}
    for shard in sorted(directory.glob("*.safetensors")):
        tensors.update(load_file(shard))
    return tensors


def test_single_file_names_dtypes_shapes(single_checkpoint):
    checkpoint = open_checkpoint(single_checkpoint)
    reference = _all_tensors(single_checkpoint)
    assert checkpoint.shards == ["model.safetensors"]
    assert not checkpoint.layout.is_sharded
    assert set(checkpoint.tensor_names) == set(reference)
    for name, info in checkpoint.tensors.items():
        expected = (reference[name].dtype, tuple(reference[name].shape), "model.safetensors")
        assert (info.dtype, info.shape, info.shard) == expected
    assert checkpoint.metadata == {"model.safetensors": {"format": "pt"}}
    assert checkpoint.config["model_type"] == "llama"


def test_sharded_layout_follows_index(sharded_checkpoint):
    checkpoint = open_checkpoint(sharded_checkpoint)
    index = json.loads((sharded_checkpoint / "model.safetensors.index.json").read_text())
    assert checkpoint.layout.is_sharded and len(checkpoint.shards) > 1
    assert checkpoint.shards == sorted(set(index["weight_map"].values()))
    assert {name: info.shard for name, info in checkpoint.tensors.items()} == index["weight_map"]
    assert all(info.dtype == torch.bfloat16 for info in checkpoint.tensors.values())
    assert set(checkpoint.metadata) == set(checkpoint.shards)


def test_get_and_iter_match_the_files(sharded_checkpoint):
    checkpoint = open_checkpoint(sharded_checkpoint)
    reference = _all_tensors(sharded_checkpoint)
    seen = []
    for name, tensor in checkpoint.iter_tensors():
        assert torch.equal(tensor, reference[name])
        seen.append(name)
    assert sorted(seen) == sorted(reference)
    shard_order = [checkpoint.tensors[name].shard for name in seen]
    assert shard_order == sorted(shard_order)  # shard by shard
    name = seen[-1]
    assert torch.equal(checkpoint.get(name), reference[name])


def test_iter_subset_keeps_file_order(single_checkpoint):
    checkpoint = open_checkpoint(single_checkpoint)
    wanted = list(reversed(checkpoint.tensor_names[:3]))
    assert [name for name, _ in checkpoint.iter_tensors(wanted)] == checkpoint.tensor_names[:3]


def test_open_reads_no_tensor_data(single_checkpoint, monkeypatch):
    calls = []

    class Spy:
        def __init__(self, *args, **kwargs):
            self.inner = real(*args, **kwargs)

        def __enter__(self):
            handle = self.inner.__enter__()
            return _SpyHandle(handle, calls)

        def __exit__(self, *exc):
            return self.inner.__exit__(*exc)

    real = header_module.safe_open
    monkeypatch.setattr(header_module, "safe_open", Spy)
    open_checkpoint(single_checkpoint)
    assert calls == []


class _SpyHandle:
    def __init__(self, handle, calls):
        self.handle, self.calls = handle, calls

    def __getattr__(self, attribute):
        if attribute in ("get_tensor", "get_slice"):
            self.calls.append(attribute)
        return getattr(self.handle, attribute)
