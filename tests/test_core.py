"""SNS solver core on numpy: parity with POT's sinkhorn_log and POT's API contract."""

import warnings

import numpy as np
import ot
import pytest

import pot_sns
from problems import make_problem

CASES = [
    # n, m, uniform, reg
    (60, 60, True, 1e-1),
    (60, 60, False, 1e-1),
    (120, 80, False, 1e-2),
    (80, 140, True, 1e-2),
    (200, 200, False, 1e-2),
    (300, 250, True, 1e-1),
    (100, 100, True, 1e-3),
    (110, 70, False, 1e-3),
    (70, 120, True, 1e-3),
]


def pot_reference(a, b, M, reg):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return ot.sinkhorn(a, b, M, reg, method="sinkhorn_log", stopThr=1e-12,
                           numItermax=200000, log=True)


@pytest.mark.parametrize("n,m,uniform,reg", CASES)
def test_plan_matches_sinkhorn_log(n, m, uniform, reg):
    a, b, M = make_problem(n, m, seed=n + m, uniform=uniform)
    P0, log0 = pot_reference(a, b, M, reg)
    P, log = pot_sns.sinkhorn_newton_sparse(a, b, M, reg, log=True)
    assert log["status"] == "converged"
    np.testing.assert_allclose(P, P0, atol=1e-8, rtol=0)
    np.testing.assert_allclose(P.sum(1), a, atol=1e-9)
    np.testing.assert_allclose(P.sum(0), b, atol=1e-9)
    # same potentials up to the (1, -1) gauge
    shift = np.mean(log["log_u"] - log0["log_u"])
    np.testing.assert_allclose(reg * (log["log_u"] - shift), reg * log0["log_u"], atol=1e-6)
    np.testing.assert_allclose(reg * (log["log_v"] + shift), reg * log0["log_v"], atol=1e-6)


def test_newton_stage_is_used_at_small_reg():
    a, b, M = make_problem(150, 150, seed=3, uniform=True)
    P, log = pot_sns.sinkhorn_newton_sparse(a, b, M, 1e-3, log=True)
    assert log["n_newton"] >= 1
    assert log["niter"] == log["n_sinkhorn"] + log["n_newton"]
    assert log["n_newton"] < 60
    assert all(0 < d <= 0.25 for d in log["density"])
    assert len(log["cg_iters"]) == len(log["density"]) == len(log["ls_steps"])


def test_pot_doctest_numbers():
    P = pot_sns.sinkhorn_newton_sparse([.5, .5], [.5, .5], [[0., 1.], [1., 0.]], 1)
    np.testing.assert_allclose(
        P, [[0.36552929, 0.13447071], [0.13447071, 0.36552929]], atol=1e-8)
    assert isinstance(P, np.ndarray)


def test_log_keys():
    a, b, M = make_problem(30, 40)
    P, log = pot_sns.sinkhorn_newton_sparse(a, b, M, 1e-2, log=True)
    for key in ("err", "niter", "log_u", "log_v", "u", "v", "n_sinkhorn", "n_newton",
                "cg_iters", "density", "ls_steps", "fallbacks", "status"):
        assert key in log, key
    np.testing.assert_allclose(log["u"], np.exp(log["log_u"]))
    np.testing.assert_allclose(P, np.exp(log["log_u"][:, None] + log["log_v"][None, :] - M / 1e-2),
                               rtol=1e-12)
    assert log["err"][-1] < 1e-9


def test_warning_when_numItermax_too_small():
    a, b, M = make_problem(50, 50)
    with pytest.warns(UserWarning, match="Sinkhorn did not converge"):
        P, log = pot_sns.sinkhorn_newton_sparse(a, b, M, 1e-3, numItermax=5, log=True)
    assert log["status"] == "max_iter"
    assert log["niter"] <= 5
    assert np.isfinite(P).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        pot_sns.sinkhorn_newton_sparse(a, b, M, 1e-3, numItermax=5, warn=False)


