"""Seeded mutations of a tiny checkpoint, over every format FlipGuard reads.

A :class:`Mutant` changes a copy of a base checkpoint directory in place. Classes (``Mutant.kind``):

- ``safetensors.*``: header length, header JSON, dtypes, shapes, offsets, truncation, byte flips
  (header bytes: anything may happen; data bytes: the file stays valid);
- ``config.*``: wrong types, bad ranges, deep nesting, dtype names, model types;
- ``index.*``: shard paths outside the folder, missing shards, odd shard names, damaged JSON;
- ``special.*``: FIFOs, device symlinks, directories, symlink loops, sockets in place of files;
- ``values.*``: NaN/Inf weights.

``expect`` says what a run may end with: ``"error"`` (exit 2, one sentence), ``"valid"`` (a normal
verdict: the base's scan exit code; defend writes a complete output) or ``"any"`` (exit 0-3, no
crash; used where a mutation may or may not leave the file valid, e.g. a flipped header byte).

Mutants are a pure function of the seed: the same seed gives the same list, in the same order.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

SINGLE = "model.safetensors"
INDEX = "model.safetensors.index.json"
TARGET = "model.layers.0.self_attn.q_proj.weight"  # a weight bitsandbytes quantizes (llama base)
SENTINEL = "sentinel.safetensors"  # a valid shard *outside* the checkpoint folder: never to be read


@dataclass(frozen=True)
class Mutant:
    """One damaged copy: ``apply(directory)`` mutates the copy of base ``base`` in place."""

    kind: str  # class, e.g. "config.types"
    label: str  # what was done, for the report
    base: str  # "llama" (one file, float32), "gpt2" (shards, Conv1D) or "attacked" (llama, NF4 trace)
    apply: Callable[[Path], None]
    expect: str | dict[str, str] = "any"  # "error", "valid" or "any"; or one of them per command

    def expected(self, command: str) -> str:
        return self.expect if isinstance(self.expect, str) else self.expect[command]


# a companion file defend cannot copy: scan (which never reads it) is not concerned, defend refuses
COMPANION_ERROR = {"scan": "valid", "defend": "error"}


# ----------------------------------------------------------------------------- file helpers


def split_safetensors(path: Path) -> tuple[dict, bytes]:
    """(header JSON, data bytes) of a safetensors file."""
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + length]), raw[8 + length :]


def join_safetensors(path: Path, header: dict | bytes, data: bytes, length: int | None = None) -> None:
    """Write ``header`` (a dict, or raw bytes as given) and ``data``; ``length`` overrides the prefix."""
    text = header if isinstance(header, bytes) else json.dumps(header, separators=(",", ":")).encode()
    if not isinstance(header, bytes):
        text += b" " * (-len(text) % 8)
    prefix = struct.pack("<Q", len(text) if length is None else length)
    path.write_bytes(prefix + text + data)


def edit_header(shard: str, change: Callable[[dict], None]) -> Callable[[Path], None]:
    """A mutation that edits one shard's header JSON (data bytes unchanged)."""

    def apply(directory: Path) -> None:
        header, data = split_safetensors(directory / shard)
        change(header)
        join_safetensors(directory / shard, header, data)

    return apply


def edit_json(name: str, change: Callable[[dict], object]) -> Callable[[Path], None]:
    """A mutation that edits a JSON file; ``change`` edits in place or returns a replacement."""

    def apply(directory: Path) -> None:
        data = json.loads((directory / name).read_text())
        replaced = change(data)
        text = json.dumps(data if replaced is None else replaced, allow_nan=True)
        (directory / name).write_text(text)

    return apply


def write_bytes(name: str, data: bytes) -> Callable[[Path], None]:
    def apply(directory: Path) -> None:
        (directory / name).write_bytes(data)

    return apply


def edit_tensors(change: Callable[[dict[str, torch.Tensor]], None]) -> Callable[[Path], None]:
    """Rewrite model.safetensors with safetensors itself after ``change`` edits the tensor dict."""

    def apply(directory: Path) -> None:
        tensors = load_file(directory / SINGLE)
        change(tensors)
        save_file(tensors, directory / SINGLE, metadata={"format": "pt"})

    return apply


def first_shard(directory: Path) -> str:
    return sorted(json.loads((directory / INDEX).read_text())["weight_map"].values())[0]


def deep(depth: int, leaf: str = "1", open_: str = "[", close: str = "]") -> str:
    return open_ * depth + leaf + close * depth


# ----------------------------------------------------------------------------- safetensors


def safetensors_mutants(rng: random.Random) -> list[Mutant]:
    out: list[Mutant] = []
    out += _header_length(rng)
    out += _header_json(rng)
    out += _dtypes(rng)
    out += _shapes(rng)
    out += _offsets(rng)
    out += _truncation(rng)
    out += _byte_flips(rng)
    return out


