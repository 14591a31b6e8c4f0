"""Fixtures for the checkpoint tests: tiny checkpoints built once per session, and fresh ones.

Session checkpoints are read-only by contract; a test that damages a checkpoint builds its own
with ``fresh_checkpoint``.
"""

import hashlib
from pathlib import Path

import pytest
import torch

from flipguard.checkpoint import targets_cache
from tests.support.checkpoints import make_tiny_checkpoint

EXTRA_FILES = {
    "README.md": "# tiny test model\n",
    "original/params.json": '{"dim": 64}\n',
}


@pytest.fixture(autouse=True)
def private_targets_cache(tmp_path, monkeypatch):
    """Each test starts with an empty cache of skeleton answers: the exactness tests compare the
    skeleton itself with bitsandbytes, and a test that patches transformers must not be answered
    from another test's entry."""
    folder = tmp_path / "targets-cache"
    monkeypatch.setattr(targets_cache, "cache_dir", lambda: folder)
    return folder


@pytest.fixture(scope="session")
def single_checkpoint(tmp_path_factory) -> Path:
    """Tiny Llama, one model.safetensors, tokenizer, chat template, README and a nested file."""
    return make_tiny_checkpoint(tmp_path_factory.mktemp("single") / "llama", extra_files=EXTRA_FILES)


@pytest.fixture(scope="session")
def sharded_checkpoint(tmp_path_factory) -> Path:
    """Tiny GPT-2 (Conv1D, tied) in bfloat16, several shards plus model.safetensors.index.json."""
    path = tmp_path_factory.mktemp("sharded") / "gpt2"
    return make_tiny_checkpoint(
        path, family="gpt2", dtype=torch.bfloat16, shards=3, extra_files=EXTRA_FILES
    )


@pytest.fixture
def fresh_checkpoint(tmp_path):
    """Factory: ``fresh_checkpoint(name="ckpt", **make_tiny_checkpoint kwargs)`` under tmp_path."""

    def make(name: str = "ckpt", **kwargs) -> Path:
        return make_tiny_checkpoint(tmp_path / name, **kwargs)

    return make


def snapshot(directory: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``directory``: relative path -> (sha256, mtime in ns)."""
    files = sorted(path for path in directory.rglob("*") if path.is_file())
    return {
        path.relative_to(directory).as_posix(): (_sha256(path), path.stat().st_mtime_ns) for path in files
    }


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def leftovers(parent: Path) -> list[str]:
    """Names of FlipGuard temporary or replaced directories left in ``parent``."""
    return [p.name for p in parent.iterdir() if ".flipguard-tmp-" in p.name or ".flipguard-old-" in p.name]
