"""Where a checkpoint named by the user is: a local folder, or a Hugging Face repo id
(``org/name``, ``name``, either with ``@revision``) resolved through ``huggingface_hub``'s cache.

``local_files_only`` (default: the hub's own offline setting, ``HF_HUB_OFFLINE``): only what the
cache holds; otherwise missing files are downloaded into it. Only the files FlipGuard reads are
fetched: safetensors weights and their index, JSON configs, tokenizer files; pickle weights never
(FlipGuard refuses to unpickle them anyway). The cache is ``HF_HUB_CACHE`` as set when called.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from flipguard.errors import FlipGuardError

REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}(/[\w.-]{1,96})?(@[\w./-]{1,128})?$")  # [org/]name[@revision]
PATTERNS = ["*.safetensors", "*.safetensors.index.json", "*.json", "*.txt", "*.model", "*.jinja", "tokenizer*"]


def is_repo_id(text: str) -> bool:
    """Whether ``text`` has the form of a repo id (``org/name``, optionally ``@revision``)."""
    return bool(REPO_ID.match(text))


def resolve_checkpoint(path_or_repo_id: str | Path, revision: str | None = None,
                       local_files_only: bool | None = None) -> Path:
    """The local folder of ``path_or_repo_id``: the path itself when it exists (or is not a repo id),
    else the repo's snapshot in the Hugging Face cache. FlipGuardError when neither is there."""
    text = str(path_or_repo_id)
    path = Path(text).expanduser()
    if path.exists() or not is_repo_id(text):
        return path  # the caller's own checks say what is wrong with a missing path
    repo_id, _, at = text.partition("@")
    revision = revision or at or None
    try:
        from huggingface_hub import constants, snapshot_download
    except ImportError:
        raise FlipGuardError(f"{text} is no local folder, and huggingface_hub (to find it in the Hugging Face "
                             "cache) is not installed: pip install huggingface_hub, or give a folder.") from None
    offline = bool(constants.HF_HUB_OFFLINE) if local_files_only is None else local_files_only
    cache = os.environ.get("HF_HUB_CACHE") or constants.HF_HUB_CACHE
    try:
        return Path(snapshot_download(repo_id, revision=revision, cache_dir=cache, allow_patterns=PATTERNS,
                                      local_files_only=offline)).resolve()
    except Exception as err:  # the hub client's many error types all mean "not available"
        if type(err).__name__ == "HFValidationError":
            raise FlipGuardError(f"{text} is neither a folder nor a valid Hugging Face repo id; give a model "
                                 "folder or org/name.") from None
        where = f"the local Hugging Face cache ({cache})" if offline else "the Hugging Face Hub or its cache"
        raise FlipGuardError(f"{text} is neither a folder nor a model in {where}"
                             f"{', revision ' + revision if revision else ''}; give a model folder, or download it "
                             f"first (huggingface-cli download {repo_id}).") from None
