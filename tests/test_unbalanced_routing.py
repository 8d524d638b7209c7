"""method="sns" in POT's unbalanced entry points and in ot.da's Sinkhorn transports.

Oracles: POT's own solvers (converged, moderate reg), finite differences of
the returned values, the barycentric map of the coupling for the
out-of-sample map, and the direct pot_sns calls.
"""

import warnings

import numpy as np
import ot
import pytest

import pot_sns
from pot_sns import plugin
from pot_sns.unbalanced import routing
from test_unbalanced import clouds, dual, primal

INF = float("inf")


# ---------------------------------------------------------------- ot.solve

@pytest.mark.parametrize("reg_type", ["KL", "entropy"])
@pytest.mark.parametrize("unbalanced", [0.5, (INF, 0.8), (2.0, 0.3)])
def test_solve_matches_pot(reg_type, unbalanced):
    a, b, M = clouds(20, 25, 1.0, 1.6, seed=20)
    res = ot.solve(M, a, b, reg=0.1, reg_type=reg_type, unbalanced=unbalanced,
                   method="sns", tol=1e-13)
    assert isinstance(res, ot.utils.OTResult) and res.status == "converged"
    P0, log0 = ot.unbalanced.sinkhorn_knopp_unbalanced(
        a, b, M, 0.1, unbalanced, reg_type=reg_type.lower(), numItermax=200000,
        stopThr=1e-15, log=True)
    np.testing.assert_allclose(res.plan, P0, atol=1e-8, rtol=0)
    np.testing.assert_allclose(res.value_linear, np.sum(M * P0), rtol=1e-8)
    # potentials in POT's convention (those of POT's KL branch)
    np.testing.assert_allclose(res.potentials[0], log0["logu"], atol=1e-6)
    np.testing.assert_allclose(res.potentials[1], log0["logv"], atol=1e-6)
    # value: the objective, equal to the dual at the potentials
    F = primal(M, res.plan, a, b, 0.1, unbalanced, reg_type.lower())
    np.testing.assert_allclose(res.value, F, rtol=1e-12)
    np.testing.assert_allclose(dual(M, a, b, 0.1, unbalanced, *res.potentials,
                                    reg_type.lower()), F, rtol=1e-9)
    np.testing.assert_allclose(res.marginals[0], res.plan.sum(1))


def test_solve_entropy_value_equals_pot_lbfgsb():
    a, b, M = clouds(8, 7, 1.0, 1.3, seed=21)
    res = ot.solve(M, a, b, reg=0.5, reg_type="entropy", unbalanced=1.0, method="sns",
                   tol=1e-13)
    ref = ot.solve(M, a, b, reg=0.5, reg_type="entropy", unbalanced=1.0)  # L-BFGS-B
    np.testing.assert_allclose(res.value, ref.value, rtol=1e-7)
    np.testing.assert_allclose(res.plan, ref.plan, atol=1e-5)


def test_solve_uniform_weights_and_warm_start():
    a, b, M = clouds(15, 12, seed=22, uniform=True)
    a, b = ot.unif(15), ot.unif(12)
    res = ot.solve(M, reg=1e-3, unbalanced=0.3, method="sns")
    np.testing.assert_allclose(res.plan, ot.solve(M, a, b, reg=1e-3, unbalanced=0.3,
                                                  method="sns").plan, atol=1e-14)
    res2 = ot.solve(M, reg=1e-3, unbalanced=0.3, method="sns", potentials_init=res.potentials)
    assert res2.log["niter"] <= 1
    np.testing.assert_allclose(res2.plan, res.plan, atol=1e-10)


@pytest.mark.parametrize("kwargs, pattern", [
    (dict(unbalanced_type="L2"), r"^unbalanced_type must be 'KL'"),
    (dict(unbalanced_type="TV"), r"^unbalanced_type must be 'KL'"),
    (dict(reg_type="L2"), r"^reg_type must be 'kl' or 'entropy'"),
    (dict(reg_type=(np.sum, np.sign)), r"^reg_type must be 'KL' or 'entropy'"),
])
def test_solve_unsupported_is_value_and_not_implemented_error(monkeypatch, kwargs,
                                                              pattern):
    a, b, M = clouds(6, 5, seed=23)
    monkeypatch.setattr(routing, "solve_unbalanced_checked", _never)
    for exc in (ValueError, NotImplementedError):
        with pytest.raises(exc, match=pattern):
            ot.solve(M, a, b, reg=0.1, unbalanced=1.0, method="sns", **kwargs)


