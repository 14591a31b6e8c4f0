"""CheckpointWriter and copy_checkpoint: same layout, atomic output, refusals, untouched input, streaming."""

import json
import os
import shutil
import weakref

import pytest
import torch

from flipguard.checkpoint import CheckpointWriter, TensorStream, copy_checkpoint, open_checkpoint
from flipguard.errors import FlipGuardError

from .conftest import leftovers, snapshot


class Boom(RuntimeError):
    pass


def _digests(files):
    """relative path -> sha256, from a ``snapshot``."""
    return {name: digest for name, (digest, _) in files.items()}


@pytest.mark.parametrize("fixture", ["single_checkpoint", "sharded_checkpoint"])
def test_identity_copy_is_byte_identical(fixture, request, tmp_path):
    source = request.getfixturevalue(fixture)
    before = snapshot(source)
    output = copy_checkpoint(source, tmp_path / "out")
    assert output == (tmp_path / "out").resolve()
    copied = snapshot(output)
    # every file, weights, index, config, tokenizer, chat template, README, nested file: same bytes
    assert _digests(copied) == _digests(before)
    assert snapshot(source) == before  # input untouched: same bytes, same mtimes
    assert leftovers(tmp_path) == []


def test_copy_keeps_layout_dtypes_and_metadata(sharded_checkpoint, tmp_path):
    source = open_checkpoint(sharded_checkpoint)
    copied = open_checkpoint(copy_checkpoint(source, tmp_path / "out"))
    assert copied.shards == source.shards
    assert copied.layout.weight_map == source.layout.weight_map
    assert copied.layout.index_metadata == source.layout.index_metadata
    assert copied.metadata == source.metadata
    assert {n: (i.dtype, i.shape, i.shard) for n, i in copied.tensors.items()} == {
        n: (i.dtype, i.shape, i.shard) for n, i in source.tensors.items()
    }


def test_transform_is_applied_tensor_by_tensor(single_checkpoint, tmp_path):
    source = open_checkpoint(single_checkpoint)
    target = "model.layers.0.mlp.up_proj.weight"

    def negate_one(name, tensor):
        return torch.neg(tensor) if name == target else tensor

    copied = open_checkpoint(copy_checkpoint(source, tmp_path / "out", transform=negate_one))
    assert torch.equal(copied.get(target), torch.neg(source.get(target)))
    other = "model.layers.1.mlp.up_proj.weight"
    assert torch.equal(copied.get(other), source.get(other))


@pytest.mark.parametrize("budget", [1, None])
def test_streaming_holds_tensors_within_the_budget(sharded_checkpoint, tmp_path, budget):
    checkpoint = open_checkpoint(sharded_checkpoint)
    size = {n: info.data_offsets[1] - info.data_offsets[0] for n, info in checkpoint.tensors.items()}
    refs, held = [], []  # (name, weak reference) of every tensor seen or made; bytes alive at each arrival

    def watch(name, tensor):
        held.append(sum(size[n] for n, ref in refs if ref() is not None))
        out = tensor.clone()
        refs.extend([(name, weakref.ref(tensor)), (name, weakref.ref(out))])
        return out

    copy_checkpoint(sharded_checkpoint, tmp_path / "out", transform=watch, budget=budget)
    assert len(held) == len(checkpoint.tensors)
    if budget == 1:
        assert max(held) == 0  # when a tensor arrives, every earlier one (read or written) is gone
    else:  # earlier tensors may still wait to be written, within the budget
        assert max(held) + max(size.values()) <= TensorStream(checkpoint).budget


def test_shards_are_synced_as_they_are_written(sharded_checkpoint, tmp_path, monkeypatch):
    import flipguard.checkpoint.writer as writer_module

    synced = []
    monkeypatch.setattr(writer_module, "SYNC_EVERY", 1)  # every write reaches the disk before the next
    monkeypatch.setattr(writer_module.os, "fdatasync", lambda fd: synced.append(fd) or os.fsync(fd))
    output = copy_checkpoint(sharded_checkpoint, tmp_path / "out")
    assert len(synced) == len(open_checkpoint(sharded_checkpoint).tensors)
    assert _digests(snapshot(output)) == _digests(snapshot(sharded_checkpoint))


