"""Unbalanced entropic OT with SNS: pot_sns.sinkhorn_newton_sparse_unbalanced(2).

Oracles: POT's own unbalanced Sinkhorn run to convergence where it converges
(moderate reg), the self-certifying optimality residual of
pot_sns.unbalanced.residual (a plan rebuilt from the potentials read off its
marginals) where POT does not, the balanced solver for reg_m = inf, and
finite differences / POT's autograd for gradients.
"""

import math
import warnings

import numpy as np
import ot
import pytest

import pot_sns
from pot_sns.unbalanced import api as uapi
from pot_sns.unbalanced.objective import UnbalancedObjective, expm1
from pot_sns.unbalanced.residual import optimality_residual

snsu = pot_sns.sinkhorn_newton_sparse_unbalanced
snsu2 = pot_sns.sinkhorn_newton_sparse_unbalanced2
INF = float("inf")


def clouds(n, m, mass_a=1.0, mass_b=1.5, seed=0, uniform=False):
    """Two Gaussian clouds, squared Euclidean cost / max, weights of the
    given masses."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    y = rng.normal(size=(m, 2)) + 1.0
    M = ot.dist(x, y)
    M /= M.max()
    a = np.ones(n) if uniform else rng.random(n) + 0.2
    b = np.ones(m) if uniform else rng.random(m) + 0.2
    return a * (mass_a / a.sum()), b * (mass_b / b.sum()), M


def pot_plan(a, b, M, reg, reg_m, reg_type="kl", c=None):
    """POT's Sinkhorn-Knopp, converged (small problems, moderate reg)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # POT warns about c for "entropy"
        return ot.unbalanced.sinkhorn_knopp_unbalanced(
            a, b, M, reg, reg_m, reg_type=reg_type, c=c, numItermax=200000,
            stopThr=1e-15, log=True)


def primal(M, P, a, b, reg, reg_m, reg_type="kl"):
    """The objective, generalized KL terms, written out with scipy."""
    from scipy.special import xlogy

    rho_a, rho_b = reg_m if np.ndim(reg_m) else (reg_m, reg_m)
    # KL(P | a b^T), or the negative entropy sum P (log P - 1) (no constant)
    c = np.outer(a, b) if reg_type == "kl" else np.ones_like(M)
    const = c.sum() if reg_type == "kl" else 0.0
    F = np.sum(M * P) + reg * (np.sum(xlogy(P, P / c)) - P.sum() + const)
    for rho, r, w in ((rho_a, P.sum(1), a), (rho_b, P.sum(0), b)):
        if not math.isinf(rho):
            F += rho * (np.sum(xlogy(r, r / w)) - r.sum() + w.sum())
    return F


def dual(M, a, b, reg, reg_m, logu, logv, reg_type="kl"):
    """The dual objective at POT's potentials (f = reg * logu)."""
    rho_a, rho_b = reg_m if np.ndim(reg_m) else (reg_m, reg_m)
    f, g = reg * logu, reg * logv
    c = np.outer(a, b) if reg_type == "kl" else np.ones_like(M)
    const = c.sum() if reg_type == "kl" else 0.0
    D = -reg * (np.sum(c * np.exp((f[:, None] + g[None, :] - M) / reg)) - const)
    for rho, h, w in ((rho_a, f, a), (rho_b, g, b)):
        D += np.dot(h, w) if math.isinf(rho) else -rho * np.dot(w, np.exp(-h / rho) - 1)
    return D


# ---------------------------------------------------------------- against POT

@pytest.mark.parametrize("reg_type", ["kl", "entropy"])
@pytest.mark.parametrize("reg, reg_m", [(0.1, 1.0), (0.1, 0.1), (0.05, (0.5, 2.0)),
                                        (0.1, (INF, 1.0)), (0.1, (1.0, INF))])
def test_plan_equals_pot_where_pot_converges(reg_type, reg, reg_m):
    a, b, M = clouds(30, 40, seed=1)
    P0, log0 = pot_plan(a, b, M, reg, reg_m, reg_type)
    P, log = snsu(a, b, M, reg, reg_m, reg_type=reg_type, stopThr=1e-13, log=True)
    np.testing.assert_allclose(P, P0, atol=1e-8, rtol=0)
    assert log["status"] == "converged"
    # POT's log keys, in POT's conventions (logu = f / reg)
    np.testing.assert_allclose(log["logu"], log0["logu"], atol=1e-6)
    np.testing.assert_allclose(log["logv"], log0["logv"], atol=1e-6)
    np.testing.assert_allclose(log["cost"], log0["cost"], rtol=1e-9)
    # total_cost is the objective (POT's own vanishes at the optimum), equal
    # to the dual at the potentials: no duality gap
    F = primal(M, P, a, b, reg, reg_m, reg_type)
    np.testing.assert_allclose(log["total_cost"], F, rtol=1e-12)
    np.testing.assert_allclose(dual(M, a, b, reg, reg_m, log["logu"], log["logv"], reg_type),
                               F, rtol=1e-9)


