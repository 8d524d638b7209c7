"""Hard numerical cases are solved, not rejected; the safeguards recover.

Every test here turns warnings into errors: no RuntimeWarning (overflow,
divide, invalid) may leak from inside the solver, and a non-converged solve
(POT's UserWarning) fails the test unless the test expects it.
"""

import warnings
from collections import Counter

import numpy as np
import ot
import pytest

import pot_sns
import pot_sns.api
import pot_sns.solver
from pot_sns.cg import pcg

pytestmark = pytest.mark.filterwarnings("error")


def marginal_l1(P, a, b):
    return float(np.abs(P.sum(1) - a).sum() + np.abs(P.sum(0) - b).sum())


def check_solved(P, log, a, b, M, reg, tol=1e-7):
    """Converged, finite, marginals within ``tol`` (L1), and the plan is the
    Gibbs plan of the returned potentials (so it is the entropic optimum)."""
    assert log["status"] == "converged", log["status"]
    assert np.isfinite(P).all()
    assert marginal_l1(P, a, b) < tol
    with np.errstate(under="ignore", over="ignore", invalid="ignore"):
        gibbs = np.exp(log["log_u"][:, None] + log["log_v"][None, :] - M / reg)
    gibbs[~np.isfinite(gibbs)] = 0.0  # rows/cols of zero weight: log_u = -inf
    np.testing.assert_allclose(P, gibbs, rtol=1e-9, atol=1e-300)


def entropic_bracket(P, a, b, M, reg, slack=1e-7):
    """Independent oracle when sinkhorn_log is too slow to converge: the
    entropic plan's cost lies in [W, W + reg * log(n m)] for unit mass."""
    W = ot.emd2(a, b, M)
    cost = float(np.sum(M * P))
    n, m = M.shape
    assert W - slack <= cost <= W + reg * np.log(n * m) + slack


def sinkhorn_log_reference(a, b, M, reg):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return ot.sinkhorn(a, b, M, reg, method="sinkhorn_log", stopThr=1e-12,
                           numItermax=100000)


def cost_matrix(kind, n, m, seed):
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        return rng.random((n, m))
    metric = {"w2": "sqeuclidean", "w1": "euclidean", "l1": "cityblock"}[kind]
    M = ot.dist(rng.normal(size=(n, 2)), rng.normal(size=(m, 2)) + 0.5, metric=metric)
    return M / M.max()


# ---------------------------------------------------------------- zero weights

@pytest.mark.parametrize("reg", [1e-1, 1e-2, 1e-3])
def test_zero_weights_give_exactly_zero_rows_and_columns(reg, problem):
    a, b, M = problem(40, 30, seed=1)
    a[[0, 7, 39]] = 0
    b[[3, 4]] = 0
    a /= a.sum()
    b /= b.sum()
    P, log = pot_sns.sinkhorn_newton_sparse(a, b, M, reg, log=True)
    check_solved(P, log, a, b, M, reg)
    assert np.all(P[[0, 7, 39], :] == 0) and np.all(P[:, [3, 4]] == 0)
    assert np.isneginf(log["log_u"][[0, 7, 39]]).all()
    assert np.isneginf(log["log_v"][[3, 4]]).all()
    assert np.all(log["u"][[0, 7, 39]] == 0)
    # on the support, the plan is POT's plan of the restricted problem
    ia, ib = np.flatnonzero(a), np.flatnonzero(b)
    ref = sinkhorn_log_reference(a[ia], b[ib], M[np.ix_(ia, ib)], reg)
    np.testing.assert_allclose(P[np.ix_(ia, ib)], ref, atol=1e-8)


def test_all_but_one_weight_zero(problem):
    a, b, M = problem(10, 12, seed=2)
    a = np.zeros(10)
    a[4] = 1.0
    P = pot_sns.sinkhorn_newton_sparse(a, b, M, 1e-3)
    np.testing.assert_allclose(P[4], b, atol=1e-12)
    assert np.all(np.delete(P, 4, axis=0) == 0)


