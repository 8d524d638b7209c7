"""ot.solve / ot.solve_sample / ot.sinkhorn(2) integration (pot_sns.plugin) and
the pytest plugin pot_sns.testing.

Oracles: POT's own sinkhorn_log (through ot.solve without method, at a tight
tolerance) and its autograd, an exact dense reference for the gradients of
the loss (tests/dense_reference.py), POT's original functions (for
delegation), and properties (identity of the rebound functions, marginals)."""

import importlib.util
import inspect
import io
import os
import re
import subprocess
import sys
import tarfile
import warnings
from pathlib import Path

import numpy as np
import ot
import pytest

import pot_sns
from pot_sns import plugin, testing
from conftest import make_problem
from dense_reference import dual_newton, linear_loss_gradients

ROOT = Path(__file__).resolve().parents[1]
REG = 0.02


def torch_or_skip():
    """torch, when POT's torch backend is there (not disabled, installed)."""
    if not ot.backend.torch:
        pytest.skip("POT's torch backend is not available")
    return ot.backend.torch


@pytest.fixture
def registered():
    """Leave pot_sns registered whatever the test did."""
    yield
    pot_sns.register()


def _all_holders(obj):
    return [(m.__name__, attr) for m, attr in plugin._places(obj)]


# ---------------------------------------------------------------- registration

def test_import_registers_in_every_place_pot_looks_up():
    assert plugin.is_registered()
    for name in plugin.TARGETS:
        wrapper = getattr(ot, name)
        assert wrapper.__wrapped__ is plugin.pot_function(name)
    assert ot.solvers.solve is ot.solve
    assert ot.solvers._linear.solve is ot.solve  # what ot.solve_sample calls
    assert ot.solvers._linear.solve_sample is ot.solve_sample
    assert ot.bregman.sinkhorn is ot.sinkhorn
    assert ot.bregman._sinkhorn.sinkhorn is ot.sinkhorn
    assert ot.bregman.sinkhorn2 is ot.sinkhorn2
    # no ot module keeps POT's original under any name
    for name in plugin.TARGETS:
        assert _all_holders(plugin.pot_function(name)) == []


def test_unregister_restores_pot_exactly(registered):
    wrappers = {name: getattr(ot, name) for name in plugin.TARGETS}
    holders = {name: _all_holders(w) for name, w in wrappers.items()}
    originals = {name: plugin.pot_function(name) for name in plugin.TARGETS}
    assert {"ot.solve", "ot.solvers.solve", "ot.solvers._linear.solve"} <= {
        "%s.%s" % h for h in holders["solve"]}

    pot_sns.unregister()
    pot_sns.unregister()  # idempotent
    assert not plugin.is_registered()
    for name in plugin.TARGETS:
        orig = originals[name]
        # POT's own function, defined in POT's source, with no wrapper left anywhere
        assert not hasattr(orig, "__pot_sns_original__")
        assert orig.__module__.startswith("ot.")
        assert Path(orig.__code__.co_filename).is_relative_to(Path(ot.__file__).parent)
        assert _all_holders(wrappers[name]) == []
        for module_name, attr in holders[name]:
            assert getattr(sys.modules[module_name], attr) is orig
    with pytest.raises(ValueError, match="Unknown method"):
        ot.solve(np.eye(2), reg=1.0, method="sns")
    with pytest.raises(ValueError, match="Unknown method"):
        ot.sinkhorn([.5, .5], [.5, .5], np.eye(2), 1.0, method="sns")

    pot_sns.register()
    pot_sns.register()  # idempotent: same wrapper objects, same places
    for name in plugin.TARGETS:
        assert getattr(ot, name) is wrappers[name]
        assert _all_holders(wrappers[name]) == holders[name]
        assert _all_holders(originals[name]) == []


def test_wrappers_keep_pot_signatures():
    for name in plugin.TARGETS:
        assert inspect.signature(getattr(ot, name)) == \
            inspect.signature(plugin.pot_function(name))
    params = list(inspect.signature(ot.solve).parameters)
    assert params[:9] == ["M", "a", "b", "reg", "c", "reg_type", "unbalanced",
                          "unbalanced_type", "method"]
    # the SNS branch takes the same parameters with the same defaults as POT's solve
    pot = inspect.signature(plugin.pot_function("solve")).parameters
    ours = inspect.signature(plugin.solve_sns).parameters
    assert list(ours) == list(pot)
    for p in pot:
        if p != "method":
            assert ours[p].default == pot[p].default, p