def test_pot_docstring_examples():
    a, b, M = [.5, .5], [.5, .5], [[0., 1.], [1., 0.]]
    np.testing.assert_allclose(snsu(a, b, M, 1., 1., stopThr=1e-12),
                               [[0.3220536, 0.1184769], [0.1184769, 0.3220536]], atol=1e-7)
    cost0 = ot.unbalanced.sinkhorn_unbalanced2([.5, .1], b, M, 1., 1., stopThr=1e-14,
                                               numItermax=10000)
    cost = snsu2([.5, .1], b, M, 1., 1., stopThr=1e-13)
    assert abs(float(cost) - float(cost0)) < 1e-11


@pytest.mark.parametrize("reg_type", ["kl", "entropy"])
def test_costs(reg_type):
    a, b, M = clouds(25, 20, 0.7, 1.8, seed=2)
    c0 = ot.unbalanced.sinkhorn_unbalanced2(a, b, M, 0.1, 0.5, reg_type=reg_type,
                                            stopThr=1e-15, numItermax=100000)
    c = snsu2(a, b, M, 0.1, 0.5, reg_type=reg_type, stopThr=1e-13)
    np.testing.assert_allclose(c, c0, rtol=1e-9)
    total = snsu2(a, b, M, 0.1, 0.5, reg_type=reg_type, returnCost="total", stopThr=1e-13)
    P = snsu(a, b, M, 0.1, 0.5, reg_type=reg_type, stopThr=1e-13)
    np.testing.assert_allclose(total, primal(M, P, a, b, 0.1, 0.5, reg_type), rtol=1e-12)
    with pytest.raises(ValueError, match="returnCost"):
        snsu2(a, b, M, 0.1, 0.5, returnCost="quadratic")


def test_custom_reference_measure():
    a, b, M = clouds(20, 25, seed=3)
    c = np.random.default_rng(0).random(M.shape) + 0.5
    P0, log0 = pot_plan(a, b, M, 0.1, 1.0, "kl", c=c)
    P, log = snsu(a, b, M, 0.1, 1.0, c=c, stopThr=1e-13, log=True)
    np.testing.assert_allclose(P, P0, atol=1e-8, rtol=0)
    np.testing.assert_allclose(log["logu"], log0["logu"], atol=1e-6)
    with pytest.warns(UserWarning, match="overwritten by the one matrix"):
        Pe = snsu(a, b, M, 0.1, 1.0, reg_type="entropy", c=c, stopThr=1e-13)
    np.testing.assert_allclose(Pe, snsu(a, b, M, 0.1, 1.0, reg_type="entropy",
                                        stopThr=1e-13), atol=1e-12)


# ---------------------------------------------------------------- small reg

@pytest.mark.parametrize("reg_type", ["kl", "entropy"])
@pytest.mark.parametrize("reg", [1e-2, 1e-3, 1e-4])
@pytest.mark.parametrize("mass_a, mass_b, reg_m", [(1.0, 0.3, 0.1), (1.0, 3.0, 1.0),
                                                   (0.3, 1.0, (INF, 0.5))])
def test_optimality_residual_small_reg(reg_type, reg, mass_a, mass_b, reg_m):
    a, b, M = clouds(60, 80, mass_a, mass_b, seed=4)
    # the residual amplifies the gradient's rounding by about reg_m / reg: ask
    # for a gradient at float64's floor (where the solver may stall, not fail)
    P, log = snsu(a, b, M, reg, reg_m, reg_type=reg_type, stopThr=1e-13, log=True,
                  warn=False)
    assert log["status"] == "converged" or (log["status"] == "stalled"
                                            and min(log["err"]) < 3e-13)
    assert optimality_residual(M, P, a, b, reg, reg_m, reg_type) <= 1e-8


