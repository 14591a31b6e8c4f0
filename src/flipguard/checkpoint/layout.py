"""Which files of a Hugging Face model directory hold the weights, and in which layout.

A directory holds either one ``model.safetensors`` or shards listed by
``model.safetensors.index.json`` (``{"metadata": {"total_size": bytes}, "weight_map": {tensor:
shard}}``). Every other file (config, tokenizer, chat template, README) is a *companion* file
that a writer copies unchanged. Weight files in other formats (pickle, GGUF, stray safetensors
such as Mistral's ``consolidated.safetensors``) are never read and never copied: copying them
would carry the untransformed weights into the output.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import Path

from flipguard.errors import FlipGuardError

from .files import MAX_NAME_CHARS, MAX_PATH_CHARS, described, file_kind, require_regular_file, short
from .jsonfile import read_json_file

SINGLE_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
CONFIG_FILE = "config.json"

# Pickle-based weights: loading them can run arbitrary code, so FlipGuard refuses them.
PICKLE_PATTERNS = ("pytorch_model*.bin", "*.pt", "*.pth", "*.ckpt", "pytorch_model.bin.index.json")
# Weights in formats FlipGuard does not rewrite; a writer leaves them out of the output.
OTHER_WEIGHT_PATTERNS = (
    "*.safetensors",
    "*.safetensors.index.json",
    "*.gguf",
    "*.msgpack",
    "*.msgpack.index.json",
    "*.h5",
    "*.onnx",
    "*.onnx_data",
)
# Directories that are tool state, not part of the model.
IGNORED_DIRS = (".git", ".cache")
MAX_INDEX_BYTES = 64 << 20  # bytes; a 1,000-layer model's index is a few MB
INDEX_FIX = "download or save that file again"


@dataclass(frozen=True)
class WeightLayout:
    """Where the weights of a checkpoint live.

    ``shards`` are file names relative to the directory, sorted by name (one entry for a
    single-file checkpoint). ``weight_map`` and ``index_metadata`` are ``None`` without an index.
    """

    shards: list[str]
    weight_map: dict[str, str] | None = None
    index_metadata: dict | None = field(default=None)

    @property
    def is_sharded(self) -> bool:
        return self.weight_map is not None


def find_weight_layout(directory: Path) -> WeightLayout:
    """Locate the safetensors weights of ``directory``; raise FlipGuardError when there are none.

    Neither the index nor a shard is opened unless it is a regular file (a FIFO would block the
    read, a device never end it); a shard must be named inside ``directory``."""
    for name in (INDEX_FILE, SINGLE_FILE):
        if _present(directory / name):
            require_regular_file(directory / name, f"replace it with the {name} of the model")
            return _read_index(directory) if name == INDEX_FILE else WeightLayout(shards=[SINGLE_FILE])
    _refuse_without_safetensors(directory)
    raise AssertionError("unreachable")  # pragma: no cover


def _present(path: Path) -> bool:
    return path.exists() or path.is_symlink() or file_kind(path) == "symlink loop"


def _read_index(directory: Path) -> WeightLayout:
    path = directory / INDEX_FILE
    index = read_json_file(path, MAX_INDEX_BYTES, INDEX_FIX, invalid="is not a valid index, not even JSON")
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict):
        raise FlipGuardError(
            f"{path} is not a valid index (it needs a JSON object with a 'weight_map'); {INDEX_FIX}."
        )
    if not weight_map:
        raise FlipGuardError(f"{path} lists no tensors in its 'weight_map'; {INDEX_FIX}.")
    for name, shard in weight_map.items():
        if not isinstance(shard, str):
            raise FlipGuardError(
                f"{path} gives tensor {short(repr(name), 80)} the shard {short(repr(shard), 40)}, which is not a "
                f"file name; {INDEX_FIX}."
            )
    shards = sorted(set(weight_map.values()))
    for shard in shards:
        _check_shard_path(directory, shard)
    metadata = index.get("metadata")
    return WeightLayout(shards=shards, weight_map=dict(weight_map),
                        index_metadata=metadata if isinstance(metadata, dict) else {})


def _check_shard_path(directory: Path, shard: str) -> None:
    """A shard must be named relative to the directory, without "..": shards may be symlinks
    (a hub cache snapshot links into ``blobs/``), so the check is on the name, not the target.
    The name is checked before the file system sees it, then the file must be a regular file."""
    index = directory / INDEX_FILE
    parts = Path(shard).parts
    if not parts or Path(shard).is_absolute() or ".." in parts or shard.startswith("~"):
        raise FlipGuardError(
            f"{index} points at {short(repr(shard), 80)}, outside the checkpoint directory; "
            "use an index whose shards sit inside the directory."
        )
    bad = _bad_shard_name(shard)
    if bad:
        raise FlipGuardError(f"{index} lists shard {short(repr(shard), 80)}, {bad}; {INDEX_FIX}.")
    kind = file_kind(directory / shard)
    if kind == "missing":
        raise FlipGuardError(
            f"{index} lists shard {short(repr(shard), 80)}, which is missing; "
            "download the missing shard or the whole checkpoint again."
        )
    if kind != "file":
        raise FlipGuardError(
            f"{index} lists shard {short(repr(shard), 80)}, which is {described(kind)}, not a regular file; "
            "download that shard again."
        )


def _bad_shard_name(shard: str) -> str | None:
    """What makes ``shard`` no safetensors file name, or None."""
    if any(ord(c) < 32 for c in shard):
        return "whose name holds a control character"
    if len(shard) > MAX_PATH_CHARS or any(len(part.encode()) > MAX_NAME_CHARS for part in shard.split("/")):
        return "whose name is longer than a file name can be"
    if not shard.endswith(".safetensors") or shard.endswith("/"):
        return "which is not a .safetensors file name"
    return None


def _refuse_without_safetensors(directory: Path) -> None:
    pickles = sorted(p.name for p in directory.iterdir() if matches(p.name, PICKLE_PATTERNS))
    if pickles:
        raise FlipGuardError(
            f"{directory} holds only pickle weights ({', '.join(pickles)}), which FlipGuard refuses "
            "because unpickling can run code; in a trusted sandbox load them with "
            "torch.load(weights_only=True) or from_pretrained, then save_pretrained(...) to safetensors."
        )
    stray = sorted(p.name for p in directory.glob("*.safetensors"))
    if stray:
        raise FlipGuardError(
            f"{directory} has {', '.join(stray)} but neither {SINGLE_FILE} nor {INDEX_FILE}; "
            f"add the index file or save the model again with save_pretrained."
        )
    raise FlipGuardError(
        f"{directory} holds no weights ({SINGLE_FILE} or {INDEX_FILE}); "
        "point FlipGuard at a Hugging Face model directory saved with safetensors."
    )


def matches(name: str, patterns: tuple[str, ...]) -> bool:
    """True when the file name ``name`` matches one of the glob ``patterns``."""
    return any(fnmatch.fnmatch(name, pattern) for pattern in patterns)


Entries = list[tuple[Path, str]]  # (relative path, file kind), as :func:`entries` lists them


def companion_files(directory: Path, found: Entries | None = None) -> list[Path]:
    """Files (relative paths) a writer copies unchanged: everything that is not a weight file.

    Walks subdirectories too (e.g. ``original/params.json``), skipping ``.git`` and ``.cache``;
    follows symlinks to files (a hub cache snapshot links into ``blobs/``). Raises FlipGuardError
    for a companion that cannot be copied -- a FIFO, socket or device, a dangling symlink or a
    symlink loop, a symlink to a folder -- rather than leave it out of the output unsaid.
    ``found``: the directory's :func:`entries`, when the caller has them already.
    """
    weights = PICKLE_PATTERNS + OTHER_WEIGHT_PATTERNS
    files = []
    for relative, kind in entries(directory) if found is None else found:
        if kind == "folder" or matches(relative.name, weights):
            continue
        if kind != "file":
            raise FlipGuardError(_cannot_copy(directory / relative, kind))
        files.append(relative)
    return files


def companion_folders(directory: Path, found: Entries | None = None) -> list[Path]:
    """Every folder under ``directory`` (relative, parents first), so that a writer can keep
    empty ones too; ``.git`` and ``.cache`` are left out."""
    return [relative for relative, kind in (entries(directory) if found is None else found) if kind == "folder"]


def skipped_weight_files(directory: Path, layout: WeightLayout, found: Entries | None = None) -> list[Path]:
    """Weight files (relative paths) outside ``layout``: never read, and left out of an output."""
    used = set(layout.shards) | ({INDEX_FILE} if layout.is_sharded else set())
    weights = PICKLE_PATTERNS + OTHER_WEIGHT_PATTERNS
    return [
        relative
        for relative, kind in (entries(directory) if found is None else found)
        if kind != "folder" and matches(relative.name, weights) and relative.as_posix() not in used
    ]


def entries(directory: Path) -> Entries:
    """Every entry under ``directory`` with its :func:`~flipguard.checkpoint.files.file_kind`,
    relative, sorted, each folder before its content; ``.git`` and ``.cache`` are left out.
    Folders are walked without recursion (a deep tree cannot exhaust the stack) on plain strings
    (a ``Path`` joins in time proportional to its depth); a symlink to a folder is not followed
    (it could loop, or lead anywhere) and has the kind ``"folder symlink"``."""
    root = str(directory)
    found: list[tuple[str, str]] = []
    pending = [""]
    while pending:
        folder = pending.pop()
        where = os.path.join(root, folder) if folder else root
        try:
            names = sorted(os.listdir(where))
        except OSError as err:
            raise FlipGuardError(
                f"{short(where)} cannot be listed ({err.strerror}); make it readable or remove it."
            ) from err
        below = []
        for name in names:
            if name in IGNORED_DIRS:
                continue
            relative = f"{folder}/{name}" if folder else name
            full = os.path.join(where, name)
            kind = file_kind(full)
            if kind == "folder" and os.path.islink(full):
                kind = "folder symlink"
            found.append((relative, kind))
            if kind == "folder":
                below.append(relative)
        pending.extend(reversed(below))
    found.sort(key=lambda entry: entry[0].split("/"))
    return [(Path(relative), kind) for relative, kind in found]


def _cannot_copy(path: Path, kind: str) -> str:
    if kind == "folder symlink":
        return (
            f"{short(str(path))} is a symlink to a folder, which FlipGuard does not follow (it may loop or lead "
            "out of the checkpoint); replace it with a copy of the folder or remove it."
        )
    return (
        f"{short(str(path))} is {described(kind)}, which cannot be copied into the output; "
        "replace it with a regular file or remove it."
    )