@pytest.mark.parametrize("kwargs, exc, pattern", [
    (dict(reg=None), ValueError, r"needs reg > 0"),
    (dict(unbalanced=-1.0), ValueError, r"^unbalanced must be > 0"),
    (dict(unbalanced=[1.0, 2.0, 3.0]), ValueError, r"^unbalanced must be a number or a pair"),
    (dict(unbalanced=float("nan")), ValueError, r"^unbalanced must not be NaN"),
    (dict(max_iter=0), ValueError, r"^max_iter"),
    (dict(tol=-1.0), ValueError, r"^tol"),
    (dict(grad="implicit"), ValueError, r"^grad must be one of"),
    (dict(grad="last_step", max_iter=1), ValueError, r"max_iter must be >= 2"),
])
def test_solve_bad_input(monkeypatch, kwargs, exc, pattern):
    a, b, M = clouds(6, 5, seed=23)
    monkeypatch.setattr(routing, "solve_unbalanced_checked", _never)
    args = dict(reg=0.1, unbalanced=1.0)
    args.update(kwargs)
    with pytest.raises(exc, match=pattern):
        ot.solve(M, a, b, method="sns", **args)
    with pytest.raises(ValueError, match=r"^b must be a 1-D"):
        ot.solve(M, a, np.stack([b, b], 1), reg=0.1, unbalanced=1.0, method="sns")


def _never(*args, **kwargs):
    raise AssertionError("no solve may start on unsupported or bad input")


def test_solve_sample_unbalanced():
    rng = np.random.default_rng(24)
    xs, xt = rng.normal(size=(20, 2)), rng.normal(size=(15, 2)) + 1
    a, b = ot.unif(20), 2 * ot.unif(15)
    res = ot.solve_sample(xs, xt, a, b, reg=0.05, unbalanced=0.7, method="sns")
    ref = ot.solve(ot.dist(xs, xt), a, b, reg=0.05, unbalanced=0.7, method="sns")
    np.testing.assert_allclose(res.plan, ref.plan, atol=1e-14)
    np.testing.assert_allclose(res.value, ref.value, rtol=1e-14)


# ---------------------------------------------------------------- ot.unbalanced

def test_sinkhorn_unbalanced_method_sns():
    a, b, M = clouds(18, 22, 0.6, 1.4, seed=25)
    for f in (ot.unbalanced.sinkhorn_unbalanced, ot.sinkhorn_unbalanced,
              ot.unbalanced._sinkhorn.sinkhorn_unbalanced, ot.da.sinkhorn_unbalanced):
        P, log = f(a, b, M, 1e-3, 0.4, method="sns", log=True, stopThr=1e-12)
        assert "n_newton" in log  # SNS ran
        np.testing.assert_allclose(P, pot_sns.sinkhorn_newton_sparse_unbalanced(
            a, b, M, 1e-3, 0.4, stopThr=1e-12), atol=1e-15)
    cost = ot.unbalanced.sinkhorn_unbalanced2(a, b, M, 1e-3, 0.4, method="SNS",
                                              returnCost="total", stopThr=1e-12)
    assert float(cost) == pytest.approx(float(pot_sns.sinkhorn_newton_sparse_unbalanced2(
        a, b, M, 1e-3, 0.4, returnCost="total", stopThr=1e-12)), rel=1e-13)
    # positional arguments as POT's (method is the 6th) and SNS options
    P = ot.unbalanced.sinkhorn_unbalanced(a, b, M, 1e-3, 0.4, "sinkhorn_newton_sparse",
                                          "entropy", n_sinkhorn=5)
    assert P.shape == M.shape


def test_other_methods_are_pot_and_unregister_restores():
    a, b, M = clouds(10, 12, seed=26)
    P = ot.unbalanced.sinkhorn_unbalanced(a, b, M, 0.1, 1.0)
    np.testing.assert_array_equal(P, plugin.pot_function("sinkhorn_unbalanced")(
        a, b, M, 0.1, 1.0))
    try:
        pot_sns.unregister()
        with pytest.raises(ValueError, match="Unknown method"):
            ot.unbalanced.sinkhorn_unbalanced(a, b, M, 0.1, 1.0, method="sns")
        assert ot.da.sinkhorn_unbalanced is plugin.pot_function("sinkhorn_unbalanced")
        assert not hasattr(ot.da.SinkhornTransport.fit, "__pot_sns_original__")
    finally:
        pot_sns.register()
    assert hasattr(ot.da.SinkhornTransport.fit, "__pot_sns_original__")
    ot.unbalanced.sinkhorn_unbalanced(a, b, M, 0.1, 1.0, method="sns")


# ---------------------------------------------------------------- gradients

def _fd(f, args, k, h=1e-6):
    x = args[k]
    out = np.zeros(x.shape)
    for i in range(x.size):
        plus, minus = list(args), list(args)
        xp, xm = x.copy(), x.copy()
        xp.flat[i] += h
        xm.flat[i] -= h
        plus[k], minus[k] = xp, xm
        out.flat[i] = (f(*plus) - f(*minus)) / (2 * h)
    return out


