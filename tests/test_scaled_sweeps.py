"""Sinkhorn sweeps in scaling form (``NumpyKernel.scaled_sweeps``).

Oracle: the log-domain half-sweeps (``row_lse``/``col_lse``), which the
scaled sweeps replace where the kernel form is exact; and the plan rebuilt
from the returned potentials.
"""

import numpy as np
import ot
import pytest

import pot_sns
import pot_sns.kernels.numpy as npk
from pot_sns.kernels.numpy import NumpyKernel, ScaledSweeps
from pot_sns.objective import BalancedObjective
from pot_sns.unbalanced.objective import UnbalancedObjective
from problems import make_problem


def _solve(a, b, M, reg, sweeps):
    # only sweeps: the budget ends the solve before any Newton step
    return pot_sns.sinkhorn_newton_sparse(a, b, M, reg, numItermax=sweeps, stopThr=1e-300,
                                          log=True, warn=False, n_sinkhorn=sweeps)


def _log_domain_only(monkeypatch):
    monkeypatch.setattr(NumpyKernel, "scaled_sweeps", lambda self, targets, u, v, col=None: None)


# 1e-4: the epsilon-scaling stages, and potentials that leave the range of
# the kernel form (most entries of K underflow at an exp pass's point)
@pytest.mark.parametrize("reg", [1e-1, 1e-2, 1e-3, 1e-4])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_scaled_sweeps_follow_the_log_domain_sweeps(reg, dtype, monkeypatch):
    a, b, M = (x.astype(dtype) for x in make_problem(150, 110, seed=7))
    used = []
    sweep = ScaledSweeps.sweep

    def spy(self):
        err = sweep(self)
        used.append(err is not None)
        return err

    monkeypatch.setattr(ScaledSweeps, "sweep", spy)
    P, log = _solve(a, b, M, reg, 25)
    assert log["n_newton"] == 0 and sum(used) >= 10  # the scaled form did most sweeps
    monkeypatch.undo()
    _log_domain_only(monkeypatch)
    P0, log0 = _solve(a, b, M, reg, 25)
    assert log["n_sinkhorn"] == log0["n_sinkhorn"] == 25
    # float32: errors agree down to float32's rounding of the sums
    rtol, atol = (1e-9, 1e-12) if dtype == np.float64 else (2e-3, 1e-6)
    np.testing.assert_allclose(log["err"], log0["err"], rtol=rtol, atol=atol)
    np.testing.assert_allclose(P, P0, rtol=rtol, atol=1e-9 * float(P0.max()))
    if dtype == np.float64:  # (float32 plans flush what float64 keeps)
        # the plan is the one of the potentials returned with it
        rebuilt = np.exp(log["log_u"][:, None] + log["log_v"][None, :] - M / reg)
        np.testing.assert_allclose(P, rebuilt, rtol=1e-9, atol=1e-300)


def test_a_failed_sweep_hands_over_to_the_log_domain(monkeypatch):
    """Where a scaled sweep fails its checks, the warm-up goes on with
    log-domain sweeps from the potentials of the last good one."""
    a, b, M = make_problem(120, 100, seed=3)
    _log_domain_only(monkeypatch)
    P0, log0 = _solve(a, b, M, 1e-2, 20)
    monkeypatch.undo()
    sweep, calls = ScaledSweeps.sweep, []

    def flaky(self):
        calls.append(1)
        return None if len(calls) % 3 == 0 else sweep(self)

    monkeypatch.setattr(ScaledSweeps, "sweep", flaky)
    P, log = _solve(a, b, M, 1e-2, 20)
    assert len(calls) >= 9
    np.testing.assert_allclose(log["err"], log0["err"], rtol=1e-9, atol=1e-14)
    np.testing.assert_allclose(P, P0, rtol=1e-9, atol=1e-12 * float(P0.max()))


def test_a_sweep_out_of_range_changes_nothing():
    a, b, M = make_problem(80, 60, seed=2)
    nx = ot.backend.get_backend(M)
    k = NumpyKernel(nx, M, 1e-2)
    with k.errstate():
        v = np.log(b) - k.col_lse(np.zeros(len(a)))
        u = np.log(a) - k.row_lse(v)
        k._drift = 1e-3  # no potential may move from the exp pass's point
        sw = k.scaled_sweeps((a, b), np.zeros(len(a)), np.zeros(len(b)))
        assert sw is not None
        eu, ev = sw.eu, sw.ev
        assert sw.sweep() is None and sw.eu is eu and sw.ev is ev
        assert k.scaled_sweeps((a, b), u, v) is None  # too far from it already
        k._drift = 50.0
        sw = k.scaled_sweeps((a, b), u, v)
        k._smin = 1e300  # every sum then counts as one that lost its mass
        eu, ev = sw.eu, sw.ev
        assert sw.sweep() is None and sw.eu is eu and sw.ev is ev


