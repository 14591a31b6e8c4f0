"""Codes and absmax equal bitsandbytes' own, bit for bit, on random and exhaustive inputs."""

import zlib

import pytest
import torch

from flipguard.schemes import get_scheme, scheme_names

from .bnb_reference import bnb_codes

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
SHAPES = [(64, 64), (130, 70), (3, 5), (17, 129), (1, 1), (2, 33)]


@pytest.mark.parametrize("name", scheme_names())
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_random_weights_match_bitsandbytes(name, dtype, shape):
    gen = torch.Generator().manual_seed(zlib.crc32(f"{name}{shape}".encode()))
    w = (torch.randn(shape, generator=gen) * 0.05).to(dtype)
    w[0, 0] = 0.0  # zeros are a rounding-tie corner for FP4
    codes, absmax = bnb_codes(name, w)
    scheme = get_scheme(name)
    assert torch.equal(scheme.codes(w), codes)
    assert torch.equal(scheme.absmax(w), absmax)


@pytest.mark.parametrize("name", scheme_names())
@pytest.mark.parametrize("load_dtype", DTYPES)
def test_cast_to_load_dtype_before_quantizing(name, load_dtype):
    w = torch.randn(40, 96) * 0.03  # float32 checkpoint loaded as another dtype
    codes, absmax = bnb_codes(name, w, load_dtype)
    scheme = get_scheme(name, load_dtype=load_dtype)
    assert torch.equal(scheme.codes(w), codes)
    assert torch.equal(scheme.absmax(w), absmax)


def _every_value_up_to(m: float, dtype: torch.dtype) -> torch.Tensor:
    """Every representable ``dtype`` value in [-m, m] (16-bit dtypes: exhaustive)."""
    every = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(dtype)
    every = every[torch.isfinite(every.float())]
    return every[every.float().abs() <= m]


@pytest.mark.parametrize("name", ["nf4", "fp4"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("m", [1.0, 0.7, 0.0123, 3.3])
def test_4bit_exhaustive_over_every_16bit_value(name, dtype, m):
    """Every 16-bit value in [-M, M] in blocks whose absmax is M: every wall and tie is hit."""
    values = _every_value_up_to(m, dtype)
    m_exact = values.float().abs().max().to(dtype)
    per_block = 63
    pad = (-values.numel()) % per_block
    values = torch.cat([values, torch.zeros(pad, dtype=dtype)]).view(-1, per_block)
    head = torch.full((values.shape[0], 1), m_exact.item(), dtype=dtype)
    w = torch.cat([head, values], dim=1).reshape(-1, 64)
    w = torch.cat([w.reshape(-1), values.reshape(-1)[:37]]).view(1, -1)  # a partial last block too
    codes, absmax = bnb_codes(name, w)
    scheme = get_scheme(name)
    assert torch.equal(scheme.codes(w), codes)
    assert torch.equal(scheme.absmax(w), absmax)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("m", [1.0, 0.9921875, 0.0123, 7.5, 127.0])
def test_int8_exhaustive_over_every_16bit_value(dtype, m):
    """Every fp16 (or bf16) value in [-M, M] in one row with absmax M, ties included."""
    src = torch.float16 if dtype == torch.float32 else dtype
    values = _every_value_up_to(m, src).to(dtype)
    w = torch.cat([values, values.abs().max().view(1)]).view(1, -1)
    w = torch.cat([w, -w]).contiguous()
    codes, scb = bnb_codes("int8", w)
    scheme = get_scheme("int8")
    assert torch.equal(scheme.codes(w), codes)
    assert torch.equal(scheme.absmax(w), scb)


@pytest.mark.parametrize("name", scheme_names())
def test_all_zero_groups(name):
    w = torch.zeros(3, 64 * 3 + 5)
    w[1, 10] = 0.5
    codes, absmax = bnb_codes(name, w)
    scheme = get_scheme(name)
    assert torch.equal(scheme.codes(w), codes)
    assert torch.equal(scheme.absmax(w), absmax)
    zero_groups = w[0] if name == "int8" else w[0, :192]  # 4-bit blocks run across rows
    free = scheme.wall_distance(w)[0, : zero_groups.numel()]
    assert bool(free.isnan().all())  # no scale: no free position
