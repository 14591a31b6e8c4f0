"""The cache of skeleton answers: a hit gives exactly the skeleton's targets without building one."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM

import flipguard.checkpoint.targets as targets_module
from flipguard.checkpoint import open_checkpoint, quantizable_tensors, targets_cache
from flipguard.errors import FlipGuardError
from tests.support.checkpoints import FAMILIES, OTHER_ARCHITECTURES, other_config


def _no_skeleton(monkeypatch):
    def refuse(checkpoint):
        raise AssertionError("built a skeleton on a cache hit")

    monkeypatch.setattr(targets_module, "build_skeleton", refuse)


def _entries(folder):
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


@pytest.mark.parametrize("skip", [None, ["q_proj", "c_attn", "query_key_value"]], ids=["default", "user"])
@pytest.mark.parametrize("family", FAMILIES)
def test_a_hit_equals_the_skeleton_for_every_zoo_family(fresh_checkpoint, private_targets_cache, monkeypatch,
                                                        family, skip):
    checkpoint = open_checkpoint(fresh_checkpoint(family=family, with_tokenizer=False))
    built = quantizable_tensors(checkpoint, skip)
    assert len(_entries(private_targets_cache)) == 1
    _no_skeleton(monkeypatch)
    assert quantizable_tensors(open_checkpoint(checkpoint.path), skip) == built


@pytest.mark.parametrize("model_type", OTHER_ARCHITECTURES)
def test_a_hit_equals_the_skeleton_for_other_architectures(tmp_path, monkeypatch, model_type):
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(other_config(model_type)).save_pretrained(tmp_path / "m")
    built = quantizable_tensors(open_checkpoint(tmp_path / "m"))
    _no_skeleton(monkeypatch)
    assert quantizable_tensors(open_checkpoint(tmp_path / "m")) == built


def test_the_key_covers_config_names_skip_list_and_version():
    config, names = {"model_type": "llama", "hidden_size": 64}, ["a.weight", "b.weight"]
    base = targets_cache.key(config, names, None, "5.0.0")
    assert targets_cache.key(dict(config), list(reversed(names)), None, "5.0.0") == base  # order-free
    others = [
        targets_cache.key({**config, "hidden_size": 65}, names, None, "5.0.0"),
        targets_cache.key(config, names + ["c.weight"], None, "5.0.0"),
        targets_cache.key(config, names, [], "5.0.0"),
        targets_cache.key(config, names, ["q_proj"], "5.0.0"),
        targets_cache.key(config, names, None, "5.0.1"),
    ]
    assert len({base, *others}) == 6


@pytest.mark.parametrize("damage", ["garbage", "empty", "a list", "another key", "unknown tensor", "bad shape",
                                    "bad flag", "a folder"])
def test_an_unreadable_or_inconsistent_entry_is_rebuilt(fresh_checkpoint, private_targets_cache, damage):
    checkpoint = open_checkpoint(fresh_checkpoint(with_tokenizer=False))
    built = quantizable_tensors(checkpoint)
    (entry,) = private_targets_cache.iterdir()
    saved = json.loads(entry.read_text())
    damaged = {
        "garbage": b"\x00\xff{{",
        "empty": b"",
        "a list": b"[]",
        "another key": json.dumps({**saved, "key": "0" * 64}).encode(),
        "unknown tensor": json.dumps({**saved, "targets": [["ghost.weight", "ghost", False]]}).encode(),
        "bad shape": json.dumps({**saved, "shapes": {next(iter(saved["shapes"])): [-1, "x"]}}).encode(),
        "bad flag": json.dumps({**saved, "targets": [[*saved["targets"][0][:2], "yes"]]}).encode(),
    }
    if damage == "a folder":
        entry.unlink()
        entry.mkdir()
    else:
        entry.write_bytes(damaged[damage])
    assert quantizable_tensors(open_checkpoint(checkpoint.path)) == built
    if damage != "a folder":  # rewritten whole
        assert json.loads(entry.read_text()) == saved
    assert not [p for p in private_targets_cache.iterdir() if p.suffix == ".tmp"]


def test_stored_shapes_are_checked_on_a_hit(fresh_checkpoint, monkeypatch):
    path = fresh_checkpoint(with_tokenizer=False)
    quantizable_tensors(open_checkpoint(path))
    name = "model.layers.0.self_attn.q_proj.weight"
    tensors = load_file(path / "model.safetensors")
    tensors[name] = tensors[name].reshape(-1).clone()  # same names, same config: the same key
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    _no_skeleton(monkeypatch)
    with pytest.raises(FlipGuardError, match=rf"'{name}' in model.safetensors is stored with shape \(4096,\)"):
        quantizable_tensors(open_checkpoint(path))


def test_a_cache_that_cannot_be_written_is_skipped(fresh_checkpoint, tmp_path, monkeypatch):
    (tmp_path / "a-file").write_text("not a folder")
    monkeypatch.setattr(targets_cache, "cache_dir", lambda: tmp_path / "a-file" / "targets")
    checkpoint = open_checkpoint(fresh_checkpoint(with_tokenizer=False))
    assert quantizable_tensors(checkpoint) == quantizable_tensors(checkpoint)  # built twice, same answer


def test_a_hit_in_a_new_process_imports_no_transformers(fresh_checkpoint, tmp_path):
    """The point of the cache: the second run neither builds a skeleton nor imports transformers
    (half a second, and its modeling code another one or two); the entry lives under
    $XDG_CACHE_HOME/flipguard/targets."""
    path = fresh_checkpoint(with_tokenizer=False)
    script = textwrap.dedent(f"""
        import json, sys
        from flipguard.checkpoint import open_checkpoint, quantizable_tensors
        targets = quantizable_tensors(open_checkpoint({str(path)!r}))
        print(json.dumps({{"imported": "transformers" in sys.modules,
                           "targets": [t.tensor_name for t in targets]}}))
    """)
    env = {"PATH": "/usr/bin:/bin", "XDG_CACHE_HOME": str(tmp_path / "xdg"), "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": ":".join(sys.path), "OMP_NUM_THREADS": "1"}
    runs = [json.loads(subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                                      timeout=300, check=True).stdout.splitlines()[-1]) for _ in range(2)]
    assert runs[0]["imported"] and not runs[1]["imported"]
    assert runs[0]["targets"] == runs[1]["targets"] and len(runs[0]["targets"]) == 14
    assert len(list((tmp_path / "xdg" / "flipguard" / "targets").glob("*.json"))) == 1
