"""`--workers N`: scan and defend in N processes give what one process gives, byte for byte."""

import hashlib
import json

import torch

import flipguard
from flipguard.workers import deal
from tests.support.checkpoints import make_tiny_checkpoint
from tests.support.fixtures import attack_checkpoint


def digest(directory):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.iterdir()) if p.is_file()}


def test_deal_balances_and_keeps_order():
    parts = deal([("a", 5), ("b", 1), ("c", 4), ("d", 1)], 2)
    assert sorted(sum(parts, [])) == ["a", "b", "c", "d"]
    assert all(part == sorted(part) for part in parts)  # input order kept inside a part
    assert deal([("a", 1)], 4) == [["a"]]


def test_scan_and_defend_with_two_workers_equal_one(tmp_path):
    clean = make_tiny_checkpoint(tmp_path / "clean", family="llama", dtype=torch.bfloat16, shards=3)
    attacked = tmp_path / "attacked"
    attack_checkpoint(clean, attacked, ["nf4"], margin=0.05)
    one = flipguard.scan(attacked, schemes="bnb", progress=False)
    two = flipguard.scan(attacked, schemes="bnb", progress=False, workers=2)
    strip = lambda r: {k: v for k, v in r.to_dict().items() if k != "seconds"}  # noqa: E731
    assert json.dumps(strip(one), default=str) == json.dumps(strip(two), default=str)
    assert two.verdict.targeted == ["nf4"]
    flipguard.defend(attacked, tmp_path / "d1", progress=False)
    flipguard.defend(attacked, tmp_path / "d2", progress=False, workers=2)
    assert digest(tmp_path / "d1") == digest(tmp_path / "d2")


def test_scan_samples_large_tensors_and_still_finds_nan(tmp_path, monkeypatch):
    import flipguard.scan.detector as detector

    clean = make_tiny_checkpoint(tmp_path / "clean", family="llama", dtype=torch.float16)
    attacked = tmp_path / "attacked"
    attack_checkpoint(clean, attacked, ["nf4"], margin=0.05)
    monkeypatch.setattr(detector, "SCAN_SAMPLE", 1024)  # every tiny tensor is "large" here
    from flipguard.scan import runner

    monkeypatch.setattr(runner, "SCAN_SAMPLE", 1024)
    sampled = flipguard.scan(attacked, schemes="bnb", progress=False)
    full = flipguard.scan(attacked, schemes="bnb", progress=False, full=True)
    assert sampled.verdict.targeted == full.verdict.targeted == ["nf4"]
    assert all(0 < e.sampled < torch.Size(e.shape).numel() for e in sampled.evidence if e.status == "ok")
    assert all(e.sampled == 0 for e in full.evidence)
    from safetensors.torch import load_file, save_file

    weights = load_file(attacked / "model.safetensors")
    name = next(n for n in weights if n.endswith("mlp.up_proj.weight"))
    weights[name][1, 3] = float("nan")  # row 1: not in a sample of every k-th row from row 0 (k > 1)
    save_file(weights, attacked / "model.safetensors", metadata={"format": "pt"})
    report = flipguard.scan(attacked, schemes="bnb", progress=False)
    assert report.exit_code == 2 and any(name in error for error in report.errors)