@pytest.mark.parametrize("reg_m", [1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0])
def test_reg_m_range(reg_m):
    a, b, M = clouds(30, 35, 1.0, 2.0, seed=5)
    P, log = snsu(a, b, M, 0.1, reg_m, stopThr=1e-12, log=True)
    assert optimality_residual(M, P, a, b, 0.1, reg_m) <= 1e-8
    if reg_m <= 100:  # POT's Sinkhorn crawls (k = reg_m / (reg_m + reg) ~ 1) above
        np.testing.assert_allclose(P, pot_plan(a, b, M, 0.1, reg_m)[0], atol=1e-8, rtol=0)
    # at a reg where POT's Sinkhorn is hopeless: no duality gap at the
    # potentials of the log (the residual amplifies rounding by reg_m / reg;
    # potentials of order reg_m / reg also bound the reachable gradient norm)
    P, log = snsu(a, b, M, 1e-3, reg_m, stopThr=1e-10, log=True)
    assert log["status"] == "converged"
    F = primal(M, P, a, b, 1e-3, reg_m)
    D = dual(M, a, b, 1e-3, reg_m, log["logu"], log["logv"])
    assert abs(F - D) <= 1e-10 * max(1.0, abs(F))
    np.testing.assert_allclose(log["total_cost"], F, rtol=1e-11)