def _header_length(rng: random.Random) -> list[Mutant]:
    def set_length(value_of: Callable[[int, int], int]) -> Callable[[Path], None]:
        def apply(directory: Path) -> None:
            path = directory / SINGLE
            raw = bytearray(path.read_bytes())
            (length,) = struct.unpack("<Q", raw[:8])
            raw[:8] = struct.pack("<Q", value_of(length, len(raw)) % (1 << 64))
            path.write_bytes(bytes(raw))

        return apply

    cases = {
        "zero": lambda n, size: 0,
        "one": lambda n, size: 1,
        "minus one": lambda n, size: n - 1,
        "plus one": lambda n, size: n + 1,
        "plus eight": lambda n, size: n + 8,
        "half": lambda n, size: n // 2,
        "file size": lambda n, size: size,
        "file size - 8": lambda n, size: size - 8,
        "2**32": lambda n, size: 1 << 32,
        "2**63": lambda n, size: 1 << 63,
        "2**64-1": lambda n, size: (1 << 64) - 1,
        "100 MB + 1": lambda n, size: 100_000_001,
    }
    out = [Mutant("safetensors.header_length", f"length {k}", "llama", set_length(f), "error")
           for k, f in cases.items()]
    for _ in range(6):
        value = rng.randrange(1 << 64)
        out.append(Mutant("safetensors.header_length", f"length {value}", "llama",
                          set_length(lambda n, size, v=value: v), "error"))
    for size in range(8):  # the length prefix itself cut short
        out.append(Mutant("safetensors.header_length", f"file of {size} bytes", "llama",
                          lambda d, s=size: os.truncate(d / SINGLE, s), "error"))
    return out


def _header_json(rng: random.Random) -> list[Mutant]:
    def raw_header(text: bytes, label: str, expect: str = "error") -> Mutant:
        def apply(directory: Path) -> None:
            _, data = split_safetensors(directory / SINGLE)
            join_safetensors(directory / SINGLE, text, data)

        return Mutant("safetensors.header_json", label, "llama", apply, expect)

    out = [
        raw_header(b"", "empty header"),
        raw_header(b"{", "lone brace"),
        raw_header(b"[]", "a list"),
        raw_header(b"null", "null"),
        raw_header(b"42", "a number"),
        raw_header(b'"text"', "a string"),
        raw_header(b"\xff\xfe\x00{}", "not UTF-8"),
        raw_header(b"\xef\xbb\xbf{}", "UTF-8 BOM"),
        raw_header(deep(100_000).encode(), "list nested 100000 deep"),
        raw_header(deep(100_000, "1", '{"a":', "}").encode(), "object nested 100000 deep"),
        raw_header(deep(200).encode(), "list nested 200 deep"),
        raw_header(b'{"__metadata__": ' + deep(5000).encode() + b"}", "metadata nested 5000 deep"),
        raw_header(b"{}", "no tensors"),
        raw_header(b'{"__metadata__": {"format": "pt"}}', "metadata only"),
    ]

    def change(label: str, edit: Callable[[dict], None], expect: str = "error") -> Mutant:
        return Mutant("safetensors.header_json", label, "llama", edit_header(SINGLE, edit), expect)

    out += [
        change("metadata is a list", lambda h: h.__setitem__("__metadata__", ["a"])),
        change("metadata value is a number", lambda h: h.__setitem__("__metadata__", {"format": 1})),
        change("metadata is null", lambda h: h.__setitem__("__metadata__", None), "any"),
        change("metadata removed", lambda h: h.pop("__metadata__", None), "valid"),
        change("entry is a list", lambda h: h.__setitem__(TARGET, [1, 2])),
        change("entry is null", lambda h: h.__setitem__(TARGET, None)),
        change("entry without dtype", lambda h: h[TARGET].pop("dtype")),
        change("entry without shape", lambda h: h[TARGET].pop("shape")),
        change("entry without offsets", lambda h: h[TARGET].pop("data_offsets")),
        change("entry with an extra field", lambda h: h[TARGET].__setitem__("extra", 1), "any"),
        change("a 10000-character tensor name", lambda h: h.__setitem__("x" * 10_000, h.pop(TARGET))),
        change("empty tensor name", lambda h: h.__setitem__("", h.pop(TARGET))),
        change("tensor renamed", lambda h: h.__setitem__(TARGET + "_x", h.pop(TARGET))),
        change("a NUL in the tensor name", lambda h: h.__setitem__(TARGET + "\x00", h.pop(TARGET))),
    ]

    def with_tail(tail: bytes, label: str) -> Mutant:
        def apply(directory: Path) -> None:
            header, data = split_safetensors(directory / SINGLE)
            text = json.dumps(header).encode() + tail
            join_safetensors(directory / SINGLE, text, data)

        return Mutant("safetensors.header_json", label, "llama", apply, "error")

    out += [with_tail(b"garbage", "trailing garbage"), with_tail(b"\x00" * 3, "trailing NUL bytes")]

    def padded(pad: bytes, label: str, expect: str) -> Mutant:
        def apply(directory: Path) -> None:
            header, data = split_safetensors(directory / SINGLE)
            join_safetensors(directory / SINGLE, json.dumps(header).encode() + pad, data)

        return Mutant("safetensors.header_json", label, "llama", apply, expect)

    out += [padded(b" " * 13, "padded with spaces", "valid"), padded(b"\n\t ", "padded with other white space", "any")]

    def duplicate_key(directory: Path) -> None:  # the same name twice: the last one wins in JSON parsers
        header, data = split_safetensors(directory / SINGLE)
        text = json.dumps(header)
        entry = json.dumps({TARGET: header[TARGET]})[1:-1]
        join_safetensors(directory / SINGLE, ("{" + entry + "," + text[1:]).encode(), data)

    out.append(Mutant("safetensors.header_json", "duplicate key", "llama", duplicate_key, "any"))
    for _ in range(6):  # random junk of random length
        junk = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
        out.append(raw_header(junk, f"{len(junk)} random bytes"))
    return out