def test_wrapper_passes_arguments_through_unchanged():
    seen = []

    def spy(M, a=None, b=None, reg=None, c=None, reg_type="KL", unbalanced=None,
            unbalanced_type="KL", method=None, n_threads=1, max_iter=None, plan_init=None,
            potentials_init=None, tol=None, verbose=False, grad="autodiff"):
        given = {k: v for k, v in locals().items() if k != "seen"}
        seen.append(1)
        return given

    wrapper = plugin._make_wrapper("solve", spy)
    args = tuple(range(16))[:8] + (None,) + tuple(range(9, 16))
    out = wrapper(*args)  # positional, as ot.solve_sample calls it
    assert tuple(out.values()) == args
    marker = object()
    out = wrapper("M", reg=marker, method="sinkhorn", grad="detach")
    assert out["reg"] is marker and out["method"] == "sinkhorn" and out["grad"] == "detach"
    assert len(seen) == 2


@pytest.mark.parametrize("kwargs", [
    dict(),  # exact OT
    dict(reg=0.05),  # POT's sinkhorn_log
    dict(reg=0.05, reg_type="entropy", method="sinkhorn_log"),
    dict(reg=0.05, unbalanced=1.0),
    dict(reg=0.05, reg_type="L2"),
])
def test_other_methods_behave_exactly_as_pot(kwargs):
    a, b, M = make_problem(12, 9, seed=3)
    got = ot.solve(M, a, b, **kwargs)
    ref = plugin.pot_function("solve")(M, a, b, **kwargs)
    for attr in ("plan", "value", "value_linear"):
        assert np.array_equal(np.asarray(getattr(got, attr)), np.asarray(getattr(ref, attr)))
    G = ot.sinkhorn(a, b, M, 0.05, method="sinkhorn_stabilized")
    assert np.array_equal(G, plugin.pot_function("sinkhorn")(a, b, M, 0.05,
                                                             method="sinkhorn_stabilized"))


def test_unknown_methods_still_rejected_by_pot():
    M = np.eye(3)
    for call in (lambda: ot.solve(M, reg=1.0, method="newton"),
                 lambda: ot.sinkhorn([], [], M, 1.0, method="newton"),
                 lambda: ot.sinkhorn2([], [], M, 1.0, method="newton"),
                 lambda: ot.solve_sample(M, M, reg=1.0, method="newton")):
        with pytest.raises(ValueError, match="(?i)unknown method"):
            call()


# ---------------------------------------------------------------- ot.solve sns

@pytest.mark.parametrize("n, m, seed", [(30, 50, 0), (64, 41, 1), (100, 70, 2)])
@pytest.mark.parametrize("reg_type", ["KL", "entropy"])
def test_solve_sns_matches_pot(n, m, seed, reg_type):
    a, b, M = make_problem(n, m, seed)
    res = ot.solve(M, a, b, reg=REG, reg_type=reg_type, method="sns")
    ref = ot.solve(M, a, b, reg=REG, reg_type=reg_type, tol=1e-12)
    assert isinstance(res, ot.utils.OTResult)
    assert res.status == "converged"
    np.testing.assert_allclose(res.plan, ref.plan, rtol=0, atol=1e-8)
    np.testing.assert_allclose(res.value, ref.value, rtol=0, atol=1e-8)
    np.testing.assert_allclose(res.value_linear, ref.value_linear, rtol=0, atol=1e-8)
    # value_linear and value follow POT's formulas on the returned plan
    assert res.value_linear == pytest.approx(np.sum(M * res.plan), abs=1e-15)
    # potentials: (log_u, log_v), consistent with the plan, equal to POT's up to
    # the constant shift (log_u + t, log_v - t) that leaves the plan unchanged
    log_u, log_v = res.potentials
    np.testing.assert_allclose(np.exp(log_u[:, None] + log_v[None, :] - M / REG), res.plan,
                               rtol=1e-12, atol=1e-300)
    for mine, pots in zip(res.potentials, ref.potentials):
        np.testing.assert_allclose(mine - mine.mean(), pots - pots.mean(), atol=1e-6)
    np.testing.assert_allclose(res.marginal_a, a, atol=1e-9)
    assert {"err", "niter", "n_newton", "status"} <= set(res.log)


@pytest.mark.parametrize("method", ["sns", "SNS", "Sns", "sinkhorn_newton_sparse",
                                    "Sinkhorn_Newton_Sparse"])
def test_method_names_case_insensitive(method):
    a, b, M = make_problem(15, 10, seed=4)
    P = ot.solve(M, a, b, reg=0.1, method=method).plan
    np.testing.assert_allclose(P, ot.solve(M, a, b, reg=0.1, tol=1e-12).plan, atol=1e-8)
    P2 = ot.sinkhorn(a, b, M, 0.1, method=method)
    np.testing.assert_allclose(P2, P, atol=1e-8)