# ---------------------------------------------------------------- small reg

@pytest.mark.parametrize("kind", ["w2", "w1", "l1", "uniform"])
@pytest.mark.parametrize("n,m", [(60, 45), (100, 120)])
def test_tiny_reg_with_normalised_costs(kind, n, m, problem):
    a, b, _ = problem(n, m, seed=n + m)
    M = cost_matrix(kind, n, m, seed=n * m)
    P, log = pot_sns.sinkhorn_newton_sparse(a, b, M, 1e-4, log=True)
    check_solved(P, log, a, b, M, 1e-4)
    entropic_bracket(P, a, b, M, 1e-4)


# ---------------------------------------------------------------- large costs

@pytest.mark.parametrize("rel_reg", [1e-2, 1e-3, 1e-4])
def test_large_unnormalised_costs(rel_reg, problem):
    """Costs up to 1e6: the plan for (c M, c reg) is the plan for (M, reg)."""
    a, b, M = problem(70, 50, seed=3)
    big = M * 1e6
    reg = rel_reg * 1e6
    P, log = pot_sns.sinkhorn_newton_sparse(a, b, big, reg, log=True)
    check_solved(P, log, a, b, big, reg)
    P1 = pot_sns.sinkhorn_newton_sparse(a, b, M, rel_reg)
    np.testing.assert_allclose(P, P1, atol=1e-8)
    entropic_bracket(P, a, b, big, reg, slack=1e-7 * 1e6)


def test_large_constant_offset_in_costs(problem):
    a, b, M = problem(50, 40, seed=4)
    P, log = pot_sns.sinkhorn_newton_sparse(a, b, M + 1e4, 1e-2, log=True)
    check_solved(P, log, a, b, M + 1e4, 1e-2)
    np.testing.assert_allclose(P, sinkhorn_log_reference(a, b, M, 1e-2), atol=1e-8)


# ---------------------------------------------------------------- degenerate geometry

@pytest.mark.parametrize("reg", [1e-2, 1e-3])
def test_duplicate_points_identical_rows_and_columns(reg):
    rng = np.random.default_rng(5)
    x = rng.normal(size=(30, 2))
    x[10:15] = x[3]  # five copies of point 3
    y = np.vstack([x[:20], x[:20]])  # every target point twice
    M = ot.dist(x, y)
    M /= M.max()
    a, b = ot.unif(30), ot.unif(40)
    P, log = pot_sns.sinkhorn_newton_sparse(a, b, M, reg, log=True)
    check_solved(P, log, a, b, M, reg)
    # equal weights and identical cost rows give identical plan rows
    for i in range(10, 15):
        np.testing.assert_allclose(P[i], P[3], atol=1e-10)
    np.testing.assert_allclose(P[:, :20], P[:, 20:], atol=1e-10)
    if reg >= 1e-2:
        np.testing.assert_allclose(P, sinkhorn_log_reference(a, b, M, reg), atol=1e-8)


def test_all_costs_equal(problem):
    a, b, _ = problem(20, 30, seed=6)
    P, log = pot_sns.sinkhorn_newton_sparse(a, b, np.full((20, 30), 0.7), 1e-3, log=True)
    np.testing.assert_allclose(P, np.outer(a, b), atol=1e-12)


@pytest.mark.parametrize("n,m", [(1, 1), (1, 25), (25, 1)])
@pytest.mark.parametrize("reg", [1.0, 1e-3])
def test_single_point(n, m, reg, problem):
    a, b, M = problem(n, m, seed=7)
    P, log = pot_sns.sinkhorn_newton_sparse(a, b, M * 3, reg, log=True)
    assert log["status"] == "converged"
    np.testing.assert_allclose(P, np.outer(a, b), atol=1e-12)  # the only coupling