@pytest.mark.parametrize("reg_type", ["KL", "entropy"])
@pytest.mark.parametrize("unbalanced", [(0.7, 1.3), (INF, 0.8)])
@pytest.mark.parametrize("grad", ["autodiff", "envelope"])
def test_solve_value_gradients_match_finite_differences(reg_type, unbalanced, grad):
    torch = pytest.importorskip("torch")
    a, b, M = clouds(5, 6, 1.0, 1.4, seed=27)
    args = (M, a, b)
    Mt, at, bt = (torch.tensor(x, requires_grad=True) for x in args)
    res = ot.solve(Mt, at, bt, reg=0.3, reg_type=reg_type, unbalanced=unbalanced,
                   method="sns", tol=1e-13, grad=grad)
    outputs = [("value", (Mt, at, bt))]
    if grad == "autodiff":
        outputs.append(("value_linear", None))
    for attr, _ in outputs:
        for x in (Mt, at, bt):
            x.grad = None
        getattr(res, attr).backward(retain_graph=True)

        def f(M_, a_, b_):
            return float(getattr(ot.solve(M_, a_, b_, reg=0.3, reg_type=reg_type,
                                          unbalanced=unbalanced, method="sns", tol=1e-13,
                                          grad="detach"), attr))

        for k, x in enumerate((Mt, at, bt)):
            np.testing.assert_allclose(x.grad.numpy(), _fd(f, args, k), atol=2e-7)


def test_solve_gradients_match_pot_autodiff():
    torch = pytest.importorskip("torch")
    a, b, M = clouds(5, 6, 1.0, 1.4, seed=28)
    Mt, at, bt = (torch.tensor(x, requires_grad=True) for x in (M, a, b))
    ot.solve(Mt, at, bt, reg=0.3, unbalanced=(0.7, 1.3), method="sns",
             tol=1e-13).value_linear.backward()
    M0, a0, b0 = (torch.tensor(x, requires_grad=True) for x in (M, a, b))
    # POT's autograd through its converged Sinkhorn iterations
    ot.solve(M0, a0, b0, reg=0.3, unbalanced=(0.7, 1.3), tol=1e-15,
             max_iter=100000).value_linear.backward()
    for x, y in ((Mt, M0), (at, a0), (bt, b0)):
        np.testing.assert_allclose(x.grad.numpy(), y.grad.numpy(), atol=1e-9)


def test_solve_detach_and_last_step():
    torch = pytest.importorskip("torch")
    a, b, M = clouds(6, 7, 1.0, 1.4, seed=29)
    Mt, at, bt = (torch.tensor(x, requires_grad=True) for x in (M, a, b))
    res = ot.solve(Mt, at, bt, reg=0.3, unbalanced=0.8, method="sns", grad="detach")
    assert not res.value.requires_grad and not res.plan.requires_grad
    res = ot.solve(Mt, at, bt, reg=0.3, unbalanced=0.8, method="sns", grad="last_step",
                   tol=1e-13)
    assert res.plan.requires_grad and res.value.requires_grad
    ref = ot.solve(M, a, b, reg=0.3, unbalanced=0.8, method="sns", tol=1e-13)
    np.testing.assert_allclose(res.plan.detach().numpy(), ref.plan, atol=1e-12)
    res.value.backward()
    # at the optimum dF/dP = 0 (both marginals relaxed): the gradients through
    # one more Sinkhorn step are the envelope gradients
    E = [torch.tensor(x, requires_grad=True) for x in (M, a, b)]
    ot.solve(*E, reg=0.3, unbalanced=0.8, method="sns", tol=1e-13,
             grad="envelope").value.backward()
    for x, y in zip((Mt, at, bt), E):
        np.testing.assert_allclose(x.grad.numpy(), y.grad.numpy(), atol=1e-9)


# ---------------------------------------------------------------- ot.da

def _da_data(n, seed=42):
    rng = np.random.RandomState(seed)
    Xs, ys = ot.datasets.make_data_classif("3gauss", n, random_state=rng)
    Xt, yt = ot.datasets.make_data_classif("3gauss2", n, random_state=rng)
    return Xs, ys, Xt, yt


def test_sinkhorn_transport_runs_sns_with_continuous_map():
    Xs, ys, Xt, yt = _da_data(60)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "method has been set to sinkhorn_log"
        da = ot.da.SinkhornTransport(reg_e=1e-3, method="sns", norm="max")
        da.fit(Xs=Xs, Xt=Xt)
        Xs_map, Xt_map = da.transform(Xs=Xs), da.inverse_transform(Xt=Xt)
    assert da.method == "sns" and da.log_["status"] == "converged"
    P = pot_sns.sinkhorn_newton_sparse(ot.unif(60), ot.unif(60), da.cost_, 1e-3,
                                       stopThr=da.tol)
    np.testing.assert_allclose(da.coupling_, P, atol=1e-15)
    # on the training points the continuous map is the barycentric map
    # (POT's own exp overflows to NaN here)
    bary = (da.coupling_ @ Xt) / da.coupling_.sum(1)[:, None]
    np.testing.assert_allclose(Xs_map, bary, atol=1e-8)
    bary_t = (da.coupling_.T @ Xs) / da.coupling_.sum(0)[:, None]
    np.testing.assert_allclose(Xt_map, bary_t, atol=1e-8)
    new = da.transform(Xs=Xs + 0.01)
    assert new.shape == Xs.shape and np.isfinite(new).all()


def test_sinkhorn_transport_semi_supervised_forbids_pairs():
    Xs, ys, Xt, yt = _da_data(40)
    da = ot.da.SinkhornTransport(reg_e=0.05, method="sns", norm="max", tol=1e-12)
    da.fit(Xs=Xs, ys=ys, Xt=Xt, yt=yt)
    forbidden = da.cost_ >= 0.5 * np.finfo(float).max
    assert forbidden.any() and np.all(da.coupling_[forbidden] == 0)
    assert da.log_["status"] == "converged"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # POT's -M / reg overflows on those costs
        ref = ot.da.SinkhornTransport(reg_e=0.05, norm="max", tol=1e-12, max_iter=100000)
    ref.fit(Xs=Xs, ys=ys, Xt=Xt, yt=yt)
    np.testing.assert_allclose(da.coupling_, ref.coupling_, atol=1e-8)


def test_sinkhorn_transport_other_methods_unchanged():
    Xs, ys, Xt, yt = _da_data(20)
    with pytest.warns(UserWarning, match="set to 'sinkhorn_log'"):
        ot.da.SinkhornTransport(method="sinkhorn").fit(Xs=Xs, Xt=Xt)
    da = ot.da.SinkhornTransport(method="sns", out_of_sample_map="ferradans", log=False)
    da.fit(Xs=Xs, Xt=Xt)
    assert da.log_ == {} and da.transform(Xs=Xs).shape == Xs.shape


def test_sinkhorn_transport_fit_time_400():
    import time

    Xs, ys, Xt, yt = _da_data(400)
    t0 = time.perf_counter()
    ot.da.SinkhornTransport(reg_e=1e-3, method="sns", norm="max").fit(Xs=Xs, Xt=Xt)
    elapsed = time.perf_counter() - t0
    # well under a second on an idle core; loose here, as the machine is shared
    assert elapsed < 10.0


def test_unbalanced_sinkhorn_transport_runs_sns():
    Xs, ys, Xt, yt = _da_data(50)
    da = ot.da.UnbalancedSinkhornTransport(reg_e=1e-3, reg_m=0.2, method="sns",
                                           max_iter=1000, log=True, norm="max")
    da.fit(Xs=Xs, Xt=Xt)
    assert da.log_["status"] == "converged" and "n_newton" in da.log_
    P = pot_sns.sinkhorn_newton_sparse_unbalanced(ot.unif(50), ot.unif(50), da.cost_,
                                                  1e-3, 0.2, stopThr=da.tol)
    np.testing.assert_allclose(da.coupling_, P, atol=1e-15)
    assert da.transform(Xs=Xs).shape == Xs.shape


@pytest.mark.parametrize("reg_type", ["KL", "entropy"])
def test_gradients_at_zero_weights(reg_type):
    torch = pytest.importorskip("torch")
    a, b, M = clouds(5, 6, 1.0, 1.4, seed=27)
    a[2], b[4] = 0.0, 0.0
    Mt, at, bt = (torch.tensor(x, requires_grad=True) for x in (M, a, b))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = ot.solve(Mt, at, bt, reg=0.3, reg_type=reg_type, unbalanced=(0.7, 1.3),
                       method="sns", tol=1e-13, grad="envelope")
    res.value.backward()
    if reg_type == "entropy":
        assert any("-inf" in str(w.message) for w in caught)
        assert at.grad[2] == -np.inf and bt.grad[4] == -np.inf
        return
    assert not caught

    def f(a_):
        return float(ot.solve(M, a_, b, reg=0.3, unbalanced=(0.7, 1.3), method="sns",
                              tol=1e-13).value)

    # the one-sided derivative at a_2 = 0 (the value is smooth in a_2 >= 0)
    h = 1e-7
    ap = a.copy()
    ap[2] = h
    assert float(at.grad[2]) == pytest.approx((f(ap) - f(a)) / h, abs=1e-5)
    assert np.all(M[2] * 0 == Mt.grad.numpy()[2])  # an empty row: no mass moves
