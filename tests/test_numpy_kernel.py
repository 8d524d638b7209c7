"""The numpy kernel's float32 Hessian copy (``NumpyKernel._single``).

Oracle: products with the exact float64 plan ``exp(u + v - M / reg)``, and
solves without the copy (``SINGLE_HESSIAN = False``).
"""

import numpy as np
import ot
import pytest

import pot_sns
import pot_sns.kernels.numpy as npk
from pot_sns.kernels.numpy import NumpyKernel
from problems import make_problem

REG = 1e-2


def kernel_at(M, u, v):
    nx = ot.backend.get_backend(M)
    k = NumpyKernel(nx, M, REG)
    k.evaluate(u, v, 0.0)
    return k


def plan(M, u, v):
    return np.exp(u[:, None] + v[None, :] - M / REG)


def potentials(M, seed):
    # near the scaling of a plan of mass about 1: entries up to about 1
    rng = np.random.default_rng(seed)
    n, m = M.shape
    u = np.log(1.0 / n) + 0.1 * rng.normal(size=n)
    v = np.log(1.0 / m) + 0.1 * rng.normal(size=m) + (M / REG).min(0)
    return u, v


def check_products(S, P, seed=0):
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=P.shape[1]), rng.normal(size=P.shape[0])
    for got, want, scale in ((S.matvec(x), P @ x, np.abs(P) @ np.abs(x)),
                             (S.rmatvec(y), y @ P, np.abs(y) @ np.abs(P)),
                             (S.sq_matvec(x), (P * P) @ x, (P * P) @ np.abs(x)),
                             (S.sq_rmatvec(y), y @ (P * P), np.abs(y) @ (P * P))):
        assert got.dtype == np.float64
        # float32 entries: relative 6e-8 each, float32 sums over m terms
        assert np.all(np.abs(got - want) <= 1e-5 * scale + 1e-300)


def test_dense_block_is_a_float32_copy_with_float64_products():
    _, _, M = make_problem(400, 300, seed=3)
    u, v = potentials(M, 0)
    k = kernel_at(M, u, v)
    S = k.select(0.0)
    assert S.S.dtype == np.float32 and S.nnz == M.size
    check_products(S, plan(M, u, v))
    assert k.passes["single"] == 1


def test_copy_is_scaled_on_the_fly_then_rebuilt_when_the_plan_moves():
    _, _, M = make_problem(400, 300, seed=4)
    u, v = potentials(M, 1)
    k = kernel_at(M, u, v)
    k.select(0.0)
    # a small move: the same copy, scaled to the new point
    u1, v1 = u + 0.3, v - 0.2 + 0.01 * np.arange(M.shape[1]) / M.shape[1]
    k.evaluate(u1, v1, 0.0)
    S = k.select(0.0)
    assert k.passes["single"] == 1
    check_products(S, plan(M, u1, v1), seed=1)
    # beyond SINGLE_DRIFT: K is rescaled first and a new copy made
    shift = np.linspace(0, npk.SINGLE_DRIFT + 5.0, M.shape[0])
    u2 = u1 - shift
    k.evaluate(u2, v1, 0.0)
    S = k.select(0.0)
    assert k.passes["single"] == 2
    check_products(S, plan(M, u2, v1), seed=2)


def test_thresholded_block_zeroes_the_copy_not_the_plan():
    _, _, M = make_problem(400, 300, seed=5)
    u, v = potentials(M, 2)
    k = kernel_at(M, u, v)
    P = plan(M, u, v)
    tau = np.quantile(P, 0.7)  # keeps 30%: past DENSE_DENSITY_SINGLE, not all
    S = k.select(tau)
    assert S.S.dtype == np.float32
    assert S.nnz == np.count_nonzero(P >= tau)
    check_products(S, np.where(P >= tau, P, 0.0))
    # the float64 buffer is still the plan: no exp pass needed to restore it
    exp_passes = k.passes["exp"]
    np.testing.assert_allclose(k.P, P, rtol=1e-12, atol=0)
    assert k.passes["exp"] == exp_passes


def test_float32_costs_need_no_copy():
    _, _, M = make_problem(400, 300, seed=6)
    M = M.astype(np.float32)
    u, v = (x.astype(np.float32) for x in potentials(M.astype(np.float64), 3))
    k = kernel_at(M, u, v)
    S = k.select(0.0)
    assert S.S.dtype == np.float32 and k.passes["single"] == 0