def test_single_point_with_several_histograms():
    b = np.random.default_rng(8).random((6, 3))
    b /= b.sum(0)
    M = np.random.default_rng(9).random((1, 6))
    loss = pot_sns.sinkhorn_newton_sparse([1.0], b, M, 1e-2)
    np.testing.assert_allclose(loss, M[0] @ b, atol=1e-12)


# ---------------------------------------------------------------- dtypes and memory layout

def test_integer_costs(problem):
    a, b, M = problem(40, 30, seed=10)
    Mi = np.rint(M * 20).astype(np.int64)
    P = pot_sns.sinkhorn_newton_sparse(a, b, Mi, 1.0)
    assert P.dtype == np.float64
    np.testing.assert_allclose(P, sinkhorn_log_reference(a, b, Mi.astype(float), 1.0), atol=1e-9)
    Pu = pot_sns.sinkhorn_newton_sparse([], [], Mi.astype(np.int32), 0.5)  # uniform weights
    np.testing.assert_allclose(Pu.sum(1), np.full(40, 1 / 40), atol=1e-9)


def test_float32_costs_with_float64_weights_follow_pot_promotion(problem):
    a, b, M = problem(40, 30, seed=11)
    M32 = M.astype(np.float32)
    P = pot_sns.sinkhorn_newton_sparse(a, b, M32, 1e-2)
    assert P.dtype == np.float64
    np.testing.assert_allclose(P, sinkhorn_log_reference(a, b, M32.astype(float), 1e-2),
                               atol=1e-8)


@pytest.mark.parametrize("reg", [1e-1, 1e-2, 1e-3])
def test_all_float32(reg, problem):
    a, b, M = problem(60, 50, seed=12)
    a32, b32, M32 = (x.astype(np.float32) for x in (a, b, M))
    P, log = pot_sns.sinkhorn_newton_sparse(a32, b32, M32, reg, stopThr=1e-6, log=True)
    assert P.dtype == np.float32
    assert log["status"] == "converged"
    assert np.isfinite(P).all()
    assert marginal_l1(P, a32, b32) < 2e-5
    P64 = pot_sns.sinkhorn_newton_sparse(a, b, M, reg)
    # exponents carry float32 rounding of size eps32 * max(M) / reg
    np.testing.assert_allclose(P, P64, atol=20 * 1.2e-7 / reg * P64.max())


def test_fortran_and_non_contiguous_arrays(problem):
    a, b, M = problem(50, 40, seed=13)
    ref = pot_sns.sinkhorn_newton_sparse(a, b, M, 1e-2)
    big = np.zeros((150, 120))
    big[::3, ::3] = M
    wa, wb = np.zeros(100), np.zeros(80)
    wa[1::2], wb[::2] = a, b
    layouts = {
        "fortran": (a, b, np.asfortranarray(M)),
        "strided M": (a, b, big[::3, ::3]),
        "strided weights": (wa[1::2], wb[::2], M),
        "transposed view": (a, b, np.ascontiguousarray(M.T).T),
        "reversed": (a[::-1], b[::-1], M[::-1, ::-1]),
    }
    for name, (x, y, C) in layouts.items():
        assert not (C.flags.c_contiguous and x.flags.c_contiguous) or name == "strided weights"
        P = pot_sns.sinkhorn_newton_sparse(x, y, C, 1e-2)
        expect = ref[::-1, ::-1] if name == "reversed" else ref
        np.testing.assert_allclose(P, expect, atol=1e-10, err_msg=name)
        assert P.flags.c_contiguous or P.flags.f_contiguous
    # the user's arrays are not modified
    np.testing.assert_array_equal(big[::3, ::3], M)


