"""The bundled demo models: present, small, float16, and unpacked exactly to float32."""

import torch
from safetensors.torch import load_file

from flipguard.demo.assets import ASSETS, SCHEMES, unpack


def test_bundle_is_small_and_float16():
    total = sum(p.stat().st_size for p in ASSETS.rglob("*") if p.is_file())
    assert total < 10 * 2**20
    for name in ("clean",) + SCHEMES:
        tensors = load_file(str(ASSETS / name / "model.safetensors"))
        assert {t.dtype for t in tensors.values()} == {torch.float16}


def test_unpack_is_an_exact_upcast(tmp_path):
    dirs = unpack(tmp_path)
    assert set(dirs) == {"clean", *SCHEMES}
    packed = load_file(str(ASSETS / "nf4" / "model.safetensors"))
    unpacked = load_file(str(dirs["nf4"] / "model.safetensors"))
    for name, t in packed.items():
        assert unpacked[name].dtype == torch.float32
        assert torch.equal(unpacked[name].half(), t)
    assert (dirs["nf4"] / "tokenizer.json").is_file() and (dirs["nf4"] / "attack_report.json").is_file()
