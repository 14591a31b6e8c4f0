"""defend_checkpoint: layout kept, non-quantizable tensors bit-identical, deterministic, atomic."""

import hashlib
import json

import pytest
import torch
from safetensors import safe_open

from flipguard.checkpoint import TensorStream, open_checkpoint, quantizable_tensors
from flipguard.defend import REPORT_FILE, defend_checkpoint, defend_tensor, make_policy
from flipguard.errors import FlipGuardError
from flipguard.schemes import get_scheme
from tests.support.checkpoints import make_tiny_checkpoint


@pytest.fixture(scope="module")
def gpt2(tmp_path_factory):
    """Tiny GPT-2 (Conv1D, transposed) in float16, sharded."""
    return make_tiny_checkpoint(tmp_path_factory.mktemp("g") / "gpt2", family="gpt2", dtype=torch.float16, shards=2)


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return make_tiny_checkpoint(tmp_path_factory.mktemp("l") / "llama", family="llama", dtype=torch.bfloat16)


def _tensors(path):
    ckpt = open_checkpoint(path)
    return dict(ckpt.iter_tensors())


def _digest(directory):
    return {p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def test_defended_checkpoint_keeps_layout_and_other_tensors(gpt2, tmp_path):
    report = defend_checkpoint(gpt2, tmp_path / "out", policy="ratio", params={"r": 0.1})
    out = tmp_path / "out"
    targets = {t.tensor_name: t for t in quantizable_tensors(open_checkpoint(gpt2))}
    before, after = _tensors(gpt2), _tensors(out)
    assert before.keys() == after.keys()
    for name, t in before.items():
        assert after[name].dtype == t.dtype and after[name].shape == t.shape
        if name in targets:
            assert not torch.equal(after[name], t)
        else:
            assert torch.equal(after[name].view(torch.uint8), t.view(torch.uint8))  # bit-identical
    # companion files and the index byte for byte
    src, dst = _digest(gpt2), _digest(out)
    for rel, digest in src.items():
        if not rel.endswith(".safetensors"):
            assert dst[rel] == digest, rel
    for shard in open_checkpoint(gpt2).shards:
        with safe_open(str(gpt2 / shard), "pt") as a, safe_open(str(out / shard), "pt") as b:
            assert a.metadata() == b.metadata() and sorted(a.keys()) == sorted(b.keys())
    # report: counts agree with the tensors written, transposed Conv1D recorded
    saved = json.loads((out / REPORT_FILE).read_text())
    assert saved["policy"]["name"] == "ratio" and saved["tensors_copied_unchanged"] == len(before) - len(targets)
    assert all(t["transposed"] for t in saved["tensors"])
    nf4 = get_scheme("nf4")
    for t in report.tensors:
        w0, w1 = before[t.name].t(), after[t.name].t()
        changed = int((nf4.codes(w0) != nf4.codes(w1)).sum())
        assert changed == t.schemes["nf4"].codes_changed
    totals = saved["totals"]
    assert set(totals) == {"int8", "fp4", "nf4"}
    assert totals["nf4"]["flipped"] + sum(totals["nf4"]["unsafe"].values()) == totals["nf4"]["candidates"]


def test_same_input_gives_byte_identical_output(llama, tmp_path):
    for policy in ("adaptive", "random", "gaussian"):
        a = defend_checkpoint(llama, tmp_path / f"a-{policy}", policy=policy)
        b = defend_checkpoint(llama, tmp_path / f"b-{policy}", policy=policy)
        assert _digest(tmp_path / f"a-{policy}") == _digest(tmp_path / f"b-{policy}")
        assert a.totals() == b.totals()


def test_tensors_not_quantized_are_copied_file_to_file_never_read(gpt2, tmp_path, monkeypatch):
    from flipguard.checkpoint import Checkpoint

    targets = {t.tensor_name for t in quantizable_tensors(open_checkpoint(gpt2))}
    read, get = [], Checkpoint.get
    monkeypatch.setattr(Checkpoint, "get", lambda self, name: read.append(name) or get(self, name))
    defend_checkpoint(gpt2, tmp_path / "out")
    assert sorted(read) == sorted(targets)
    before, after = _tensors(gpt2), _tensors(tmp_path / "out")
    assert all(torch.equal(after[n].view(torch.uint8), before[n].view(torch.uint8)) for n in before if n not in targets)


def test_read_ahead_and_write_behind_do_not_change_the_output(gpt2, tmp_path, monkeypatch, capsys):
    pipelined = defend_checkpoint(gpt2, tmp_path / "pipelined", progress=True)
    bar = capsys.readouterr().err
    assert "defend" in bar and "100%" in bar  # the progress bar, on stderr
    init = TensorStream.__init__
    monkeypatch.setattr(TensorStream, "__init__", lambda self, *a, **k: init(self, *a, **{**k, "budget": 1}))
    serial = defend_checkpoint(gpt2, tmp_path / "serial")  # one tensor at a time
    assert capsys.readouterr().err == ""  # no bar unless asked
    assert _digest(tmp_path / "pipelined") == _digest(tmp_path / "serial")
    assert pipelined.totals() == serial.totals()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"schemes": ["int9"]}, "unknown scheme"),
        ({"policy": "magic"}, "unknown policy"),
        ({"policy": "ratio", "params": {"r": 1.2}}, "between 0 and 1"),
        ({"policy": "threshold", "params": {"tau": -0.1}}, "at least 0"),
        ({"policy": "gaussian", "params": {"sigma": -0.1}}, "at least 0"),
        ({"depth": 0.0}, "depth"),
        ({"depth": 0.5}, "depth"),
    ],
)
def test_bad_options_write_nothing(llama, tmp_path, kwargs, match):
    with pytest.raises(FlipGuardError, match=match):
        defend_checkpoint(llama, tmp_path / "out", **kwargs)
    assert list(tmp_path.iterdir()) == []