@pytest.mark.parametrize("reg", [1e-2, 1e-3])
def test_several_histograms_with_zero_entries(reg, problem):
    a, _, M = problem(30, 25, seed=14)
    rng = np.random.default_rng(15)
    B = rng.random((25, 4))
    B[[0, 5], 1] = 0
    B[rng.random((25, 4)) < 0.2] = 0.0
    B /= B.sum(0)
    losses, log = pot_sns.sinkhorn_newton_sparse(a, B, M, reg, log=True)
    assert losses.shape == (4,) and np.isfinite(losses).all()
    assert log["status"] == ["converged"] * 4
    for k in range(4):
        P = pot_sns.sinkhorn_newton_sparse(a, B[:, k], M, reg)
        assert marginal_l1(P, a, B[:, k]) < 1e-7
        assert losses[k] == pytest.approx(float(np.sum(M * P)), abs=1e-10)
    losses2 = pot_sns.sinkhorn_newton_sparse2(a, B, M, reg)
    np.testing.assert_allclose(losses2, losses, atol=1e-12)
    if reg >= 1e-2:
        ib = np.flatnonzero(B[:, 1])
        ref = sinkhorn_log_reference(a, B[ib, 1], M[:, ib], reg)
        assert losses[1] == pytest.approx(float(np.sum(M[:, ib] * ref)), abs=1e-9)


# ---------------------------------------------------------------- safeguards

def _reasons(log):
    return Counter(reason for _, reason in log["fallbacks"])


@pytest.mark.parametrize("reg", [1e-3, 1e-4])
def test_line_search_failure_is_recovered(reg, problem):
    """One trial step only: the full Newton step fails far from the optimum
    (no epsilon-scaling warm-up, which would start Newton close to it)."""
    a, b, M = problem(80, 60, seed=1)
    P, log = pot_sns.sinkhorn_newton_sparse(a, b, M, reg, log=True, ls_maxiter=1,
                                            eps_scaling=False)
    assert _reasons(log)["line_search"] >= 1
    check_solved(P, log, a, b, M, reg)


@pytest.mark.parametrize("opts", [dict(max_density=1e-4), dict(sparsity="topk", density=1e-4),
                                  dict(mass_ratio=1e3, max_drop=1.0)],
                         ids=["max_density", "topk", "mass_ratio"])
def test_sparsity_that_stalls_progress_is_densified(opts, problem):
    """A Hessian kept almost diagonal makes Newton crawl: detected, densified."""
    a, b, M = problem(80, 60, seed=1)
    P, log = pot_sns.sinkhorn_newton_sparse(a, b, M, 1e-3, log=True, **opts)
    assert _reasons(log)["sparsity"] >= 1
    assert log["density"][-1] > log["density"][0]
    check_solved(P, log, a, b, M, 1e-3)


class _PoisonedKernel:
    """Kernel proxy whose first ``bad`` sparse blocks give NaN mat-vecs."""

    def __init__(self, kernel, bad):
        self._k = kernel
        self._bad = bad

    def __getattr__(self, name):
        return getattr(self._k, name)

    def select(self, tau):
        block = self._k.select(tau)
        if self._bad > 0:
            self._bad -= 1
            good = block.matvec
            block.matvec = lambda x: good(x) * np.nan
        return block


def test_cg_breakdown_is_recovered(monkeypatch, problem):
    real = pot_sns.api.make_kernel
    monkeypatch.setattr(pot_sns.api, "make_kernel",
                        lambda *args, **kw: _PoisonedKernel(real(*args, **kw), bad=3))
    a, b, M = problem(60, 50, seed=2)
    P, log = pot_sns.sinkhorn_newton_sparse(a, b, M, 1e-3, log=True)
    assert _reasons(log)["cg_breakdown"] == 3
    check_solved(P, log, a, b, M, 1e-3)
    np.testing.assert_allclose(P, pot_sns.sinkhorn_newton_sparse(a, b, M, 1e-3), atol=1e-8)


def test_pcg_reports_breakdown_on_indefinite_operator():
    nx = ot.backend.get_backend(np.zeros(1))
    A = np.diag([1.0, -4.0, 2.0])
    rhs = np.array([0.0, 1.0, 0.0])
    x, it, status = pcg(nx, lambda p: A @ p, rhs, np.ones(3), 1e-10, 10)
    assert status == "breakdown" and np.isfinite(x).all()
    x, it, status = pcg(nx, lambda p: A @ p * np.nan, np.ones(3), np.ones(3), 1e-10, 10)
    assert status == "breakdown" and np.isfinite(x).all()