def _dtypes(rng: random.Random) -> list[Mutant]:
    def set_dtype(code, name: str = TARGET, expect: str = "error") -> Mutant:
        return Mutant("safetensors.dtype", f"{name.split('.')[-2]} dtype {code!r}", "llama",
                      edit_header(SINGLE, lambda h: h[name].__setitem__("dtype", code)), expect)

    codes = ["F99", "", "f32", "float32", 123, None, ["F32"], "F64", "F16", "C64", "F4", "F8_E8M0", "F6_E2M3",
             "I4", "U1", "BOOL", "I8", "U8", "BF16"]
    out = [set_dtype(code) for code in codes]
    out += [set_dtype("I32"), set_dtype("U32")]  # same size as F32: valid file, not a float weight
    out += [set_dtype("I32", "model.embed_tokens.weight", "any"), set_dtype("F99", "model.norm.weight")]

    def reinterpret(code: str, factor: int) -> Mutant:  # same bytes, narrower dtype, more columns
        def edit(header: dict) -> None:
            header[TARGET]["dtype"] = code
            header[TARGET]["shape"][-1] *= factor

        return Mutant("safetensors.dtype", f"q_proj read as {code}", "llama", edit_header(SINGLE, edit), "error")

    out += [reinterpret("F16", 2), reinterpret("BF16", 2), reinterpret("F8_E4M3", 4), reinterpret("F8_E5M2", 4)]
    return out


def _shapes(rng: random.Random) -> list[Mutant]:
    def stored_as(shape: tuple[int, ...], label: str, expect: str = "error", name: str = TARGET) -> Mutant:
        def change(tensors: dict[str, torch.Tensor]) -> None:
            numel = torch.Size(shape).numel()
            flat = tensors[name].reshape(-1)
            if numel <= flat.numel():
                tensors[name] = flat[:numel].reshape(shape).clone()
            else:
                tensors[name] = torch.randn(shape, dtype=flat.dtype) * 0.02

        return Mutant("safetensors.shape", label, "llama", edit_tensors(change), expect)

    out = [
        stored_as((64 * 64,), "q_proj stored 1-D"),
        stored_as((), "q_proj stored 0-D"),
        stored_as((64, 64, 1, 1, 1, 1), "q_proj stored 6-D"),
        stored_as((1, 64, 64), "q_proj stored 3-D"),
        stored_as((4, 16, 64), "q_proj stored 3-D, same size"),
        stored_as((0, 64), "q_proj with no rows"),
        stored_as((64, 0), "q_proj with no columns"),
        stored_as((65, 64), "q_proj with a row too many"),
        stored_as((64, 63), "q_proj with a column too few"),
        stored_as((32, 128), "q_proj reshaped, same size"),
        stored_as((1, 4096), "q_proj as one row"),
        stored_as((64, 64, 1), "q_proj with a trailing unit axis"),
        stored_as((64, 128), "up_proj transposed", name="model.layers.0.mlp.up_proj.weight"),
        stored_as((64,), "down_proj stored 1-D", name="model.layers.1.mlp.down_proj.weight"),
        stored_as((64 * 64,), "lm_head stored 1-D", "any", name="lm_head.weight"),
        stored_as((127, 64), "embedding with a row too few", "any", name="model.embed_tokens.weight"),
        stored_as((4, 4, 4), "a norm stored 3-D", "any", name="model.norm.weight"),
    ]

    def header_shape(shape, label: str) -> Mutant:
        return Mutant("safetensors.shape", label, "llama",
                      edit_header(SINGLE, lambda h: h[TARGET].__setitem__("shape", shape)), "error")

    out += [
        header_shape([-64, -64], "negative dims"),
        header_shape([64.0, 64.0], "float dims"),
        header_shape(["64", "64"], "string dims"),
        header_shape([1 << 40, 1 << 40], "dims of 2**40"),
        header_shape([1 << 63, 2], "a dim of 2**63"),
        header_shape([[64], [64]], "nested dims"),
        header_shape("64x64", "shape is a string"),
        header_shape(None, "shape is null"),
        header_shape([64, 32], "half the elements"),
        header_shape([64, 128], "twice the elements"),
        header_shape([64] * 6, "6 dims of 64"),
        header_shape([1] * 1000, "1000 unit dims"),
    ]
    for _ in range(6):
        dims = [rng.randrange(-2, 200) for _ in range(rng.randrange(0, 5))]
        out.append(header_shape(dims, f"shape {dims}"))
    return out