def test_output_inside_input_and_existing_output_are_refused(llama, tmp_path):
    with pytest.raises(FlipGuardError, match="inside the input"):
        defend_checkpoint(llama, llama / "defended")
    assert not (llama / "defended").exists()
    (tmp_path / "taken").mkdir()
    with pytest.raises(FlipGuardError, match="already exists"):
        defend_checkpoint(llama, tmp_path / "taken")
    defend_checkpoint(llama, tmp_path / "taken", policy="threshold", force=True)
    assert (tmp_path / "taken" / REPORT_FILE).exists()


@pytest.mark.parametrize("policy", ["adaptive", "threshold"])
@pytest.mark.parametrize("schemes", [["int8"], ["nf4", "int8"]])
def test_nonfinite_float16_tensor_is_left_unchanged(policy, schemes):
    w = (torch.randn(32, 128) * 0.02).half()
    w[31, 127] = float("inf")
    before = w.clone()
    done = defend_tensor("w", w, [get_scheme(s) for s in schemes], make_policy(policy))
    assert done.status == "nonfinite" and torch.equal(w.view(torch.int16), before.view(torch.int16))


def test_nonfinite_tensor_is_refused_or_with_keep_left_unchanged_and_noted(tmp_path):
    path = make_tiny_checkpoint(tmp_path / "nan", family="llama")
    from safetensors.torch import load_file, save_file

    tensors = load_file(path / "model.safetensors")
    name = next(n for n in tensors if n.endswith("q_proj.weight"))
    tensors[name][0, 0] = float("nan")
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(FlipGuardError, match=rf"{name}.* 1 NaN/Inf weight.*nothing was written.*--nonfinite keep"):
        defend_checkpoint(path, tmp_path / "out", policy="threshold")  # the default: refuse
    assert not (tmp_path / "out").exists() and [p.name for p in tmp_path.iterdir()] == ["nan"]
    report = defend_checkpoint(path, tmp_path / "out", policy="threshold", nonfinite="keep")
    assert any(name in note for note in report.notes)
    after = _tensors(tmp_path / "out")[name]
    assert torch.equal(after.view(torch.int32), tensors[name].view(torch.int32))
    with pytest.raises(FlipGuardError, match="unknown NaN/Inf policy"):
        defend_checkpoint(path, tmp_path / "other", nonfinite="zero")
