"""The scan's binomial tails equal scipy.stats.binom's, value for value, support edges included."""

import numpy as np
import pytest
from scipy.stats import binom

from flipguard.scan.stats import PILE_NEIGHBOURS, binom_cdf, binom_sf


@pytest.mark.parametrize("p", [0.5, 1 / (2 * PILE_NEIGHBOURS + 1), 0.03])
def test_binomial_tails_equal_scipy_stats(p):
    n = np.repeat(np.arange(0, 400), 4)
    k = np.concatenate([np.array([-1, 0, n_ // 2, n_]) for n_ in range(400)]).astype(np.float64)
    k = np.concatenate([k, [5.0, 399.0, 1000.0]])
    n = np.concatenate([n, [4, 399, 1000]]).astype(np.float64)
    assert np.array_equal(binom_cdf(k, n, p), binom.cdf(k, n, p))
    assert np.array_equal(binom_sf(k, n, p), binom.sf(k, n, p))
    big = np.array([10**6, 3 * 10**7], dtype=np.float64)  # the sizes a large tensor's bands reach
    assert np.array_equal(binom_sf(big / 2 + 3000, big, p), binom.sf(big / 2 + 3000, big, p))
    assert float(binom_cdf(3, 10, p)) == float(binom.cdf(3, 10, p))  # scalars too