def test_uniform_default_weights():
    _, _, M = make_problem(20, 13, seed=5)
    res = ot.solve(M, reg=0.05, method="sns")
    np.testing.assert_allclose(res.plan, ot.solve(M, reg=0.05, tol=1e-12).plan, atol=1e-8)


@pytest.mark.parametrize("kwargs, exc, pattern", [
    (dict(), ValueError, r"reg > 0"),
    (dict(reg=0), ValueError, r"reg > 0"),
    (dict(reg=0.0), ValueError, r"reg > 0"),
    (dict(reg=0.1, reg_type="L2"), NotImplementedError, r"'KL' or 'entropy'"),
    (dict(reg=0.1, reg_type=(np.sum, np.sign)), NotImplementedError, r"'KL' or 'entropy'"),
    (dict(reg=0.1, c="ones"), NotImplementedError, r"reference measure"),
    (dict(reg=0.1, grad="implicit"), ValueError, r"grad must be one of"),
    (dict(reg=-1.0), ValueError, r"^reg must be"),
    (dict(reg=0.1, max_iter=0), ValueError, r"^max_iter"),
    (dict(reg=0.1, tol=-1.0), ValueError, r"^tol"),
    (dict(reg=0.1, grad="last_step", max_iter=1), ValueError, r"max_iter must be >= 2"),
])
def test_unsupported_combinations_raise(monkeypatch, kwargs, exc, pattern):
    # (unbalanced=... is routed to pot_sns.unbalanced, whose tests check it)
    a, b, M = make_problem(6, 5, seed=6)
    if kwargs.get("c") == "ones":
        kwargs = dict(kwargs, c=np.ones_like(M))

    def never(*args, **kw):
        raise AssertionError("no solver may run for an unsupported combination")

    monkeypatch.setattr(plugin, "sinkhorn_newton_sparse", never)
    with pytest.raises(exc, match=pattern):
        ot.solve(M, a, b, method="sns", **kwargs)


def test_solve_rejects_several_histograms():
    a, b, M = make_problem(6, 5, seed=6)
    with pytest.raises(ValueError, match=r"^b must be a 1-D"):
        ot.solve(M, a, np.stack([b, b], 1), reg=0.1, method="sns")


def test_names_of_solve_arguments_in_messages():
    a, b, M = make_problem(6, 5, seed=6)
    with pytest.raises(ValueError, match=r"^potentials_init log_u must have shape \(6,\)"):
        ot.solve(M, a, b, reg=0.1, method="sns", potentials_init=(np.zeros(4), np.zeros(5)))


def test_defaults_and_budget_passed_to_sns(monkeypatch):
    a, b, M = make_problem(8, 7, seed=7)
    calls = []
    real = plugin.solve_checked

    def spy(p, **kwargs):
        calls.append({"numItermax": p.numItermax, "stopThr": p.stopThr})
        return real(p, **kwargs)

    monkeypatch.setattr(plugin, "solve_checked", spy)
    ot.solve(M, a, b, reg=0.1, method="sns")
    assert calls[-1]["numItermax"] == 1000 and calls[-1]["stopThr"] == 1e-9
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence in 17 iterations is not the point
        ot.solve(M, a, b, reg=0.1, method="sns", max_iter=17, tol=1e-5, verbose=False)
        assert calls[-1]["numItermax"] == 17 and calls[-1]["stopThr"] == 1e-5
        ot.solve(M, a, b, reg=0.1, method="sns", max_iter=17, grad="last_step")
    assert calls[-1]["numItermax"] == 16  # as POT: one step is left for last_step


def test_solve_validates_its_inputs_once(monkeypatch):
    """ot.solve checks the problem (an O(nm) pass over M) once, not again in
    the solver it calls."""
    from pot_sns import validation

    a, b, M = make_problem(8, 7, seed=7)
    seen = []
    real = validation.check_problem
    monkeypatch.setattr(validation, "check_problem",
                        lambda *args, **kw: seen.append(1) or real(*args, **kw))
    res = ot.solve(M, a, b, reg=0.1, method="sns")
    assert len(seen) == 1 and res.status == "converged"


