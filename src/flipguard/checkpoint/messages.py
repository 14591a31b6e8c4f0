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
