"""The checkpoint's ``config.json``: read as a plain dict, checked just enough to be usable."""

from __future__ import annotations

import json
from pathlib import Path

from flipguard.errors import FlipGuardError

from .layout import CONFIG_FILE


def read_config(directory: Path) -> dict:
    """Return ``directory/config.json`` as a dict; raise FlipGuardError if missing or invalid.

    Valid means: a JSON object with a string ``model_type`` (transformers needs it to know the
    architecture, and FlipGuard needs the architecture to know which weights get quantized).
    """
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise FlipGuardError(
            f"{directory} has no {CONFIG_FILE}; copy the model's config.json next to its weights."
        )
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise FlipGuardError(
            f"{path} is not valid JSON ({err}); restore the model's original config.json."
        ) from err
    if not isinstance(config, dict) or not isinstance(config.get("model_type"), str):
        raise FlipGuardError(
            f"{path} has no 'model_type'; restore the model's original config.json "
            "(it names the architecture, e.g. \"llama\")."
        )
    return config