def test_max_iter_and_tol_honoured():
    a, b, M = make_problem(80, 60, seed=8)
    with pytest.warns(UserWarning, match="did not converge"):
        res = ot.solve(M, a, b, reg=0.005, method="sns", max_iter=3)
    assert res.log["niter"] <= 3 and res.status == "max_iter"
    loose = ot.solve(M, a, b, reg=0.005, method="sns", tol=1e-3)
    tight = ot.solve(M, a, b, reg=0.005, method="sns", tol=1e-11)
    assert loose.log["err"][-1] < 1e-3 and tight.log["err"][-1] < 1e-11
    assert loose.log["niter"] < tight.log["niter"]


def test_verbose_prints(capsys):
    a, b, M = make_problem(10, 8, seed=9)
    ot.solve(M, a, b, reg=0.1, method="sns")
    assert capsys.readouterr().out == ""
    ot.solve(M, a, b, reg=0.1, method="sns", verbose=True)
    assert "Err" in capsys.readouterr().out


def test_potentials_init_is_a_warm_start():
    a, b, M = make_problem(60, 45, seed=10)
    cold = ot.solve(M, a, b, reg=0.01, method="sns")
    warm = ot.solve(M, a, b, reg=0.01, method="sns", potentials_init=cold.potentials)
    assert warm.log["n_sinkhorn"] == 0 and warm.log["niter"] < cold.log["niter"]
    np.testing.assert_allclose(warm.plan, cold.plan, atol=1e-9)
    # POT's potentials are in the same convention
    pot = ot.solve(M, a, b, reg=0.01, tol=1e-12)
    again = ot.solve(M, a, b, reg=0.01, method="sns", potentials_init=pot.potentials)
    assert again.log["niter"] <= 3
    np.testing.assert_allclose(again.plan, pot.plan, atol=1e-9)


def test_zero_weights_give_finite_value():
    a, b, M = make_problem(12, 9, seed=11)
    a[0] = 0.0
    b[3] = 0.0
    a, b = a / a.sum(), b / b.sum()
    res = ot.solve(M, a, b, reg=0.1, method="sns")
    with np.errstate(divide="ignore"):  # POT's sinkhorn_log takes log(0)
        ref = ot.solve(M, a, b, reg=0.1, tol=1e-12)
    assert np.isfinite(res.value)
    np.testing.assert_allclose(res.value, ref.value, atol=1e-8)
    np.testing.assert_allclose(res.plan, ref.plan, atol=1e-9)
    assert np.all(res.plan[0] == 0) and np.all(res.plan[:, 3] == 0)


# ---------------------------------------------------------------- gradients (torch)

def _torch_problem(torch, n=9, m=7, seed=12, uniform=False):
    a, b, M = make_problem(n, m, seed, uniform=uniform)
    return [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in (a, b, M)]


def _grads(torch, method, grad, reg_type="KL", reg=0.1, **kw):
    a, b, M = _torch_problem(torch, **kw)
    extra = {} if method else dict(tol=1e-13, max_iter=100000)
    res = ot.solve(M, a, b, reg=reg, reg_type=reg_type, grad=grad, method=method, **extra)
    res.value.backward()
    centre = lambda g: g - g.mean()  # noqa: E731 (weights' gradients: up to a constant)
    return res, M.grad, centre(a.grad), centre(b.grad)


@pytest.mark.parametrize("reg_type", ["KL", "entropy"])
def test_envelope_gradients_match_pot(reg_type):
    torch = torch_or_skip()
    res, gM, ga, gb = _grads(torch, "sns", "envelope", reg_type)
    ref, rM, ra, rb = _grads(torch, None, "envelope", reg_type)
    assert torch.equal(gM, res.plan)  # d value / dM = plan
    torch.testing.assert_close(gM, rM, rtol=0, atol=1e-6)
    torch.testing.assert_close(ga, ra, rtol=0, atol=1e-6)
    torch.testing.assert_close(gb, rb, rtol=0, atol=1e-6)
    assert not res.plan.requires_grad and not res.value_linear.requires_grad


@pytest.mark.parametrize("reg_type", ["KL", "entropy"])
def test_autodiff_gives_exact_gradient_at_optimum(reg_type):
    """POT backpropagates through (converged) Sinkhorn; SNS attaches the exact
    gradient, which differs from POT's envelope formula for KL with
    non-uniform weights."""
    torch = torch_or_skip()
    res, gM, ga, gb = _grads(torch, "sns", "autodiff", reg_type)
    ref, rM, ra, rb = _grads(torch, None, "autodiff", reg_type)
    torch.testing.assert_close(res.value, ref.value.detach(), rtol=0, atol=1e-9)
    torch.testing.assert_close(gM, rM, rtol=0, atol=1e-6)
    torch.testing.assert_close(ga, ra, rtol=0, atol=1e-6)
    torch.testing.assert_close(gb, rb, rtol=0, atol=1e-6)


