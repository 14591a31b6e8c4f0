"""ctypes harness over llama_cpp's ``libggml-base.so``: what ggml itself writes and reads.

The reference every GGUF scheme is tested against, bit for bit (tests and benchmarks only):

- :func:`quantize` — ``ggml_quantize_chunk(type, src, dst, 0, nrows, n_per_row, imatrix=NULL)``,
  the call ``llama-quantize`` makes for a tensor without an importance matrix;
- :func:`dequantize` — the type's ``to_float`` from ``ggml_get_type_traits``;
- :func:`fp32_to_fp16` — ``ggml_fp32_to_fp16_row`` (ggml's own float -> half rounding);
- :func:`row_size`, :func:`type_size`, :func:`block_size`.

Shapes are validated before any call: ggml asserts on some mistakes (and aborts the process) and
silently writes past the buffer on others.
"""

from __future__ import annotations

import ctypes
import threading
from functools import lru_cache
from pathlib import Path

import numpy as np

TYPES = {
    "q4_0": 2, "q4_1": 3, "q5_0": 6, "q5_1": 7, "q8_0": 8,
    "q2_k": 10, "q3_k": 11, "q4_k": 12, "q5_k": 13, "q6_k": 14,
    "iq4_nl": 20, "iq4_xs": 23,
}


class _TypeTraits(ctypes.Structure):
    _fields_ = [
        ("type_name", ctypes.c_char_p),
        ("blck_size", ctypes.c_int64),
        ("blck_size_interleave", ctypes.c_int64),
        ("type_size", ctypes.c_size_t),
        ("is_quantized", ctypes.c_bool),
        ("to_float", ctypes.c_void_p),
        ("from_float_ref", ctypes.c_void_p),
    ]


_TO_FLOAT = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.POINTER(ctypes.c_float), ctypes.c_int64)


def library_path() -> Path:
    """Path of the ``libggml-base.so`` shipped with llama_cpp (llama-cpp-python)."""
    import llama_cpp

    return Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"


@lru_cache(maxsize=1)
def lib() -> ctypes.CDLL:
    """The loaded library, with argument and return types declared."""
    so = ctypes.CDLL(str(library_path()))
    so.ggml_quantize_chunk.restype = ctypes.c_size_t
    so.ggml_quantize_chunk.argtypes = [
        ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p
    ]
    so.ggml_row_size.restype = ctypes.c_size_t
    so.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    so.ggml_type_size.restype = ctypes.c_size_t
    so.ggml_type_size.argtypes = [ctypes.c_int]
    so.ggml_blck_size.restype = ctypes.c_int64
    so.ggml_blck_size.argtypes = [ctypes.c_int]
    so.ggml_get_type_traits.restype = ctypes.POINTER(_TypeTraits)
    so.ggml_get_type_traits.argtypes = [ctypes.c_int]
    so.ggml_fp32_to_fp16_row.restype = None
    so.ggml_fp32_to_fp16_row.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    so.ggml_quantize_requires_imatrix.restype = ctypes.c_bool
    so.ggml_quantize_requires_imatrix.argtypes = [ctypes.c_int]
    return so


def type_id(name_or_id: str | int) -> int:
    """ggml's enum value for a type name ("q4_k") or the value itself."""
    return TYPES[name_or_id.lower()] if isinstance(name_or_id, str) else int(name_or_id)


def block_size(t: str | int) -> int:
    """Weights per block (``ggml_blck_size``)."""
    return int(lib().ggml_blck_size(type_id(t)))


def type_size(t: str | int) -> int:
    """Bytes per block (``ggml_type_size``)."""
    return int(lib().ggml_type_size(type_id(t)))


def row_size(t: str | int, n_per_row: int) -> int:
    """Bytes of one quantized row of ``n_per_row`` weights (``ggml_row_size``)."""
    _check_row(t, n_per_row)
    return int(lib().ggml_row_size(type_id(t), n_per_row))


def _check_row(t, n_per_row: int) -> None:
    if n_per_row <= 0 or n_per_row % block_size(t) != 0:
        raise ValueError(f"row length {n_per_row} is not a positive multiple of the block size {block_size(t)}")


def _as_rows(src: np.ndarray) -> np.ndarray:
    src = np.ascontiguousarray(src, dtype=np.float32)
    if src.ndim != 2:
        raise ValueError(f"expected a 2-D float32 array (rows, n_per_row), got shape {src.shape}")
    return src


def quantize(t: str | int, src: np.ndarray) -> np.ndarray:
    """uint8 ``(rows, row_size)``: the bytes ``ggml_quantize_chunk`` writes for float32 ``src``
    ``(rows, n_per_row)``, without an importance matrix."""
    tid = type_id(t)
    src = _as_rows(src)
    rows, n = src.shape
    _check_row(tid, n)
    if lib().ggml_quantize_requires_imatrix(tid):
        raise ValueError(f"type {t} needs an importance matrix")
    dst = np.zeros((rows, row_size(tid, n)), dtype=np.uint8)
    written = lib().ggml_quantize_chunk(tid, src.ctypes.data, dst.ctypes.data, 0, rows, n, None)
    assert written == dst.size
    return dst


def quantize_threads(t: str | int, src: np.ndarray, threads: int) -> np.ndarray:
    """:func:`quantize` with the rows split over ``threads`` threads (ctypes releases the GIL), as
    ``llama-quantize`` splits a tensor over its worker threads."""
    tid = type_id(t)
    src = _as_rows(src)
    rows, n = src.shape
    _check_row(tid, n)
    dst = np.zeros((rows, row_size(tid, n)), dtype=np.uint8)
    bounds = np.linspace(0, rows, threads + 1).astype(int)

    def work(a: int, b: int) -> None:
        if b > a:
            lib().ggml_quantize_chunk(tid, src[a:b].ctypes.data, dst[a:b].ctypes.data, 0, b - a, n, None)

    pool = [threading.Thread(target=work, args=(int(a), int(b))) for a, b in zip(bounds[:-1], bounds[1:])]
    for th in pool:
        th.start()
    for th in pool:
        th.join()
    return dst


def dequantize(t: str | int, data: np.ndarray, n_per_row: int) -> np.ndarray:
    """float32 ``(rows, n_per_row)``: ggml's ``to_float`` of the quantized rows ``data``
    (uint8 ``(rows, row_size)``)."""
    tid = type_id(t)
    _check_row(tid, n_per_row)
    data = np.ascontiguousarray(data, dtype=np.uint8)
    if data.ndim != 2 or data.shape[1] != row_size(tid, n_per_row):
        raise ValueError(f"expected uint8 rows of {row_size(tid, n_per_row)} bytes, got shape {data.shape}")
    out = np.empty((data.shape[0], n_per_row), dtype=np.float32)
    to_float = _TO_FLOAT(lib().ggml_get_type_traits(tid).contents.to_float)
    to_float(data.ctypes.data, out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), out.size)
    return out


def fp32_to_fp16(values: np.ndarray) -> np.ndarray:
    """uint16 bits of ggml's float -> half conversion of float32 ``values`` (any shape)."""
    src = np.ascontiguousarray(values, dtype=np.float32)
    out = np.empty(src.shape, dtype=np.uint16)
    lib().ggml_fp32_to_fp16_row(src.ctypes.data, out.ctypes.data, src.size)
    return out