def test_only_the_balanced_dual_has_scaling_targets():
    a, b, _ = make_problem(5, 4, seed=0)
    nx = ot.backend.get_backend(a)
    assert BalancedObjective(nx, a, b, 0.1).scaling_targets() == (a, b)
    assert UnbalancedObjective(nx, a, b, 0.1, (1.0, 1.0)).scaling_targets() is None


def test_scaled_sweeps_count_their_mat_vecs():
    a, b, M = make_problem(60, 50, seed=1)
    k = NumpyKernel(ot.backend.get_backend(M), M, 0.1)
    with k.errstate():
        v = np.log(b) - k.col_lse(np.zeros(len(a)))
        u = np.log(a) - k.row_lse(v)
        before = k.passes["matvec"]
        sw = k.scaled_sweeps((a, b), u, v)
        for _ in range(3):
            err = sw.sweep()
        # the start point's column sums, then two mat-vecs per sweep
        assert k.passes["matvec"] == before + 7 and k.passes["exp"] == 1
        u1, v1 = sw.potentials()
        # the plan at the returned potentials has the row sums a (a sweep
        # ends on u), and the error is its column sums' distance to b
        P = np.exp(u1[:, None] + v1[None, :] - M / 0.1)
        np.testing.assert_allclose(P.sum(1), a, rtol=1e-12)
        assert err == pytest.approx(np.linalg.norm(P.sum(0) - b), rel=1e-9)
        # sweeps from there go on with those column sums: two per sweep
        before = k.passes["matvec"]
        sw = k.scaled_sweeps((a, b), u1, v1)
        assert sw.sweep() is not None and k.passes["matvec"] == before + 2
        u2, v2 = sw.potentials()
        # and the sums there cost no mat-vec
        before = k.passes["matvec"]
        r, c, _ = k.evaluate(u2, v2, 0.0)
        assert k.passes["matvec"] == before and k.passes["exp"] == 1
        P = np.exp(u2[:, None] + v2[None, :] - M / 0.1)
        np.testing.assert_allclose(r, P.sum(1), rtol=1e-12)
        np.testing.assert_allclose(c, P.sum(0), rtol=1e-12)
        # elsewhere (or for other targets) they are computed
        k.evaluate(u2 + 1e-3, v2, 0.0)
        assert k.passes["matvec"] == before + 2
        sw = k.scaled_sweeps((a, 2 * b), u2, v2)
        sw.sweep()
        assert k.passes["matvec"] == before + 5
        # a log-domain column log-sum-exp at the start point saves the first
        lse = k.col_lse(u2)
        before = k.passes["matvec"]
        sw = k.scaled_sweeps((a, b), u2, v2, lse)
        sw.sweep()
        assert k.passes["matvec"] == before + 2
    assert npk.ScaledSweeps is ScaledSweeps


def test_torch_cpu_tensors_get_the_scaled_sweeps_of_the_numpy_kernel(monkeypatch):
    torch = pytest.importorskip("torch", reason="torch is not installed (optional)")
    try:
        ot.backend.get_backend(torch.zeros(1))
    except Exception as e:  # POT_BACKEND_DISABLE_PYTORCH=1 (tox -e numpy)
        pytest.skip("POT's torch backend is off: %s" % e)
    a, b, M = make_problem(100, 80, seed=6)
    used = []
    sweep = ScaledSweeps.sweep

    def spy(self):
        used.append(1)
        return sweep(self)

    monkeypatch.setattr(ScaledSweeps, "sweep", spy)
    P, log = _solve(*(torch.from_numpy(x) for x in (a, b, M)), 1e-2, 20)
    assert isinstance(P, torch.Tensor) and P.dtype == torch.float64 and len(used) >= 15
    assert isinstance(log["log_u"], torch.Tensor)
    monkeypatch.undo()
    P0, _ = _solve(a, b, M, 1e-2, 20)
    np.testing.assert_allclose(P.numpy(), P0, rtol=1e-12, atol=1e-300)