def _points(torch, n, m, seed, dtype=None, hists=0):
    """Points ``x`` (recording gradients), ``y`` and weights ``a``, ``b``
    (recording gradients), the same draws whatever the dtype."""
    g = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    x = torch.randn(n, 2, generator=g, dtype=f64)
    y = torch.randn(m, 2, generator=g, dtype=f64)
    a = torch.rand(n, generator=g, dtype=f64) + 0.5
    b = torch.rand(*((m, hists) if hists else (m,)), generator=g, dtype=f64) + 0.5
    x, y, a, b = (t.to(dtype or f64) for t in (x, y, a / a.sum(), b / b.sum(0)))
    return x.requires_grad_(True), y, a.requires_grad_(True), b.requires_grad_(True)


def _centre(t):
    # the weights' gradients are defined up to a constant (equal masses)
    return t - t.mean(0)


def _loss_grads(torch, method, n=40, m=30, reg=0.05, seed=14, dtype=None, hists=0):
    """Gradients of ot.sinkhorn2's loss w.r.t. points, a and b (POT's autograd
    through sinkhorn_log run to convergence when method is 'sinkhorn_log')."""
    x, y, a, b = _points(torch, n, m, seed, dtype, hists)
    M = ot.dist(x, y)
    extra = dict(stopThr=1e-14, numItermax=100000) if method != "sns" else dict(stopThr=1e-13)
    loss = ot.sinkhorn2(a, b, M, reg, method=method, **extra)
    loss.sum().backward()
    return loss.detach(), x.grad, _centre(a.grad), _centre(b.grad)


def _exact_loss_grads(torch, n=40, m=30, reg=0.05, seed=14, hists=0):
    """What :func:`_loss_grads` returns, from an exact reference: each
    histogram's optimal plan by Newton on the dense dual and the gradients
    of ``<M, P*>`` by one dense adjoint solve with the full Hessian
    (tests/dense_reference.py, no pot_sns code); d/dx through ``ot.dist`` by
    torch's autograd."""
    x, y, a, b = _points(torch, n, m, seed, hists=hists)
    M = ot.dist(x, y)
    Mn, an = M.detach().numpy(), a.detach().numpy()
    B = b.detach().numpy().reshape(m, -1)
    loss, gM, ga, gb = [], np.zeros_like(Mn), np.zeros(n), np.zeros_like(B)
    for k in range(B.shape[1]):
        P, _, _ = dual_newton(an, B[:, k], Mn, reg)
        dM, da, gb[:, k] = linear_loss_gradients(P, Mn, reg)
        loss.append(np.sum(Mn * P))
        gM, ga = gM + dM, ga + da
    M.backward(torch.from_numpy(gM))
    loss, ga, gb = (torch.from_numpy(np.asarray(t)) for t in (loss, ga, gb))
    return loss.reshape(b.shape[1:]), x.grad, _centre(ga), _centre(gb.reshape(b.shape))


@pytest.mark.parametrize("n, m, reg, hists", [(40, 30, 0.05, 0), (30, 45, 0.01, 0),
                                              (25, 20, 0.1, 3)])
def test_sinkhorn2_loss_gradients_are_exact(registered, n, m, reg, hists):
    """d<M, P*>/d(x, a, b) by implicit differentiation against an exact dense
    reference (an independent derivation and code: dense Newton on the dual,
    a dense adjoint solve, no conjugate gradient)."""
    torch = torch_or_skip()
    got = _loss_grads(torch, "sns", n, m, reg, hists=hists)
    ref = _exact_loss_grads(torch, n, m, reg, hists=hists)
    for g, r in zip(got, ref):
        assert g.shape == r.shape
        torch.testing.assert_close(g, r, rtol=0, atol=1e-8 * max(1.0, float(r.abs().max())))
    assert float(ref[1].abs().max()) > 1e-3  # not a trivially zero gradient


def test_exact_gradient_reference_matches_pot_autograd():
    """The exact reference of the test above agrees with POT's autograd
    through a converged sinkhorn_log (on a problem where that is quick),
    several histograms included: same loss, same conventions for the
    gradients."""
    torch = torch_or_skip()
    exact = _exact_loss_grads(torch, 12, 9, 0.2, hists=2)
    pot = _loss_grads(torch, "sinkhorn_log", 12, 9, 0.2, hists=2)
    for e, p in zip(exact, pot):
        torch.testing.assert_close(e, p, rtol=0, atol=1e-9 * max(1.0, float(p.abs().max())))


