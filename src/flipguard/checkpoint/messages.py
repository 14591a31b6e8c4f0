"""Helpers for the one-sentence user errors raised in this package."""

from __future__ import annotations


def dtype_name(dtype) -> str:
    """``torch.float16`` -> ``"float16"``."""
    return str(dtype).removeprefix("torch.")


def truncated(shard, tensor: str) -> str:
    """The sentence for a shard that ends before the bytes its header promises ``tensor``."""
    return f"{shard} ends inside tensor {tensor}; the file is truncated."


def first_sentence(err: BaseException, limit: int = 200) -> str:
    """The first sentence of an exception's message (third-party messages run on for lines),
    without its final period and cut at ``limit`` characters, for quoting inside a sentence.
    A first line that ends with a colon is joined with the lines that explain it."""
    lines = [line.strip() for line in (str(err).strip() or type(err).__name__).splitlines() if line.strip()]
    text = " ".join(lines) if lines and lines[0].endswith(":") else lines[0] if lines else type(err).__name__
    text = text.split(". ", 1)[0].rstrip(".")
    return text if len(text) <= limit else text[: limit - 3] + "..."
