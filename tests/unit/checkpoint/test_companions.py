"""Which files a writer copies, found by stat before anything is opened."""

import os

import pytest

from flipguard.checkpoint import copy_checkpoint, open_checkpoint
from flipguard.checkpoint.files import file_kind
from flipguard.checkpoint.layout import companion_files, companion_folders, skipped_weight_files
from flipguard.errors import FlipGuardError


def _remove_deep(top):
    """rmtree recurses once per level (pytest's clean-up of old temp folders too): unwind by hand."""
    folders = [top]
    while (folders[-1] / "d").is_dir():
        folders.append(folders[-1] / "d")
    for folder in reversed(folders):
        for child in folder.iterdir():
            if not child.is_dir():
                child.unlink()
        folder.rmdir()


def test_a_deep_folder_tree_is_walked_without_recursion(fresh_checkpoint, tmp_path):
    path = fresh_checkpoint(with_tokenizer=False)
    deep = path
    for _ in range(1200):  # deeper than Python's recursion limit
        deep = deep / "d"
        deep.mkdir()
    (deep / "leaf.txt").write_text("leaf\n")
    relative = deep.relative_to(path) / "leaf.txt"
    try:
        assert relative in companion_files(path)
        assert deep.relative_to(path) in companion_folders(path)
        out = copy_checkpoint(path, tmp_path / "out")
        assert (out / relative).read_text() == "leaf\n"
    finally:
        _remove_deep(path / "d")
        if (tmp_path / "out" / "d").exists():
            _remove_deep(tmp_path / "out" / "d")


def test_tool_folders_are_never_looked_into(fresh_checkpoint):
    path = fresh_checkpoint(with_tokenizer=False)
    for tool in (".git", ".cache"):
        (path / tool).mkdir()
        os.mkfifo(path / tool / "pipe")  # anything may live in there: never stat'ed, never copied
    assert not any(part in (".git", ".cache") for p in companion_files(path) + companion_folders(path) for part in p.parts)


def test_weight_files_are_skipped_whatever_they_are(fresh_checkpoint):
    path = fresh_checkpoint(with_tokenizer=False)
    (path / "original").mkdir()
    os.mkfifo(path / "original" / "consolidated.safetensors")  # never read, never copied, listed as skipped
    layout = open_checkpoint(path).layout
    assert [p.as_posix() for p in skipped_weight_files(path, layout)] == ["original/consolidated.safetensors"]
    assert "original/consolidated.safetensors" not in [p.as_posix() for p in companion_files(path)]


@pytest.mark.parametrize("target, kind", [("/dev/zero", "character device"), ("nowhere", "dangling symlink"),
                                          ("loop", "symlink loop")])
def test_file_kind_follows_links(tmp_path, target, kind):
    os.symlink(target, tmp_path / "loop" if target == "loop" else tmp_path / "link")
    assert file_kind(tmp_path / ("loop" if target == "loop" else "link")) == kind


def test_a_companion_that_cannot_be_copied_is_refused_before_anything_is_written(fresh_checkpoint, tmp_path):
    path = fresh_checkpoint()
    os.mkfifo(path / "notes.txt")
    with pytest.raises(FlipGuardError, match=r"notes\.txt is a FIFO, which cannot be copied into the output"):
        copy_checkpoint(path, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "targets-cache"] or \
        sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
