"""llama.cpp through llama-cpp-python: quantize a GGUF file, load one, generate greedily, get logits.

``quantize_gguf`` calls ``llama_model_quantize``, the engine of ``llama-quantize``, with its
default parameters (no importance matrix, no type overrides). Everything runs on the CPU with a
fixed thread count and seed, so results repeat. llama.cpp's own log lines (it writes many from C)
are swallowed: :func:`silence_llama` installs a callback that keeps only the last error lines,
which quantize_gguf quotes when llama.cpp fails.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from os import PathLike
from pathlib import Path

import numpy as np

from flipguard.errors import FlipGuardError
from flipguard.gguf.atomic_file import atomic_output_file, checked_output_file
from flipguard.gguf.ftypes import ftype as lookup_ftype
from flipguard.gguf.reader import check_gguf_magic

_LOG_LEVEL_ERROR = 4  # GGML_LOG_LEVEL_ERROR (ggml.h)
_recent_errors: list[str] = []
_callback = None  # the installed ctypes callback; kept referenced so it is never collected


def silence_llama() -> None:
    """Route llama.cpp's and ggml's log output to a no-op (errors kept for our messages). Idempotent."""
    global _callback
    import llama_cpp

    if _callback is not None:
        return

    @llama_cpp.llama_log_callback
    def swallow(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        if level == _LOG_LEVEL_ERROR and text:
            _recent_errors.append(text.decode("utf-8", "replace").strip())
            del _recent_errors[:-5]

    llama_cpp.llama_log_set(swallow, ctypes.c_void_p(0))
    _callback = swallow


def quantize_gguf(source: str | PathLike, output: str | PathLike, ftype: str,
                  threads: int = 1, force: bool = False) -> Path:
    """Quantize an F32/F16/BF16 GGUF file to ``ftype`` (``"Q4_K_M"``, ``"Q8_0"``...) with llama.cpp.

    ``threads`` sets llama.cpp's worker count (the bytes do not depend on it). The output is
    written under a temporary name beside ``output`` and renamed into place when complete.
    Returns the output path. Raises FlipGuardError for an unknown ftype, a bad input file or a
    failure inside llama.cpp (its last error line quoted).
    """
    import llama_cpp

    chosen = lookup_ftype(ftype)
    source = check_gguf_magic(source)  # a clear error for a missing or non-GGUF input
    output = checked_output_file(output, force, source=source)
    silence_llama()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = chosen.id
    params.nthread = int(threads)
    with atomic_output_file(output) as temp:
        _recent_errors.clear()
        status = llama_cpp.llama_model_quantize(str(source).encode(), str(temp).encode(), ctypes.byref(params))
        if status != 0:
            detail = _recent_errors[-1] if _recent_errors else "no message"
            raise FlipGuardError(f"llama.cpp could not quantize {source} to {chosen.name} ({detail}); "
                                 "give an F32, F16 or BF16 GGUF model file that llama.cpp loads.")
    return output


def load_llama(path: str | PathLike, n_ctx: int = 512, threads: int = 1, seed: int = 0):
    """A ``llama_cpp.Llama`` for the GGUF file at ``path``: CPU only, ``threads`` threads, fixed
    seed, logits kept for every position, no output from llama.cpp.

    ``n_ctx`` is the most tokens (prompt plus generated) one evaluation may hold. Raises
    FlipGuardError if llama.cpp cannot load the file.
    """
    import llama_cpp

    path = check_gguf_magic(path)
    silence_llama()
    try:
        return llama_cpp.Llama(model_path=str(path), n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx,
                               n_threads=threads, n_threads_batch=threads, seed=seed, n_gpu_layers=0,
                               logits_all=True, verbose=False)
    except ValueError as err:
        raise FlipGuardError(f"llama.cpp could not load {path} ({err}); the file is not a model it runs.") from None


def tokenize(model, text: str, add_special: bool = True) -> list[int]:
    """Token ids of ``text`` as llama.cpp tokenizes it; special-token text (``<|eos|>``) is parsed
    as the special token, as transformers does. ``add_special`` adds BOS/EOS where the model's
    metadata says its tokenizer does (transformers' ``add_special_tokens``)."""
    return list(model.tokenize(text.encode("utf-8"), add_bos=add_special, special=True))


def token_logits(model, tokens: Sequence[int]) -> np.ndarray:
    """Logits after each of ``tokens``, shape ``(len(tokens), n_vocab)``, float32 (a fresh copy).

    Row ``i`` is the next-token distribution's logits given ``tokens[:i+1]``.
    """
    tokens = [int(t) for t in tokens]
    _check_fits(model, len(tokens))
    model.reset()
    model.eval(tokens)
    return np.array(model.scores[: len(tokens)], dtype=np.float32)


def text_logits(model, text: str, add_special: bool = True) -> tuple[list[int], np.ndarray]:
    """``(tokens, logits)`` of ``text``: its token ids and :func:`token_logits` of them."""
    tokens = tokenize(model, text, add_special)
    return tokens, token_logits(model, tokens)


def greedy_generate(model, prompt: str | Sequence[int], max_new_tokens: int,
                    stop_at_eos: bool = True) -> list[int]:
    """The ids of up to ``max_new_tokens`` tokens generated greedily (argmax, ties to the lowest id)
    after ``prompt`` (text, tokenized by :func:`tokenize` without added specials, or token ids).

    Stops after the end-of-generation token when ``stop_at_eos``; the prompt is not included.
    """
    import llama_cpp

    tokens = tokenize(model, prompt, add_special=False) if isinstance(prompt, str) else [int(t) for t in prompt]
    _check_fits(model, len(tokens) + max_new_tokens)
    vocab = llama_cpp.llama_model_get_vocab(model.model)
    model.reset()
    model.eval(tokens)
    generated: list[int] = []
    for _ in range(max_new_tokens):
        next_id = int(np.argmax(model.scores[model.n_tokens - 1]))
        generated.append(next_id)
        if stop_at_eos and llama_cpp.llama_vocab_is_eog(vocab, next_id):
            break
        model.eval([next_id])
    return generated


def _check_fits(model, n_tokens: int) -> None:
    """FlipGuardError if ``n_tokens`` do not fit the model's context (llama-cpp-python keeps one
    logits row per position of the ``n_ctx`` asked for; llama.cpp may round its own context up)."""
    capacity = min(model.n_ctx(), len(model.scores))
    if n_tokens > capacity:
        raise FlipGuardError(f"{n_tokens} tokens do not fit the context of {capacity}; "
                             "load the model with a larger n_ctx.")