@pytest.mark.parametrize("reg", [1e-3, 2e-4])
def test_solves_with_and_without_the_copy_agree(reg, monkeypatch):
    a, b, M = make_problem(400, 300, seed=7)
    P, log = pot_sns.sinkhorn_newton_sparse(a, b, M, reg, log=True, stopThr=1e-11)
    assert log["status"] == "converged" and 1.0 in log["density"]
    monkeypatch.setattr(npk, "SINGLE_HESSIAN", False)
    P64, log64 = pot_sns.sinkhorn_newton_sparse(a, b, M, reg, log=True, stopThr=1e-11)
    assert log64["status"] == "converged"
    np.testing.assert_allclose(P, P64, rtol=0, atol=1e-11)
    # the float32 Hessian costs no Newton steps
    assert log["n_newton"] <= log64["n_newton"] + 1


@pytest.mark.parametrize("scale", [1e30, 1e-30])
def test_masses_beyond_float32_keep_the_float64_hessian(scale):
    """Entries or squares beyond float32's range: the kernel keeps the
    float64 block, and the plan scales with the weights."""
    _, _, M = make_problem(400, 300, seed=8)
    u, v = potentials(M, 4)
    k = kernel_at(M, u + np.log(scale), v)
    assert k.select(0.0).S.dtype == np.float64
    a, b, M = make_problem(400, 300, seed=8)
    P = pot_sns.sinkhorn_newton_sparse(a, b, M, 1e-3, stopThr=1e-11)
    Ps, log = pot_sns.sinkhorn_newton_sparse(a * scale, b * scale, M, 1e-3, log=True,
                                             stopThr=1e-11 * scale)
    assert log["status"] == "converged" and 1.0 in log["density"]
    np.testing.assert_allclose(Ps / scale, P, rtol=0, atol=1e-10)


# ----------------------------------------------------------------------------
# no subnormal numbers on the hot path (oracle: np.exp in float64 and float32)


def subnormal(x):
    x = np.abs(np.asarray(x))
    return int(np.count_nonzero((x > 0) & (x < np.finfo(x.dtype).tiny)))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_exp_flushed_is_exp_with_underflow_to_zero(dtype):
    tiny = np.finfo(dtype).tiny
    lo = np.log(tiny) + npk.LOG_FLUSH
    L = np.linspace(2 * np.log(tiny), 0.0, 4001).astype(dtype)
    L[[3, 17]] = [np.nan, -np.inf]
    want = np.exp(L.astype(np.float64))
    out = np.empty_like(L)
    got, lmin = npk.exp_flushed(L.copy(), out, lo, np.empty(L.shape, bool))
    assert np.isnan(lmin)  # the smallest logit, NaN included
    assert subnormal(got) == 0 and np.isnan(got[3]) and got[17] == 0
    ok = ~np.isnan(L)
    above = ok & (L > lo)
    np.testing.assert_allclose(got[above], want[above], rtol=4 * np.finfo(dtype).eps, atol=0)
    assert np.all(got[ok & (L <= lo)] == 0)
    # blocks with every logit above lo take the plain exp: same values
    hi = L[above][L[above] > lo + 1]
    got, lmin = npk.exp_flushed(hi.copy(), np.empty_like(hi), lo, None)
    np.testing.assert_array_equal(got, np.exp(hi))
    assert lmin == hi.min()


def test_no_subnormals_in_the_plan_its_float32_copy_or_its_rescalings():
    a, b, M = make_problem(300, 200, seed=9)
    reg = 2e-4  # logits far below log(tiny): most entries underflow
    nx = ot.backend.get_backend(M)
    k = NumpyKernel(nx, M, reg)
    # P_ij <= a_i b_j, the largest entry of each column near it
    u, v = np.log(a), (M / reg).min(0) + np.log(b)
    k.evaluate(u, v, 0.0)
    K = k.P
    want = np.exp(u[:, None] + v[None, :] - M / reg)
    assert subnormal(want) > 0 and subnormal(K) == 0
    # logits near -700 carry a relative rounding of 700 eps
    np.testing.assert_allclose(K, want, rtol=1e-12, atol=np.finfo(float).tiny * np.exp(4.0))
    # a rescaling that pushes entries below the normal range flushes them
    du = np.linspace(0.0, -50.0, M.shape[0])  # within the drift: no exp pass
    k.evaluate(u + du, v, 0.0)
    k._materialize(u + du, v)
    assert k.passes["rescale"] == 1 and subnormal(k._K) == 0
    # the float32 copy
    k._rmax = 1.0
    K32, _, _ = k._single(u + du, v)
    assert subnormal(K32) == 0 and subnormal(k._K32sq) == 0
    assert subnormal(np.asarray(k._K, np.float32)) > 0  # a plain cast would have some


