"""Where a checkpoint named by the user is: a local folder, or a Hugging Face repo id resolved
through ``huggingface_hub``'s cache (offline: what the cache holds; online: downloaded into it).

Only the files FlipGuard reads are fetched: safetensors weights and their index, JSON configs,
tokenizer files. Pickle weights are never downloaded (FlipGuard refuses to unpickle them anyway).
"""

from __future__ import annotations

import re
from pathlib import Path

from flipguard.errors import FlipGuardError

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[\w.-]{1,96}$")
PATTERNS = ["*.safetensors", "*.safetensors.index.json", "*.json", "*.txt", "*.model", "*.jinja", "tokenizer*"]


def resolve_checkpoint(path_or_repo_id: str | Path, revision: str | None = None) -> Path:
    """The local folder of ``path_or_repo_id``: the path itself when it exists (or is not a repo id),
    else the repo's snapshot in the Hugging Face cache. FlipGuardError when neither is there."""
    text = str(path_or_repo_id)
    path = Path(text).expanduser()
    if path.exists() or not REPO_ID.match(text):
        return path  # the caller's own checks say what is wrong with a missing path
    try:
        from huggingface_hub import constants, snapshot_download
    except ImportError:
        raise FlipGuardError(f"{text} is no local folder, and huggingface_hub (to find it in the Hugging Face "
                             "cache) is not installed: pip install huggingface_hub, or give a folder.") from None
    offline = bool(constants.HF_HUB_OFFLINE)
    try:
        return Path(snapshot_download(text, revision=revision, allow_patterns=PATTERNS, local_files_only=offline))
    except Exception as err:  # the hub client's many error types all mean "not available"
        where = "the Hugging Face cache (offline)" if offline else "the Hugging Face Hub or its cache"
        raise FlipGuardError(f"{text} is no local folder and {where} has no copy of it ({type(err).__name__}); "
                             "download it first (huggingface-cli download), or give a local folder.") from None
