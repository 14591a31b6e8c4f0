"""Reader: memory-mapped read-only views in (rows, cols) = (ne1, ne0); bad files are one-sentence
FlipGuardErrors. Writer: with nothing replaced the copy is byte-identical; a replacement changes
exactly that tensor's bytes; a failed write leaves nothing behind."""

import mmap

import numpy as np
import pytest

from flipguard.errors import FlipGuardError
from flipguard.gguf import open_gguf, quantize_gguf, write_gguf
from flipguard.gguf.reader import bf16_to_float32


@pytest.mark.parametrize("outtype", ["F32", "F16", "BF16"])
def test_round_trip_is_byte_identical(outtype, zoo_gguf, tmp_path):
    source = zoo_gguf("gpt2", outtype=outtype)
    out = write_gguf(source, tmp_path / "copy.gguf", {})
    assert out.read_bytes() == source.read_bytes()
    same = write_gguf(source, tmp_path / "copy2.gguf", lambda tensor, values: None)
    assert same.read_bytes() == source.read_bytes()


def test_round_trip_of_a_quantized_file(zoo_gguf, tmp_path):
    quantized = quantize_gguf(zoo_gguf("llama", "small"), tmp_path / "q.gguf", "Q4_K_M")
    assert write_gguf(quantized, tmp_path / "copy.gguf", {}).read_bytes() == quantized.read_bytes()


def test_views_are_read_only_and_shaped_rows_by_cols(zoo_gguf):
    with open_gguf(zoo_gguf("llama")) as opened:
        ffn_down = opened.tensors["blk.0.ffn_down.weight"]
        assert ffn_down.ne == (128, 64) and ffn_down.shape == (64, 128)  # HF down_proj is (64, 128)
        values = opened.values("blk.0.ffn_down.weight")
        assert values.shape == (64, 128) and values.dtype == np.float16 and not values.flags.writeable
        base = values
        while isinstance(base, np.ndarray):  # a view, not a copy: down to the file's mapping
            base = base.base
        assert isinstance(base, mmap.mmap) or isinstance(getattr(base, "obj", None), mmap.mmap)
        assert opened.values("blk.0.attn_norm.weight").shape == (64,)
        assert list(opened.tensors)[:3] == ["output.weight", "output_norm.weight", "token_embd.weight"]


def test_replacing_one_tensor_changes_only_its_bytes(zoo_gguf, tmp_path):
    source = zoo_gguf("qwen2")
    name = "blk.1.attn_v.weight"
    with open_gguf(source) as opened:
        tensor = opened.tensors[name]
        new = (-opened.values(name)).astype(np.float16)
        out = write_gguf(opened, tmp_path / "new.gguf", {name: new})
    before, after = source.read_bytes(), out.read_bytes()
    begin, end = tensor.offset, tensor.offset + tensor.n_bytes
    assert len(after) == len(before) and after[:begin] == before[:begin] and after[end:] == before[end:]
    with open_gguf(out) as written:
        assert np.array_equal(written.values(name), new) and after[begin:end] != before[begin:end]


def test_replacement_function_sees_every_float_tensor(zoo_gguf, tmp_path):
    source = zoo_gguf("gpt2", outtype="BF16")
    seen = []

    def halve_bf16(tensor, values):
        seen.append(tensor.name)
        if tensor.type != "BF16":
            return None
        return (values.astype(np.uint32) - (1 << 7)).astype(np.uint16)  # exponent - 1: halve (normal values)

    out = write_gguf(source, tmp_path / "half.gguf", halve_bf16)
    with open_gguf(source) as a, open_gguf(out) as b:
        assert seen == list(a.tensors)  # every tensor, in file order
        for name, t in a.tensors.items():
            ratio = b.float32(name) / a.float32(name)
            if t.type == "BF16":
                assert np.allclose(ratio[np.abs(a.float32(name)) > 1e-30], 0.5)
            else:
                assert np.array_equal(b.values(name), a.values(name))
    assert bf16_to_float32(np.array([0x3F80], dtype=np.uint16))[0] == 1.0


def test_bad_replacements_are_bugs_and_leave_nothing(zoo_gguf, tmp_path):
    source = zoo_gguf("llama")
    with open_gguf(source) as opened:
        good = opened.values("blk.0.attn_q.weight")
    with pytest.raises(ValueError, match="must be"):
        write_gguf(source, tmp_path / "a.gguf", {"blk.0.attn_q.weight": good.astype(np.float32)})
    with pytest.raises(ValueError, match="must be"):
        write_gguf(source, tmp_path / "b.gguf", {"blk.0.attn_q.weight": good[:1]})
    with pytest.raises(ValueError, match="no tensor"):
        write_gguf(source, tmp_path / "c.gguf", {"blk.9.attn_q.weight": good})
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FlipGuardError, match="input file"):
        write_gguf(source, source, {}, force=True)


def damaged_copies(source, tmp_path):
    data = source.read_bytes()
    with open_gguf(source) as opened:
        first_tensor = min(t.offset for t in opened.tensors.values())
    files = {
        "empty": b"",
        "not gguf": b"PK\x03\x04 a zip, not a model",
        "cut in the header": data[:200],
        "cut in the metadata": data[: first_tensor // 2],
        "cut in the data": data[:-1000],
    }
    for label, content in files.items():
        path = tmp_path / f"{label.replace(' ', '_')}.gguf"
        path.write_bytes(content)
        yield label, path


def test_bad_files_raise_one_sentence(zoo_gguf, tmp_path):
    for label, path in damaged_copies(zoo_gguf("llama"), tmp_path):
        with pytest.raises(FlipGuardError) as err:
            open_gguf(path)
        message = str(err.value)
        assert message.count(". ") == 0 and message.endswith("."), (label, message)
    with pytest.raises(FlipGuardError, match="does not exist"):
        open_gguf(tmp_path / "missing.gguf")
    with pytest.raises(FlipGuardError, match="does not exist or is not a file"):
        open_gguf(tmp_path)


def test_float_only_refuses_a_quantized_file(zoo_gguf, tmp_path):
    quantized = quantize_gguf(zoo_gguf("llama"), tmp_path / "q.gguf", "Q8_0")
    with pytest.raises(FlipGuardError, match="already quantized"):
        open_gguf(quantized, float_only=True)
    open_gguf(zoo_gguf("llama", outtype="BF16"), float_only=True).close()
    with open_gguf(quantized) as opened, pytest.raises(ValueError, match="Q8_0"):
        opened.values("blk.0.attn_q.weight")
