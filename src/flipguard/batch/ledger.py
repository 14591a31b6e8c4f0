"""The output folder of a batch: one result line per checkpoint, written once, never torn.

    <out>/results.jsonl        one JSON object per line, one line per (checkpoint, job) key
    <out>/summary.json         the last run's summary (written whole: temporary file renamed)
    <out>/reports/<name>.json  a scan's full JSON report, as `flipguard scan -f json` writes it
    <out>/defended/<name>/     a defended checkpoint, as `flipguard defend -o` writes it

Only the driver (the process that runs the batch) writes here, apart from the defended
checkpoints, which ``defend_checkpoint`` writes atomically itself. Each result line is appended
with one ``os.write`` on an ``O_APPEND`` descriptor, after its report file is in place; a line
torn by a crash mid-write is skipped when read, and the next line starts on a fresh one. A
driver takes an exclusive lock on ``<out>/.lock`` for the length of a batch, so two batches
never write one folder at once.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from flipguard.errors import FlipGuardError

RESULTS_FILE = "results.jsonl"
SUMMARY_FILE = "summary.json"
LOCK_FILE = ".lock"


class Ledger:
    """``<out>/results.jsonl``: the results already there (by key), and appending new ones."""

    def __init__(self, out: Path):
        self.path = out / RESULTS_FILE
        self.done: dict[str, dict] = dict(read_results(self.path))

    def append(self, line: dict) -> bool:
        """Append ``line`` (a dict with a ``"key"``) unless its key is already there; True if
        written. One ``os.write`` of the whole line on an ``O_APPEND`` descriptor."""
        if line["key"] in self.done:
            return False
        data = (json.dumps(line, sort_keys=True) + "\n").encode()
        fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)  # read: its last byte
        try:
            if _ends_mid_line(fd):
                data = b"\n" + data  # a torn line from a crash: start this one on its own line
            if os.write(fd, data) != len(data):
                raise FlipGuardError(f"{self.path}: a result line could not be written whole; is the disk full?")
        finally:
            os.close(fd)
        self.done[line["key"]] = line
        return True


def read_results(path: Path) -> Iterator[tuple[str, dict]]:
    """``(key, line)`` for every whole line of ``path`` (none when it does not exist); a line
    that is not a JSON object with a key (torn by a crash) is skipped. The first line of a key wins."""
    if not path.is_file():
        return
    seen = set()
    with open(path, "rb") as handle:
        for raw in handle:
            try:
                line = json.loads(raw)
            except ValueError:
                continue
            if isinstance(line, dict) and isinstance(line.get("key"), str) and line["key"] not in seen:
                seen.add(line["key"])
                yield line["key"], line


def _ends_mid_line(fd: int) -> bool:
    size = os.fstat(fd).st_size
    return size > 0 and os.pread(fd, 1, size - 1) != b"\n"


@contextmanager
def locked(out: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``<out>/.lock``; FlipGuardError when another batch holds it."""
    out.mkdir(parents=True, exist_ok=True)
    fd = os.open(out / LOCK_FILE, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FlipGuardError(
                f"another batch is writing to {out}; wait for it to finish or choose another output folder."
            ) from None
        yield
    finally:
        os.close(fd)