def _offsets(rng: random.Random) -> list[Mutant]:
    def offsets(change: Callable[[list[int], int], object], label: str, expect: str = "error") -> Mutant:
        def edit(header: dict) -> None:
            size = max(entry["data_offsets"][1] for k, entry in header.items() if k != "__metadata__")
            header[TARGET]["data_offsets"] = change(list(header[TARGET]["data_offsets"]), size)

        return Mutant("safetensors.offsets", label, "llama", edit_header(SINGLE, edit), expect)

    out = [
        offsets(lambda o, s: [o[1], o[0]], "reversed"),
        offsets(lambda o, s: [o[0], o[0]], "empty range"),
        offsets(lambda o, s: [o[0] + 4, o[1] + 4], "shifted by 4 bytes"),
        offsets(lambda o, s: [o[0] - 4, o[1] - 4], "shifted back by 4 bytes"),
        offsets(lambda o, s: [0, o[1] - o[0]], "overlapping the first tensor"),
        offsets(lambda o, s: [s, s + o[1] - o[0]], "beyond the data"),
        offsets(lambda o, s: [-o[1], -o[0]], "negative"),
        offsets(lambda o, s: [float(o[0]), float(o[1])], "floats", "any"),
        offsets(lambda o, s: [str(o[0]), str(o[1])], "strings"),
        offsets(lambda o, s: [o[0]], "one number"),
        offsets(lambda o, s: [o[0], o[1], o[1]], "three numbers"),
        offsets(lambda o, s: [1 << 64, (1 << 64) + 16], "past 2**64"),
        offsets(lambda o, s: [(1 << 63) - 8, 1 << 63], "near 2**63"),
        offsets(lambda o, s: None, "null"),
        offsets(lambda o, s: {"begin": o[0]}, "an object"),
    ]

    def swap_two(directory: Path) -> None:  # two tensors' byte ranges exchanged: sizes differ
        header, data = split_safetensors(directory / SINGLE)
        other = "model.layers.0.mlp.up_proj.weight"
        header[TARGET]["data_offsets"], header[other]["data_offsets"] = (
            header[other]["data_offsets"], header[TARGET]["data_offsets"])
        join_safetensors(directory / SINGLE, header, data)

    def swap_same_size(directory: Path) -> None:  # q and k of equal size exchanged: still a valid file
        header, data = split_safetensors(directory / SINGLE)
        other = "model.layers.0.self_attn.o_proj.weight"
        header[TARGET]["data_offsets"], header[other]["data_offsets"] = (
            header[other]["data_offsets"], header[TARGET]["data_offsets"])
        join_safetensors(directory / SINGLE, header, data)

    out += [Mutant("safetensors.offsets", "two ranges of different size swapped", "llama", swap_two, "error"),
            Mutant("safetensors.offsets", "two ranges of one size swapped", "llama", swap_same_size, "valid")]
    for _ in range(8):
        a, b = rng.randrange(-100, 1 << 20), rng.randrange(-100, 1 << 20)
        out.append(offsets(lambda o, s, a=a, b=b: [a, b], f"random [{a}, {b}]"))
    return out