def test_non_ascent_direction_is_recovered(monkeypatch, problem):
    real = pot_sns.solver.newton_direction
    calls = []

    def wrong_way(*args, **kw):
        du, dv, it, status = real(*args, **kw)
        calls.append(1)
        return (-du, -dv, it, status) if len(calls) <= 2 else (du, dv, it, status)

    monkeypatch.setattr(pot_sns.solver, "newton_direction", wrong_way)
    a, b, M = problem(60, 50, seed=3)
    P, log = pot_sns.sinkhorn_newton_sparse(a, b, M, 1e-3, log=True)
    assert _reasons(log)["not_ascent"] == 2
    check_solved(P, log, a, b, M, 1e-3)


def test_numItermax_reached_warns_and_returns_best_iterate(problem):
    a, b, M = problem(80, 60, seed=4)
    with pytest.warns(UserWarning, match="Sinkhorn did not converge. You might want to increase"):
        P, log = pot_sns.sinkhorn_newton_sparse(a, b, M, 1e-4, numItermax=40, log=True)
    assert log["status"] == "max_iter" and log["niter"] <= 40
    assert np.isfinite(P).all()
    err = np.sqrt(np.sum((P.sum(1) - a) ** 2) + np.sum((P.sum(0) - b) ** 2))
    measured = [e for e, s in zip(log["err"], log["stages"]) if s != "sinkhorn"]
    assert err == pytest.approx(min(measured), rel=1e-6)
    assert err <= log["err"][-1] * (1 + 1e-12)
    # sinkhorn_newton_sparse2 stays quiet by default, as ot.sinkhorn2
    pot_sns.sinkhorn_newton_sparse2(a, b, M, 1e-4, numItermax=40)


def test_no_warning_leaks_from_overflowing_potentials(problem):
    """At tiny reg, exp(log_u) overflows (as in POT's log["u"]); it stays silent."""
    a, b, M = problem(30, 30, seed=2)
    P, log = pot_sns.sinkhorn_newton_sparse(a, b, M, 1e-4, log=True)
    check_solved(P, log, a, b, M, 1e-4)
    assert np.isposinf(np.r_[log["u"], log["v"]]).any()  # the overflow did happen
    assert not np.isnan(np.r_[log["u"], log["v"]]).any()


def test_warmstart_from_a_related_problem_that_overflows_the_plan():
    # potentials of one problem used for a shifted one: exp(u + v - M/reg)
    # overflows at the start; the solver must recover, not raise
    rng = np.random.default_rng(0)
    n = 200
    x = rng.normal(size=(n, 2))
    y = rng.normal(size=(n, 2)) * [1.0, 0.4]
    a = b = np.full(n, 1.0 / n)
    M0 = ot.dist(x, y + [1.0, 0.0]) / 4.0
    M1 = 0.5 * M0 + 0.1 * ot.dist(x, y) / 4.0  # cheaper costs: the old plan explodes
    _, log0 = pot_sns.sinkhorn_newton_sparse(a, b, M0, 1e-3, log=True)
    ws = (log0["log_u"], log0["log_v"])
    with np.errstate(over="ignore"):
        assert not np.isfinite(np.exp(ws[0][:, None] + ws[1][None, :] - M1 / 1e-3)).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        P, log = pot_sns.sinkhorn_newton_sparse(a, b, M1, 1e-3, warmstart=ws, log=True)
    assert log["status"] == "converged"
    assert any(reason == "warmstart_overflow" for _, reason in log["fallbacks"])
    np.testing.assert_allclose(P.sum(1), a, atol=1e-9)
    np.testing.assert_allclose(P.sum(0), b, atol=1e-9)
