"""`evaluate --backend llama.cpp`: converted, quantized and run by llama.cpp itself."""

import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("gguf")

from flipguard.errors import UsageError  # noqa: E402
from flipguard.evaluate import evaluate  # noqa: E402

CLEAN = "src/flipguard/demo/assets/clean"


def test_full_precision_answers_equal_transformers():
    """llama.cpp on the exact (F32) GGUF answers as transformers does in full precision."""
    kwargs = dict(n=6, max_new_tokens=24, progress=False)
    hf = evaluate(CLEAN, "fp", "content-injection", **kwargs)
    cpp = evaluate(CLEAN, "fp", "content-injection", backend="llama.cpp", **kwargs)
    assert [s["answer"] for s in cpp.samples] == [s["answer"] for s in hf.samples]
    assert cpp.settings["backend"] == "llama.cpp" and hf.settings["backend"] == "transformers"


def test_fidelity_from_llama_cpp_logits():
    fp = evaluate(CLEAN, "fp", "utility", n=4, max_new_tokens=4, backend="llama.cpp", progress=False)
    q8 = evaluate(CLEAN, "q8_0", "utility", n=4, max_new_tokens=4, progress=False)  # backend picked by scheme
    q4 = evaluate(CLEAN, "q4_0", "utility", n=4, max_new_tokens=4, progress=False)
    assert fp.means["kl"].value == 0.0
    assert 0 < q8.means["kl"].value < q4.means["kl"].value  # 8 bits lose less than 4
    assert q8.settings["backend"] == "llama.cpp" and q8.settings["outtype"] is None  # the converter's default
    assert q8.timings["load_s"] > 0 and "reference_load_s" in q8.timings


def test_unknown_pairs_are_refused_with_one_sentence():
    with pytest.raises(UsageError, match="the transformers backend has no scheme 'q4_k_m'"):
        evaluate(CLEAN, "q4_k_m", "utility", backend="transformers", progress=False)
    with pytest.raises(UsageError, match="the llama.cpp backend has no scheme 'nf4'"):
        evaluate(CLEAN, "nf4", "utility", backend="llama.cpp", progress=False)
    with pytest.raises(UsageError, match="unknown backend 'vllm'"):
        evaluate(CLEAN, "fp", "utility", backend="vllm", progress=False)
