"""TensorStream: read ahead, write behind, within a byte budget; failures reach the caller's thread."""

import threading

import pytest
import torch

from flipguard.checkpoint import CheckpointWriter, TensorStream, open_checkpoint
from flipguard.errors import FlipGuardError

from .conftest import leftovers, snapshot


class Recorder:
    """A checkpoint and a writer that log, in one list, when each read and each write happens."""

    def __init__(self, checkpoint, fail_read=None, fail_write=None):
        self.checkpoint, self.events, self.lock = checkpoint, [], threading.Lock()
        self.tensors, self.fail_read, self.fail_write = checkpoint.tensors, fail_read, fail_write

    def info(self, name):
        return self.checkpoint.info(name)

    def get(self, name):
        self._log("read", name)
        if name == self.fail_read:
            raise FlipGuardError(f"{name} is truncated")
        return self.checkpoint.get(name)

    def write(self, name, tensor):
        if name == self.fail_write:
            raise OSError("No space left on device")
        self._log("wrote", name)

    def copy_unchanged(self, name):
        if name == self.fail_write:
            raise OSError("No space left on device")
        self._log("copied", name)

    def _log(self, what, name):
        with self.lock:
            self.events.append((what, name))


def _nbytes(checkpoint, name):
    begin, end = checkpoint.info(name).data_offsets
    return end - begin


@pytest.mark.parametrize("fixture", ["single_checkpoint", "sharded_checkpoint"])
@pytest.mark.parametrize("budget", [1, None])
def test_stream_through_writer_is_a_byte_identical_copy(fixture, budget, request, tmp_path):
    source = request.getfixturevalue(fixture)
    checkpoint = open_checkpoint(source)
    seen = []
    with CheckpointWriter(tmp_path / "out", like=checkpoint) as writer, \
            TensorStream(checkpoint, writer=writer, budget=budget) as stream:
        for name, tensor in stream:
            seen.append(name)
            assert torch.equal(tensor, checkpoint.get(name))
            stream.write(name, tensor)
    assert seen == list(checkpoint.tensors)  # file order
    weights = [f for f in snapshot(source) if f.endswith(".safetensors")]
    assert {f: snapshot(source)[f][0] for f in weights} == {f: snapshot(tmp_path / "out")[f][0] for f in weights}
    assert leftovers(tmp_path) == []


def test_a_budget_of_one_byte_reads_each_tensor_only_after_the_last_was_written(single_checkpoint):
    fake = Recorder(open_checkpoint(single_checkpoint))
    with TensorStream(fake, writer=fake, budget=1) as stream:
        for name, tensor in stream:
            stream.write(name, tensor)
    names = list(fake.tensors)
    assert fake.events == [(what, n) for n in names for what in ("read", "wrote")]


def test_the_budget_bounds_the_bytes_held_at_once(single_checkpoint):
    checkpoint = open_checkpoint(single_checkpoint)
    sizes = {n: _nbytes(checkpoint, n) for n in checkpoint.tensors}
    budget = max(sizes.values()) * 2
    fake = Recorder(checkpoint)
    with TensorStream(fake, writer=fake, budget=budget) as stream:
        for name, tensor in stream:
            stream.write(name, tensor)
    held, most = 0, 0
    for what, name in fake.events:  # a tensor is held from before its read until after its write
        held += sizes[name] if what == "read" else -sizes[name]
        most = max(most, held)
    assert 0 < most <= budget
    assert held == 0


def test_without_a_writer_it_reads_ahead_and_releases_on_the_next_step(single_checkpoint):
    checkpoint = open_checkpoint(single_checkpoint)
    wanted = list(checkpoint.tensors)[::2]
    with TensorStream(checkpoint, names=wanted) as stream:
        got = [(name, tensor.clone()) for name, tensor in stream]
        with pytest.raises(RuntimeError, match="no writer"):
            stream.write(*got[0])
    assert [n for n, _ in got] == wanted
    assert all(torch.equal(t, checkpoint.get(n)) for n, t in got)


def test_a_read_failure_is_raised_in_the_callers_thread(single_checkpoint, tmp_path):
    checkpoint = open_checkpoint(single_checkpoint)
    bad = list(checkpoint.tensors)[3]
    fake = Recorder(checkpoint, fail_read=bad)
    with pytest.raises(FlipGuardError, match="truncated"):
        with TensorStream(fake, writer=fake) as stream:
            for name, tensor in stream:
                stream.write(name, tensor)
    assert ("read", bad) in fake.events
    assert not [t for t in threading.enumerate() if t.name.startswith("flipguard-")]