def test_sinkhorn2_loss_gradients_float32(registered):
    torch = torch_or_skip()
    got = _loss_grads(torch, "sns", reg=0.1, dtype=torch.float32)
    ref = _loss_grads(torch, "sinkhorn_log", reg=0.1)
    assert all(g.dtype == torch.float32 for g in got)
    for g, r in zip(got, ref):
        torch.testing.assert_close(g.double(), r, rtol=0, atol=1e-3 * float(r.abs().max()))


def test_autodiff_value_linear_gradient_matches_pot():
    torch = torch_or_skip()
    out = {}
    for method in ("sns", None):
        a, b, M = _torch_problem(torch, n=15, m=12, seed=16)
        extra = {} if method else dict(tol=1e-14, max_iter=100000)
        res = ot.solve(M, a, b, reg=0.05, method=method, grad="autodiff", **extra)
        res.value_linear.backward()
        out[method] = (M.grad, a.grad - a.grad.mean(), b.grad - b.grad.mean())
    for g, r in zip(out["sns"], out[None]):
        torch.testing.assert_close(g, r, rtol=0, atol=1e-8)


def test_loss_without_gradients_has_no_graph(registered):
    torch = torch_or_skip()
    a, b, M = (x.detach() for x in _torch_problem(torch))
    loss = ot.sinkhorn2(a, b, M, 0.1, method="sns")
    assert not loss.requires_grad and loss.grad_fn is None


def test_autodiff_gradient_finite_with_zero_weights():
    torch = torch_or_skip()
    a, b, M = make_problem(9, 7, seed=13)
    a[2] = 0.0
    a /= a.sum()
    a, b, M = [torch.tensor(x, requires_grad=True) for x in (a, b, M)]
    res = ot.solve(M, a, b, reg=0.1, method="sns", grad="autodiff")
    res.value.backward()
    assert torch.isfinite(a.grad).all() and torch.isfinite(b.grad).all()
    a2, b2, M2 = [x.detach().clone().requires_grad_(True) for x in (a, b, M)]
    with pytest.warns(UserWarning, match="not finite"):
        ot.solve(M2, a2, b2, reg=0.1, method="sns", grad="envelope").value.backward()


def test_detach_and_last_step_as_pot():
    torch = torch_or_skip()
    a, b, M = _torch_problem(torch)
    res = ot.solve(M, a, b, reg=0.5, method="sns", grad="detach")
    assert not res.value.requires_grad
    with pytest.raises(RuntimeError):
        res.value.backward()

    outs = {}
    for method in ("sns", None):
        a, b, M = _torch_problem(torch)
        res = ot.solve(M, a, b, reg=0.5, method=method, grad="last_step")
        assert res.plan.requires_grad and res.value_linear.requires_grad
        res.value.backward()
        outs[method] = (res.plan.detach(), M.grad, a.grad, b.grad)
    for mine, pots in zip(outs["sns"], outs[None]):
        torch.testing.assert_close(mine, pots, rtol=0, atol=1e-6)


def test_sinkhorn2_sns_loss_records_gradients():
    torch = torch_or_skip()
    a, b, M = _torch_problem(torch)
    loss = ot.sinkhorn2(a, b, M, 0.1, method="sns")
    assert loss.requires_grad  # its gradients: test_sinkhorn2_loss_gradients_are_exact
    ref = ot.sinkhorn2(a, b, M, 0.1, method="sinkhorn_log", stopThr=1e-12, numItermax=10**5)
    torch.testing.assert_close(loss, ref.detach(), rtol=0, atol=1e-9)


# ---------------------------------------------------------------- solve_sample

def _clouds(seed=14, n=25, m=18):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 2)), rng.normal(size=(m, 2)) + 0.3


@pytest.mark.parametrize("metric", ["sqeuclidean", "euclidean"])
def test_solve_sample_sns(metric):
    X, Y = _clouds()
    res = ot.solve_sample(X, Y, metric=metric, reg=0.05, method="sns")
    M = ot.dist(X, Y, metric=metric)
    ref = ot.solve(M, reg=0.05, tol=1e-12, max_iter=10**5)
    np.testing.assert_allclose(res.plan, ref.plan, atol=1e-8)
    np.testing.assert_allclose(res.value, ref.value, atol=1e-8)
    assert res.status == "converged"


def test_solve_sample_sns_debias_matches_pot():
    X, Y = _clouds(15)
    res = ot.solve_sample(X, Y, reg=0.5, method="sns", debias=True)
    ref = ot.solve_sample(X, Y, reg=0.5, debias=True, tol=1e-12, max_iter=10**5)
    assert res.log["res_ab"].log["n_newton"] >= 0  # the inner solves were SNS's
    np.testing.assert_allclose(res.value, ref.value, atol=1e-8)


