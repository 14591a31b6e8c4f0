"""Helpers for the one-sentence user errors raised in this package."""

from __future__ import annotations


def first_line(err: BaseException) -> str:
    """The first line of an exception's message, without a trailing period, for quoting inside a sentence."""
    text = str(err).strip() or type(err).__name__
    return text.splitlines()[0].rstrip(".")


def dtype_name(dtype) -> str:
    """``torch.float16`` -> ``"float16"``."""
    return str(dtype).removeprefix("torch.")


def truncated(shard, tensor: str) -> str:
    """The sentence for a shard that ends before the bytes its header promises ``tensor``."""
    return f"{shard} ends inside tensor {tensor}; the file is truncated."


def first_sentence(err: BaseException, limit: int = 200) -> str:
    """The first sentence of an exception's message (third-party messages run on for lines),
    without its final period and cut at ``limit`` characters, for quoting inside a sentence."""
    text = first_line(err)
    for end in (". ",):  # third-party messages often run on into a second sentence
        if end in text:
            text = text.split(end, 1)[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."
