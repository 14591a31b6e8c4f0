"""Load a local Hugging Face causal-LM directory in full precision or bitsandbytes-quantized.

Schemes (what ``transformers`` does when a user quantizes at load time, DESIGN §3):

========  ===========================================================================
``fp``    no quantization: the checkpoint's own dtype (``dtype="auto"``)
``int8``  ``BitsAndBytesConfig(load_in_8bit=True)`` (LLM.int8, per-row absmax of the fp16 weight)
``fp4``   ``BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="fp4")``
``nf4``   ``BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4")``
========  ===========================================================================

``device="cpu"`` by default (bitsandbytes ≥ 0.50 quantizes on CPU); ``device="cuda"`` (or
``"cuda:1"``) loads onto that GPU, where bitsandbytes' CUDA kernels quantize. 4-bit compute in the checkpoint's dtype, no double quantization (it does not change the
weight codes). Nothing is downloaded: the path must be a local directory.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

from flipguard.checkpoint.layout import find_weight_layout
from flipguard.errors import FlipGuardError

#: Scheme names, in the order the CLI lists them.
SCHEMES = ("fp", "int8", "fp4", "nf4")


@contextlib.contextmanager
def quiet_bitsandbytes():
    """Silence bitsandbytes' per-call notices (LLM.int8 logs "inputs will be cast ... to float16"
    on every matmul; the CPU backend logs a missing optional kernel package) and Python warnings,
    for the duration of the block. Errors still show."""
    logger = logging.getLogger("bitsandbytes")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


@dataclass
class LoadedModel:
    """A model in eval mode, its tokenizer, and how it was made (``load_s``: read + quantize, s).

    The evaluation harness asks a loaded model (of either backend: this one, transformers, or
    :class:`flipguard.evaluate.llamacpp.GGUFModel`) for :meth:`answers`, :meth:`text_scores` and
    :meth:`load_reference` only."""

    model: object  # transformers PreTrainedModel
    tokenizer: object  # transformers PreTrainedTokenizerBase
    path: str
    scheme: str
    load_s: float

    @property
    def settings(self) -> dict:
        """How the model was loaded, for the result's settings: backend, dtype, device."""
        return {"backend": "transformers", "dtype": str(getattr(self.model, "dtype", "")).replace("torch.", ""),
                "device": str(self.model.device)}

    def answers(self, prompts, max_new_tokens: int, batch_size: int, progress: bool) -> list[str]:
        """Greedy answers to ``prompts`` (:func:`flipguard.evaluate.generation.generate_answers`)."""
        from flipguard.evaluate.generation import generate_answers

        return generate_answers(self.model, self.tokenizer, prompts, max_new_tokens, batch_size, progress)

    def text_scores(self, texts, reference: "LoadedModel | None", batch_size: int, max_length: int):
        """Per-text NLL and KL(reference ‖ self) (:func:`flipguard.evaluate.utility.score_texts`)."""
        from flipguard.evaluate.utility import score_texts

        ref = None if reference is None else (self.model if reference is self else reference.model)
        return score_texts(self.model, self.tokenizer, texts, ref, batch_size, max_length)

    def load_reference(self) -> "LoadedModel":
        """The same checkpoint in full precision on the same device: the fidelity reference."""
        return load_model(self.path, "fp", str(self.model.device))

    def close(self) -> None:
        """Let the model go (the harness calls this when done)."""
        self.model = None


def quantization_config(scheme: str, compute_dtype=None):
    """The ``BitsAndBytesConfig`` for ``scheme``, or None for ``fp``."""
    if scheme not in SCHEMES:
        raise FlipGuardError(f"unknown scheme {scheme!r}; choose one of {', '.join(SCHEMES)}.")
    if scheme == "fp":
        return None
    from transformers import BitsAndBytesConfig

    if scheme == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type=scheme,
        bnb_4bit_compute_dtype=compute_dtype,
        bnb_4bit_use_double_quant=False,
    )


def require_scheme(scheme: str) -> None:
    """Raise a :class:`FlipGuardError` when this machine cannot load ``scheme`` (no bitsandbytes)."""
    if scheme not in SCHEMES:
        raise FlipGuardError(f"unknown scheme {scheme!r}; choose one of {', '.join(SCHEMES)}.")
    if scheme == "fp":
        return
    try:
        with quiet_bitsandbytes():
            import bitsandbytes  # noqa: F401
    except Exception as err:  # ImportError, or a backend that fails to initialise
        raise FlipGuardError(
            f"scheme {scheme} cannot be loaded on this machine: bitsandbytes is unavailable ({err}); "
            "install bitsandbytes>=0.50 or use --scheme fp."
        ) from None


def require_device(device: str) -> None:
    """Raise :class:`FlipGuardError` unless ``device`` is "cpu" or a CUDA device this machine has."""
    import torch

    if device == "cpu":
        return
    if not device.startswith("cuda"):
        raise FlipGuardError(f"unknown device {device!r}; give cpu or cuda (cuda:N for another GPU).")
    if not torch.cuda.is_available():
        raise FlipGuardError(f"device {device} was asked for but this machine has no CUDA GPU; use --device cpu.")
    try:
        index = torch.device(device).index or 0
    except RuntimeError:
        raise FlipGuardError(f"{device!r} is not a device name; give cuda or cuda:N.") from None
    if index >= torch.cuda.device_count():
        raise FlipGuardError(f"{device} does not exist: this machine has {torch.cuda.device_count()} CUDA GPU(s).")


def load_model(path: str | Path, scheme: str, device: str = "cpu") -> LoadedModel:
    """Load the model directory ``path`` under ``scheme`` onto ``device``, in eval mode.

    The tokenizer gets left padding (for batched generation) and, when it has no pad token, uses
    its end-of-sequence token for padding.
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    path = Path(path)
    if not (path / "config.json").is_file():
        raise FlipGuardError(f"{path} is not a model directory (no config.json); give a local Hugging Face checkpoint.")
    require_scheme(scheme)
    require_device(device)
    find_weight_layout(path)  # safetensors weights, or one sentence on why pickle weights are refused
    config = AutoConfig.from_pretrained(path, local_files_only=True)
    if getattr(config, "quantization_config", None):
        raise FlipGuardError(
            f"{path} is already quantized; evaluate its full-precision checkpoint and pick the scheme with --scheme."
        )
    start = time.perf_counter()
    try:
        with quiet_bitsandbytes():
            model = AutoModelForCausalLM.from_pretrained(
                path,
                use_safetensors=True,  # never the pickle files beside them
                local_files_only=True,
                dtype="auto",
                device_map={"": device},
                quantization_config=quantization_config(scheme, getattr(config, "dtype", None)),
            )
    except (ImportError, RuntimeError) as err:
        if scheme == "fp":
            raise
        raise FlipGuardError(f"scheme {scheme} cannot be loaded on this machine: {err}") from None
    except OSError as err:
        raise FlipGuardError(f"cannot load the model in {path}: {err}") from None
    load_s = time.perf_counter() - start
    model.eval()
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise FlipGuardError(f"cannot load the tokenizer in {path}: {err}") from None
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise FlipGuardError(f"the tokenizer in {path} has neither a pad nor an end-of-sequence token.")
        tokenizer.pad_token = tokenizer.eos_token
    return LoadedModel(model=model, tokenizer=tokenizer, path=str(path), scheme=scheme, load_s=load_s)
