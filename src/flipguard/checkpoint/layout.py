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
import json
from dataclasses import dataclass, field
from pathlib import Path

from flipguard.errors import FlipGuardError

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
    """Locate the safetensors weights of ``directory``; raise FlipGuardError when there are none."""
    if (directory / INDEX_FILE).is_file():
        return _read_index(directory)
    if (directory / SINGLE_FILE).is_file():
        return WeightLayout(shards=[SINGLE_FILE])
    _refuse_without_safetensors(directory)
    raise AssertionError("unreachable")  # pragma: no cover


def _read_index(directory: Path) -> WeightLayout:
    path = directory / INDEX_FILE
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
        weight_map = {str(name): str(shard) for name, shard in index["weight_map"].items()}
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise FlipGuardError(
            f"{path} is not a valid index (it needs a JSON object with a 'weight_map'); "
            "download or save that file again."
        ) from err
    shards = sorted(set(weight_map.values()))
    for shard in shards:
        _check_shard_path(directory, shard)
    return WeightLayout(shards=shards, weight_map=weight_map, index_metadata=index.get("metadata") or {})


def _check_shard_path(directory: Path, shard: str) -> None:
    """A shard must be named relative to the directory, without "..": shards may be symlinks
    (a hub cache snapshot links into ``blobs/``), so the check is on the name, not the target."""
    parts = Path(shard).parts
    if not parts or Path(shard).is_absolute() or ".." in parts:
        raise FlipGuardError(
            f"{directory / INDEX_FILE} points at {shard!r}, outside the checkpoint directory; "
            "use an index whose shards sit inside the directory."
        )
    if not (directory / shard).is_file():
        raise FlipGuardError(
            f"{directory / INDEX_FILE} lists shard {shard!r}, which is missing; "
            "download the missing shard or the whole checkpoint again."
        )


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


def companion_files(directory: Path) -> list[Path]:
    """Files (relative paths) a writer copies unchanged: everything that is not a weight file.

    Walks subdirectories too (e.g. ``original/params.json``), skipping ``.git`` and ``.cache``.
    """
    weights = PICKLE_PATTERNS + OTHER_WEIGHT_PATTERNS
    return [relative for relative in _files(directory) if not matches(relative.name, weights)]


def skipped_weight_files(directory: Path, layout: WeightLayout) -> list[Path]:
    """Weight files (relative paths) outside ``layout``: never read, and left out of an output."""
    used = set(layout.shards) | ({INDEX_FILE} if layout.is_sharded else set())
    weights = PICKLE_PATTERNS + OTHER_WEIGHT_PATTERNS
    return [
        relative
        for relative in _files(directory)
        if matches(relative.name, weights) and relative.as_posix() not in used
    ]


def _files(directory: Path) -> list[Path]:
    """Every file under ``directory`` (following symlinks, as in a hub cache snapshot), relative."""
    found = []
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory)
        if path.is_file() and not any(part in IGNORED_DIRS for part in relative.parts):
            found.append(relative)
    return found