def test_best_iterate_returned_when_budget_runs_out():
    # Cold Newton steps at a tiny reg raise the dual while the marginal error
    # swings: after 12 of them the last iterate is far worse than an earlier
    # one, and the solver must hand back the earlier one.
    a, b, M = make_problem(80, 80, seed=1)
    n = len(a)
    P, log = pot_sns.sinkhorn_newton_sparse(a, b, M, 1e-4, numItermax=12, log=True,
                                            warn=False, warmstart=(np.zeros(n), np.zeros(n)))
    assert log["n_sinkhorn"] == 0 and log["n_newton"] == 12
    newton_errs = [e for e, s in zip(log["err"], log["stages"]) if s != "sinkhorn"]
    assert newton_errs[-1] > 2 * min(newton_errs)  # the guard has work to do
    err = np.sqrt(np.sum((P.sum(1) - a) ** 2) + np.sum((P.sum(0) - b) ** 2))
    assert err == pytest.approx(min(newton_errs), rel=1e-6)
    # the potentials in the log are those of the returned plan
    P_pot = np.exp(log["log_u"][:, None] + log["log_v"][None, :] - M / 1e-4)
    np.testing.assert_allclose(P_pot, P, rtol=1e-9, atol=1e-300)


def test_warmstart_from_converged_solve():
    a, b, M = make_problem(120, 100, seed=7)
    P0, log0 = pot_sns.sinkhorn_newton_sparse(a, b, M, 1e-3, log=True)
    P1, log1 = pot_sns.sinkhorn_newton_sparse(a, b, M, 1e-3, log=True,
                                              warmstart=(log0["log_u"], log0["log_v"]))
    assert log1["n_newton"] <= 2
    assert log1["n_sinkhorn"] == 0
    np.testing.assert_allclose(P1, P0, atol=1e-10)
    # a warm start from POT's own potentials works too
    Pp, logp = ot.sinkhorn(a, b, M, 1e-2, method="sinkhorn_log", log=True, stopThr=1e-11)
    P2, log2 = pot_sns.sinkhorn_newton_sparse(a, b, M, 1e-2, log=True,
                                              warmstart=(logp["log_u"], logp["log_v"]))
    assert log2["n_newton"] <= 2
    np.testing.assert_allclose(P2, Pp, atol=1e-9)


def test_multiple_histograms_give_losses():
    a, b, M = make_problem(40, 50, seed=2)
    rng = np.random.default_rng(0)
    B = rng.random((50, 3))
    B /= B.sum(0)
    res, log = pot_sns.sinkhorn_newton_sparse(a, B, M, 1e-2, log=True)
    ref = ot.sinkhorn(a, B, M, 1e-2, method="sinkhorn_log", stopThr=1e-12, numItermax=100000)
    assert res.shape == (3,)
    np.testing.assert_allclose(res, ref, atol=1e-9)
    assert log["log_u"].shape == (40, 3) and log["log_v"].shape == (50, 3)
    res2 = pot_sns.sinkhorn_newton_sparse2(a, B, M, 1e-2)
    np.testing.assert_allclose(res2, ref, atol=1e-9)


def test_sinkhorn2_matches_pot():
    a, b, M = make_problem(60, 45, seed=4)
    ref = ot.sinkhorn2(a, b, M, 1e-2, method="sinkhorn_log", stopThr=1e-12, numItermax=100000)
    loss = pot_sns.sinkhorn_newton_sparse2(a, b, M, 1e-2)
    assert float(loss) == pytest.approx(float(ref), abs=1e-9)
    loss, log = pot_sns.sinkhorn_newton_sparse2(a, b, M, 1e-2, log=True)
    assert "log_u" in log


def test_lists_and_empty_weights():
    M = [[0.0, 1.0, 2.0], [1.0, 0.0, 1.0]]
    P = pot_sns.sinkhorn_newton_sparse([], [], M, 0.5)
    ref = ot.sinkhorn([], [], M, 0.5, method="sinkhorn_log", stopThr=1e-12)
    assert isinstance(P, np.ndarray)
    np.testing.assert_allclose(P, ref, atol=1e-10)
    np.testing.assert_allclose(P.sum(1), [0.5, 0.5], atol=1e-12)