def test_solve_sample_sns_refuses_lazy_and_exact():
    X, Y = _clouds(16)
    with pytest.raises(NotImplementedError, match="lazy"):
        ot.solve_sample(X, Y, reg=0.1, method="sns", lazy=True)
    with pytest.raises(ValueError, match="reg > 0"):
        ot.solve_sample(X, Y, method="sns")


def test_solve_sample_without_method_unchanged():
    X, Y = _clouds(17)
    got = ot.solve_sample(X, Y, reg=0.1)
    ref = plugin.pot_function("solve_sample")(X, Y, reg=0.1)
    assert np.array_equal(got.plan, ref.plan) and got.log is None  # POT's sinkhorn_log


# ---------------------------------------------------------------- ot.sinkhorn(2)

def test_sinkhorn_family_dispatch():
    a, b, M = make_problem(40, 30, seed=18)
    ref = ot.sinkhorn(a, b, M, REG, method="sinkhorn_log", stopThr=1e-12, numItermax=10**5)
    direct = pot_sns.sinkhorn_newton_sparse(a, b, M, REG)
    for fn in (ot.sinkhorn, ot.bregman.sinkhorn):
        P = fn(a, b, M, REG, method="sinkhorn_newton_sparse")
        np.testing.assert_array_equal(P, direct)
        np.testing.assert_allclose(P, ref, atol=1e-8)
    ref2 = ot.sinkhorn2(a, b, M, REG, method="sinkhorn_log", stopThr=1e-12, numItermax=10**5)
    for fn in (ot.sinkhorn2, ot.bregman.sinkhorn2):
        loss = fn(a, b, M, REG, method="sns")
        np.testing.assert_allclose(loss, ref2, atol=1e-9)
    # log, several histograms, SNS options, as pot_sns.sinkhorn_newton_sparse
    P, log = ot.sinkhorn(a, b, M, REG, method="sns", log=True, n_sinkhorn=5)
    assert log["status"] == "converged" and log["n_sinkhorn"] >= 5
    B = np.stack([b, b[::-1]], 1)
    losses = ot.sinkhorn2(a, B, M, REG, method="SNS")
    np.testing.assert_allclose(losses[0], ref2, atol=1e-9)
    with pytest.raises(TypeError, match="not_an_option"):
        ot.sinkhorn(a, b, M, REG, method="sns", not_an_option=1)


