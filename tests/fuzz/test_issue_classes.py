"""One test per failure class of issue 20 point 3: each ended in a traceback (exit 1, scan's
"findings" code), a silent exit 2, or a silent loss; each now gets exit 2 and one sentence on stderr
that says what is wrong and where, and nothing is written."""

import json
import os
import shutil
import socket

import pytest
import torch
from safetensors.torch import load_file, save_file

from flipguard.checkpoint import targets_cache
from flipguard.cli import main
from tests.support.checkpoints import make_tiny_checkpoint

from .harness import SENTENCE, companion_entries
from .mutants import deep

SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"
Q_PROJ = "model.layers.0.self_attn.q_proj.weight"
C_ATTN = "transformer.h.0.attn.c_attn.weight"


@pytest.fixture(autouse=True)
def private_targets_cache(tmp_path, monkeypatch):
    monkeypatch.setattr(targets_cache, "cache_dir", lambda: tmp_path / "targets-cache")


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    root = tmp_path_factory.mktemp("originals")
    return {"llama": make_tiny_checkpoint(root / "llama"),
            "gpt2": make_tiny_checkpoint(root / "gpt2", family="gpt2", shards=3)}


@pytest.fixture
def copy(originals, tmp_path):
    def make(family="llama"):
        path = tmp_path / f"{family}-copy"
        shutil.copytree(originals[family], path)
        return path

    return make


def run(capsys, *args):
    """``flipguard ARGS`` in process: (exit code, stderr); an exception escaping main fails the test."""
    code = main([str(a) for a in args])
    return code, capsys.readouterr().err


def refused(capsys, path, tmp_path, *words, commands=("scan", "defend")):
    """Both commands exit 2 with one sentence naming ``words``; defend writes nothing."""
    for command in commands:
        extra = ["-o", tmp_path / "out"] if command == "defend" else []
        code, err = run(capsys, command, "-q", path, *extra)
        assert code == 2, err
        assert SENTENCE.match(err), err
        for word in words:
            assert word in err, (word, err)
        assert not (tmp_path / "out").exists()
        assert not [p for p in tmp_path.iterdir() if ".flipguard-tmp-" in p.name]


def edit_config(path, **fields):
    config = json.loads((path / "config.json").read_text())
    config.update(fields)
    (path / "config.json").write_text(json.dumps(config))


# ---------------------------------------------------------------- deeply nested JSON (RecursionError)


@pytest.mark.parametrize("depth", [5_000, 100_000])
def test_deeply_nested_config(capsys, copy, tmp_path, depth):
    path = copy()
    text = (path / "config.json").read_text()
    (path / "config.json").write_text(text[:-1] + ', "x": ' + deep(depth) + "}")
    refused(capsys, path, tmp_path, "config.json", "nests", "levels deep")


def test_deeply_nested_shard_index(capsys, copy, tmp_path):
    path = copy("gpt2")
    (path / INDEX).write_text('{"weight_map": ' + deep(100_000, "1", '{"a":', "}") + "}")
    refused(capsys, path, tmp_path, INDEX, "levels deep")


# ---------------------------------------------------------------- config fields of the wrong type or range


@pytest.mark.parametrize("value", [1.5, "abc", None, -1, 10**12])
def test_vocab_size_of_the_wrong_type_or_size(capsys, copy, tmp_path, value):
    path = copy()
    edit_config(path, vocab_size=value)
    refused(capsys, path, tmp_path, "config.json", "vocab_size")


@pytest.mark.parametrize("field", ["n_embd", "n_head"])
def test_gpt2_width_or_heads_of_zero(capsys, copy, tmp_path, field):
    path = copy("gpt2")
    edit_config(path, **{field: 0})
    refused(capsys, path, tmp_path, "config.json", f"{field} = 0")


def test_llama_head_dim_of_zero(capsys, copy, tmp_path):
    """0 means "derive it" in some configs (glm), so only llama's rotary table finds it a divisor."""
    path = copy()
    edit_config(path, head_dim=0)
    refused(capsys, path, tmp_path, "config.json", "model_type 'llama'")


def test_initializer_range_nan(capsys, copy, tmp_path):
    path = copy()
    text = (path / "config.json").read_text()
    (path / "config.json").write_text(text.replace('"initializer_range": 0.02', '"initializer_range": NaN'))
    refused(capsys, path, tmp_path, "config.json", "NaN")


def test_initializer_range_overflowing_to_infinity(capsys, copy, tmp_path):
    path = copy()
    text = (path / "config.json").read_text()
    (path / "config.json").write_text(text.replace('"initializer_range": 0.02', '"initializer_range": 1e999'))
    refused(capsys, path, tmp_path, "initializer_range", "not a finite number")


def test_layer_count_that_never_finishes_building(capsys, copy, tmp_path):
    path = copy()
    edit_config(path, num_hidden_layers=100_000)
    refused(capsys, path, tmp_path, "num_hidden_layers = 100000")


# ---------------------------------------------------------------- unknown dtype name (AttributeError)


@pytest.mark.parametrize("name", ["float99", "auto", "torch.float16", 5])
def test_unknown_dtype_name(capsys, copy, tmp_path, name):
    path = copy()
    edit_config(path, dtype=name)
    refused(capsys, path, tmp_path, "config.json", "dtype", "no torch dtype name")