def test_kernel_floor_is_the_smallest_entry_of_the_exp_pass():
    """The bound on K's nonzero entries is the smallest one when no logit
    underflowed (rescalings then need no flush pass), and exp(lo) otherwise."""
    a, b, M = make_problem(120, 90, seed=4)
    nx = ot.backend.get_backend(M)
    k = NumpyKernel(nx, M, 0.05)
    k.evaluate(np.log(a), np.log(b), 0.0)
    # abs=0: approx's default absolute tolerance (1e-12) would pass any tiny floor
    assert k._kfloor == pytest.approx(k._K.min(), rel=1e-12, abs=0)
    k = NumpyKernel(nx, M, 1e-4)  # most logits underflow
    k.evaluate(np.log(a), np.log(b), 0.0)
    assert k._kfloor == pytest.approx(np.exp(k._lo), rel=1e-12, abs=0) and k._K.min() == 0


def test_float32_copy_is_the_plan_at_its_point_reused_within_the_drift():
    """The float32 copy for CG is made from K scaled to the current point
    (K itself is not rescaled), with its squares, and serves later points
    within SINGLE_DRIFT of it."""
    a, b, M = make_problem(200, 150, seed=3)
    nx = ot.backend.get_backend(M)
    reg = 0.05
    k = NumpyKernel(nx, M, reg)
    u, v = np.log(a), np.log(b) + (M / reg).min(0)
    k.evaluate(u, v, 0.0)
    u1 = u + np.linspace(-1.0, 1.0, len(u))
    k.evaluate(u1, v, 0.0)  # near: two mat-vecs, K stays at (u, v)
    K32, u32, v32 = k._single(u1, v)
    assert u32 is u1 and v32 is v and k.passes["rescale"] == 0
    want = np.exp(u1[:, None] + v[None, :] - M / reg)
    np.testing.assert_allclose(K32, want, rtol=1e-6)
    floor = np.sqrt(np.finfo(np.float32).tiny)
    np.testing.assert_allclose(k._K32sq, np.where(K32 >= floor, K32, 0) ** 2, rtol=1e-6)
    built = k.passes["single"]
    assert k._single(u1 + 1.0, v)[0] is K32 and k.passes["single"] == built
    _, u2, _ = k._single(u1 + npk.SINGLE_DRIFT, v + 1.0)
    assert k.passes["single"] == built + 1 and u2 is not u1


def test_float32_block_squares_have_no_subnormals_and_match():
    _, _, M = make_problem(300, 200, seed=10)
    u, v = potentials(M, 6)  # entries from about 1 down past float32's range
    k = kernel_at(M, u, v)
    k._rmax = 1.0
    S = k.select(0.0)
    assert S.S.dtype == np.float32 and subnormal(S.S) == 0
    assert subnormal(S.S.astype(np.float32) ** 2) > 0  # what the flush avoids
    assert subnormal(S._squares(0)) == 0
    P = plan(M, u, v)
    x = np.random.default_rng(0).random(M.shape[1])
    want = (P * P) @ x
    np.testing.assert_allclose(S.sq_matvec(x), want, rtol=1e-5, atol=0)


# ----------------------------------------------------------------------------
# BLAS threads capped at the idle cores (oracle: threadpoolctl's own report)


def test_solve_caps_blas_threads_at_the_idle_cores_and_restores_them(monkeypatch):
    threadpoolctl = pytest.importorskip("threadpoolctl", reason="threadpoolctl is optional")
    from pot_sns.kernels import threads

    def blas_counts():
        return [i["num_threads"] for i in threadpoolctl.threadpool_info()
                if i["user_api"] == "blas"]

    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        before = blas_counts()
        monkeypatch.setattr(threads, "idle_cores", lambda: 1)
        k = NumpyKernel(ot.backend.NumpyBackend(), np.zeros((600, 600)), REG)
        with k.errstate():
            assert blas_counts() == [1] * len(before)
        assert blas_counts() == before
        # small solves never ask: BLAS does not thread their mat-vecs anyway
        small = NumpyKernel(ot.backend.NumpyBackend(), np.zeros((50, 50)), REG)
        with small.errstate():
            assert blas_counts() == before


