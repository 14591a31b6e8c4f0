"""Read ahead and write behind: a checkpoint's tensors through the caller's work, disk on two threads.

    with CheckpointWriter(out, like=checkpoint) as writer, TensorStream(checkpoint, writer=writer) as stream:
        for name, tensor in stream:          # in the order asked for (default: file order)
            work_on(name, tensor)            # in place
            stream.write(name, tensor)       # queued; written while the next tensor is worked on

One thread reads the next tensors while the caller works, another writes the finished ones (file
reads and writes release the GIL), so disk time hides behind compute instead of adding to it.
What is held at once -- tensors being read, worked on, or waiting to be written -- stays within
``budget`` bytes; a tensor larger than the budget waits until it is alone. The default: room for
``AHEAD`` tensors of the largest size streamed, but never more than the checkpoint's largest tensor
(what a one-at-a-time walk holds), and at least ``MIN_BUDGET``. Tensors passed through unchanged
(``copies``: an embedding, a norm) go file to file on the writer's thread and are never in memory,
so where the largest tensors are such copies (an LLM's embeddings) memory stays below the
one-at-a-time walk's. Output bytes do not depend on the timing: every tensor goes to its own byte
range.

An error on either thread (a truncated shard, a full disk) is raised in the caller's thread; when
the caller stops early (an exception, Ctrl-C) both threads stop after their current tensor and the
writer's temporary directory is removed as before.
"""

from __future__ import annotations

import collections
import queue
import threading
from collections.abc import Iterable, Iterator

import torch

from .checkpoint import Checkpoint
from .memory import release_freed_memory
from .writer import CheckpointWriter

MIN_BUDGET = 64 << 20  # bytes: a checkpoint of small tensors overlaps them however small its largest
AHEAD = 4  # tensors in flight at most: one read ahead, one worked on, two waiting to be written
TRIM_EVERY = 64 << 20  # bytes of written tensors between two hand-backs of freed memory (each costs ~ms)
_DONE = object()  # end of the write queue


class TensorStream:
    """Iterate ``(name, tensor)`` of ``checkpoint`` (``names`` in the order given, default every
    tensor in file order), read ahead on a background thread; with ``writer``, :meth:`write` hands
    tensors to a second thread, and each tensor's bytes count against the budget until it is
    written (write every tensor). ``copies``: tensors the writer's thread copies unchanged
    (:meth:`CheckpointWriter.copy_unchanged`: never in memory, not counted) whenever no written
    tensor waits, the rest after the last one. Use as a context manager; each tensor is a fresh
    CPU tensor in its stored dtype, the caller's to change in place."""

    def __init__(
        self,
        checkpoint: Checkpoint,
        names: Iterable[str] | None = None,
        writer: CheckpointWriter | None = None,
        budget: int | None = None,
        copies: Iterable[str] = (),
    ):
        self.checkpoint = checkpoint
        self.names = list(checkpoint.tensors if names is None else names)
        self.size = {n: _nbytes(checkpoint, n) for n in self.names}
        self.copies = list(copies)  # written unchanged, file to file, by the writer's thread
        streamed = max(self.size.values(), default=0)
        largest = max([streamed] + [_nbytes(checkpoint, n) for n in self.copies])
        self.budget = max(MIN_BUDGET, min(AHEAD * streamed, largest)) if budget is None else budget
        self.writer = writer
        if self.copies and writer is None:
            raise ValueError("copies need a writer")
        self._held = 0  # bytes of tensors read and not yet released
        self._freed = 0  # bytes written and freed since memory was last handed back
        self._room = threading.Condition()
        self._stop = False  # the reader reads nothing more
        self._abort = False  # the writer writes nothing more (the output will be thrown away)
        self._error: BaseException | None = None  # the first failure on either thread
        self._ready: queue.Queue = queue.Queue()  # read tensors, or the reader's exception
        self._pending: queue.Queue = queue.Queue()  # tensors to write, then _DONE
        self._threads: list[threading.Thread] = []

    def __enter__(self) -> TensorStream:
        self._start(self._read_all, "flipguard-read")
        if self.writer is not None:
            self._start(self._write_all, "flipguard-write")
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        self._halt(abort=exc_type is not None)  # queued writes still land unless the caller failed
        self._pending.put(_DONE)
        for thread in self._threads:
            thread.join()
        if exc_type is None and self._error is not None:
            raise self._error

    def __iter__(self) -> Iterator[tuple[str, torch.Tensor]]:
        for name in self.names:
            item = self._ready.get()
            if isinstance(item, BaseException):
                raise item
            if item[0] != name:  # pragma: no cover - the reader walks self.names in order
                raise RuntimeError(f"read {item[0]!r} where {name!r} was due")
            yield item
            del item  # the caller's reference is the only one left
            if self.writer is None:
                self._release(self.size[name])

    def write(self, name: str, tensor: torch.Tensor) -> None:
        """Queue ``tensor`` to be written as ``name``; raises a failure of an earlier write here."""
        if self.writer is None:
            raise RuntimeError("this TensorStream has no writer")
        if self._error is not None:
            raise self._error
        self._pending.put((name, tensor))

    def _start(self, target, label: str) -> None:
        thread = threading.Thread(target=target, name=label, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _read_all(self) -> None:
        try:
            for name in self.names:
                with self._room:
                    while not self._stop and self._held and self._held + self.size[name] > self.budget:
                        self._room.wait()
                    if self._stop:
                        break
                    self._held += self.size[name]
                self._ready.put((name, self.checkpoint.get(name)))
        except BaseException as error:  # handed to the caller's thread, raised there
            self._fail(error)
        if self._stop:  # a caller still iterating gets the failure instead of waiting for ever
            self._ready.put(self._error or RuntimeError("the tensor stream was closed"))

    def _write_all(self) -> None:
        copies = collections.deque(self.copies)
        while True:
            try:  # the caller's tensors first (they hold the budget); copies while none waits
                item = self._pending.get(block=not copies or self._abort)
            except queue.Empty:
                self._copy(copies.popleft())
                continue
            if item is _DONE:
                break
            self._write(*item)
            del item
        while copies and not self._abort:  # the caller is done: what is left to copy
            self._copy(copies.popleft())

    def _copy(self, name: str) -> None:
        try:
            if not self._abort:
                self.writer.copy_unchanged(name)
        except BaseException as error:  # raised in the caller's thread at its next write or exit
            self._fail(error)

    def _write(self, name: str, tensor: torch.Tensor) -> None:
        try:
            if not self._abort:
                self.writer.write(name, tensor)
        except BaseException as error:  # raised in the caller's thread at its next write or exit
            self._fail(error)
        finally:
            del tensor
            self._freed += self.size[name]
            if self._freed >= TRIM_EVERY:  # before the budget lets the reader allocate again
                release_freed_memory()
                self._freed = 0
            self._release(self.size[name])

    def _release(self, nbytes: int) -> None:
        with self._room:
            self._held -= nbytes
            self._room.notify_all()

    def _fail(self, error: BaseException) -> None:
        with self._room:
            if self._error is None:
                self._error = error
        self._halt(abort=True)

    def _halt(self, abort: bool) -> None:
        with self._room:
            self._stop = True
            self._abort = self._abort or abort
            self._room.notify_all()


def _nbytes(checkpoint: Checkpoint, name: str) -> int:
    begin, end = checkpoint.info(name).data_offsets
    return end - begin
