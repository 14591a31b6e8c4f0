"""FlipGuard's walk of a GGUF header (``flipguard.gguf.header``) reads what gguf-py's ``GGUFReader``
reads: every key's value, every tensor's name, shape, type, offset and size, where the data starts,
on converted zoo models (F16, BF16, F32), a llama.cpp quantization, and a file holding every value
type of the format in both byte orders; and a damaged header is one FlipGuardError sentence."""

import math
import struct

import gguf
import numpy as np
import pytest

from flipguard.errors import FlipGuardError
from flipguard.gguf import open_gguf, quantize_gguf
from flipguard.gguf.header import DamagedHeader, read_header


def _same_as_gguf_py(path):
    reader = gguf.GGUFReader(path, "r")
    theirs = {name: f.contents() for name, f in reader.fields.items() if not name.startswith("GGUF.")}
    with open_gguf(path) as opened:
        ours = opened.metadata
        assert list(ours) == list(theirs)
        for key, value in theirs.items():
            mine = ours[key]
            if key == "nested":  # gguf-py flattens an array of arrays; the file holds the arrays
                assert mine == [[1, 2], [3]] and [v for part in mine for v in part] == value
            elif isinstance(value, float) and math.isnan(value):
                assert math.isnan(mine), key
            else:
                assert mine == value and type(mine) is type(value), key
        assert opened.data_start == reader.data_offset
        assert [(t.name, t.type, t.ne, t.offset, t.n_bytes) for t in opened.tensors.values()] == [
            (t.name, t.tensor_type.name, tuple(int(n) for n in t.shape), int(t.data_offset), int(t.n_bytes))
            for t in reader.tensors
        ]
        assert opened.architecture == theirs.get("general.architecture", "")
    return theirs


@pytest.mark.parametrize("family,outtype", [("llama", "F16"), ("qwen2", "BF16"), ("gpt2", "F32"), ("phi", "F16")])
def test_a_converted_model_reads_as_gguf_py_reads_it(family, outtype, zoo_gguf):
    meta = _same_as_gguf_py(zoo_gguf(family, outtype=outtype))
    assert len(meta["tokenizer.ggml.tokens"]) > 100  # the vocabulary, a string array


def test_a_quantized_file_reads_as_gguf_py_reads_it(zoo_gguf, tmp_path):
    _same_as_gguf_py(quantize_gguf(zoo_gguf("llama", size="small"), tmp_path / "q.gguf", "Q4_K_M"))


def _every_type(path, endianess):
    writer = gguf.GGUFWriter(path, "test", endianess=endianess)
    writer.add_uint8("u8", 200)
    writer.add_int8("i8", -7)
    writer.add_uint16("u16", 60000)
    writer.add_int16("i16", -30000)
    writer.add_uint32("u32", 4_000_000_000)
    writer.add_int32("i32", -2_000_000_000)
    writer.add_float32("f32", 0.1)
    writer.add_float64("f64", 1e300)
    writer.add_bool("flag", True)
    writer.add_uint64("u64", 2**63 + 5)
    writer.add_int64("i64", -(2**62))
    writer.add_string("text", "héllo ✓")
    writer.add_array("words", ["a", "", "ünï"])
    writer.add_array("numbers", [1, 2, 3])
    writer.add_array("empty", [])
    writer.add_array("nested", [[1, 2], [3]])
    writer.add_tensor("w", np.arange(64, dtype=np.float32).reshape(2, 32))
    writer.add_tensor("v", np.ones(32, dtype=np.float16))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.mark.parametrize("endianess", [gguf.GGUFEndian.LITTLE, gguf.GGUFEndian.BIG])
def test_every_value_type_in_either_byte_order(endianess, tmp_path):
    meta = _same_as_gguf_py(_every_type(tmp_path / "all.gguf", endianess))
    assert meta["u64"] == 2**63 + 5 and meta["text"] == "héllo ✓" and meta["words"] == ["a", "", "ünï"]


def test_a_damaged_header_is_one_sentence(tmp_path):
    good = _every_type(tmp_path / "all.gguf", gguf.GGUFEndian.LITTLE).read_bytes()
    header = read_header(good)
    text = good.index(b"\xc3\xa9")  # inside "héllo": an invalid UTF-8 byte there
    bad = {
        "cut": good[:header.data_offset - 40],
        "version": good[:4] + struct.pack("<I", 9) + good[8:],
        "value type": bytearray(good),
        "utf-8": good[:text] + b"\xff" + good[text + 1:],
        "key twice": good.replace(b"i8", b"u8", 1),  # the second key renamed to the first's name
    }
    vtype, pos = header.fields["u8"]
    bad["value type"][pos - 4:pos] = struct.pack("<I", 77)
    for label, content in bad.items():
        if label != "utf-8":  # a value is decoded when asked for: below
            with pytest.raises(DamagedHeader):
                read_header(bytes(content))
        path = tmp_path / f"{label.replace(' ', '_')}.gguf"
        path.write_bytes(bytes(content))
        with pytest.raises(FlipGuardError) as err:
            with open_gguf(path) as opened:
                opened.metadata  # noqa: B018 - a value decoded on first use
        assert str(err.value).endswith(".") and str(err.value).count(". ") == 0, label
