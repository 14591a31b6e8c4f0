"""The llama.cpp backend of ``evaluate``: the model as a llama.cpp user runs it.

A Hugging Face checkpoint is converted to GGUF by FlipGuard's converter (``flipguard.gguf``), the
GGUF is quantized by llama.cpp itself (``llama_model_quantize``, the engine of ``llama-quantize``;
no importance matrix) and loaded with ``llama_cpp.Llama``; answers are generated greedily and
fidelity is measured from llama.cpp's own logits. Nothing here emulates llama.cpp in torch.

Schemes: ``fp`` — the checkpoint's exact values (an F32 GGUF; the reference for fidelity); any
quantized ftype ``llama-quantize`` names without an importance matrix (``q4_k_m``, ``q8_0``,
``q6_k``, ``q4_0``, ...), quantized from the converter's output at ``outtype`` (default: what the
converter chooses for the checkpoint, F16 for float32/float16 weights, BF16 for bfloat16) — or a
GGUF file given directly (F32/F16/BF16), quantized as it is.

Prompts are formatted and tokenized by the checkpoint's own (Hugging Face) tokenizer and given to
llama.cpp as token ids, so both backends see the same tokens; answers are decoded by it too.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from flipguard.errors import FlipGuardError

BACKEND = "llama.cpp"


def gguf_schemes() -> tuple[str, ...]:
    """``fp`` and every quantized ftype, lower-case, in llama-quantize's order."""
    from flipguard.gguf.ftypes import ALIASES, QUANTIZED_FTYPES

    return ("fp", *(name.lower() for name in QUANTIZED_FTYPES), *(a.lower() for a in ALIASES))


@dataclass
class GGUFModel:
    """A GGUF model loaded in llama.cpp, the checkpoint's tokenizer, and how it was made.

    ``load_s``: convert + quantize + load, seconds (T_q for DER); ``files``: the GGUF files made
    (in a temporary directory removed by :meth:`close`)."""

    llama: object  # llama_cpp.Llama
    tokenizer: object  # transformers tokenizer of the checkpoint
    path: str
    scheme: str
    load_s: float
    outtype: str | None = None
    threads: int = 1
    files: dict = field(default_factory=dict)
    _work: tempfile.TemporaryDirectory | None = field(default=None, repr=False)

    @property
    def settings(self) -> dict:
        return {"backend": BACKEND, "outtype": self.outtype, "threads": self.threads,
                "llama_cpp": _version("llama_cpp_python"), "gguf": _version("gguf")}

    def answers(self, prompts: Sequence[str], max_new_tokens: int, batch_size: int, progress: bool) -> list[str]:
        """Greedy answers to ``prompts`` (one at a time: llama.cpp's batch is the prompt's tokens)."""
        from flipguard.console import progress_bar
        from flipguard.evaluate.generation import format_prompt
        from flipguard.gguf.runtime import greedy_generate

        chat = bool(getattr(self.tokenizer, "chat_template", None))
        out = []
        for prompt in progress_bar("evaluate: generate", prompts, enabled=progress, unit="prompt"):
            ids = self.tokenizer(format_prompt(self.tokenizer, prompt), add_special_tokens=not chat)["input_ids"]
            new = greedy_generate(self.llama, ids, max_new_tokens)
            out.append(self.tokenizer.decode(new, skip_special_tokens=True))
        return out

    def text_scores(self, texts: Sequence[str], reference: "GGUFModel | None", batch_size: int, max_length: int):
        """Per-text NLL and KL(reference ‖ self), as :func:`flipguard.evaluate.utility.score_texts`,
        from llama.cpp's logits (float32) of both models on the same token ids."""
        import numpy as np

        from flipguard.evaluate.utility import TextScores
        from flipguard.gguf.runtime import token_logits

        nll, tokens, kl, positions = [], [], [], []
        for text in texts:
            limit = min(max_length, self.llama.n_ctx())
            ids = self.tokenizer(text, truncation=True, max_length=limit)["input_ids"]
            logp = _log_softmax(token_logits(self.llama, ids))  # (T, V) float64
            nll.append(float(-sum(logp[t, ids[t + 1]] for t in range(len(ids) - 1))))
            tokens.append(len(ids) - 1)
            positions.append(len(ids))
            if reference is not None:
                ref = logp if reference is self else _log_softmax(token_logits(reference.llama, ids))
                p = np.exp(ref)
                kl.append(float(np.nansum(p * (ref - logp))))
        return TextScores(nll=nll, tokens=tokens, kl=kl if reference is not None else None, positions=positions)

    def load_reference(self) -> "GGUFModel":
        """The same checkpoint at full precision (F32) in llama.cpp: the fidelity reference."""
        return load_gguf_model(self.path, "fp", threads=self.threads)

    def close(self) -> None:
        self.llama = None
        if self._work is not None:
            self._work.cleanup()
            self._work = None


def load_gguf_model(path: str | Path, scheme: str, outtype: str | None = None, threads: int = 1) -> GGUFModel:
    """Convert (a checkpoint directory), quantize with llama.cpp under ``scheme`` and load it.

    ``path``: a Hugging Face checkpoint directory, or an F32/F16/BF16 ``.gguf`` file (then its
    tokenizer comes from the directory beside it). Raises FlipGuardError for an unknown scheme,
    a checkpoint FlipGuard's converter refuses, or a file llama.cpp cannot load.
    """
    from flipguard.gguf import convert_checkpoint, ftype, load_llama, quantize_gguf

    scheme = scheme.lower()
    if scheme not in gguf_schemes():
        raise FlipGuardError(f"unknown llama.cpp scheme {scheme!r}; choose fp or one of "
                             f"{', '.join(gguf_schemes()[1:])}.")
    path = Path(path)
    tokenizer = _tokenizer(path.parent if path.suffix == ".gguf" else path)
    work = tempfile.TemporaryDirectory(prefix="flipguard-gguf-")
    start = time.perf_counter()
    try:
        files = {}
        if path.suffix == ".gguf":
            source = path
        else:
            chosen = "F32" if scheme == "fp" else outtype
            source = convert_checkpoint(path, Path(work.name) / "model.gguf", outtype=chosen)
            files["converted"] = str(source)
        model_file = source
        if scheme != "fp":
            model_file = quantize_gguf(source, Path(work.name) / f"model-{scheme}.gguf", ftype(scheme.upper()).name,
                                       threads=threads)
            files["quantized"] = str(model_file)
        llama = load_llama(model_file, n_ctx=CONTEXT, threads=threads)
    except BaseException:
        work.cleanup()
        raise
    return GGUFModel(llama=llama, tokenizer=tokenizer, path=str(path), scheme=scheme,
                     load_s=time.perf_counter() - start, outtype=None if scheme == "fp" else outtype,
                     threads=threads, files=files, _work=work)


def _tokenizer(directory: Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(directory, local_files_only=True)
    except (OSError, ValueError) as err:
        raise FlipGuardError(f"cannot load the tokenizer in {directory}: {err}") from None


CONTEXT = 2048  # tokens one evaluation may hold: a long held-out text, or a prompt and its answer


def _log_softmax(logits):
    import numpy as np

    x = logits.astype(np.float64)
    x -= x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


def _version(dist: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"
