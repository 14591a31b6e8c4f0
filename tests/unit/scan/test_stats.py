import torch

from flipguard.scan.stats import (
    BANDS, BIN, CROWD_SHARE, MIN_CROWD_WALLS, band_test, count_bands, crowd_test, holm, pile_test, wall_coverage,
)


def _counts(d, resolution=None, wall=None, n_walls=1):
    d = torch.as_tensor(d, dtype=torch.float32)
    resolution = torch.zeros_like(d) if resolution is None else torch.as_tensor(resolution, dtype=torch.float32)
    wall = torch.zeros_like(d, dtype=torch.int64) if wall is None else torch.as_tensor(wall)
    return count_bands(d, resolution, wall, n_walls)


def test_uniform_distances_are_not_significant():
    gen = torch.Generator().manual_seed(0)
    d = torch.rand(200_000, generator=gen) * 0.5
    test = band_test(_counts(d))
    assert test.p > 0.01
    assert abs(test.share - 0.5) < 0.05


def test_an_empty_band_is_found_with_its_width():
    gen = torch.Generator().manual_seed(0)
    d = 0.02 + torch.rand(100_000, generator=gen) * 0.48  # nothing within 2% of a wall
    test = band_test(_counts(d))
    assert test.p < 1e-100
    assert test.share == 0.0
    assert test.empty_up_to == 0.02


def test_pinned_weights_are_not_counted_and_coarse_weights_only_in_wide_bands():
    d = torch.tensor([float("nan"), 0.001, 0.003, 0.3])
    resolution = torch.tensor([0.0, 0.0, 0.1, 0.0])  # the second weight resolves no band
    counts = _counts(d, resolution)
    assert counts.free == 3
    resolved = counts.resolved()
    assert int(resolved[0].sum()) == 2 and int(counts.hist.sum()) == 3
    assert int(resolved[-1].sum()) == 2  # 0.1 * 4 > 0.16: not even the widest band


def test_per_wall_counts_and_coverage():
    d = torch.tensor([0.001, 0.003, 0.001, 0.004] * 10)
    wall = torch.tensor([0, 0, 1, 1] * 10)
    counts = _counts(d, wall=wall, n_walls=2)
    j = BANDS.index(0.0025)
    assert counts.walls[:, j].tolist() == [[10, 10], [10, 10]]
    cover = wall_coverage(counts, 0.0025, 0.25)
    assert (cover.depleted, cover.judged) == (0, 2)


def test_pile_up_at_one_distance():
    gen = torch.Generator().manual_seed(1)
    d = torch.cat([torch.rand(50_000, generator=gen) * 0.5, torch.full((2000,), 0.1 + BIN / 2)])
    pile = pile_test(_counts(d))
    assert abs(pile.at - 0.1) < 1e-9
    assert pile.ratio > 5 and pile.p < 1e-50


def test_holm_adjustment():
    assert holm([0.01, 0.04, 0.03]) == [0.03, 0.06, 0.06]
    assert holm([0.5]) == [0.5]
    assert holm([]) == []


def _crowded(walls):
    """Flat distances at four walls, plus weights pressed into [1%, 2%) at ``walls`` of them; every
    weight's dtype resolves 0.5% of a cell (bands from 2%, as bfloat16 near an NF4 wall)."""
    gen = torch.Generator().manual_seed(2)
    d = torch.rand(40_000, generator=gen) * 0.5
    wall = torch.arange(40_000) % 4
    extra = 0.01 + torch.rand(4_000, generator=gen) * 0.01
    d = torch.cat([d, extra])
    return _counts(d, torch.full_like(d, 0.005), torch.cat([wall, torch.arange(4_000) % walls]), n_walls=4)


def test_a_crowded_band_is_found_where_no_band_is_empty():
    counts = _crowded(walls=4)
    assert band_test(counts).p == 1.0  # nothing is depleted
    crowd = crowd_test(counts, CROWD_SHARE)
    assert crowd.p < 1e-100 and crowd.share >= CROWD_SHARE and crowd.band == 0.02
    cover = wall_coverage(counts, crowd.band, 1 - CROWD_SHARE, crowded=True)
    assert (cover.depleted, cover.judged) == (4, 4)


def test_flat_distances_are_not_crowded_and_few_walls_are_not_judged():
    gen = torch.Generator().manual_seed(3)
    d = torch.rand(200_000, generator=gen) * 0.5
    assert crowd_test(_counts(d, wall=torch.arange(200_000) % 4, n_walls=4), CROWD_SHARE).p == 1.0
    assert MIN_CROWD_WALLS == 3
    two_walls = _counts(d[:20_000], wall=torch.arange(20_000) % 2, n_walls=2)
    assert crowd_test(two_walls, 0.0).p == 1.0  # every band judged on fewer than three walls


def test_crowding_at_half_the_walls_is_not_an_attack_on_the_scheme():
    # an NF4 attack crowds the FP4 walls that lie next to NF4's own (about half of them)
    from flipguard.scan.verdict import band_strength

    whole, half = _crowded(walls=4), _crowded(walls=2)
    assert band_strength(whole, crowd_test(whole, CROWD_SHARE), crowded=True) == "strong"
    crowd = crowd_test(half, CROWD_SHARE)
    assert crowd.p < 1e-10 and band_strength(half, crowd, crowded=True) == ""


def test_split_joint_sums_the_fine_bins_of_each_geometric_bin():
    from flipguard.scan.stats import _GEOMETRIC, N_GEOMETRIC, NBINS, split_joint

    gen = torch.Generator().manual_seed(3)
    for shape in [(16, len(BANDS) + 1, NBINS), (1, len(BANDS) + 1, NBINS), (3, 2, NBINS)]:
        joint = torch.randint(0, 1 << 40, shape, generator=gen, dtype=torch.int64)
        hist, per_wall = split_joint(joint)
        assert torch.equal(hist, joint.sum(dim=0))
        geo = _GEOMETRIC[:NBINS]
        expected = torch.stack([joint[..., geo == g].sum(dim=-1) for g in range(N_GEOMETRIC - 1)], dim=-1)
        assert torch.equal(per_wall, expected)
