"""Bad input is rejected at the boundary with a clear, named error, before any heavy work."""

import warnings

import numpy as np
import ot
import pytest

import pot_sns
import pot_sns.api
from pot_sns import validation
from pot_sns.validation import check_problem
from problems import make_problem

A = np.full(3, 1 / 3)
B = np.full(4, 1 / 4)
M = np.arange(12, dtype=float).reshape(3, 4) / 11.0


def _nan_at(x, idx):
    x = np.array(x, dtype=float)
    x[idx] = np.nan
    return x


def _set(x, idx, value):
    x = np.array(x, dtype=float)
    x[idx] = value
    return x


# (id, kwargs of the call, exception type, regex that the message must match)
BAD = [
    # M not 2-D, empty, not numbers
    ("M-1d", dict(M=np.ones(3)), ValueError, r"^M must be a 2-D cost matrix.*\(3,\)"),
    ("M-3d", dict(M=np.ones((3, 4, 1))), ValueError, r"^M must be a 2-D.*\(3, 4, 1\)"),
    ("M-0d", dict(M=np.array(1.0)), ValueError, r"^M must be a 2-D"),
    ("M-scalar", dict(M=1.0), TypeError, r"^M must be a 2-D cost matrix, got float"),
    ("M-None", dict(M=None), TypeError, r"^M must be an array, got None"),
    ("M-empty", dict(a=[], b=[], M=np.zeros((0, 4))), ValueError, r"^M must not be empty"),
    ("M-complex", dict(M=M + 0j), TypeError, r"^M must hold real numbers.*complex"),
    ("M-strings", dict(M=[["x"] * 4] * 3), TypeError, r"^M must hold real numbers.*string"),
    ("M-ragged", dict(M=[[0.0, 1.0], [1.0]]), ValueError, r"^M must be a rectangular"),
    ("M-sparse", dict(M="sparse"), TypeError, r"^M must be a dense array.*toarray"),
    ("M-dict", dict(M={"M": 1}), TypeError, r"^M must be a 2-D cost matrix, got dict"),
    # shapes that disagree
    ("a-len", dict(a=np.full(2, 0.5)), ValueError, r"^a must have shape \(3,\).*got shape \(2,\)"),
    ("a-2d", dict(a=A[:, None]), ValueError, r"^a must have shape \(3,\).*\(3, 1\)"),
    ("a-scalar", dict(a=1.0), TypeError, r"^a must be an array of weights, got float"),
    ("b-len", dict(b=np.full(5, 0.2)), ValueError, r"^b must have shape \(4,\) or \(4, n_hists\)"),
    ("b-3d", dict(b=B[:, None, None]), ValueError, r"^b must have shape \(4,\) or"),
    ("b-transposed", dict(b=np.full((2, 4), 0.25)), ValueError, r"^b must have shape.*\(2, 4\)"),
    ("b-no-hists", dict(b=np.zeros((4, 0))), ValueError, r"^b must hold at least one histogram"),
    ("M-transposed", dict(M=M.T), ValueError, r"^a must have shape \(4,\) to match M"),
    # weights: negative, NaN, inf, no mass, not numbers
    ("a-negative", dict(a=[0.5, 0.6, -0.1]), ValueError, r"^a must hold non-negative.*-0\.1"),
    ("b-negative", dict(b=[0.5, 0.5, 0.5, -0.5]), ValueError, r"^b must hold non-negative"),
    ("a-nan", dict(a=_nan_at(A, 1)), ValueError, r"^a must hold finite weights, found NaN"),
    ("b-nan", dict(b=_nan_at(B, 0)), ValueError, r"^b must hold finite weights, found NaN"),
    ("a-inf", dict(a=_set(A, 0, np.inf)), ValueError, r"^a must hold finite weights.*infinite"),
    ("b-inf", dict(b=_set(B, 2, np.inf)), ValueError, r"^b must hold finite weights.*infinite"),
    ("b-neginf", dict(b=_set(B, 2, -np.inf)), ValueError, r"^b must hold finite weights"),
    ("a-zero-mass", dict(a=np.zeros(3)), ValueError, r"^a must have positive total mass"),
    ("b-zero-mass-hist", dict(b=np.c_[B, np.zeros(4)]), ValueError, r"^b must have positive"),
    ("a-object", dict(a=np.array([None, 1, 2], dtype=object)), TypeError,
     r"^a must hold real numbers"),
    ("a-complex", dict(a=A + 0j), TypeError, r"^a must hold real numbers"),
    # costs: NaN, inf
    ("M-nan", dict(M=_nan_at(M, (1, 2))), ValueError, r"^M must hold finite costs, found NaN"),
    ("M-inf", dict(M=_set(M, (0, 0), np.inf)), ValueError, r"^M must hold finite costs.*infinite"),
    ("M-neginf", dict(M=_set(M, (2, 3), -np.inf)), ValueError, r"^M must hold finite.*infinite"),
    ("M-all-inf", dict(M=np.full((3, 4), np.inf)), ValueError, r"^M must hold finite costs"),
    # reg
    ("reg-0", dict(reg=0), ValueError, r"^reg must be a finite number > 0, got 0"),
    ("reg-neg", dict(reg=-1e-2), ValueError, r"^reg must be a finite number > 0"),
    ("reg-nan", dict(reg=float("nan")), ValueError, r"^reg must be a finite number > 0.*nan"),
    ("reg-inf", dict(reg=np.inf), ValueError, r"^reg must be a finite number > 0.*inf"),
    ("reg-None", dict(reg=None), TypeError, r"^reg must be a positive number.*None"),
    ("reg-str", dict(reg="0.1"), TypeError, r"^reg must be a positive number.*'0\.1'"),
    ("reg-bool", dict(reg=True), TypeError, r"^reg must be a positive number"),
    ("reg-array", dict(reg=np.array([0.1, 0.2])), TypeError, r"^reg must be a positive.*\(2,\)"),
    ("reg-complex", dict(reg=1 + 1j), TypeError, r"^reg must be a positive number"),
    # different total mass
    ("mass", dict(b=2 * B), ValueError, r"^a and b must have the same total mass.*sum\(b\)"),
    ("mass-1e-3", dict(b=B * (1 + 1e-3)), ValueError, r"same total mass.*relative difference"),
    ("mass-hist", dict(b=np.c_[B, 1.5 * B]), ValueError, r"same total mass"),
    # iteration arguments
    ("numItermax-0", dict(numItermax=0), ValueError, r"^numItermax must be an integer >= 1"),
    ("numItermax-neg", dict(numItermax=-5), ValueError, r"^numItermax must be an integer >= 1"),
    ("numItermax-float", dict(numItermax=1e3), TypeError, r"^numItermax must be an integer.*int"),
    ("numItermax-None", dict(numItermax=None), TypeError, r"^numItermax must be an integer"),
    ("numItermax-bool", dict(numItermax=True), TypeError, r"^numItermax must be an integer"),
    ("stopThr-neg", dict(stopThr=-1e-9), ValueError, r"^stopThr must be a finite number >= 0"),
    ("stopThr-nan", dict(stopThr=float("nan")), ValueError, r"^stopThr must be a finite"),
    ("stopThr-inf", dict(stopThr=float("inf")), ValueError, r"^stopThr must be a finite"),
    ("stopThr-str", dict(stopThr="1e-9"), TypeError, r"^stopThr must be a number >= 0"),
    ("stopThr-None", dict(stopThr=None), TypeError, r"^stopThr must be a number >= 0"),
    # SNS options
    ("option-unknown", dict(tolerance=1e-3), TypeError,
     r"unknown option.*'tolerance'.*n_sinkhorn"),
    ("option-typo", dict(cg_max_iter=5), TypeError, r"unknown option.*'cg_max_iter'"),
    ("option-range", dict(cg_maxiter=0), ValueError, r"SNS option 'cg_maxiter' must be"),
    ("option-type", dict(ls_maxiter=2.5), ValueError, r"SNS option 'ls_maxiter' must be"),
    ("option-choice", dict(sparsity="dense"), ValueError, r"SNS option 'sparsity'"),
    ("option-density", dict(max_density=0.0), ValueError, r"SNS option 'max_density'"),
    ("option-bool-int", dict(cg_maxiter=True), ValueError,
     r"SNS option 'cg_maxiter' must be an integer >= 1, got True"),
    ("option-bool-real", dict(ls_beta=np.True_), ValueError, r"SNS option 'ls_beta' must be"),
    ("option-nan", dict(cg_rtol=np.float32("nan")), ValueError,
     r"SNS option 'cg_rtol' must be a number in \(0, 1\), got .*nan"),
    ("option-float-for-int", dict(n_sinkhorn=np.float64(5.0)), ValueError,
     r"SNS option 'n_sinkhorn' must be an integer >= 0"),
    ("option-inf", dict(shift=np.inf), ValueError, r"SNS option 'shift' must be a finite"),
    ("option-str-number", dict(density="0.1"), ValueError, r"SNS option 'density' must be"),
    ("option-np-int-range", dict(cg_maxiter=np.int64(0)), ValueError,
     r"SNS option 'cg_maxiter' must be an integer >= 1"),
    # warm start
    ("warmstart-shape", dict(warmstart=(np.zeros(2), np.zeros(4))), ValueError,
     r"^warmstart log_u must have shape \(3,\)"),
    ("warmstart-v-shape", dict(warmstart=(np.zeros(3), np.zeros(3))), ValueError,
     r"^warmstart log_v must have shape \(4,\)"),
    ("warmstart-not-pair", dict(warmstart=np.zeros(3)), TypeError, r"^warmstart must be None or"),
    ("warmstart-nan", dict(warmstart=(_nan_at(np.zeros(3), 0), np.zeros(4))), ValueError,
     r"^warmstart log_u must not hold NaN"),
    ("warmstart-inf", dict(warmstart=(np.zeros(3), _set(np.zeros(4), 1, -np.inf))), ValueError,
     r"^warmstart log_v must be finite where the weights are positive"),
    ("warmstart-hists", dict(b=np.c_[B, B], warmstart=(np.zeros(3), np.zeros(4))), TypeError,
     r"^warmstart must be None or, with b of shape \(4, 2\), a list of 2 pairs"),
]


