"""Read the small JSON files of a checkpoint (``config.json``, the shard index) defensively.

Before parsing: the path must be a regular file (never a FIFO or a device), at most
``max_bytes`` long, UTF-8, and nested at most ``MAX_DEPTH`` deep (Python's parser recurses once per
level and runs out of stack near a thousand; real configs nest three or four deep). ``NaN`` and
``Infinity``, which Python's parser accepts but JSON does not, are refused.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from flipguard.errors import FlipGuardError

from .files import require_regular_file
from .messages import first_sentence

MAX_DEPTH = 32  # objects and arrays inside each other
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)  # a JSON string literal, escapes included
_BRACKET = re.compile(r"[\[\]{}]")


def read_json_file(path: Path, max_bytes: int, fix: str, invalid: str = "is not valid JSON") -> object:
    """Parse the JSON file ``path``; raise FlipGuardError (ending with ``fix``) when it is not a
    regular file, is larger than ``max_bytes``, is not UTF-8 JSON, nests deeper than ``MAX_DEPTH``,
    or holds NaN/Infinity. ``invalid`` says what a parse error means ("is not a valid index")."""
    require_regular_file(path, fix)
    size = path.stat().st_size
    if size > max_bytes:
        raise FlipGuardError(f"{path} is {size:,} bytes, more than the {max_bytes:,} such a file can need; {fix}.")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise FlipGuardError(f"{path} is not UTF-8 text (byte {err.start}); {fix}.") from err
    depth = nesting_depth(text)
    if depth > MAX_DEPTH:
        raise FlipGuardError(f"{path} nests {depth} levels deep, more than the {MAX_DEPTH} allowed; {fix}.")
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except ValueError as err:
        raise FlipGuardError(f"{path} {invalid} ({first_sentence(err)}); {fix}.") from err


def nesting_depth(text: str) -> int:
    """How deep objects and arrays nest in JSON ``text`` (brackets inside strings do not count).

    Only an upper bound is needed before parsing, so malformed text is measured as it stands."""
    depth = deepest = 0
    for match in _BRACKET.finditer(_STRING.sub('""', text)):
        depth += 1 if match.group() in "[{" else -1
        deepest = max(deepest, depth)
    return deepest


def _refuse_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")
