"""Silencing bitsandbytes' per-call notices while a quantized model runs."""

from __future__ import annotations

import contextlib
import logging
import warnings


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