def _call(fn, spec):
    kw = dict(a=A, b=B, M=M, reg=0.1)
    kw.update(spec)
    if isinstance(kw["M"], str) and kw["M"] == "sparse":
        sp = pytest.importorskip("scipy.sparse")
        kw["M"] = sp.csr_matrix(M)
    a, b, M_, reg = kw.pop("a"), kw.pop("b"), kw.pop("M"), kw.pop("reg")
    return fn(a, b, M_, reg, **kw)


@pytest.fixture
def no_heavy_work(monkeypatch):
    """Fail loudly if a kernel is built or the solver runs."""
    def forbidden(*args, **kwargs):
        raise AssertionError("heavy work started before the input was validated")

    monkeypatch.setattr(pot_sns.api, "make_kernel", forbidden)
    monkeypatch.setattr(pot_sns.api, "solve", forbidden)


@pytest.mark.parametrize("fn", [pot_sns.sinkhorn_newton_sparse, pot_sns.sinkhorn_newton_sparse2],
                         ids=["sns", "sns2"])
@pytest.mark.parametrize("case,spec,exc,match", BAD, ids=[c[0] for c in BAD])
def test_bad_input_is_rejected_before_heavy_work(no_heavy_work, fn, case, spec, exc, match):
    with pytest.raises(exc, match=match):
        _call(fn, spec)


def test_forbidden_fixture_is_effective(no_heavy_work):
    # the fixture must really stop a valid call, or the test above proves nothing
    with pytest.raises(AssertionError, match="heavy work"):
        pot_sns.sinkhorn_newton_sparse(A, B, M, 0.1)


def test_cheap_shape_checks_come_before_the_cost_scan(monkeypatch):
    scanned = []
    real = validation.check_cost_values
    monkeypatch.setattr(validation, "check_cost_values",
                        lambda *args, **kw: scanned.append(1) or real(*args, **kw))
    with pytest.raises(ValueError, match="^a must have shape"):
        pot_sns.sinkhorn_newton_sparse(np.ones(2) / 2, B, _nan_at(M, (0, 0)), 0.1)
    with pytest.raises(ValueError, match="^reg must be"):
        pot_sns.sinkhorn_newton_sparse(A, B, _nan_at(M, (0, 0)), -1.0)
    assert scanned == []
    with pytest.raises(ValueError, match="^M must hold finite costs"):
        pot_sns.sinkhorn_newton_sparse(A, B, _nan_at(M, (0, 0)), 0.1)
    assert scanned == [1]


def test_integer_costs_are_not_scanned_but_accepted():
    P = pot_sns.sinkhorn_newton_sparse(A, B, (M * 11).astype(np.int64), 1.0)
    ref = ot.sinkhorn(A, B, M * 11, 1.0, method="sinkhorn_log", stopThr=1e-12)
    np.testing.assert_allclose(P, ref, atol=1e-10)


def test_names_follow_the_caller_spelling():
    """ot.solve spells the arguments max_iter, tol, potentials_init."""
    names = {"numItermax": "max_iter", "stopThr": "tol", "warmstart": "potentials_init"}
    kw = dict(names=names, caller="ot.solve(method='sns')")
    with pytest.raises(ValueError, match="^max_iter must be an integer >= 1"):
        check_problem(A, B, M, 0.1, numItermax=0, **kw)
    with pytest.raises(ValueError, match="^tol must be a finite number >= 0"):
        check_problem(A, B, M, 0.1, stopThr=-1.0, **kw)
    with pytest.raises(ValueError, match="^potentials_init log_u must have shape"):
        check_problem(A, B, M, 0.1, warmstart=(np.zeros(5), np.zeros(4)), **kw)
    with pytest.raises(TypeError, match=r"^ot.solve\(method='sns'\) got unknown option.*'foo'"):
        check_problem(A, B, M, 0.1, options={"foo": 1}, **kw)


def test_check_problem_converts_and_fills_uniform_weights():
    p = check_problem(None, [], [[0, 1, 2], [1, 0, 1]], np.float32(0.5), numItermax=np.int64(7),
                      stopThr=np.array(1e-7))
    assert p.nx.__name__ == "numpy"
    np.testing.assert_allclose(p.a, [0.5, 0.5])
    np.testing.assert_allclose(p.b, [1 / 3] * 3)
    assert p.a.dtype.kind == "f" and p.b.dtype.kind == "f"  # not integer zeros
    assert (p.reg, p.numItermax, p.stopThr, p.n_hists) == (0.5, 7, 1e-7, 0)
    assert type(p.reg) is float and type(p.numItermax) is int
    assert p.options == pot_sns.SNSOptions()  # none given: the defaults
    p = check_problem(A, np.c_[B, B, B], M, 1.0, options={"n_sinkhorn": 3})
    assert p.n_hists == 3 and p.options.n_sinkhorn == 3
    opts = pot_sns.SNSOptions(n_sinkhorn=4)
    assert check_problem(A, B, M, 1.0, options=opts).options is opts


# ---------------------------------------------------------------- SNS options


def test_every_option_has_a_rule():
    """An option added without a rule would be neither checked nor normalised."""
    from pot_sns import options

    ruled = [name for names, *_ in options._RULES for name in names]
    assert sorted(ruled) == sorted(pot_sns.SNSOptions.names())
    assert len(ruled) == len(set(ruled))


NUMPY_OPTIONS = {
    "n_sinkhorn": np.int64(7), "scaling_sweeps": np.int32(3), "cg_maxiter": np.int64(50),
    "ls_maxiter": np.uint8(12), "patience": np.int16(9), "n_bins": np.int64(100),
    "fallback_sweeps": np.int64(0), "eps_scaling": np.False_, "cg_rtol": np.float64(0.25),
    "ls_c1": np.float32(1e-3), "ls_beta": np.float64(0.5), "shift": np.float32(0.0),
    "mass_ratio": np.int64(2), "density": np.float32(0.5), "max_density": np.float64(1.0),
    "scaling_factor": np.float64(3.0), "bin_width": np.float16(0.25),
}


def test_numpy_scalar_options_are_accepted_as_python_numbers():
    opts = validation.check_options(dict(NUMPY_OPTIONS))
    for name, given in NUMPY_OPTIONS.items():
        value = getattr(opts, name)
        assert value == given, name
        expected = (bool if isinstance(given, np.bool_) else
                    int if isinstance(given, np.integer) and name != "mass_ratio" else float)
        assert type(value) is expected, (name, type(value))
    # the same options from Python numbers compare equal (and hash alike)
    plain = pot_sns.SNSOptions(**{k: v.item() for k, v in NUMPY_OPTIONS.items()})
    assert plain == opts and hash(plain) == hash(opts)


def test_numpy_integer_cg_maxiter_solves_as_its_int():
    """issue 14: numItermax=np.int64(50) worked, cg_maxiter=np.int64(50) raised."""
    a, b, Mp = make_problem(40, 30, 0)
    P, log = pot_sns.sinkhorn_newton_sparse(a, b, Mp, 2e-3, log=True,
                                            numItermax=np.int64(500),
                                            cg_maxiter=np.int64(50), cg_rtol=np.float32(0.1))
    Q, ref = pot_sns.sinkhorn_newton_sparse(a, b, Mp, 2e-3, log=True, numItermax=500,
                                            cg_maxiter=50, cg_rtol=float(np.float32(0.1)))
    assert log["status"] == "converged" and log["n_newton"] > 0
    np.testing.assert_array_equal(P, Q)
    assert log["cg_iters"] == ref["cg_iters"]


# options that leave a trace in the log: three sweeps at reg, none of the
# epsilon scaling, no more while they contract; two CG iterations per step
TRACED = dict(n_sinkhorn=np.int64(3), sinkhorn_rate=np.float64(1e-6), eps_scaling=False)


def _assert_traced(log):
    assert log["n_scaling"] == 0
    assert log["stages"][:4] == ["sinkhorn"] * 3 + ["newton"]


def _assert_defaults(log):
    # the default epsilon scaling at reg = 2e-3 (< scaling_from * spread)
    assert log["n_scaling"] > 0 and log["stages"][:4] == ["sinkhorn"] * 4