def test_issue_problem_converges():
    """The problem of the issue: 400x500, reg=1e-3, reg_m=0.1, masses 1, 1.5;
    POT's Sinkhorn stops early there (or underflows), SNS certifies its plan."""
    a, b, M = clouds(400, 500, 1.0, 1.5, seed=0, uniform=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        P_pot = ot.unbalanced.sinkhorn_unbalanced(a, b, M, 1e-3, 0.1)
    for reg_type in ("kl", "entropy"):
        P, log = snsu(a, b, M, 1e-3, 0.1, reg_type=reg_type, stopThr=1e-10, log=True)
        assert log["status"] == "converged"
        assert optimality_residual(M, P, a, b, 1e-3, 0.1, reg_type) <= 1e-6
        if reg_type == "kl":
            assert optimality_residual(M, P, a, b, 1e-3, 0.1) < \
                1e-3 * optimality_residual(M, P_pot, a, b, 1e-3, 0.1)


# ---------------------------------------------------------------- special cases

@pytest.mark.parametrize("reg_m", [INF, (INF, INF), [INF]])
def test_infinite_reg_m_is_balanced(reg_m):
    a, b, M = clouds(20, 30, 1.0, 1.0, seed=6)
    P = snsu(a, b, M, 0.05, reg_m, stopThr=1e-12)
    P_bal = pot_sns.sinkhorn_newton_sparse(a, b, M, 0.05, stopThr=1e-12)
    np.testing.assert_allclose(P, P_bal, atol=1e-10)
    np.testing.assert_allclose(P, ot.sinkhorn(a, b, M, 0.05, stopThr=1e-14,
                                              numItermax=100000), atol=1e-10)


def test_large_reg_m_tends_to_balanced():
    a, b, M = clouds(20, 30, 1.0, 1.0, seed=6)
    P_bal = ot.sinkhorn(a, b, M, 0.05, stopThr=1e-14, numItermax=100000)
    P = snsu(a, b, M, 0.05, 1e6, stopThr=1e-12)
    np.testing.assert_allclose(P, P_bal, atol=1e-6)


@pytest.mark.parametrize("side", [0, 1])
def test_semi_relaxed(side):
    a, b, M = clouds(40, 30, 1.0, 2.5, seed=7)
    reg_m = (INF, 0.3) if side == 0 else (0.3, INF)
    P = snsu(a, b, M, 1e-3, reg_m, stopThr=1e-12)
    hard, w = (P.sum(1), a) if side == 0 else (P.sum(0), b)
    np.testing.assert_allclose(hard, w, atol=1e-11)
    assert optimality_residual(M, P, a, b, 1e-3, reg_m) <= 1e-8


def test_several_histograms():
    a, b, M = clouds(25, 30, seed=8)
    B = np.stack([b, 0.4 * b[::-1], 2.0 * np.roll(b, 3)], 1)
    costs, log = snsu(a, B, M, 0.05, 0.5, stopThr=1e-12, log=True)
    assert costs.shape == (3,)
    assert log["logu"].shape == (25, 3) and log["logv"].shape == (30, 3)
    for k in range(3):
        P, lk = snsu(a, B[:, k], M, 0.05, 0.5, stopThr=1e-12, log=True)
        np.testing.assert_allclose(costs[k], np.sum(P * M), rtol=1e-10)
        np.testing.assert_allclose(log["logv"][:, k], lk["logv"], atol=1e-9)
    totals = snsu2(a, B, M, 0.05, 0.5, returnCost="total", stopThr=1e-12)
    assert float(totals[1]) == pytest.approx(
        float(snsu2(a, B[:, 1], M, 0.05, 0.5, returnCost="total", stopThr=1e-12)), rel=1e-10)


def test_zero_weights_restrict_to_support():
    a, b, M = clouds(12, 15, seed=9)
    a[[2, 7]] = 0.0
    b[4] = 0.0
    P, log = snsu(a, b, M, 0.05, 0.7, stopThr=1e-12, log=True)
    assert np.all(P[[2, 7]] == 0) and np.all(P[:, 4] == 0)
    assert np.isneginf(log["logu"][[2, 7]]).all() and np.isneginf(log["logv"][4])
    ia, ib = np.flatnonzero(a), np.flatnonzero(b)
    Ps = snsu(a[ia], b[ib], M[np.ix_(ia, ib)], 0.05, 0.7, stopThr=1e-12)
    np.testing.assert_allclose(P[np.ix_(ia, ib)], Ps, atol=1e-14)
    assert np.isfinite(log["total_cost"])  # POT's formula gives NaN here


def test_warmstart_in_pot_convention():
    a, b, M = clouds(50, 60, seed=10)
    P, log = snsu(a, b, M, 1e-3, 0.2, stopThr=1e-11, log=True)
    P2, log2 = snsu(a, b, M, 1e-3, 0.2, stopThr=1e-11, log=True,
                    warmstart=(log["logu"], log["logv"]))
    np.testing.assert_allclose(P2, P, atol=1e-10)
    assert log2["niter"] <= 1
    # POT's own log serves as a warm start too (its logu, logv at moderate reg)
    _, log0 = pot_plan(a, b, M, 0.1, 0.2)
    P3, log3 = snsu(a, b, M, 0.1, 0.2, stopThr=1e-11, log=True,
                    warmstart=(log0["logu"], log0["logv"]))
    assert log3["niter"] <= 2


def test_not_converged_warns_and_returns_best():
    a, b, M = clouds(40, 50, seed=11)
    with pytest.warns(UserWarning, match="did not converge"):
        P, log = snsu(a, b, M, 1e-3, 0.5, numItermax=3, log=True)
    assert log["status"] == "max_iter" and np.isfinite(P).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        snsu(a, b, M, 1e-3, 0.5, numItermax=3, warn=False)


# ---------------------------------------------------------------- backends, dtypes

def test_lists_in_numpy_out():
    a, b, M = clouds(6, 7, seed=12)
    P = snsu(a.tolist(), b.tolist(), M.tolist(), 0.1, [0.5, 2.0])
    assert isinstance(P, np.ndarray)
    np.testing.assert_allclose(P, snsu(a, b, M, 0.1, (0.5, 2.0)), atol=1e-15)
    P_unif = snsu([], [], M, 0.1, 1.0, stopThr=1e-12)
    np.testing.assert_allclose(P_unif, snsu(ot.unif(6), ot.unif(7), M, 0.1, 1.0,
                                            stopThr=1e-12), atol=1e-15)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_torch_in_torch_out(dtype):
    torch = pytest.importorskip("torch")
    a, b, M = clouds(30, 40, seed=13)
    ref = snsu(a, b, M, 1e-2, 0.5, stopThr=1e-12)
    dt = getattr(torch, dtype)
    at, bt, Mt = (torch.tensor(x, dtype=dt) for x in (a, b, M))
    stop = 1e-12 if dtype == "float64" else 1e-5
    P, log = snsu(at, bt, Mt, 1e-2, 0.5, stopThr=stop, log=True)
    assert isinstance(P, torch.Tensor) and P.dtype == dt
    assert isinstance(log["logu"], torch.Tensor)
    np.testing.assert_allclose(P.numpy(), ref, atol=1e-12 if dtype == "float64" else 2e-5)
    cost = snsu2(at, bt, Mt, 1e-2, 0.5, stopThr=stop)
    assert isinstance(cost, torch.Tensor) and cost.dtype == dt


def test_torch_loss_gradients_match_finite_differences():
    torch = pytest.importorskip("torch")
    a, b, M = clouds(5, 6, 1.0, 1.4, seed=14)
    for returnCost in ("linear", "total"):
        Mt, at, bt = (torch.tensor(x, requires_grad=True) for x in (M, a, b))
        loss = snsu2(at, bt, Mt, 0.3, (0.7, 1.3), returnCost=returnCost, stopThr=1e-13)
        loss.backward()

        def f(M_, a_, b_):
            return float(snsu2(a_, b_, M_, 0.3, (0.7, 1.3), returnCost=returnCost,
                               stopThr=1e-13))

        for x, g, k in ((M, Mt.grad, 0), (a, at.grad, 1), (b, bt.grad, 2)):
            fd = _finite_differences(f, (M, a, b), k)
            np.testing.assert_allclose(g.numpy(), fd, atol=1e-7)


def _finite_differences(f, args, k, h=1e-6):
    x = args[k]
    out = np.zeros(x.shape)
    for i in range(x.size):
        plus, minus = [list(args) for _ in range(2)]
        xp, xm = x.copy(), x.copy()
        xp.flat[i] += h
        xm.flat[i] -= h
        plus[k], minus[k] = xp, xm
        out.flat[i] = (f(*plus) - f(*minus)) / (2 * h)
    return out


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("kwargs, exc, pattern", [
    (dict(reg_m=0.0), ValueError, r"^reg_m must be > 0"),
    (dict(reg_m=-1.0), ValueError, r"^reg_m must be > 0"),
    (dict(reg_m=float("nan")), ValueError, r"^reg_m must not be NaN"),
    (dict(reg_m=(1.0, float("nan"))), ValueError, r"^reg_m must not be NaN"),
    (dict(reg_m=[1.0, 2.0, 3.0]), ValueError, r"^reg_m must be a number or a pair"),
    (dict(reg_m="big"), TypeError, r"^reg_m"),
    (dict(reg_m=None), TypeError, r"^reg_m"),
    (dict(reg=0.0), ValueError, r"^reg must be"),
    (dict(reg_type="L2"), ValueError, r"^reg_type must be 'kl' or 'entropy'"),
    (dict(a=np.array([.5, -.1, .6])), ValueError, r"^a must hold non-negative"),
    (dict(b=np.array([.5, np.nan, .2, .1])), ValueError, r"^b must hold finite"),
    (dict(a=np.array([.5, .5])), ValueError, r"^a must have shape \(3,\)"),
    (dict(b=np.zeros(4)), ValueError, r"^b must have positive total mass"),
    (dict(M=np.full((3, 4), np.inf)), ValueError, r"^M must hold finite"),
    (dict(c=-np.ones((3, 4))), ValueError, r"^c must hold positive"),
    (dict(c=np.ones((4, 3))), ValueError, r"^c must have the shape"),
    (dict(reg_m=(INF, INF)), ValueError, r"^reg_m is infinite on both sides"),
    (dict(numItermax=0), ValueError, r"^numItermax"),
    (dict(cg_rtol=-1.0), ValueError, r"cg_rtol"),
    (dict(not_an_option=1), TypeError, r"not_an_option"),
])
def test_bad_input_raises_before_any_work(monkeypatch, kwargs, exc, pattern):
    args = dict(a=np.full(3, 1 / 3), b=np.full(4, 0.5), M=np.random.default_rng(0).random(
        (3, 4)), reg=0.1, reg_m=1.0)
    args.update(kwargs)

    def never(*a, **k):
        raise AssertionError("no solve may start on bad input")

    monkeypatch.setattr(uapi, "solve", never)
    with pytest.raises(exc, match=pattern):
        snsu(**args)


def test_unsupported_reg_type_is_also_not_implemented():
    with pytest.raises(NotImplementedError, match="reg_type"):
        snsu([.5, .5], [.5, .5], [[0., 1.], [1., 0.]], 0.1, 1.0, reg_type="L2")


def test_unequal_masses_are_valid():
    a, b, M = clouds(10, 12, 1.0, 3.0, seed=15)
    P = snsu(a, b, M, 0.1, 1.0, stopThr=1e-12)
    assert optimality_residual(M, P, a, b, 0.1, 1.0) < 1e-10


# ---------------------------------------------------------------- the objective

def _objective(kl=True, reg_m=(0.3, 2.0), reg=0.05):
    from ot.backend import get_backend

    a, b, _ = clouds(7, 9, 0.8, 1.7, seed=16)
    return UnbalancedObjective(get_backend(a), a, b, reg, reg_m, kl=kl)


def _psi(obj, u, side):
    """The marginal term of the dual, written out (the test's oracle)."""
    w, logw, rho = (obj.a, obj.loga, obj.reg_m[0]) if side == 0 else \
        (obj.b, obj.logb, obj.reg_m[1])
    o = logw if obj.kl else 0.0
    if math.isinf(rho):
        return float(np.dot(u - o, w))
    return float(-(rho / obj.reg) * np.dot(w, np.exp(-(obj.reg / rho) * (u - o)) - 1))


@pytest.mark.parametrize("kl", [True, False])
@pytest.mark.parametrize("reg_m", [(0.3, 2.0), (INF, 0.5)])
def test_objective_derivatives(kl, reg_m):
    obj = _objective(kl, reg_m)
    rng = np.random.default_rng(1)
    u, v = rng.normal(size=7), rng.normal(size=9)
    du, dv = rng.normal(size=7), rng.normal(size=9)
    # gain is the exact difference of psi, and does not cancel near t = 0
    for t in (1.0, 0.1):
        exact = (_psi(obj, u + t * du, 0) + _psi(obj, v + t * dv, 1) - _psi(obj, u, 0)
                 - _psi(obj, v, 1))
        assert obj.gain(u, v, du, dv, t) == pytest.approx(exact, rel=1e-10)
    small = obj.gain(u, v, du, dv, 1e-12)
    first = 1e-12 * (np.dot(obj.row_target(u), du) + np.dot(obj.col_target(v), dv))
    assert small == pytest.approx(first, rel=1e-6)
    # targets are psi', curvatures -psi''
    h = 1e-6
    e = np.zeros(7)
    e[3] = h
    d1 = (_psi(obj, u + e, 0) - _psi(obj, u - e, 0)) / (2 * h)
    assert obj.row_target(u)[3] == pytest.approx(d1, rel=1e-7)
    ha, hb = obj.curvature(u, v)
    t_p, t_m = obj.col_target(v + 1e-6), obj.col_target(v - 1e-6)
    np.testing.assert_allclose(hb, -(t_p - t_m) / 2e-6, rtol=1e-6)
    assert (ha is None) == math.isinf(reg_m[0])


@pytest.mark.parametrize("kl", [True, False])
def test_objective_sinkhorn_update_and_rescale(kl):
    obj = _objective(kl)
    lse = np.random.default_rng(2).normal(size=7)
    u = obj.row_update(lse)
    # the u-update zeroes the gradient in u: t_a(u) = P 1 = exp(u + lse)
    np.testing.assert_allclose(obj.row_target(u), np.exp(u + lse), rtol=1e-12)
    # rescale keeps f = reg (u - o): the same potentials at another reg
    big = obj.at_reg(0.2)
    assert big.reg == 0.2 and obj.reg == 0.05 and big.ka < obj.ka
    v = np.zeros(9)
    u2, v2 = obj.rescale(u, v, 0.2 / obj.reg)  # (u, v) taken at reg 0.2
    oa, ob = (obj.loga, obj.logb) if kl else (0.0, 0.0)
    np.testing.assert_allclose(obj.reg * (u2 - oa), 0.2 * (u - oa), rtol=1e-12)
    np.testing.assert_allclose(obj.reg * (v2 - ob), 0.2 * (v - ob), atol=1e-15)


def test_objective_translate_raises_dual_keeps_plan():
    obj = _objective(True, (5.0, 20.0), reg=0.01)
    rng = np.random.default_rng(3)
    u, v = rng.normal(size=7), rng.normal(size=9)
    u2, v2 = obj.translate(u, v)
    np.testing.assert_allclose(u2[:, None] + v2[None, :], u[:, None] + v[None, :],
                               atol=1e-12)
    # the new point is the maximum along (1, -1): equal target masses' balance
    lam = u2[0] - u[0]
    for d in (1e-3, -1e-3):
        assert _psi(obj, u2, 0) + _psi(obj, v2, 1) >= \
            _psi(obj, u2 + d, 0) + _psi(obj, v2 - d, 1)
    assert _psi(obj, u2, 0) + _psi(obj, v2, 1) > _psi(obj, u, 0) + _psi(obj, v, 1)
    assert abs(lam) > 0


def test_expm1_backends():
    from ot.backend import NumpyBackend

    x = np.array([-1e-9, 1e-12, 0.5])
    np.testing.assert_allclose(expm1(NumpyBackend(), x), np.expm1(x), rtol=1e-15)