def test_failure_midway_leaves_nothing(single_checkpoint, tmp_path):
    before = snapshot(single_checkpoint)
    count = [0]

    def fail_on_fifth(name, tensor):
        count[0] += 1
        if count[0] == 5:
            raise Boom("transform failed")
        return tensor

    with pytest.raises(Boom):
        copy_checkpoint(single_checkpoint, tmp_path / "out", transform=fail_on_fifth)
    assert not (tmp_path / "out").exists()
    assert leftovers(tmp_path) == []
    assert snapshot(single_checkpoint) == before


def test_failure_with_force_keeps_the_old_output(single_checkpoint, tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    (output / "keep.txt").write_text("old")

    def fail(name, tensor):
        raise Boom("transform failed")

    with pytest.raises(Boom):
        copy_checkpoint(single_checkpoint, output, transform=fail, force=True)
    assert (output / "keep.txt").read_text() == "old"
    assert leftovers(tmp_path) == []


def test_existing_output_refused_unless_force(single_checkpoint, tmp_path):
    output = tmp_path / "out"
    output.mkdir()
    (output / "stale.txt").write_text("stale")
    with pytest.raises(FlipGuardError, match="already exists.*--force"):
        copy_checkpoint(single_checkpoint, output)
    assert (output / "stale.txt").exists()
    copy_checkpoint(single_checkpoint, output, force=True)
    assert not (output / "stale.txt").exists()
    assert (output / "model.safetensors").is_file()
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("relative", [".", "sub", "sub/deeper"])
def test_output_inside_input_refused(fresh_checkpoint, relative):
    source = fresh_checkpoint()
    before = snapshot(source)
    with pytest.raises(FlipGuardError, match="inside the input"):
        copy_checkpoint(source, source / relative, force=True)
    assert snapshot(source) == before


def test_output_containing_input_refused(fresh_checkpoint):
    source = fresh_checkpoint("nested/ckpt")
    before = snapshot(source)
    with pytest.raises(FlipGuardError, match="contains the input"):
        copy_checkpoint(source, source.parent, force=True)
    assert snapshot(source) == before


def test_stray_weight_files_are_not_copied(fresh_checkpoint, tmp_path):
    source = fresh_checkpoint()
    shutil.copy(source / "model.safetensors", source / "consolidated.safetensors")
    (source / "training_args.bin").write_bytes(b"not really a pickle")
    (source / "pytorch_model.bin").write_bytes(b"not really a pickle")
    with CheckpointWriter(tmp_path / "out", like=open_checkpoint(source)) as writer:
        for name, tensor in writer.like.iter_tensors():
            writer.write(name, tensor)
    skipped = sorted(p.as_posix() for p in writer.skipped_files)
    assert skipped == ["consolidated.safetensors", "pytorch_model.bin"]
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert "consolidated.safetensors" not in names and "pytorch_model.bin" not in names
    assert "training_args.bin" in names  # not a weight file name: copied like any companion file


def test_writer_rejects_layout_changes_and_incomplete_output(single_checkpoint, tmp_path):
    checkpoint = open_checkpoint(single_checkpoint)
    name = "model.layers.0.mlp.up_proj.weight"
    with pytest.raises(ValueError, match="layout"):
        with CheckpointWriter(tmp_path / "a", like=checkpoint) as writer:
            writer.write(name, checkpoint.get(name).to(torch.float16))
    with pytest.raises(ValueError, match="never written"):
        with CheckpointWriter(tmp_path / "b", like=checkpoint) as writer:
            writer.write(name, checkpoint.get(name))
    with pytest.raises(ValueError, match="already written"):
        with CheckpointWriter(tmp_path / "c", like=checkpoint) as writer:
            writer.write(name, checkpoint.get(name))
            writer.write(name, checkpoint.get(name))
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_write_file_adds_a_record_beside_the_weights(single_checkpoint, tmp_path):
    checkpoint = open_checkpoint(single_checkpoint)
    with CheckpointWriter(tmp_path / "out", like=checkpoint) as writer:
        for name, tensor in checkpoint.iter_tensors():
            writer.write(name, tensor)
        writer.write_file("flipguard.json", json.dumps({"defense": "none"}))
        with pytest.raises(ValueError):
            writer.write_file("model.safetensors", b"")
        with pytest.raises(ValueError):
            writer.write_file("../escape.txt", "x")
    assert json.loads((tmp_path / "out" / "flipguard.json").read_text()) == {"defense": "none"}
    assert not (tmp_path / "escape.txt").exists()


def test_hub_cache_snapshot_of_symlinks(fresh_checkpoint, tmp_path):
    """A hub cache snapshot links every file into ../../blobs; the output holds real files."""
    blobs = fresh_checkpoint("repo/blobs", shards=3)
    snapshot_dir = tmp_path / "repo" / "snapshots" / "abc123"
    snapshot_dir.mkdir(parents=True)
    for path in blobs.iterdir():
        (snapshot_dir / path.name).symlink_to(os.path.relpath(path, snapshot_dir))
    output = copy_checkpoint(snapshot_dir, tmp_path / "out")
    assert not any(path.is_symlink() for path in output.iterdir())
    assert _digests(snapshot(output)) == _digests(snapshot(blobs))


def test_force_replaces_a_file_at_the_output_path(single_checkpoint, tmp_path):
    (tmp_path / "out").write_text("a file, not a checkpoint")
    with pytest.raises(FlipGuardError, match="already exists"):
        copy_checkpoint(single_checkpoint, tmp_path / "out")
    copy_checkpoint(single_checkpoint, tmp_path / "out", force=True)
    assert (tmp_path / "out" / "model.safetensors").is_file()


def _copy_every_tensor_unchanged(source, output):
    checkpoint = open_checkpoint(source)
    with CheckpointWriter(output, like=checkpoint) as writer:
        for name in checkpoint.tensors:
            writer.copy_unchanged(name)
    return _digests(snapshot(output))


@pytest.mark.parametrize("kernel", ["copy_file_range", "refused", "copies nothing"])
def test_copy_unchanged_writes_the_same_bytes_file_to_file(sharded_checkpoint, tmp_path, monkeypatch, kernel):
    import errno

    import flipguard.checkpoint.writer as writer_module

    if kernel == "refused":  # e.g. across file systems on an older kernel: pread / pwrite instead
        def refuse(*args):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        monkeypatch.setattr(writer_module.os, "copy_file_range", refuse)
    elif kernel == "copies nothing":  # some file systems answer 0 bytes: pread decides
        monkeypatch.setattr(writer_module.os, "copy_file_range", lambda *args: 0)
    monkeypatch.setattr(writer_module, "COPY_CHUNK", 100)  # many chunks on the fallback path
    copied = _copy_every_tensor_unchanged(sharded_checkpoint, tmp_path / "out")
    assert copied == _digests(snapshot(sharded_checkpoint))


def test_copy_unchanged_refuses_a_truncated_source_and_passes_other_errors_on(fresh_checkpoint, tmp_path, monkeypatch):
    import errno

    import flipguard.checkpoint.writer as writer_module

    source = fresh_checkpoint()
    checkpoint = open_checkpoint(source)
    last = list(checkpoint.tensors)[-1]
    weights = source / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-10])  # after opening: the header still promises the bytes
    with pytest.raises(FlipGuardError, match="truncated"):
        with CheckpointWriter(tmp_path / "out", like=checkpoint) as writer:
            writer.copy_unchanged(last)
    assert not (tmp_path / "out").exists()
    first = list(checkpoint.tensors)[0]
    with pytest.raises(ValueError, match="already written"):
        with CheckpointWriter(tmp_path / "out", like=checkpoint) as writer:
            writer.copy_unchanged(first)
            writer.copy_unchanged(first)

    def full(*args):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(writer_module.os, "copy_file_range", full)  # a real failure is not a refusal
    with pytest.raises(OSError, match="No space"):
        with CheckpointWriter(tmp_path / "out", like=checkpoint) as writer:
            writer.copy_unchanged(first)
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []
