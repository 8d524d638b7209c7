"""pot_sns.solve_batch, ot.batch.solve_batch(method="sns") and the batch
benchmark module.

Oracles: POT's own ot.batch.solve_batch (log-Sinkhorn) run to a tight
tolerance at moderate reg, where it converges; the loop of ot.solve; POT's
batch formulas and gradients."""

import json
import warnings

import numpy as np
import ot
import ot.batch
import pytest

import pot_sns
from pot_sns.batch import hooks

from test_pairwise import digits_like, grid_cost


def torch_or_skip():
    torch = pytest.importorskip("torch", reason="torch is not installed")
    if not ot.backend.torch:
        pytest.skip("POT's torch backend is disabled (POT_BACKEND_DISABLE_PYTORCH)")
    return torch


def batch_problem(B=3, n=6, m=7, seed=0, zeros=False):
    rng = np.random.default_rng(seed)
    x, y = rng.normal(size=(B, n, 2)), rng.normal(size=(B, m, 2)) + 0.5
    M = ot.batch.dist_batch(x, y)
    M /= M.max()
    a, b = rng.random((B, n)) + 0.1, rng.random((B, m)) + 0.1
    if zeros:
        a[:, 1] = 0
        b[0, 2] = 0
    return M, a / a.sum(1, keepdims=True), b / b.sum(1, keepdims=True)


def pot_batch(M, reg, a, b, **kw):
    """POT's batch solver, converged."""
    return hooks.pot_solve_batch()(M, reg, a, b, method="log_sinkhorn", max_iter=20000,
                                   tol=1e-13, **kw)


@pytest.mark.parametrize("reg", [1e-1, 3e-2])
@pytest.mark.parametrize("reg_type", ["entropy", "kl"])
def test_matches_pot_batch_solver(reg, reg_type):
    M, a, b = batch_problem()
    res = pot_sns.solve_batch(M, reg, a, b, tol=1e-11, reg_type=reg_type)
    ref = pot_batch(M, reg, a, b, reg_type=reg_type)
    assert type(res) is type(ref)
    assert res.plan.shape == (3, 6, 7) and res.value.shape == (3,)
    np.testing.assert_allclose(res.plan, ref.plan, rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(res.value_linear, ref.value_linear, rtol=1e-8)
    np.testing.assert_allclose(res.value, ref.value, rtol=1e-8)
    for ours, theirs in zip(res.potentials, ref.potentials):  # defined up to a constant
        np.testing.assert_allclose(ours - ours.mean(1, keepdims=True),
                                   theirs - theirs.mean(1, keepdims=True), atol=1e-6)
    assert res.status == "converged" and len(res.log["niter"]) == 3


def test_equals_the_loop_of_ot_solve():
    M = grid_cost(6)
    A = digits_like(4, side=6, seed=2)
    Ms = np.stack([M] * 3)
    res = pot_sns.solve_batch(Ms, 1e-2, A[:3], A[1:], tol=1e-9, reg_type="KL")
    for k in range(3):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            one = ot.solve(M, A[k], A[k + 1], reg=1e-2, method="sns")
        np.testing.assert_array_equal(res.plan[k], one.plan)  # the same solver path
        assert res.value_linear[k] == pytest.approx(float(one.value_linear), rel=1e-12)
        # zero weights: no NaN in the KL term; ot.solve's value, to rounding
        assert res.value[k] == pytest.approx(float(one.value), rel=1e-10)


def test_route_from_ot_batch_and_unregister():
    M, a, b = batch_problem()
    for method in ("sns", "SNS", "Sinkhorn_Newton_Sparse"):
        res = ot.batch.solve_batch(M, 0.1, a, b, method=method, tol=1e-11)
        assert "status" in res.log  # SNS's log, not POT's {"n_iter"}
    ref = pot_sns.solve_batch(M, 0.1, a, b, tol=1e-11)
    np.testing.assert_array_equal(res.plan, ref.plan)
    # solve_sample_batch calls the module global: it gains method="sns" too
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(2, 5, 2)), rng.normal(size=(2, 6, 2))
    res = ot.batch.solve_sample_batch(X, Y, 0.5, method="sns", tol=1e-11)
    assert "status" in res.log
    np.testing.assert_allclose(res.value, pot_batch(ot.batch.dist_batch(X, Y), 0.5, None,
                                                    None).value, rtol=1e-8)
    # other methods are POT's code
    plain = ot.batch.solve_batch(M, 0.1, a, b, method="log_sinkhorn")
    assert set(plain.log) == {"n_iter"}
    try:
        pot_sns.unregister()
        assert ot.batch.solve_batch is hooks.pot_solve_batch()
        assert ot.batch._linear.solve_batch is hooks.pot_solve_batch()
        with pytest.raises(ValueError, match="Unknown method"):
            ot.batch.solve_batch(M, 0.1, a, b, method="sns")
    finally:
        pot_sns.register()
    assert ot.batch.solve_batch.__pot_sns_original__ is hooks.pot_solve_batch()
    assert ot.batch._linear.solve_batch is ot.batch.solve_batch


def test_lists_uniform_and_shared_weights():
    M, a, b = batch_problem(B=2)
    res = pot_sns.solve_batch(M.tolist(), 0.1, tol=1e-11)
    assert isinstance(res.plan, np.ndarray)
    np.testing.assert_allclose(res.plan, pot_batch(M, 0.1, None, None).plan, rtol=1e-7,
                               atol=1e-12)
    shared = pot_sns.solve_batch(M, 0.1, a[0], b[0], tol=1e-11)
    full = pot_sns.solve_batch(M, 0.1, np.stack([a[0]] * 2), np.stack([b[0]] * 2), tol=1e-11)
    np.testing.assert_array_equal(shared.plan, full.plan)


def test_zero_weights_give_finite_values():
    M, a, b = batch_problem(zeros=True)
    for reg_type in ("kl", "entropy"):
        res = pot_sns.solve_batch(M, 0.05, a, b, tol=1e-11, reg_type=reg_type)
        assert np.isfinite(res.value).all() and np.isfinite(res.plan).all()
        assert (res.plan[:, 1, :] == 0).all() and (res.plan[0, :, 2] == 0).all()
        np.testing.assert_allclose(res.plan.sum(2), a, atol=1e-10)


def test_torch_in_torch_out_float32_and_float64():
    torch = torch_or_skip()
    M, a, b = batch_problem()
    for dtype, rtol in ((torch.float64, 1e-8), (torch.float32, 1e-4)):
        Mt, at, bt = (torch.tensor(x, dtype=dtype) for x in (M, a, b))
        res = pot_sns.solve_batch(Mt, 0.1, at, bt, tol=1e-11 if dtype == torch.float64 else 1e-6)
        assert isinstance(res.plan, torch.Tensor) and res.plan.dtype == dtype
        assert res.value.dtype == dtype and res.potentials[0].shape == (3, 6)
        np.testing.assert_allclose(res.value.numpy(), pot_batch(M, 0.1, a, b).value, rtol=rtol)


def _torch_inputs(torch, M, a, b):
    return [torch.tensor(x, requires_grad=True) for x in (M, a, b)]


@pytest.mark.parametrize("reg_type", ["entropy", "kl"])
def test_envelope_and_detach_gradients_as_pot(reg_type):
    torch = torch_or_skip()
    M, a, b = batch_problem()
    ours, theirs = _torch_inputs(torch, M, a, b), _torch_inputs(torch, M, a, b)
    res = pot_sns.solve_batch(*ours[:1], 0.1, *ours[1:], tol=1e-11, reg_type=reg_type)
    ref = pot_batch(theirs[0], 0.1, theirs[1], theirs[2], reg_type=reg_type, grad="envelope")
    (res.value.sum() + res.value_linear.sum()).backward()
    (ref.value.sum() + ref.value_linear.sum()).backward()
    for x, y in zip(ours, theirs):
        if y.grad is None:
            assert x.grad is None
        else:
            np.testing.assert_allclose(x.grad.numpy(), y.grad.numpy(), rtol=1e-6, atol=1e-9)
    assert not res.plan.requires_grad
    det = pot_sns.solve_batch(ours[0], 0.1, ours[1], ours[2], grad="detach")
    assert not (det.value.requires_grad or det.value_linear.requires_grad)


def test_autodiff_gradients_are_the_limit_of_pot_autodiff():
    torch = torch_or_skip()
    M, a, b = batch_problem(B=2, n=5, m=4)
    ours, theirs = _torch_inputs(torch, M, a, b), _torch_inputs(torch, M, a, b)
    res = pot_sns.solve_batch(ours[0], 0.2, ours[1], ours[2], tol=1e-12, grad="autodiff",
                              reg_type="kl")
    ref = hooks.pot_solve_batch()(theirs[0], 0.2, theirs[1], theirs[2], method="log_sinkhorn",
                                  max_iter=3000, tol=1e-14, grad="autodiff", reg_type="kl")
    np.testing.assert_allclose(res.value.detach().numpy(), ref.value.detach().numpy(),
                               rtol=1e-9)
    for pick in ("value", "value_linear"):
        for x in ours + theirs:
            x.grad = None
        getattr(res, pick).sum().backward()
        getattr(ref, pick).sum().backward(retain_graph=True)
        for x, y in zip(ours, theirs):
            gx, gy = x.grad.numpy(), y.grad.numpy()
            if x.dim() < 3:  # weights: defined up to a constant per problem
                gx, gy = gx - gx.mean(-1, keepdims=True), gy - gy.mean(-1, keepdims=True)
            np.testing.assert_allclose(gx, gy, atol=1e-6)


def test_last_step_is_differentiable_as_pot():
    torch = torch_or_skip()
    M, a, b = batch_problem()
    ours, theirs = _torch_inputs(torch, M, a, b), _torch_inputs(torch, M, a, b)
    res = pot_sns.solve_batch(ours[0], 0.1, ours[1], ours[2], tol=1e-11, grad="last_step")
    ref = pot_batch(theirs[0], 0.1, theirs[1], theirs[2], grad="last_step")
    assert res.plan.requires_grad
    np.testing.assert_allclose(res.plan.detach().numpy(), ref.plan.detach().numpy(),
                               rtol=1e-7, atol=1e-12)
    res.value.sum().backward()
    ref.value.sum().backward()
    np.testing.assert_allclose(ours[0].grad.numpy(), theirs[0].grad.numpy(), atol=1e-7)


def test_one_warning_names_the_problems_that_did_not_converge():
    M, a, b = batch_problem()
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        res = pot_sns.solve_batch(M, 1e-3, a, b, max_iter=2, tol=1e-12)
    ours = [x for x in w if "did not converge" in str(x.message)]
    assert len(ours) == 1 and "problems 0 [" in str(ours[0].message)
    assert ours[0].filename == __file__
    assert res.status == "not_converged" and np.isfinite(res.value).all()


@pytest.mark.parametrize("change, error, pattern", [
    (dict(M=np.ones((6, 7))), ValueError, r"M must be a non-empty 3-D array"),
    (dict(M=np.ones((0, 6, 7))), ValueError, r"M must be a non-empty 3-D array"),
    (dict(a=np.ones((3, 5)) / 5), ValueError, r"a must have shape \(3, 6\)"),
    (dict(b=np.ones((2, 7)) / 7), ValueError, r"b must have shape \(3, 7\)"),
    (dict(a="uniform"), TypeError, r"a must be"),
    (dict(reg=None), ValueError, r"reg must be a number > 0"),
    (dict(reg=0), ValueError, r"reg must be a number > 0"),
    (dict(reg=-1.0), ValueError, r"reg must be"),
    (dict(grad="backprop"), ValueError, r"grad must be one of"),
    (dict(reg_type="L2"), ValueError, r"reg_type must be"),
    (dict(method="log_sinkhorn"), ValueError, r"method must be one of 'sns'"),
    (dict(max_iter=0), ValueError, r"max_iter must be"),
    (dict(tol=-1), ValueError, r"tol must be"),
    (dict(grad="last_step", max_iter=1), ValueError, r"max_iter must be >= 2"),
    (dict(not_an_option=3), TypeError, r"not_an_option"),
])
def test_bad_input(change, error, pattern):
    M, a, b = batch_problem()
    args = dict(M=M, reg=0.1, a=a, b=b)
    args.update(change)
    with pytest.raises(error, match=pattern):
        pot_sns.solve_batch(**args)


def test_bad_weights_name_the_problem():
    M, a, b = batch_problem()
    bad = a.copy()
    bad[2, 0] = -0.1
    with pytest.raises(ValueError, match=r"a\[2\] must hold non-negative"):
        pot_sns.solve_batch(M, 0.1, bad, b)
    bad = b.copy()
    bad[1] *= 2
    with pytest.raises(ValueError, match=r"b\[1\] must have the mass of a\[1\]"):
        pot_sns.solve_batch(M, 0.1, a, bad)
    bad = b.copy()
    bad[0, 3] = np.nan
    with pytest.raises(ValueError, match=r"b\[0\] must hold finite"):
        ot.batch.solve_batch(M, 0.1, a, bad, method="sns")
    Mbad = M.copy()
    Mbad[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match=r"M must hold finite costs"):
        pot_sns.solve_batch(Mbad, 0.1, a, b)


# ---------------------------------------------------------------- the batch benchmark

def _bench(tmp_path, *extra):
    pytest.importorskip("sklearn", reason="the batch benchmark uses scikit-learn's digits")
    from pot_sns.bench import batch as bench

    out = tmp_path / "batch.json"
    argv = ["--pairs", "4", "--grid", "8", "--reg", "0.05", "--budget", "5",
            "--json", str(out)] + list(extra)
    assert bench.main(argv) == 0
    return json.loads(out.read_text())


def test_bench_batch_in_process_and_pot_baselines(tmp_path):
    pytest.importorskip("matplotlib", reason="matplotlib is not installed")
    png = tmp_path / "batch.png"
    report = _bench(tmp_path, "--workers", "0", "--solvers", "pot_sns,pot_solve,pot_batch,ott",
                    "--plot", str(png))
    assert report["machine"]["cpu_count"] >= 1
    by = {e["solver"]: e for e in report["results"]}
    ours = by["pot_sns"]
    assert ours["problems"] == 4 and ours["converged"] == 4 and ours["throughput"] > 0
    # the baselines solve the same problems: their <M, P> agree with pot_sns's
    loop = by["ot.solve loop"]
    assert loop["problems"] >= 1 and loop["converged"] == loop["problems"]
    assert loop["max_rel_diff"] < 1e-6
    assert by["ot.batch.solve_batch"]["problems"] == 4
    ott_entry = by["ott-jax vmap"]
    if "skipped" in ott_entry:
        assert "not installed" in ott_entry["skipped"]
    else:
        assert ott_entry["max_rel_diff"] < 1e-5
    assert png.stat().st_size > 1000


def test_bench_batch_on_a_local_cluster(tmp_path):
    pytest.importorskip("distributed", reason="dask.distributed is not installed")
    report = _bench(tmp_path, "--workers", "1", "--solvers", "pot_sns,dask")
    by = {e["solver"]: e for e in report["results"]}
    entry = by["dask (1 worker)"]
    assert entry["workers"] == 1 and entry["problems"] == 4 and entry["converged"] == 4
    assert entry["max_rel_diff"] < 1e-12  # the same numbers as in this process


def test_bench_batch_refuses_bad_options():
    from pot_sns.bench import batch as bench

    for argv in (["--solvers", "pot_sns,sinkhorn_gpu"], ["--workers", "two"],
                 ["--pairs", "0"]):
        with pytest.raises(SystemExit):
            bench.main(argv)