def test_sinkhorn_warn_defaults_as_pot():
    a, b, M = make_problem(20, 15, seed=19)
    with pytest.warns(UserWarning, match="did not converge"):
        ot.sinkhorn(a, b, M, 0.01, method="sns", numItermax=1, stopThr=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ot.sinkhorn2(a, b, M, 0.01, method="sns", numItermax=1, stopThr=0)


def test_modules_importing_sinkhorn_reach_sns():
    X, Y = _clouds(20, 20, 15)
    G = ot.bregman.empirical_sinkhorn(X, Y, 0.5, method="sns")
    ref = ot.bregman.empirical_sinkhorn(X, Y, 0.5, method="sinkhorn_log", stopThr=1e-12)
    np.testing.assert_allclose(G, ref, atol=1e-8)


# ---------------------------------------------------------------- pot_sns.testing

class _NoGPU:
    """Stands for cupy installed without a usable GPU."""

    __name__ = "cupy"
    __type__ = float

    def __init__(self):
        raise RuntimeError("CUDA driver version is insufficient for CUDA runtime version")


class _BrokenProbe(ot.backend.NumpyBackend):
    __name__ = "broken"

    def sum(self, *args, **kwargs):
        raise RuntimeError("no kernel image is available for execution on the device")


def test_usable_backends_skips_unusable(monkeypatch):
    impls = list(ot.backend.get_available_backend_implementations())
    monkeypatch.setattr(ot.backend, "_BACKEND_IMPLEMENTATIONS", impls + [_NoGPU, _BrokenProbe])
    monkeypatch.setattr(ot.backend, "_BACKENDS", dict(ot.backend._BACKENDS))
    found = {name: (nx, reason) for name, nx, reason in testing.usable_backends.__wrapped__()}
    assert found["numpy"][0] is not None and found["numpy"][0].__name__ == "numpy"
    assert found["cupy"][0] is None and "CUDA driver" in found["cupy"][1]
    assert found["broken"][0] is None and "no kernel image" in found["broken"][1]


def test_skip_arg_and_skip_backend():
    calls = []

    @testing.skip_backend("numpy")
    def test_a(nx):
        calls.append(nx)

    @testing.skip_arg(("nx", "method"), ("numpy", "greenkhorn"), getter=str)
    def test_b(nx, method):
        calls.append(method)

    np_nx = ot.backend.NumpyBackend()
    with pytest.raises(pytest.skip.Exception):
        test_a(nx=np_nx)
    with pytest.raises(pytest.skip.Exception):
        test_b(nx=np_nx, method="greenkhorn")
    test_b(nx=np_nx, method="sinkhorn")
    assert calls == ["sinkhorn"]
    with pytest.raises(ValueError, match="one value"):
        testing.skip_arg(("nx", "method"), ("numpy", "x", "y"))


def test_nx_fixture_in_a_pytest_run(tmp_path):
    """Run pytest on a small file whose conftest loads the plugin the
    documented way, after a fake cupy without GPU registered with POT."""
    (tmp_path / "fakecupy.py").write_text(
        "import ot\n"
        "class NoGPU:\n"
        "    __name__ = 'cupy'\n"
        "    __type__ = float\n"
        "    def __init__(self):\n"
        "        raise RuntimeError('no CUDA-capable device is detected')\n"
        "ot.backend._register_backend_implementation(NoGPU)\n")
    (tmp_path / "test_nx.py").write_text(
        "import numpy as np, pytest\n"
        "def test_roundtrip(nx):\n"
        "    x = nx.from_numpy(np.arange(4.0))\n"
        "    assert nx.to_numpy(nx.sum(x)) == 6.0\n"
        "@pytest.skip_backend('numpy')\n"
        "def test_skipped_for_numpy(nx):\n"
        "    assert str(nx) != 'numpy'\n")
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["fakecupy", "pot_sns.testing"]\n')
    (tmp_path / "pytest.ini").write_text("[pytest]\n")
    # the child imports POT afresh: without JAX and TensorFlow (seconds of
    # imports, half of this test) it checks the same mechanics on the others
    env = dict(os.environ, PYTHONPATH=str(tmp_path), POT_BACKEND_DISABLE_JAX="1",
               POT_BACKEND_DISABLE_TENSORFLOW="1")
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-rs", "-p", "no:cacheprovider", str(tmp_path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert re.search(r"test_roundtrip\[cupy\].*no CUDA-capable device|not usable here", text)
    names = [b[0] for b in testing.usable_backends()
             if b[1] is not None and b[0] not in ("jax", "tf")]
    # test_roundtrip on each usable backend, test_skipped_for_numpy on all but numpy;
    # both skipped for the fake cupy
    assert "%d passed, 3 skipped" % (2 * len(names) - 1) in text


# ---------------------------------------------------------------- parity suite

def _parity_conftest():
    path = ROOT / "tests" / "parity" / "pot_conftest.py"
    spec = importlib.util.spec_from_file_location("pot_sns_parity_conftest", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_parity_docs_list_every_selected_and_excluded_test():
    conf = _parity_conftest()
    doc = (ROOT / "docs" / "parity.rst").read_text()
    for _, name in list(conf.SELECTED) + list(conf.EXCLUDED):
        assert "``%s``" % name in doc, name
    assert not set(conf.SELECTED) & set(conf.EXCLUDED)
    assert conf.DELEGATION <= set(conf.SELECTED)


def test_parity_runner_extracts_only_its_test_files(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "pot_sns_parity_runner", ROOT / "tests" / "parity" / "run_pot_tests.py")
    runner = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runner)
    sdist = tmp_path / "pot-9.9.9.tar.gz"
    with tarfile.open(sdist, "w:gz") as tar:
        for name, text in (("pot-9.9.9/test/test_bregman.py", b"B"),
                           ("pot-9.9.9/test/test_solvers.py", b"S"),
                           ("pot-9.9.9/test/test_da.py", b"D"),
                           ("pot-9.9.9/test/test_other.py", b"O"),
                           ("pot-9.9.9/ot/__init__.py", b"X")):
            info = tarfile.TarInfo(name)
            info.size = len(text)
            tar.addfile(info, io.BytesIO(text))
    assert runner.find_sdist(tmp_path, "9.9.9") == sdist
    assert runner.find_sdist(tmp_path, "1.0") is None
    dest = tmp_path / "out"
    dest.mkdir()
    files = runner.extract_tests(sdist, dest)
    assert [f.name for f in files] == ["test_bregman.py", "test_solvers.py", "test_da.py"]
    assert sorted(p.name for p in dest.iterdir()) == ["test_bregman.py", "test_da.py",
                                                      "test_solvers.py"]
    assert (dest / "test_solvers.py").read_bytes() == b"S"