# ---------------------------------------------------------------- a 5,000-character shard name (OSError)


def test_five_thousand_character_shard_name(capsys, copy, tmp_path):
    path = copy("gpt2")
    index = json.loads((path / INDEX).read_text())
    index["weight_map"][C_ATTN] = "x" * 5000 + ".safetensors"
    (path / INDEX).write_text(json.dumps(index))
    refused(capsys, path, tmp_path, INDEX, "longer than a file name can be")


def test_shard_outside_the_folder_is_refused_unread(capsys, copy, tmp_path):
    path = copy("gpt2")
    sentinel = tmp_path / "sentinel.safetensors"
    shutil.copyfile(next(path.glob("model-00001-*.safetensors")), sentinel)
    os.utime(sentinel, (1_000_000_000, 1_000_000_000))  # long ago: any read would move it (relatime)
    index = json.loads((path / INDEX).read_text())
    for shard in ("../sentinel.safetensors", str(sentinel)):
        index["weight_map"] = {name: shard for name in index["weight_map"]}
        (path / INDEX).write_text(json.dumps(index))
        refused(capsys, path, tmp_path, "outside the checkpoint directory")
    assert os.stat(sentinel).st_atime == 1_000_000_000


# ---------------------------------------------------------------- a quantizable weight stored 1-D, 0-D or 6-D


@pytest.mark.parametrize("shape", [(64 * 64,), (), (64, 64, 1, 1, 1, 1)], ids=["1-D", "0-D", "6-D"])
@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_quantizable_weight_stored_with_the_wrong_rank(capsys, copy, tmp_path, family, shape):
    path = copy(family)
    name = Q_PROJ if family == "llama" else C_ATTN
    shard = SINGLE if family == "llama" else json.loads((path / INDEX).read_text())["weight_map"][name]
    tensors = load_file(path / shard)
    tensors[name] = tensors[name].reshape(-1)[: torch.Size(shape).numel()].reshape(shape).clone()
    save_file(tensors, path / shard, metadata={"format": "pt"})
    refused(capsys, path, tmp_path, repr(name), "stored with shape", "config.json gives it")


# ---------------------------------------------------------------- NaN/Inf weights


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nonfinite_weight(capsys, copy, tmp_path, value):
    """scan: exit 2 with the reason on stderr too (it was on stdout only); defend: refused, nothing
    written (it exited 0 with the NaN left in), unless --nonfinite keep."""
    path = copy()
    tensors = load_file(path / SINGLE)
    tensors[Q_PROJ][3, 5] = value
    save_file(tensors, path / SINGLE, metadata={"format": "pt"})
    refused(capsys, path, tmp_path, "NaN/Inf", repr(Q_PROJ))
    code, err = run(capsys, "defend", "-q", path, "-o", tmp_path / "kept", "--nonfinite", "keep")
    assert code == 0, err
    kept = load_file(tmp_path / "kept" / SINGLE)[Q_PROJ]
    assert torch.equal(kept.view(torch.int32), tensors[Q_PROJ].view(torch.int32))


# ---------------------------------------------------------------- companion files defend cannot copy


def _fifo(path):
    os.mkfifo(path)


def _device(path):
    os.symlink("/dev/zero", path)


def _socket(path):
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.close()


def _loop(path):
    os.symlink(path.name, path)


@pytest.mark.parametrize("make", [_fifo, _device, _socket, _loop], ids=["FIFO", "device", "socket", "loop"])
def test_companion_that_cannot_be_copied_is_an_error(capsys, copy, tmp_path, make):
    path = copy()
    (path / "tokenizer.json").unlink()
    make(path / "tokenizer.json")
    refused(capsys, path, tmp_path, "tokenizer.json", "cannot be copied", commands=["defend"])
    code, err = run(capsys, "scan", "-q", path)  # scan never reads it: a normal verdict
    assert code == 0, err


def test_companion_folder_symlink_is_an_error(capsys, copy, tmp_path):
    path = copy()
    os.symlink("..", path / "parent")
    refused(capsys, path, tmp_path, "parent", "symlink to a folder", commands=["defend"])


def test_companion_folders_are_kept_even_when_empty(capsys, copy, tmp_path):
    path = copy()
    (path / "tokenizer.json").unlink()
    (path / "tokenizer.json").mkdir()  # a folder named like the file: copied as a folder, not lost
    (path / "empty" / "deeper").mkdir(parents=True)
    code, err = run(capsys, "defend", "-q", path, "-o", tmp_path / "out")
    assert code == 0, err
    assert companion_entries(tmp_path / "out") == companion_entries(path)
    assert (tmp_path / "out" / "tokenizer.json").is_dir() and (tmp_path / "out" / "empty" / "deeper").is_dir()


def test_force_never_replaces_a_device(capsys, copy, tmp_path):
    path = copy()
    os.symlink("/dev/zero", tmp_path / "zero")  # not /dev/null: some sandboxes make it a regular file
    code, err = run(capsys, "defend", "-q", path, "-o", tmp_path / "zero", "--force")
    assert code == 2 and SENTENCE.match(err) and "character device" in err, err
    assert os.path.islink(tmp_path / "zero") and os.path.exists("/dev/zero")
