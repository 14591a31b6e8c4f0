"""A cache of what a model skeleton says about a checkpoint, so the skeleton is built once.

Which tensors bitsandbytes quantizes depends on config.json, the names of the stored tensors,
the skip list, and the transformers code that builds the model; the skeleton built to learn it
costs seconds (most of it importing the architecture's modeling code). The answer -- the
targets, and the shape the config gives each stored parameter -- is kept in
``$XDG_CACHE_HOME/flipguard/targets/<key>.json`` (default ``~/.cache/...``), one file per key:

    key = sha256(cache format, the code of this package's targets modules, the transformers
                 version, config.json as parsed (keys sorted), the tensor names, the skip list)

Entries are written atomically (a temporary file renamed into place) and are never trusted
blindly: an entry that cannot be read, parsed, or that does not describe this checkpoint's
tensors is ignored and rebuilt. A cache that cannot be written is skipped. Tensor shapes and
dtypes are not in the key: they are checked against the entry on every run.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

FORMAT = 1  # bump when an entry's meaning changes
_CODE_FILES = ("targets.py", "targets_cache.py")


@dataclass
class Entry:
    """``targets``: (tensor name, module name, transposed) in module order; ``shapes``: stored
    tensor name -> the shape of the parameter it loads into."""

    targets: list[tuple[str, str, bool]]
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/flipguard/targets``, or ``~/.cache/flipguard/targets``."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "flipguard" / "targets"


def key(config: dict, tensor_names: list[str], skip_modules: list[str] | None, transformers_version: str) -> str:
    """The hex digest an entry is stored under (see the module docstring for what goes in)."""
    digest = hashlib.sha256()
    digest.update(f"flipguard-targets {FORMAT}\n".encode())
    here = Path(__file__).parent
    for name in _CODE_FILES:
        digest.update(hashlib.sha256((here / name).read_bytes()).digest())
    material = {
        "transformers": transformers_version,
        "config": config,
        "tensors": sorted(tensor_names),
        "skip_modules": skip_modules,
    }
    digest.update(json.dumps(material, sort_keys=True, separators=(",", ":"), allow_nan=False).encode())
    return digest.hexdigest()


def load(digest: str, tensors) -> Entry | None:
    """The entry stored under ``digest`` if it is readable and consistent with ``tensors`` (the
    checkpoint's tensor names); None otherwise (a miss)."""
    try:
        path = cache_dir() / f"{digest}.json"
        if not path.is_file():
            return None
        raw = json.loads(path.read_text(encoding="utf-8"))
        return _entry(raw, digest, tensors)
    except (OSError, ValueError, TypeError, KeyError, RuntimeError):  # unreadable or malformed: rebuild
        return None


def store(digest: str, entry: Entry) -> None:
    """Write ``entry`` under ``digest`` atomically; a cache that cannot be written is skipped."""
    payload = {
        "format": FORMAT,
        "key": digest,
        "targets": [list(target) for target in entry.targets],
        "shapes": {name: list(shape) for name, shape in entry.shapes.items()},
    }
    try:
        folder = cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{digest[:16]}.", suffix=".tmp")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                json.dump(payload, out)
            os.replace(temporary, folder / f"{digest}.json")
        except BaseException:
            os.unlink(temporary)
            raise
    except (OSError, RuntimeError):  # read-only or missing home: no cache, same answer
        return


def _entry(raw, digest: str, tensors) -> Entry | None:
    if not isinstance(raw, dict) or raw.get("format") != FORMAT or raw.get("key") != digest:
        return None
    targets, shapes = raw.get("targets"), raw.get("shapes")
    if not isinstance(targets, list) or not isinstance(shapes, dict):
        return None
    parsed_targets = []
    for target in targets:
        if not (isinstance(target, list) and len(target) == 3 and isinstance(target[0], str)
                and isinstance(target[1], str) and isinstance(target[2], bool) and target[0] in tensors):
            return None
        parsed_targets.append((target[0], target[1], target[2]))
    parsed_shapes = {}
    for name, shape in shapes.items():
        if name not in tensors or not isinstance(shape, list) or not all(type(n) is int and n >= 0 for n in shape):
            return None
        parsed_shapes[name] = tuple(shape)
    return Entry(targets=parsed_targets, shapes=parsed_shapes)