def _truncation(rng: random.Random) -> list[Mutant]:
    def cut(label: str, kept: Callable[[int, int], int], base: str = "llama") -> Mutant:
        """``kept(data_start, size)``: how many bytes of the shard are left."""

        def apply(directory: Path) -> None:
            path = directory / (SINGLE if base != "gpt2" else first_shard(directory))
            size = path.stat().st_size
            (length,) = struct.unpack("<Q", path.read_bytes()[:8])
            os.truncate(path, max(0, min(size - 1, kept(8 + length, size))))

        return Mutant("safetensors.truncation", label, base, apply, "error")

    out = [
        cut("cut inside the header", lambda start, size: 20),
        cut("cut at the data start", lambda start, size: start),
        cut("cut halfway through the data", lambda start, size: (start + size) // 2),
        cut("last byte missing", lambda start, size: size - 1),
        cut("a shard cut halfway", lambda start, size: (start + size) // 2, base="gpt2"),
        cut("a shard cut at its data start", lambda start, size: start, base="gpt2"),
    ]
    for _ in range(12):
        fraction = rng.random()
        out.append(cut(f"cut at {fraction:.3f} of the file", lambda start, size, f=fraction: int(f * size)))

    def extend(tail: bytes, label: str) -> Mutant:
        def apply(directory: Path) -> None:
            with open(directory / SINGLE, "ab") as handle:
                handle.write(tail)

        return Mutant("safetensors.truncation", label, "llama", apply, "error")

    out += [extend(b"\x00", "one byte appended"), extend(b"x" * 4096, "4 KiB appended")]
    return out


def _byte_flips(rng: random.Random) -> list[Mutant]:
    out = []

    def flip_header(count: int) -> Mutant:
        picks = [(rng.random(), rng.randrange(8)) for _ in range(count)]

        def apply(directory: Path) -> None:
            path = directory / SINGLE
            raw = bytearray(path.read_bytes())
            (length,) = struct.unpack("<Q", raw[:8])
            for where, bit in picks:
                raw[int(where * (8 + length))] ^= 1 << bit
            path.write_bytes(bytes(raw))

        return Mutant("safetensors.byte_flip", f"{count} bit(s) flipped in the header", "llama", apply, "any")

    out += [flip_header(rng.choice([1, 1, 2, 4])) for _ in range(40)]

    def flip_data(base: str) -> Mutant:
        where, bit = rng.random(), rng.randrange(16)  # the low 16 mantissa bits of a float32: stays finite

        def apply(directory: Path) -> None:
            path = directory / SINGLE
            header, data = split_safetensors(path)
            begin, end = header[TARGET]["data_offsets"]
            raw = bytearray(path.read_bytes())
            start = path.stat().st_size - len(data) + begin
            element = int(where * (end - begin) // 4)
            raw[start + 4 * element + bit // 8] ^= 1 << (bit % 8)
            path.write_bytes(bytes(raw))

        return Mutant("safetensors.byte_flip", f"data bit flipped ({base})", base, apply, "valid")

    out += [flip_data("llama") for _ in range(12)] + [flip_data("attacked") for _ in range(8)]
    return out


# ----------------------------------------------------------------------------- config.json


SIZE_FIELDS = {
    "llama": ["vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "head_dim", "max_position_embeddings"],
    "gpt2": ["vocab_size", "n_embd", "n_head", "n_layer", "n_positions"],
}
FLOAT_FIELDS = {
    "llama": ["initializer_range", "rms_norm_eps", "attention_dropout"],
    "gpt2": ["initializer_range", "layer_norm_epsilon", "attn_pdrop", "resid_pdrop", "embd_pdrop"],
}
BAD_VALUES = ["abc", 1.5, None, True, -1, 0, 10**12, 2**64, float("nan"), float("inf"), -float("inf"), [], {},
              1e308, "64", [64]]


def config_mutants(rng: random.Random) -> list[Mutant]:
    out: list[Mutant] = []
    for base in ("llama", "gpt2"):
        for field in SIZE_FIELDS[base]:
            for value in BAD_VALUES:
                optional = value is None and field in ("head_dim", "num_key_value_heads")  # derived when null
                out.append(_config_set("config.types", base, field, value, "any" if optional else "error"))
        for field in FLOAT_FIELDS[base]:
            for value in ["abc", None, float("nan"), float("inf"), -1.0, [], "0.02"]:
                out.append(_config_set("config.types", base, field, value, "any"))
    # keep the tally per mutant small: sample the cross product instead of every cell of it
    out = rng.sample(out, 150)
    for field, value in [("initializer_range", float("nan")), ("rms_norm_eps", float("nan")),
                         ("vocab_size", 1.5), ("vocab_size", "abc"), ("vocab_size", None), ("vocab_size", -1),
                         ("vocab_size", 10**12)]:
        out.append(_config_set("config.types", "llama", field, value, "error"))
    out += [_config_set("config.types", "gpt2", "n_embd", 0, "error"),
            _config_set("config.types", "gpt2", "n_head", 0, "error")]
    out += _config_ranges()
    out += _config_nesting()
    out += _config_dtypes()
    out += _config_model_types()
    return out


def _config_set(kind: str, base: str, field: str, value, expect: str) -> Mutant:
    def change(config: dict) -> None:
        node = config
        *parents, leaf = field.split(".")
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value

    return Mutant(kind, f"{base} {field} = {value!r}"[:80], base, edit_json("config.json", change), expect)


def _config_ranges() -> list[Mutant]:
    cases = [
        ("llama", "hidden_size", 65, "error"), ("llama", "hidden_size", 32, "error"),
        ("llama", "hidden_size", 128, "error"), ("llama", "num_attention_heads", 3, "error"),
        ("llama", "num_attention_heads", 8, "error"), ("llama", "num_key_value_heads", 3, "error"),
        ("llama", "num_key_value_heads", 4, "error"), ("llama", "head_dim", 8, "error"),
        ("llama", "intermediate_size", 64, "error"), ("llama", "vocab_size", 127, "error"),
        ("llama", "vocab_size", 129, "error"), ("llama", "num_hidden_layers", 3, "error"),
        ("llama", "num_hidden_layers", 1, "any"), ("llama", "max_position_embeddings", 1, "any"),
        ("llama", "max_position_embeddings", 1 << 40, "any"), ("llama", "tie_word_embeddings", "yes", "any"),
        ("llama", "tie_word_embeddings", True, "any"), ("llama", "rope_parameters.rope_theta", -1.0, "any"),
        ("llama", "rope_parameters.rope_type", "no_such_rope", "any"), ("llama", "rope_parameters", [], "any"),
        ("llama", "hidden_act", "no_such_act", "any"), ("llama", "bos_token_id", 10**12, "any"),
        ("llama", "pad_token_id", -1, "any"), ("llama", "pad_token_id", 10**12, "error"),
        ("gpt2", "pad_token_id", 10**6, "any"), ("llama", "num_local_experts", 0, "any"),
        ("llama", "classifier_dropout", None, "any"), ("llama", "model_type", "LLAMA", "error"),
        ("llama", "quantization_config", [], "any"),
        ("llama", "quantization_config", "bnb", "error"), ("llama", "architectures", "LlamaForCausalLM", "any"),
        ("llama", "architectures", ["NoSuchModel"], "any"), ("llama", "architectures", [1], "any"),
        ("llama", "text_config", {"vocab_size": -1}, "any"), ("llama", "num_hidden_layers", 100_000, "error"),
        ("llama", "hidden_size", 1 << 30, "error"), ("llama", "intermediate_size", 1 << 40, "error"),
        ("gpt2", "n_embd", 65, "error"), ("gpt2", "n_head", 3, "error"), ("gpt2", "n_positions", 1 << 20, "any"),
        ("gpt2", "n_positions", 1 << 40, "error"), ("gpt2", "n_inner", 0, "any"), ("gpt2", "n_inner", "abc", "error"),
        ("gpt2", "n_inner", -5, "error"), ("gpt2", "n_layer", 5, "error"), ("gpt2", "vocab_size", 129, "error"),
        ("gpt2", "activation_function", 7, "any"), ("gpt2", "scale_attn_weights", "no", "any"),
    ]
    return [_config_set("config.ranges", base, field, value, expect) for base, field, value, expect in cases]


def _config_nesting() -> list[Mutant]:
    def text(label: str, body: str | bytes, expect: str = "error", base: str = "llama") -> Mutant:
        data = body if isinstance(body, bytes) else body.encode()
        return Mutant("config.nesting", label, base, write_bytes("config.json", data), expect)

    def nested_field(field: str, depth: int, base: str = "llama", opener=("[", "]")) -> Mutant:
        def apply(directory: Path) -> None:
            config = json.loads((directory / "config.json").read_text())
            body = json.dumps(config)[:-1] + f', "{field}": ' + deep(depth, "1", *opener) + "}"
            (directory / "config.json").write_text(body)

        expect = "error" if depth > 64 else "any"
        return Mutant("config.nesting", f"{base} {field} nested {depth} deep", base, apply, expect)

    out = [text("a list nested 100000 deep", deep(100_000)),
           text("an object nested 100000 deep", deep(100_000, "1", '{"a":', "}")),
           text("a list nested 5000 deep", deep(5000)), text("not JSON", "{model_type: llama}"),
           text("empty file", ""), text("not UTF-8", b'{"model_type": "ll\xff"}'),
           text("a JSON list", "[1, 2]"), text("a JSON string", '"llama"'), text("null", "null")]
    for field in ("x_extra", "rope_parameters", "quantization_config", "text_config", "architectures"):
        for depth in (10, 100, 1000, 100_000):
            out.append(nested_field(field, depth))
    out += [nested_field("x_extra", 100_000, opener=('{"a":', "}")), nested_field("x_extra", 100_000, "gpt2")]

    def huge(directory: Path) -> None:  # 40 MB of config: refused by size before parsing
        config = json.loads((directory / "config.json").read_text())
        config["x_padding"] = "x" * 40_000_000
        (directory / "config.json").write_text(json.dumps(config))

    def many_keys(directory: Path) -> None:  # 100,000 harmless keys
        config = json.loads((directory / "config.json").read_text())
        config.update({f"x_{i}": i for i in range(100_000)})
        (directory / "config.json").write_text(json.dumps(config))

    out += [Mutant("config.nesting", "a 40 MB config", "llama", huge, "error"),
            Mutant("config.nesting", "100000 extra keys", "llama", many_keys, "any")]
    return out


def _config_dtypes() -> list[Mutant]:
    values = ["float99", "int4", "", 5, None, ["float16"], "torch.float16", "auto", "bfloat16", "float64",
              "float8_e4m3fn", "complex64", "__class__", "Tensor"]
    out = []
    for field in ("dtype", "torch_dtype"):
        for value in values:
            out.append(_config_set("config.dtype", "llama", field, value, "any"))
    return out


def _config_model_types() -> list[Mutant]:
    values = ["", "no_such_model", 5, None, "../x", "LLAMA", "llama\x00", "gpt2", "bert", "mixtral", "t5",
              "a" * 5000, ["llama"]]
    # mixtral builds from llama's fields: its attention projections are the same modules
    return [_config_set("config.model_type", "llama", "model_type", value, "any" if value == "mixtral" else "error")
            for value in values]


# ----------------------------------------------------------------------------- shard index


def index_mutants(rng: random.Random) -> list[Mutant]:
    out: list[Mutant] = []

    def point_at(shard_of: Callable[[Path], str], label: str, kind: str, expect: str = "error",
                 everything: bool = False) -> Mutant:
        def apply(directory: Path) -> None:
            index = json.loads((directory / INDEX).read_text())
            names = list(index["weight_map"]) if everything else list(index["weight_map"])[:1]
            for name in names:
                index["weight_map"][name] = shard_of(directory)
            (directory / INDEX).write_text(json.dumps(index))

        return Mutant(kind, label, "gpt2", apply, expect)

    outside = [
        (lambda d: f"../{SENTINEL}", "../sentinel"),
        (lambda d: str(d.parent / SENTINEL), "absolute path of the sentinel"),
        (lambda d: f"./../{SENTINEL}", "./../sentinel"),
        (lambda d: f"sub/../../{SENTINEL}", "sub/../../sentinel"),
        (lambda d: f"{d.name}/../../{SENTINEL}", "own-name/../../sentinel"),
        (lambda d: "//" + str(d.parent / SENTINEL).lstrip("/"), "//absolute"),
        (lambda d: "/" + "/".join([".."] * 30) + str(d.parent / SENTINEL), "/../../..absolute"),
        (lambda d: f"~/../{SENTINEL}", "~/../sentinel"),
        (lambda d: "/dev/zero", "/dev/zero"),
        (lambda d: "/proc/self/mem", "/proc/self/mem"),
        (lambda d: "/etc/passwd", "/etc/passwd"),
        (lambda d: f"..\\{SENTINEL}", "backslash ..\\sentinel"),
    ]
    for shard_of, label in outside:
        out.append(point_at(shard_of, label, "index.paths"))
        out.append(point_at(shard_of, label + " (every tensor)", "index.paths", everything=True))

    def remove_shard(which: int) -> Callable[[Path], None]:
        def apply(directory: Path) -> None:
            shards = sorted(set(json.loads((directory / INDEX).read_text())["weight_map"].values()))
            (directory / shards[which]).unlink()

        return apply

    out += [Mutant("index.missing", f"shard {i} removed", "gpt2", remove_shard(i), "error") for i in (0, -1)]

    def drop_entry(directory: Path) -> None:  # the index forgets a tensor its shard still holds
        index = json.loads((directory / INDEX).read_text())
        del index["weight_map"]["transformer.h.0.attn.c_attn.weight"]
        (directory / INDEX).write_text(json.dumps(index))

    def wrong_shard(directory: Path) -> None:
        index = json.loads((directory / INDEX).read_text())
        shards = sorted(set(index["weight_map"].values()))
        name = next(n for n, s in index["weight_map"].items() if s != shards[-1])
        index["weight_map"][name] = shards[-1]
        (directory / INDEX).write_text(json.dumps(index))

    def ghost(directory: Path) -> None:
        index = json.loads((directory / INDEX).read_text())
        index["weight_map"]["transformer.h.9.ghost.weight"] = first_shard(directory)
        (directory / INDEX).write_text(json.dumps(index))

    def shard_is_a_directory(directory: Path) -> None:
        shard = first_shard(directory)
        (directory / shard).unlink()
        (directory / shard).mkdir()

    out += [
        Mutant("index.missing", "a tensor left out of the index", "gpt2", drop_entry, "any"),
        Mutant("index.missing", "a tensor listed in the wrong shard", "gpt2", wrong_shard, "error"),
        Mutant("index.missing", "a tensor no shard holds", "gpt2", ghost, "error"),
        Mutant("index.missing", "empty weight_map", "gpt2",
               edit_json(INDEX, lambda i: i.__setitem__("weight_map", {})), "error"),
        Mutant("index.missing", "a shard that is a directory", "gpt2", shard_is_a_directory, "error"),
        Mutant("index.missing", "shard listed under a missing name", "gpt2",
               point_at(lambda d: "model-99999-of-99999.safetensors", "", "").apply, "error"),
    ]

    names = [
        ("x" * 5000 + ".safetensors", "a 5000-character name"),
        ("x" * 251 + ".st", "a 255-character name"),
        ("x" * 252 + ".st", "a 256-character name"),
        ("/".join(["d"] * 2100) + "/m.safetensors", "4200 characters of folders"),
        ("model\x00.safetensors", "a NUL byte"),
        ("model\n.safetensors", "a newline"),
        ("", "empty name"),
        (".", "dot"),
        ("/", "slash"),
        ("sub/", "a folder with a slash"),
        ("\u00e9\u4e2d\U0001f600.safetensors", "non-ASCII"),
        (INDEX, "the index itself"),
        ("config.json", "config.json"),
        ("tokenizer.json", "tokenizer.json"),
        ("model.safetensors ", "a trailing space"),
    ]
    for name, label in names:
        out.append(point_at(lambda d, n=name: n, label, "index.names"))
    for value, label in [(1, "a number"), (None, "null"), ([], "a list"), ({}, "an object"), (True, "true")]:
        out.append(point_at(lambda d, v=value: v, f"shard name is {label}", "index.names"))
    damaged = [
        (lambda i: i.__setitem__("weight_map", []), "weight_map is a list"),
        (lambda i: i.__setitem__("weight_map", "x"), "weight_map is a string"),
        (lambda i: i.__setitem__("weight_map", None), "weight_map is null"),
        (lambda i: i.pop("weight_map"), "no weight_map"),
        (lambda i: [i], "index is a list"),
        (lambda i: i.__setitem__("metadata", "abc"), "metadata is a string"),
        (lambda i: i.__setitem__("metadata", {"total_size": "abc"}), "total_size is a string"),
        (lambda i: i.__setitem__("metadata", None), "metadata is null"),
    ]
    for change, label in damaged:
        expect = "any" if "metadata" in label or "total_size" in label else "error"
        out.append(Mutant("index.names", label, "gpt2", edit_json(INDEX, change), expect))
    out += [
        Mutant("index.names", "index nested 100000 deep", "gpt2", write_bytes(INDEX, deep(100_000).encode()), "error"),
        Mutant("index.names", "weight_map nested 100000 deep", "gpt2",
               write_bytes(INDEX, ('{"weight_map": ' + deep(100_000, "1", '{"a":', "}") + "}").encode()), "error"),
        Mutant("index.names", "index not UTF-8", "gpt2", write_bytes(INDEX, b'{"weight_map": {"\xff": "x"}}'), "error"),
        Mutant("index.names", "index empty", "gpt2", write_bytes(INDEX, b""), "error"),
    ]
    return out


# ----------------------------------------------------------------------------- special files


def special_mutants(rng: random.Random) -> list[Mutant]:
    def replace_with(make: Callable[[Path], None], label: str, name_of, base: str, expect: str) -> Mutant:
        def apply(directory: Path) -> None:
            name = name_of(directory) if callable(name_of) else name_of
            path = directory / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
            path.parent.mkdir(parents=True, exist_ok=True)
            make(path)

        label_name = name_of if isinstance(name_of, str) else "a shard"
        return Mutant("special.files", f"{label_name}: {label}", base, apply, expect)

    def fifo(path: Path) -> None:
        os.mkfifo(path)

    def link_to(target: str) -> Callable[[Path], None]:
        return lambda path: os.symlink(target, path)

    def empty_dir(path: Path) -> None:
        path.mkdir()

    def full_dir(path: Path) -> None:
        path.mkdir()
        (path / "inner.txt").write_text("inside a directory named like a file\n")

    def self_loop(path: Path) -> None:
        os.symlink(path.name, path)

    def pair_loop(path: Path) -> None:
        os.symlink(path.name + ".other", path)
        os.symlink(path.name, path.with_name(path.name + ".other"))

    def dangling(path: Path) -> None:
        os.symlink("no-such-file", path)

    def unix_socket(path: Path) -> None:
        server = socket.socket(socket.AF_UNIX)
        try:
            server.bind(str(path))
        finally:
            server.close()

    # character devices: not /dev/null, which some sandboxes (this machine's CI among them) make a regular file
    makers = [(fifo, "a FIFO"), (link_to("/dev/zero"), "a symlink to /dev/zero"),
              (link_to("/dev/full"), "a symlink to /dev/full"), (link_to("/dev/urandom"), "a symlink to /dev/urandom"),
              (empty_dir, "an empty directory"), (self_loop, "a symlink to itself"), (pair_loop, "a symlink loop"),
              (dangling, "a dangling symlink"), (unix_socket, "a socket")]
    out = []
    for name, base in [("config.json", "llama"), (SINGLE, "llama"), (INDEX, "gpt2"), (first_shard, "gpt2"),
                       ("tokenizer.json", "llama"), ("sub/notes.txt", "llama")]:
        for make, label in makers:
            companion = name in ("tokenizer.json", "sub/notes.txt")  # scan never reads it; defend copies it
            expect = ("valid" if make is empty_dir else COMPANION_ERROR) if companion else "error"
            out.append(replace_with(make, label, name, base, expect))
    out.append(replace_with(full_dir, "a directory holding a file", "tokenizer.json", "llama", "valid"))
    out.append(replace_with(link_to("/etc/hostname"), "a symlink to a regular file outside", "tokenizer.json",
                            "llama", "valid"))

    def folder_loop(directory: Path) -> None:  # sub/loop -> .. : walking it naively never ends
        (directory / "loops").mkdir()
        os.symlink("..", directory / "loops" / "loop")

    def folder_self(directory: Path) -> None:
        os.symlink(".", directory / "here")

    def folder_to_dev(directory: Path) -> None:
        os.symlink("/dev", directory / "devices")

    def checkpoint_is(make: Callable[[Path], None]) -> Callable[[Path], None]:
        def apply(directory: Path) -> None:  # the path given on the command line itself
            shutil.rmtree(directory)
            make(directory)

        return apply

    def deep_tree(directory: Path) -> None:  # deeper than Python's recursion limit: walk without recursion
        folder = directory
        for _ in range(1100):
            folder = folder / "d"
            folder.mkdir()
        (folder / "leaf.txt").write_text("leaf\n")

    out.append(Mutant("special.files", "a folder tree 1100 deep", "llama", deep_tree, "valid"))
    out += [Mutant("special.files", f"the checkpoint path: {label}", "llama", checkpoint_is(make), "error")
            for make, label in [(fifo, "a FIFO"), (link_to("/dev/zero"), "a symlink to /dev/zero"),
                                (self_loop, "a symlink to itself"), (dangling, "a dangling symlink")]]
    out += [Mutant("special.files", "a folder symlink loop loops/loop -> ..", "llama", folder_loop, COMPANION_ERROR),
            Mutant("special.files", "a folder symlink to itself", "llama", folder_self, COMPANION_ERROR),
            Mutant("special.files", "a folder symlink to /dev", "llama", folder_to_dev, COMPANION_ERROR)]
    return out


# ----------------------------------------------------------------------------- values


def value_mutants(rng: random.Random) -> list[Mutant]:
    def poison(name: str, values: list[float], label: str, expect: str, everything: bool = False) -> Mutant:
        def change(tensors: dict[str, torch.Tensor]) -> None:
            tensor = tensors[name]
            if everything:
                tensor.fill_(values[0])
            for i, value in enumerate(values):
                tensor.view(-1)[i * 7] = value

        return Mutant("values.nonfinite", label, "llama", edit_tensors(change), expect)

    nan, inf = float("nan"), float("inf")
    return [
        poison(TARGET, [nan], "one NaN in q_proj", "error"),
        poison(TARGET, [inf], "one +Inf in q_proj", "error"),
        poison(TARGET, [-inf], "one -Inf in q_proj", "error"),
        poison(TARGET, [nan, inf, -inf], "NaN and Inf in q_proj", "error"),
        poison(TARGET, [nan], "q_proj all NaN", "error", everything=True),
        poison("model.layers.1.mlp.down_proj.weight", [inf], "one Inf in the last layer", "error"),
        # llama.cpp quantizes the embedding and the output, and scan checks its types by default
        poison("model.embed_tokens.weight", [nan], "one NaN in the embedding (quantized by llama.cpp only)",
               {"scan": "error", "defend": "valid"}),
        poison("model.norm.weight", [inf], "one Inf in a norm (not quantized)", "valid"),
        poison("lm_head.weight", [nan], "one NaN in lm_head (skipped by bitsandbytes, quantized by llama.cpp)",
               {"scan": "error", "defend": "valid"}),
    ]


# ----------------------------------------------------------------------------- all of them


def all_mutants(seed: int = 0) -> list[Mutant]:
    """Every class's mutants for ``seed``, in a fixed order (same seed, same list)."""
    rng = random.Random(seed)
    return (safetensors_mutants(rng) + config_mutants(rng) + index_mutants(rng) + special_mutants(rng)
            + value_mutants(rng))
