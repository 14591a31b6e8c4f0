"""Inputs: directories and repo ids in the local hub cache, fingerprints, names; bad ones carry a sentence."""

import os
import shutil
from pathlib import Path

import pytest

from flipguard.batch import fingerprint_directory, resolve_input
from flipguard.batch.inputs import safe_name

DEMO = Path("src/flipguard/demo/assets")
REV = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(tmp_path, monkeypatch):
    """A local Hugging Face hub cache holding org/tiny at two revisions (refs/main -> REV), laid out
    as huggingface_hub lays it: blobs named by content, snapshots of symlinks, refs."""
    cache = tmp_path / "hub"
    repo = cache / "models--org--tiny"
    (repo / "blobs").mkdir(parents=True)
    for rev in (REV, "f" * 40):
        snapshot = repo / "snapshots" / rev
        snapshot.mkdir(parents=True)
        for file in ("config.json", "model.safetensors"):
            blob = repo / "blobs" / f"{file}-{rev[:4]}"
            shutil.copyfile(DEMO / "clean" / file, blob)
            (snapshot / file).symlink_to(os.path.relpath(blob, snapshot))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REV)
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


def test_directory_resolves_to_itself(tmp_path):
    item = resolve_input(str(DEMO / "clean"))
    assert item.error is None and item.path == str((DEMO / "clean").resolve())
    assert item.fingerprint.startswith("sha256:") and item.name.startswith("clean-")


def test_repo_id_resolves_through_the_local_hub_cache(hub_cache):
    item = resolve_input("org/tiny")
    assert item.error is None
    assert item.path == str((hub_cache / "models--org--tiny" / "snapshots" / REV).resolve())
    assert item.name.startswith("org--tiny-")
    other = resolve_input(f"org/tiny@{'f' * 40}")
    assert other.path.endswith("f" * 40) and other.name != item.name
    assert other.key("job") != item.key("job")


@pytest.mark.parametrize("text, words", [
    ("org/absent", ["org/absent", "not", "local Hugging Face cache", "huggingface-cli download org/absent"]),
    ("org/tiny@v9", ["org/tiny@v9", "revision v9"]),
    ("no such dir!", ["does not exist"]),
    ("a/b/c", ["does not exist"]),
])
def test_what_resolves_to_nothing_says_so(hub_cache, text, words):
    item = resolve_input(text)
    assert item.path is None and item.fingerprint is None
    for word in words:
        assert word in item.error
    assert item.error.endswith(".")


def test_a_file_is_no_checkpoint(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"")
    item = resolve_input(str(tmp_path / "model.safetensors"))
    assert "is a file, not a directory" in item.error and str(tmp_path) in item.error


def test_fingerprint_changes_when_a_file_is_rewritten_not_when_read(tmp_path):
    shutil.copytree(DEMO / "clean", tmp_path / "m")
    before = fingerprint_directory(tmp_path / "m")
    (tmp_path / "m" / "model.safetensors").read_bytes()
    assert fingerprint_directory(tmp_path / "m") == before
    os.utime(tmp_path / "m" / "model.safetensors", ns=(1, 1))  # same bytes, rewritten
    touched = fingerprint_directory(tmp_path / "m")
    assert touched != before
    (tmp_path / "m" / "README.md").write_text("new")
    assert fingerprint_directory(tmp_path / "m") not in (before, touched)


def test_fingerprint_reads_headers_only_and_survives_damage(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.safetensors").write_bytes(b"\xff" * 8)  # says: a header of 2**64 - 1 bytes
    (tmp_path / "m" / "short.safetensors").write_bytes(b"\x01")
    assert fingerprint_directory(tmp_path / "m").startswith("sha256:")


def test_safe_names_are_file_names_and_unique_per_path():
    a, b = safe_name("model", "/x/model"), safe_name("model", "/y/model")
    assert a != b and a.startswith("model-") and len(a) == len("model-") + 8
    assert "/" not in safe_name("../../etc", "/z") and safe_name("../../etc", "/z").startswith("etc-")
    assert safe_name("...", "/w").startswith("checkpoint-")