def test_paper_options():
    a, b, M = make_problem(100, 100, seed=9, uniform=True)
    P0, _ = pot_reference(a, b, M, 1e-2)
    P = pot_sns.sinkhorn_newton_sparse(a, b, M, 1e-2, sparsity="topk", density=0.05,
                                       n_sinkhorn=5)
    np.testing.assert_allclose(P, P0, atol=1e-8)


def test_unknown_option_is_rejected():
    a, b, M = make_problem(5, 5)
    with pytest.raises(TypeError, match="tolerance"):
        pot_sns.sinkhorn_newton_sparse(a, b, M, 1.0, tolerance=1e-3)
    with pytest.raises(ValueError, match="cg_maxiter"):
        pot_sns.sinkhorn_newton_sparse(a, b, M, 1.0, cg_maxiter=0)


def test_verbose_prints_table(capsys):
    a, b, M = make_problem(50, 50)
    pot_sns.sinkhorn_newton_sparse(a, b, M, 1e-3, verbose=True)
    out = capsys.readouterr().out
    assert "It." in out and "Err" in out and "newton" in out


def test_dense_and_sparse_hessian_paths_agree():
    """A plan large enough for the numpy kernel to switch to the whole plan as
    the Hessian (and to estimate the threshold histogram on a row sample)
    gives the entropic optimum, and the same plan as Newton steps that keep
    only part of the entries (a capped density)."""
    a, b, M = make_problem(400, 300, seed=21)
    reg = 1e-3
    P, log = pot_sns.sinkhorn_newton_sparse(a, b, M, reg, log=True, stopThr=1e-11)
    assert log["status"] == "converged" and log["n_newton"] >= 1
    assert log["density"][-1] == 1.0  # the exact Hessian was used
    np.testing.assert_allclose(P.sum(1), a, atol=1e-11)
    np.testing.assert_allclose(P.sum(0), b, atol=1e-11)
    # the optimum is the only plan of this form with these marginals (the
    # kernels flush entries below 1e-305 to zero: subnormals are slow)
    gibbs = np.exp(log["log_u"][:, None] + log["log_v"][None, :] - M / reg)
    np.testing.assert_allclose(P, gibbs, rtol=1e-12, atol=1e-300)
    P2, log2 = pot_sns.sinkhorn_newton_sparse(a, b, M, reg, log=True, stopThr=1e-11,
                                              max_density=0.5)
    assert log2["status"] == "converged" and max(log2["density"]) <= 0.5
    np.testing.assert_allclose(P2, P, atol=1e-11, rtol=0)


@pytest.mark.parametrize("reg, scaled", [(2e-2, False), (6e-3, False), (4e-3, True),
                                         (1e-3, True)])
def test_epsilon_scaling_only_below_scaling_from(reg, scaled):
    """The warm-up scales epsilon only when reg < scaling_from * spread (5e-3
    by default); the plan is the entropic optimum either way."""
    a, b, M = make_problem(60, 50, seed=31)
    M = M / M.max()  # spread 1
    P, log = pot_sns.sinkhorn_newton_sparse(a, b, M, reg, log=True, stopThr=1e-11)
    assert (log["n_scaling"] > 0) == scaled
    np.testing.assert_allclose(P.sum(1), a, atol=1e-10)
    np.testing.assert_allclose(P.sum(0), b, atol=1e-10)
    P2, log2 = pot_sns.sinkhorn_newton_sparse(a, b, 10 * M, 10 * reg, log=True,
                                              stopThr=1e-11, scaling_from=0.5 * reg)
    assert log2["n_scaling"] == 0  # the threshold is relative to the spread
    np.testing.assert_allclose(P2, P, atol=1e-9)