def test_a_write_failure_is_raised_in_the_callers_thread_and_nothing_appears(single_checkpoint, tmp_path):
    checkpoint = open_checkpoint(single_checkpoint)

    class FullDisk(CheckpointWriter):
        def write(self, name, tensor):
            raise OSError("No space left on device")

    with pytest.raises(OSError, match="No space"):
        with FullDisk(tmp_path / "out", like=checkpoint) as writer, TensorStream(checkpoint, writer=writer) as stream:
            for name, tensor in stream:
                stream.write(name, tensor)
    assert not (tmp_path / "out").exists()
    assert leftovers(tmp_path) == []
    assert not [t for t in threading.enumerate() if t.name.startswith("flipguard-")]


@pytest.mark.parametrize("last", [False, True])
def test_a_write_failure_of_any_tensor_is_raised_even_the_last(single_checkpoint, last):
    checkpoint = open_checkpoint(single_checkpoint)
    names = list(checkpoint.tensors)
    fake = Recorder(checkpoint, fail_write=names[-1] if last else names[1])
    with pytest.raises(OSError, match="No space"):
        with TensorStream(fake, writer=fake) as stream:
            for name, tensor in stream:
                stream.write(name, tensor)


class Stop(Exception):
    pass


@pytest.mark.parametrize("how", ["raise", "break"])
def test_a_caller_that_stops_early_leaves_no_thread_behind(single_checkpoint, how):
    fake = Recorder(open_checkpoint(single_checkpoint))
    try:
        with TensorStream(fake, writer=fake, budget=1) as stream:
            for i, (name, tensor) in enumerate(stream):
                if i == 2:
                    if how == "raise":
                        raise Stop
                    break
                stream.write(name, tensor)
    except Stop:
        pass
    assert not [t for t in threading.enumerate() if t.name.startswith("flipguard-")]
    assert len([e for e in fake.events if e[0] == "read"]) == 3  # budget 1: nothing read past the stop
    assert [e for e in fake.events if e[0] == "wrote"] == [("wrote", n) for n in list(fake.tensors)[:2]]


def test_copies_go_file_to_file_and_are_never_read(single_checkpoint, tmp_path):
    checkpoint = open_checkpoint(single_checkpoint)
    names = list(checkpoint.tensors)
    worked, copied = names[1::2], names[0::2]
    fake = Recorder(checkpoint)
    with TensorStream(fake, names=worked, writer=fake, copies=copied, budget=1) as stream:
        for name, tensor in stream:
            stream.write(name, tensor)
    assert [n for what, n in fake.events if what == "read"] == worked
    assert [n for what, n in fake.events if what == "copied"] == copied
    assert [n for what, n in fake.events if what == "wrote"] == worked
    # and for real: half defended-style writes, half copies, the same bytes as the input
    with CheckpointWriter(tmp_path / "out", like=checkpoint) as writer, \
            TensorStream(checkpoint, names=worked, writer=writer, copies=copied) as stream:
        for name, tensor in stream:
            stream.write(name, tensor)
    assert snapshot(tmp_path / "out")["model.safetensors"][0] == snapshot(single_checkpoint)["model.safetensors"][0]
    with pytest.raises(ValueError, match="need a writer"):
        TensorStream(checkpoint, copies=copied)


def test_a_copy_failure_is_raised_in_the_callers_thread(single_checkpoint):
    checkpoint = open_checkpoint(single_checkpoint)
    names = list(checkpoint.tensors)
    fake = Recorder(checkpoint, fail_write=names[0])
    with pytest.raises(OSError, match="No space"):
        with TensorStream(fake, names=names[1:], writer=fake, copies=names[:1]) as stream:
            for name, tensor in stream:
                stream.write(name, tensor)
    assert not [t for t in threading.enumerate() if t.name.startswith("flipguard-")]


def test_the_default_budget_holds_a_few_streamed_tensors_and_never_more_than_the_largest(single_checkpoint,
                                                                                         monkeypatch):
    import flipguard.checkpoint.pipeline as pipeline

    checkpoint = open_checkpoint(single_checkpoint)
    size = {n: _nbytes(checkpoint, n) for n in checkpoint.tensors}
    largest = max(size, key=size.get)
    small = [n for n in size if size[n] * pipeline.AHEAD < size[largest]]
    monkeypatch.setattr(pipeline, "MIN_BUDGET", 1)
    fake = Recorder(checkpoint)
    # the largest tensor copied, small ones streamed: room for AHEAD of the streamed ones
    assert TensorStream(fake, names=small, writer=fake, copies=[largest]).budget == \
        pipeline.AHEAD * max(size[n] for n in small)
    # every tensor streamed: never more than the largest (what a one-at-a-time walk holds)
    assert TensorStream(fake, writer=fake).budget == size[largest]
    monkeypatch.setattr(pipeline, "MIN_BUDGET", 1 << 30)
    assert TensorStream(fake, writer=fake).budget == 1 << 30  # small checkpoints overlap freely
