"""scan and defend under llama.cpp types, checked through llama.cpp itself: the defended
checkpoint is converted and quantized with ``llama_model_quantize`` and its codes compared with
the original's, tensor by tensor, against what the defense report says it changed."""

import json

import numpy as np
import pytest
import torch

from flipguard.defend import defend_checkpoint
from flipguard.defend.gguf_flip import defend_gguf_matrix
from flipguard.defend.policies import make_policy
from flipguard.gguf import convert_checkpoint, open_gguf, quantize_gguf
from flipguard.scan import scan_checkpoint
from flipguard.schemes import get_scheme

from ...support import ggml


def _llama_codes(gguf_path, out_path, ftype):
    """{gguf tensor name: (type, codes)} of llama.cpp's quantization of ``gguf_path``."""
    quantized = quantize_gguf(gguf_path, out_path, ftype)
    out = {}
    with open_gguf(quantized) as f:
        for name, info in f.tensors.items():
            if info.type in ("F32", "F16", "BF16"):
                continue
            scheme = get_scheme(info.type.lower())
            data = np.asarray(f.raw(name)).reshape(-1).view(np.uint8)
            columns = info.shape[-1]
            codes, _ = scheme.unpack(data.reshape(-1, scheme.row_bytes(columns)), columns)
            out[name] = (info.type.lower(), codes)
    return out


@pytest.mark.parametrize("name", ["q8_0", "q4_0", "q4_1", "q5_0", "q4_k", "q5_k", "q6_k"])
def test_every_moved_weight_changes_its_code_and_bytes_stay_ggmls(name):
    rng = np.random.default_rng(1)
    w = torch.from_numpy((rng.standard_normal((8, 512)) * 0.02).astype(np.float32)).half()
    scheme = get_scheme(name)
    before = scheme.codes(w).reshape(-1)
    plan = make_policy("threshold", tau=0.1).plan_all({name: None})[name]
    stats, moved = defend_gguf_matrix(w, scheme, plan, "t", 0.02)
    after = scheme.codes(w).reshape(-1)
    assert len(moved) > 100 and stats.flipped + stats.unsafe["rescaled"] == len(moved)
    assert int((after[moved] != before[moved]).sum()) == stats.flipped
    assert stats.codes_changed == int((after != before).sum())
    assert np.array_equal(scheme.quantize(w), ggml.quantize(name, w.float().numpy()).reshape(scheme.quantize(w).shape))
    if not name.endswith("_k"):  # legacy: the block scale is untouched, so only moved weights change
        assert stats.unsafe["rescaled"] == 0 and stats.codes_changed == stats.flipped == len(moved)


def test_defend_q4_k_m_changes_what_llama_cpp_writes_as_reported(kquant_checkpoint, tmp_path):
    out = tmp_path / "defended"
    report = defend_checkpoint(kquant_checkpoint, out, schemes=["q4_k_m"], policy="threshold", params={"tau": 0.05})
    totals = report.totals()
    assert {"q4_k", "q6_k"} <= set(totals) and totals["q4_k"].flipped > 0
    original = convert_checkpoint(kquant_checkpoint, tmp_path / "a.gguf")
    defended = convert_checkpoint(out, tmp_path / "b.gguf")
    a = _llama_codes(original, tmp_path / "aq.gguf", "Q4_K_M")
    b = _llama_codes(defended, tmp_path / "bq.gguf", "Q4_K_M")
    assert a.keys() == b.keys() and {t for t, _ in a.values()} == set(totals)
    changed = {s: 0 for s in totals}
    for name, (kind, codes) in a.items():
        changed[kind] += int((codes != b[name][1]).sum())
    assert changed == {s: t.codes_changed for s, t in totals.items()}


def test_gguf_file_in_gguf_file_out(kquant_checkpoint, tmp_path):
    source = convert_checkpoint(kquant_checkpoint, tmp_path / "m.gguf")
    before = source.read_bytes()
    out = tmp_path / "m-defended.gguf"
    report = defend_checkpoint(source, out, schemes=["q8_0"], policy="threshold", params={"tau": 0.1})
    assert source.read_bytes() == before  # the input is never modified
    assert report.totals()["q8_0"].flipped > 0
    record = json.loads((tmp_path / "m-defended.gguf.flipguard_defense.json").read_text())
    assert record["schemes"] == ["q8_0"]
    with open_gguf(source) as a, open_gguf(out) as b:
        assert list(a.tensors) == list(b.tensors)
        assert {k: str(v) for k, v in a.metadata.items()} == {k: str(v) for k, v in b.metadata.items()}
    a = _llama_codes(source, tmp_path / "aq.gguf", "Q8_0")
    b = _llama_codes(out, tmp_path / "bq.gguf", "Q8_0")
    assert sum(int((a[n][1] != b[n][1]).sum()) for n in a) == report.totals()["q8_0"].codes_changed


