"""The checkpoints of a batch: each input resolved to a directory, fingerprinted and named.

An input is a local model directory, or a Hugging Face repo id (``org/name``, optionally
``org/name@revision``) found in the local hub cache (``HF_HUB_CACHE``; nothing is downloaded).
An input that resolves to nothing is an :class:`Item` with its ``error`` sentence, not an
exception: the batch reports it and goes on.

The fingerprint says whether a checkpoint changed since a result was made, without reading its
weights: every file's name, size and modification time (in nanoseconds) and each safetensors
file's header bytes (names, dtypes, shapes, offsets). Any rewrite of a file (save_pretrained,
a copy, a new download) changes it; the hub cache's files are named by their content hash, so
a new revision is a new directory altogether.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from flipguard.errors import FlipGuardError
from flipguard.hub import is_repo_id, resolve_checkpoint

MAX_HEADER = 100_000_000  # bytes: safetensors refuses larger headers; read no more than this
SKIPPED_DIRS = (".git", ".cache")


@dataclass(frozen=True)
class Item:
    """One input of a batch. ``path``: the checkpoint directory, absolute (None when it could not
    be resolved: then ``error`` says why, in one sentence). ``fingerprint``: see the module
    docstring (None when unresolved). ``name``: a file-name-safe name, unique per path, for the
    item's outputs."""

    input: str
    path: str | None
    fingerprint: str | None
    name: str
    error: str | None = None

    def key(self, job_hash: str) -> str:
        """What a result is filed under: SHA-256 (24 hex digits) of path, fingerprint and job."""
        text = f"{self.path or self.input}\0{self.fingerprint}\0{job_hash}"
        return hashlib.sha256(text.encode()).hexdigest()[:24]


def resolve_inputs(inputs: list[str]) -> list[Item]:
    """Resolve each input (a directory, or a repo id in the local Hugging Face cache) to an Item."""
    return [resolve_input(str(text)) for text in inputs]


def resolve_input(text: str) -> Item:
    """One input as an :class:`Item` (never raises for a bad input: the Item carries the error)."""
    path = Path(text).expanduser()
    if path.is_dir():
        return _item(text, path.resolve(), path.resolve().name)
    if path.exists():
        return _unresolved(text, f"{text} is a file, not a directory; pass the model directory that holds "
                                 f"config.json and model.safetensors (here probably {path.parent}).")
    if not is_repo_id(text):
        return _unresolved(text, f"{text} does not exist; pass the directory of a Hugging Face model or a "
                                 "repo id (org/name) in the local Hugging Face cache.")
    found = _from_hub_cache(text)
    repo_name = text.replace("/", "--")  # as the hub cache names it (models--org--name), @revision kept
    return _item(text, found, repo_name) if isinstance(found, Path) else _unresolved(text, found)


def _from_hub_cache(text: str) -> Path | str:
    """The snapshot directory of repo id ``text`` (``org/name[@revision]``) in the local hub
    cache, or the sentence saying why there is none (nothing is downloaded)."""
    try:
        return resolve_checkpoint(text, local_files_only=True)
    except FlipGuardError as error:
        return str(error)


def _item(text: str, path: Path, base: str) -> Item:
    try:
        fingerprint = fingerprint_directory(path)
    except OSError as error:
        return _unresolved(text, f"{path} cannot be read ({error.strerror or error}); check its permissions.")
    return Item(input=text, path=str(path), fingerprint=fingerprint, name=safe_name(base, str(path)))


def _unresolved(text: str, error: str) -> Item:
    return Item(input=text, path=None, fingerprint=None, name=safe_name(text, text), error=error)


def safe_name(base: str, unique: str) -> str:
    """A file-name-safe name: ``base`` (a directory's name, or ``org--name`` for a repo id) with
    odd characters replaced, then 8 hex digits of ``unique`` (the resolved path: two folders
    both called ``model`` get two names)."""
    base = re.sub(r"[^\w.-]+", "_", base).strip("._") or "checkpoint"
    return f"{base[:80]}-{hashlib.sha256(unique.encode()).hexdigest()[:8]}"


def fingerprint_directory(path: Path) -> str:
    """``sha256:<hex>`` over every file's relative name, size and mtime (ns), and each
    ``.safetensors`` file's header bytes; raises OSError when the directory cannot be read."""
    entries = []
    for root, dirs, files in os.walk(path):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS)
        for file in sorted(files):
            full = Path(root) / file
            try:
                stat = full.stat()  # follows the hub cache's symlinks to their blobs
            except FileNotFoundError:  # a dangling link: its name still counts
                entries.append([str(full.relative_to(path)), None, None, None])
                continue
            header = _header_digest(full) if file.endswith(".safetensors") else None
            entries.append([str(full.relative_to(path)), stat.st_size, stat.st_mtime_ns, header])
    return "sha256:" + hashlib.sha256(json.dumps(entries).encode()).hexdigest()


def _header_digest(file: Path) -> str:
    """SHA-256 of a safetensors file's length prefix and header (whatever bytes are there: a
    damaged file still gets a fingerprint, and the task reports what is wrong with it)."""
    with open(file, "rb") as handle:
        prefix = handle.read(8)
        length = struct.unpack("<Q", prefix)[0] if len(prefix) == 8 else 0
        return hashlib.sha256(prefix + handle.read(min(length, MAX_HEADER))).hexdigest()