def test_checked_problem_carries_its_options_into_solve_checked():
    """The problem that check_problem returns solves with the options it was
    given (it used to hold the defaults: a trap for solve_checked)."""
    a, b, Mp = make_problem(40, 30, 0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # two CG iterations per step may not converge
        _, log = pot_sns.api.solve_checked(check_problem(a, b, Mp, 2e-3, options=TRACED))
        _, default = pot_sns.api.solve_checked(check_problem(a, b, Mp, 2e-3))
        _, cg2 = pot_sns.api.solve_checked(
            check_problem(a, b, Mp, 2e-3, options={"cg_maxiter": np.int64(2)}))
    _assert_traced(log)
    _assert_defaults(default)
    assert max(default["cg_iters"]) > 2 and cg2["cg_iters"] and max(cg2["cg_iters"]) <= 2
    with pytest.raises(ValueError, match="one histogram"):
        pot_sns.api.solve_checked(check_problem(a, np.c_[b, b], Mp, 2e-3))


@pytest.mark.parametrize("fn", [pot_sns.sinkhorn_newton_sparse, pot_sns.sinkhorn_newton_sparse2],
                         ids=["sns", "sns2"])
@pytest.mark.parametrize("hists", [0, 2])
def test_solvers_parse_options_once_and_solve_with_them(monkeypatch, fn, hists):
    a, b, Mp = make_problem(40, 30, 0)
    if hists:
        b = np.stack([b] * hists, 1)
    parsed = []
    real = validation.check_options
    monkeypatch.setattr(validation, "check_options",
                        lambda *args, **kw: parsed.append(1) or real(*args, **kw))
    _, log = fn(a, b, Mp, 2e-3, log=True, **TRACED)
    assert parsed == [1]
    _, default = fn(a, b, Mp, 2e-3, log=True)
    assert parsed == [1, 1]
    if hists:
        assert log["n_sinkhorn"] == [log["n_sinkhorn"][0]] * hists
        assert log["n_sinkhorn"][0] < default["n_sinkhorn"][0]
    else:
        _assert_traced(log)
        _assert_defaults(default)


@pytest.mark.parametrize("rel", [0.0, 1e-12, 5e-7])
def test_mass_within_tolerance_is_accepted(rel):
    P = pot_sns.sinkhorn_newton_sparse(A, B * (1 + rel), M, 0.1)
    np.testing.assert_allclose(P.sum(1), A, atol=1e-9)
    np.testing.assert_allclose(P.sum(), 1.0, atol=1e-9)


def test_float32_weights_get_a_float32_mass_tolerance():
    """float32 weights normalised apart can differ in mass by ~n*eps32."""
    rng = np.random.default_rng(0)
    a = np.full(7, 1 / 7)
    b = np.full(9, 1 / 9) * (1 + 5e-5)
    Mf = rng.random((7, 9))
    with pytest.raises(ValueError, match="same total mass"):
        pot_sns.sinkhorn_newton_sparse(a, b, Mf, 0.1)  # float64: too far apart
    a32, b32, M32 = a.astype(np.float32), b.astype(np.float32), Mf.astype(np.float32)
    P = pot_sns.sinkhorn_newton_sparse(a32, b32, M32, 0.1, stopThr=1e-6)
    assert P.dtype == np.float32
    np.testing.assert_allclose(P.sum(1), a32, atol=1e-6)
    np.testing.assert_allclose(P.sum(0), b32 * (a32.sum() / b32.sum()), atol=1e-6)
    with pytest.raises(ValueError, match="same total mass"):
        pot_sns.sinkhorn_newton_sparse(a32, b32 * np.float32(1.01), M32, 0.1)


def test_equal_but_unnormalised_mass_is_solved():
    P = pot_sns.sinkhorn_newton_sparse(5 * A, 5 * B, M, 0.1)
    ref = ot.sinkhorn(5 * A, 5 * B, M, 0.1, method="sinkhorn_log", stopThr=1e-12)
    np.testing.assert_allclose(P, ref, atol=1e-9)
    np.testing.assert_allclose(P.sum(0), 5 * B, atol=1e-9)


def test_accepted_spellings_of_arguments():
    ref = pot_sns.sinkhorn_newton_sparse(A, B, M, 0.1)
    variants = [
        dict(a=None, b=None),
        dict(a=[], b=np.array([])),
        dict(a=tuple(A), b=list(B)),
        dict(M=tuple(map(tuple, M))),
        dict(reg=np.float32(0.1)),  # 0.1 in float32 differs from 0.1: compare loosely
        dict(reg=np.array(0.1)),
        dict(numItermax=np.int32(1000), stopThr=np.float64(1e-9)),
    ]
    for v in variants:
        kw = dict(a=A, b=B, M=M, reg=0.1)
        kw.update(v)
        P = pot_sns.sinkhorn_newton_sparse(kw.pop("a"), kw.pop("b"), kw.pop("M"), kw.pop("reg"),
                                           **kw)
        np.testing.assert_allclose(P, ref, atol=1e-7, err_msg=str(v))
    loss = pot_sns.sinkhorn_newton_sparse2(tuple(A), None, tuple(map(tuple, M)), 0.1)
    assert float(loss) == pytest.approx(float(np.sum(ref * M)), abs=1e-9)


def test_stopThr_zero_runs_the_budget_and_warns():
    with pytest.warns(UserWarning, match="Sinkhorn did not converge"):
        P, log = pot_sns.sinkhorn_newton_sparse(A, B, M, 0.1, stopThr=0.0, numItermax=30,
                                                log=True)
    assert log["niter"] <= 30
    np.testing.assert_allclose(P.sum(1), A, atol=1e-12)


def test_warmstart_with_minus_inf_on_zero_weights_is_accepted():
    a = np.array([0.5, 0.0, 0.5])
    P0, log0 = pot_sns.sinkhorn_newton_sparse(a, B, M, 0.05, log=True)
    assert np.isneginf(log0["log_u"][1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        P1, log1 = pot_sns.sinkhorn_newton_sparse(a, B, M, 0.05, log=True,
                                                  warmstart=(log0["log_u"], log0["log_v"]))
    np.testing.assert_allclose(P1, P0, atol=1e-10)
    assert log1["n_sinkhorn"] == 0


def _torch_backend():
    torch = pytest.importorskip("torch")
    try:
        ot.backend.get_backend(torch.zeros(1))
    except ValueError:
        pytest.skip("POT's torch backend is disabled (POT_BACKEND_DISABLE_PYTORCH)")
    return torch


def test_mixed_backends_are_named():
    torch = _torch_backend()
    with pytest.raises(TypeError, match=r"same library.*M: torch.Tensor"):
        pot_sns.sinkhorn_newton_sparse(A, B, torch.tensor(M), 0.1)
    with pytest.raises(TypeError, match=r"same library.*a: torch.Tensor"):
        pot_sns.sinkhorn_newton_sparse(torch.tensor(A), B, M, 0.1)


def test_torch_inputs_are_validated_on_their_backend():
    torch = _torch_backend()
    a, b, Mt = torch.tensor(A), torch.tensor(B), torch.tensor(M)
    with pytest.raises(ValueError, match="^M must hold finite costs, found NaN"):
        pot_sns.sinkhorn_newton_sparse(a, b, Mt * float("nan"), 0.1)
    with pytest.raises(ValueError, match="^b must hold non-negative"):
        pot_sns.sinkhorn_newton_sparse(a, -b, Mt, 0.1)
    with pytest.raises(ValueError, match="^a must have shape"):
        pot_sns.sinkhorn_newton_sparse(a[:2], b, Mt, 0.1)
    # a scalar tensor is a valid reg
    P = pot_sns.sinkhorn_newton_sparse(a, b, Mt, torch.tensor(0.1))
    np.testing.assert_allclose(P.numpy(), pot_sns.sinkhorn_newton_sparse(A, B, M, 0.1), atol=1e-9)


@pytest.mark.parametrize("case", ["finite", "overflowing sum", "+inf and -inf"])
def test_cost_scan_is_min_and_max(case):
    """The scan is two reductions, min and max, in every case: they accept
    finite costs whose sum would overflow, name the infinities, and give
    the range the kernel needs."""
    calls = []

    class Counting:
        def __getattr__(self, name):
            fn = getattr(ot.backend.NumpyBackend(), name)
            return lambda *a, **k: calls.append(name) or fn(*a, **k)

    C = {"finite": M, "overflowing sum": np.full((3, 4), 1e308),
         "+inf and -inf": _set(_set(M, (0, 0), np.inf), (1, 1), -np.inf)}[case]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no RuntimeWarning leaks
        if case == "+inf and -inf":
            with pytest.raises(ValueError, match="infinite entries"):
                validation.check_cost_values(Counting(), C)
        else:
            assert validation.check_cost_values(Counting(), C) == (C.min(), C.max())
    assert calls == ["detach", "min", "max"]


@pytest.mark.parametrize("weights", ["positive", "with zeros"])
def test_solve_scans_the_costs_once(monkeypatch, weights):
    """The kernel takes M's range from the input check instead of scanning M
    again, unless zero weights restrict the problem to part of M (whose
    range it then measures itself)."""
    rng = np.random.default_rng(3)
    C = rng.random((7, 6))
    a, b = np.full(7, 1 / 7), np.full(6, 1 / 6)
    if weights == "with zeros":
        a = np.r_[0.0, np.full(6, 1 / 6)]
    scans = []
    for name in ("min", "max"):
        real = getattr(ot.backend.NumpyBackend, name)

        def counted(self, x, *args, _real=real, **kw):
            if getattr(x, "shape", None) in ((7, 6), (6, 6)):
                scans.append(x.shape)
            return _real(self, x, *args, **kw)
        monkeypatch.setattr(ot.backend.NumpyBackend, name, counted)
    P = pot_sns.sinkhorn_newton_sparse(a, b, C, 0.05, stopThr=1e-10)
    assert scans == ([(7, 6)] * 2 if weights == "positive" else [(7, 6)] * 2 + [(6, 6)] * 2)
    # zero rows solved off, as POT's reference on the support
    s = a > 0
    ref = np.zeros_like(C)
    ref[s] = ot.sinkhorn(a[s], b, C[s], 0.05, method="sinkhorn_log", stopThr=1e-13,
                         numItermax=100000)
    np.testing.assert_allclose(P, ref, atol=1e-9)