def test_idle_cores_counts_other_busy_processes():
    import subprocess
    import sys

    from pot_sns.kernels import threads

    if threads._runnable_others() is None:
        pytest.skip("no /proc/loadavg on this platform")
    quiet = threads._runnable_others()
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        import time

        time.sleep(0.3)
        loaded = max(threads._runnable_others() for _ in range(5))
    finally:
        for p in busy:
            p.kill()
            p.wait()
    # other agents may come and go, but two spinning processes are runnable
    assert loaded >= 2 and threads.idle_cores() >= 1 and quiet >= 0


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("reg", [0.05, 1e-4])
def test_exp_pass_from_the_cost_range_is_the_exp_pass(dtype, reg):
    """At zero potentials the smallest logit is the largest cost's: the exp
    pass takes it from the kernel's cost range (no minimum per block) and
    gives the same plan, sums and floor on the plan's nonzero entries."""
    _, _, M = make_problem(120, 90, seed=4)
    M = M.astype(dtype)
    nx = ot.backend.get_backend(M)
    plain = NumpyKernel(nx, M, reg)
    r0, c0 = plain._exp_pass(None, None)
    k = NumpyKernel(nx, M, reg)
    assert k.cost_range() == (float(M.min()), float(M.max()))
    r, c = k._exp_pass(None, None)
    np.testing.assert_array_equal(k._K, plain._K)
    np.testing.assert_array_equal(r, r0)
    np.testing.assert_array_equal(c, c0)
    nonzero = k._K[k._K > 0]
    assert 0 < k._kfloor <= nonzero.min()
    # the bound's margin (relative 1e-6 in the logit) is all that differs
    assert k._kfloor == pytest.approx(plain._kfloor, rel=2e-6 * abs(np.log(plain._kfloor)), abs=0)
    # the stage kernels of the epsilon scaling share the range
    assert k.at_reg(10 * reg)._cost_range == k._cost_range


@pytest.mark.parametrize("reg", [0.05, 1e-4])
@pytest.mark.parametrize("chunk", [None, 90 * 7])
def test_in_place_passes_by_blocks_are_the_plan(monkeypatch, reg, chunk):
    """The exp pass and the rescaling write K in place by row blocks of
    PLAN_CHUNK entries (here also 7 rows, the last block shorter): the plan,
    its sums, and zeros exactly where the logits underflow (reg = 1e-4,
    the masked path), against the plan computed in one piece. Sums not
    asked for are not computed."""
    if chunk is not None:
        monkeypatch.setattr(npk, "PLAN_CHUNK", chunk)
        monkeypatch.setattr(npk, "CHUNK", 90 * 3)
    _, _, M = make_problem(120, 90, seed=4)
    nx = ot.backend.get_backend(M)
    k = NumpyKernel(nx, M, reg)
    assert min(k._plan_rows, 120) == (7 if chunk else 120)
    rng = np.random.default_rng(0)
    u, v = rng.normal(size=120), rng.normal(size=90) + (M / reg).min(0)
    r, c = k._exp_pass(u, v)
    L = M * (-1.0 / reg) + u[:, None] + v[None, :]  # the kernel's logits, rounded alike
    want = np.where(L > k._lo, np.exp(L), 0.0)
    np.testing.assert_allclose(k._K, want, rtol=1e-13, atol=0)
    assert ((k._K == 0) == (want == 0)).all() and (reg > 1e-3 or (want == 0).any())
    np.testing.assert_allclose(r, want.sum(1), rtol=1e-12, atol=0)
    np.testing.assert_allclose(c, want.sum(0), rtol=1e-12, atol=0)
    assert k._exp_pass(u, v, rows=False)[0] is None
    assert k._exp_pass(u, v, cols=False)[1] is None
    # a rescaling to a nearby point, block by block
    du, dv = 0.3 * rng.normal(size=120), 0.3 * rng.normal(size=90)
    k._materialize(u + du, v + dv)
    assert k._rescaled == 1
    np.testing.assert_allclose(k._K, want * np.exp(du[:, None] + dv[None, :]), rtol=1e-12,
                               atol=0)
