"""The structured-rounding-error trace: a repair boxed inside the cells shows, an honest update does not."""

import pytest
import torch

from flipguard.attack.boxes import boxes_and_cells
from flipguard.defend import make_policy
from flipguard.scan import inspect_tensor
from flipguard.scan.structure import STRUCTURE_RATIO, error_structure, structure_ratio
from flipguard.scan.verdict import decide
from flipguard.schemes import get_scheme

INT8 = get_scheme("int8")


def _low_rank(rows, cols, rank, seed):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(rows, rank, generator=gen) @ torch.randn(rank, cols, generator=gen) / rank ** 0.5


def _weights(rows=256, cols=512, seed=0):
    return torch.randn(rows, cols, generator=torch.Generator().manual_seed(seed)) * 0.02


def _update(w, cells, seed=1):
    """A rank-2 update of about ``cells`` INT8 cells per weight (rms)."""
    delta = _low_rank(*w.shape, 2, seed)
    return delta / delta.std() * cells * float(w.abs().amax(dim=1).mean()) / 127


def test_honest_weights_show_no_structure_even_with_strong_structure_of_their_own():
    for name in ("int8", "fp4", "nf4"):
        assert abs(structure_ratio(_weights(), get_scheme(name)) - 1) < 0.1
    strong = 0.02 * (0.9 ** 0.5 * _low_rank(256, 512, 1, 2) + 0.1 ** 0.5 * torch.randn(256, 512))
    strong[:, :8] *= 30  # outlier input features: INT8's cells stay small against each row's range
    assert structure_ratio(strong, INT8) < 1.1


@pytest.mark.parametrize("name, cells", [("int8", 1.0), ("nf4", 10.0), ("fp4", 10.0)])
@pytest.mark.parametrize("spread", [False, True])
def test_a_repair_kept_inside_the_cells_shows_and_a_free_update_does_not(name, cells, spread):
    w, scheme = _weights(), get_scheme(name)
    generator = torch.Generator().manual_seed(5) if spread else None
    lo, hi, _ = boxes_and_cells(w, [name], 0.4 if spread else 0.01, spread=generator)
    repaired = torch.minimum(torch.maximum(w + _update(w, cells), lo), hi)  # PGD's projection: never across a wall
    assert structure_ratio(repaired, scheme) >= STRUCTURE_RATIO
    for size in (0.1, 0.3, 1.0):  # a fine-tune or merged adapter crosses walls freely
        assert structure_ratio(w + _update(w, size * cells), scheme) < 1.1


def test_samples_hold_whole_groups_and_small_tensors_are_not_measured():
    assert structure_ratio(_weights(8, 512), INT8) is None
    w = _weights(1000, 3000)  # sampled: deterministic
    assert structure_ratio(w, INT8) == structure_ratio(w.clone(), INT8)
    nf4 = get_scheme("nf4")
    odd = _weights(300, 100)  # 100 columns: 64-blocks span rows, so the sample is the first 256 rows
    assert structure_ratio(odd, nf4) == error_structure(odd[:256], nf4, 0, torch.arange(100))


def test_a_structured_tensor_is_named_and_dithered_even_with_no_band_emptied():
    w = _weights()
    lo, hi, _ = boxes_and_cells(w, ["int8"], 0.4, spread=torch.Generator().manual_seed(5))
    repaired = torch.minimum(torch.maximum(w + _update(w, 1.0), lo), hi)
    evidence = inspect_tensor("w", repaired, INT8)
    verdict = decide([evidence], ["int8"])
    assert verdict.targeted == ["int8"]
    assert [f.kind for f in verdict.findings] == ["structured"] and verdict.findings[0].structure >= STRUCTURE_RATIO
    plan = make_policy("adaptive").plan(evidence)
    assert plan.detail["dither"] and "structure" in plan.detail["evidence"]
    clean = inspect_tensor("w", _weights(), INT8)
    assert decide([clean], ["int8"]).status == "clean" and make_policy("adaptive").plan(clean).detail["evidence"] == "clean"


def test_the_report_says_what_a_structured_finding_means(tmp_path):
    import json

    from safetensors.torch import load_file, save_file

    from flipguard.scan import scan_checkpoint
    from tests.support.checkpoints import make_tiny_checkpoint

    path = make_tiny_checkpoint(tmp_path / "m", hidden=128, layers=1, heads=4, with_tokenizer=False)
    tensors = load_file(path / "model.safetensors")
    name = "model.layers.0.mlp.down_proj.weight"  # (128, 256): an INT8 tensor large enough to sample
    w = tensors[name]
    lo, hi, _ = boxes_and_cells(w, ["int8"], 0.4, spread=torch.Generator().manual_seed(5))
    tensors[name] = torch.minimum(torch.maximum(w + _update(w, 1.0), lo), hi).contiguous()
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    report = scan_checkpoint(path, schemes=["int8"], progress=False)
    assert report.verdict.targeted == ["int8"]
    assert "rounding errors with low-rank structure" in report.to_console()
    saved = json.loads(report.to_json())
    assert [f["kind"] for f in saved["findings"]] == ["structured"] and "structure" in saved["method"]
    assert all("structure" in t for t in saved["tensors"] if t["status"] == "ok")
    assert "low-rank structure" in json.loads(report.to_sarif())["runs"][0]["results"][0]["message"]["text"]


def test_the_top_singular_value_is_the_largest_of_a_full_svd():
    from flipguard.scan.structure import _top_singular_value

    g = torch.Generator().manual_seed(2)
    for shape in ((40, 90), (90, 40), (64, 64)):
        e = torch.rand(*shape, generator=g) - 0.5
        e[:, 0] += 0.3  # a direction of its own, and i.i.d. noise
        want = float(torch.linalg.svdvals(e.double())[0])
        assert abs(_top_singular_value(e) - want) <= 1e-6 * want  # the Gram matrix is float32
    assert _top_singular_value(torch.zeros(8, 16)) == 0.0
