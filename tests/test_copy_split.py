"""Large plans' float32 copy leaves its last rows out (``NumpyKernel._copy_rows``).

Oracle: products with the exact float64 plan ``exp(u + v - M / reg)`` (masked
at the threshold), the same products without the split, and solves without
it. The split sizes are forced small (``SPLIT_MIN``, ``SPLIT_RESERVE``) so
that a 400-by-300 plan has 20 rows outside the copy.
"""

import numpy as np
import pytest

import pot_sns
import pot_sns.kernels.numpy as npk
from problems import make_problem
from test_numpy_kernel import check_products, kernel_at, plan, potentials

TAIL = 20


@pytest.fixture
def split(monkeypatch):
    # 20 rows of a 300-column plan hold 24,000 bytes in float32
    monkeypatch.setattr(npk, "SPLIT_MIN", 1)
    monkeypatch.setattr(npk, "SPLIT_RESERVE", (4 * 300 * TAIL - 700 * 400, 400))


def test_copy_rows_leave_out_the_reserve_and_never_half_the_plan(monkeypatch):
    _, _, M = make_problem(400, 300, seed=1)
    k = kernel_at(M, *potentials(M, 0))
    assert k._copy_rows() == 400  # below SPLIT_MIN
    monkeypatch.setattr(npk, "SPLIT_MIN", 1)
    monkeypatch.setattr(npk, "SPLIT_RESERVE", (4 * 300 * TAIL - 700 * 400, 400))
    assert k._copy_rows() == 400 - TAIL
    # a reserve of half the rows or more: no split
    monkeypatch.setattr(npk, "SPLIT_RESERVE", (4 * 300 * 200, 0))
    assert k._copy_rows() == 400


def test_default_split_frees_the_measured_scratch():
    # n = m = 10,000: the rows left out hold at least the 5.6 MB of vectors
    # and scratch measured beyond M, K and a full copy, in at most 3% of rows
    n = m = 10000
    fixed, per = npk.SPLIT_RESERVE
    tail = -(-(fixed + per * (n + m)) // (4 * m))
    assert tail * m * 4 >= 5.6e6 and tail <= 0.03 * n
    assert n * m >= npk.SPLIT_MIN > 5000 * 3000


def test_all_kept_split_block_is_the_plan(split):
    _, _, M = make_problem(400, 300, seed=3)
    u, v = potentials(M, 0)
    k = kernel_at(M, u, v)
    S = k.select(0.0)
    assert isinstance(S, npk.RowSplit) and S.nnz == M.size
    assert S.top.S.shape == (400 - TAIL, 300) and S.top.S.dtype == np.float32
    assert S.tail.S.dtype == np.float64 and S.tail.S.base is not None  # rows of K
    check_products(S, plan(M, u, v))
    # a moved point: the copy scaled on the fly, the left-out rows too
    u1, v1 = u + 0.3, v - 0.2 + 0.01 * np.arange(300) / 300
    k.evaluate(u1, v1, 0.0)
    S = k.select(0.0)
    assert k.passes["single"] == 1
    check_products(S, plan(M, u1, v1), seed=1)


def test_thresholded_split_block_keeps_the_same_entries(split):
    _, _, M = make_problem(400, 300, seed=5)
    u, v = potentials(M, 2)
    k = kernel_at(M, u, v)
    P = plan(M, u, v)
    tau = np.quantile(P, 0.7)
    S = k.select(tau)
    assert isinstance(S, npk.RowSplit) and isinstance(S.tail, npk.CSRBlock)
    assert S.nnz == np.count_nonzero(P >= tau)
    assert S.tail.S.nnz == np.count_nonzero(P[-TAIL:] >= tau)
    check_products(S, np.where(P >= tau, P, 0.0))
    np.testing.assert_allclose(k.P, P, rtol=1e-12, atol=0)


@pytest.mark.parametrize("reg", [1e-3, 2e-4])
def test_solves_with_and_without_the_split_agree(reg, monkeypatch):
    a, b, M = make_problem(400, 300, seed=7)
    P, log = pot_sns.sinkhorn_newton_sparse(a, b, M, reg, log=True, stopThr=1e-11)
    assert log["status"] == "converged" and 1.0 in log["density"]
    monkeypatch.setattr(npk, "SPLIT_MIN", 1)
    monkeypatch.setattr(npk, "SPLIT_RESERVE", (4 * 300 * TAIL - 700 * 400, 400))
    Ps, logs = pot_sns.sinkhorn_newton_sparse(a, b, M, reg, log=True, stopThr=1e-11)
    assert logs["status"] == "converged"
    np.testing.assert_allclose(Ps, P, rtol=0, atol=1e-11)
    assert logs["n_newton"] <= log["n_newton"] + 1
    # the plan is rebuilt from its potentials
    rebuilt = np.exp(logs["log_u"][:, None] + logs["log_v"][None, :] - M / reg)
    np.testing.assert_allclose(Ps, rebuilt, rtol=1e-9, atol=1e-300)
