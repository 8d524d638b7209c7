"""Random test problems shared by the test modules."""

import numpy as np
import ot


def make_problem(n, m, seed=0, uniform=False, cost="sqeuclidean"):
    """Random point clouds with a cost normalised to max 1, and weights."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    y = rng.normal(size=(m, 2)) + 0.5
    M = ot.dist(x, y, metric=cost)
    M /= M.max()
    if uniform:
        a, b = ot.unif(n), ot.unif(m)
    else:
        a = rng.random(n) + 0.1
        b = rng.random(m) + 0.1
        a /= a.sum()
        b /= b.sum()
    return a, b, M