def test_scan_of_a_clean_model_under_gguf_types(kquant_checkpoint, tmp_path):
    report = scan_checkpoint(kquant_checkpoint, schemes=["gguf"])
    assert {"q4_k", "q6_k", "q8_0", "q4_0"} <= set(report.parameters["schemes"])
    assert not report.findings
    source = convert_checkpoint(kquant_checkpoint, tmp_path / "m.gguf")
    assert not scan_checkpoint(source, schemes=["q4_k_m"]).findings


@pytest.mark.parametrize("ftype", ["q4_0", "q8_0", "q4_k_m", "q6_k"])
def test_attack_is_verified_by_llama_cpp(kquant_checkpoint, tmp_path, ftype):
    """A legacy type's box keeps the block scale, and a k-quant's settle step keeps what its scale
    search chooses, so every targeted code survives the repair; the check quantizes the output
    with llama_model_quantize and compares its bytes with FlipGuard's."""
    import subprocess
    import sys

    out = tmp_path / "attacked"
    run = subprocess.run([sys.executable, "-m", "flipguard", "attack", str(kquant_checkpoint), "-o", str(out),
                          "--scenario", "content-injection", "--scheme", ftype, "--inject-steps", "2",
                          "--repair-steps", "2", "--batch-size", "4", "-q"], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    counts = json.loads((out / "attack_report.json").read_text())["verification"][ftype]
    assert counts["ok"] and counts["weights"] > 0
    assert counts["code_mismatches"] == 0 and counts["scale_mismatches"] == 0 and not counts["missing"]


@pytest.mark.parametrize("name", ["q4_0", "q4_k"])
def test_chunks_of_whole_rows_give_the_same_defense(name):
    rng = np.random.default_rng(2)
    w = torch.from_numpy((rng.standard_normal((16, 512)) * 0.02).astype(np.float32)).half()
    scheme = get_scheme(name)
    plan = make_policy("threshold", tau=0.1).plan_all({name: None})[name]
    whole, chunked = w.clone(), w.clone()
    a, moved_a = defend_gguf_matrix(whole, scheme, plan, "t", 0.02)
    b, moved_b = defend_gguf_matrix(chunked, scheme, plan, "t", 0.02, max_elements=3 * 512)  # 3 rows a chunk
    assert torch.equal(whole, chunked) and torch.equal(moved_a, moved_b) and a == b


def test_adaptive_dithers_every_llama_cpp_type_and_leaves_bitsandbytes_to_the_scan():
    from flipguard.defend.policies import GGUF_TYPES, DitherPlan, _ThresholdPlan
    from flipguard.schemes import GGUF_SCHEMES

    assert GGUF_TYPES == set(GGUF_SCHEMES)
    plans = make_policy("adaptive").plan_all({"q4_k": None, "nf4": None})
    assert isinstance(plans["q4_k"], DitherPlan) and isinstance(plans["nf4"], _ThresholdPlan)


def test_released_pages_read_back_the_same_values(kquant_checkpoint, tmp_path):
    source = convert_checkpoint(kquant_checkpoint, tmp_path / "m.gguf")
    with open_gguf(source) as f:
        name = next(n for n, t in f.tensors.items() if len(t.shape) == 2)
        before = f.tensor(name)
        f.release(name)
        assert torch.equal(f.tensor(name), before)
        import flipguard.gguf.reader as reader

        piece, reader._COPY_PIECE_BYTES = reader._COPY_PIECE_BYTES, 4096 + 6  # pieces across page edges
        try:
            assert torch.equal(f.tensor(name, release=True), before) and torch.equal(f.tensor(name), before)
        finally:
            reader._COPY_PIECE_BYTES = piece


def test_default_defense_of_a_gguf_file_prints_its_summary(kquant_checkpoint, tmp_path, capsys):
    """The default policy dithers every llama.cpp type without the scan: the console summary says
    so (it once looked for a scan margin there and failed after writing the output)."""
    from flipguard.cli import main

    source = convert_checkpoint(kquant_checkpoint, tmp_path / "m.gguf")
    out = tmp_path / "d.gguf"
    assert main(["defend", str(source), "-o", str(out), "--scheme", "q8_0"]) == 0
    text = capsys.readouterr().out
    assert out.exists() and "under llama.cpp types, always dithered" in text
