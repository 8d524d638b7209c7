"""pot_sns.pairwise / pairwise_samples in this process: values, layout,
checkpoints, warnings and bad input.

Oracle: the loop of ``ot.solve(M, A[i], B[j], reg=reg, method="sns")`` (and
``ot.solve_sample``) that the functions replace, pair by pair; for the
checkpoint, the counts of problems solved by each call."""

import json
import os
import warnings

import numpy as np
import ot
import pytest

import pot_sns
from pot_sns.batch import local
from pot_sns.batch.blas import one_blas_thread

REG = 1e-2


def grid_cost(side):
    """Squared Euclidean cost between the pixels of a side x side grid, max 1."""
    g = np.stack(np.meshgrid(np.arange(side), np.arange(side), indexing="ij"), -1)
    g = g.reshape(-1, 2).astype(float)
    M = ot.dist(g, g)
    return M / M.max()


def digits_like(K, side=8, seed=0):
    """K digit-like images as histograms: two Gaussian strokes each, with the
    near-empty pixels at exactly 0 (as in real digit images)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side]
    H = np.zeros((K, side * side))
    for k in range(K):
        img = np.zeros((side, side))
        for _ in range(2):
            cy, cx = rng.uniform(1, side - 2, size=2)
            sy, sx = rng.uniform(0.6, 2.0, size=2)
            img += np.exp(-((yy - cy) / sy) ** 2 - ((xx - cx) / sx) ** 2)
        img[img < 0.05 * img.max()] = 0
        H[k] = img.ravel() / img.sum()
    return H


def loop_of_ot_solve(M, A, B, field="value_linear", reg=REG, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return np.array([[float(getattr(ot.solve(M, a, b, reg=reg, method="sns", **kw), field))
                          for b in B] for a in A])


@pytest.fixture(scope="module")
def data():
    return grid_cost(8), digits_like(5, seed=1)


def count_solves(monkeypatch):
    """Count the problems the in-process runner solves."""
    calls = []
    real = local.solve_pair

    def counting(job, i, j):
        calls.append((i, j))
        return real(job, i, j)

    monkeypatch.setattr(local, "solve_pair", counting)
    return calls


# ---------------------------------------------------------------- values

def test_equals_the_loop_of_ot_solve_symmetric(data, monkeypatch):
    M, A = data
    calls = count_solves(monkeypatch)
    D, log = pot_sns.pairwise(A, M=M, reg=REG, log=True)
    K = len(A)
    # each unordered pair once, the diagonal included
    assert sorted(calls) == [(i, j) for i in range(K) for j in range(i, K)]
    assert log["symmetric"] and log["n_pairs"] == K * (K + 1) // 2
    ref = loop_of_ot_solve(M, A, A)
    np.testing.assert_allclose(D, ref, rtol=1e-8, atol=0)
    iu = np.triu_indices(K)
    assert np.array_equal(D[iu], ref[iu])  # the very same solves
    assert np.array_equal(D, D.T)
    assert (np.diag(D) > 0).all()  # at reg > 0 the diagonal is not 0
    assert (log["status"] == "converged").all()
    assert D.dtype == np.float64 and isinstance(D, np.ndarray)


def test_two_collections_and_entropic_value(data):
    M, A = data
    B = digits_like(2, seed=7)
    for reg_type in ("KL", "entropy"):
        V, log = pot_sns.pairwise(A[:3], B, M=M, reg=REG, value="entropic", reg_type=reg_type,
                                  log=True)
        assert V.shape == (3, 2) and not log["symmetric"]
        ref = loop_of_ot_solve(M, A[:3], B, "value", reg_type=reg_type)
        np.testing.assert_allclose(V, ref, rtol=1e-8)
        np.testing.assert_allclose(log["value_linear"], loop_of_ot_solve(M, A[:3], B),
                                   rtol=1e-8)


def test_non_symmetric_cost_solves_every_ordered_pair(data, monkeypatch):
    M, A = data
    M = M + np.linspace(0, 0.1, M.shape[0])[:, None]  # M != M.T
    calls = count_solves(monkeypatch)
    D = pot_sns.pairwise(A[:3], M=M, reg=REG)
    assert len(calls) == 9
    np.testing.assert_allclose(D, loop_of_ot_solve(M, A[:3], A[:3]), rtol=1e-8)


def test_rectangular_cost(data):
    M, A = data
    B = digits_like(2, side=6, seed=3)
    x = np.stack(np.meshgrid(np.arange(8), np.arange(8), indexing="ij"), -1).reshape(-1, 2)
    y = np.stack(np.meshgrid(np.arange(6), np.arange(6), indexing="ij"), -1).reshape(-1, 2)
    Mr = ot.dist(x.astype(float), 8 / 6 * y)
    Mr /= Mr.max()
    D = pot_sns.pairwise(A[:2], B, M=Mr, reg=REG)
    np.testing.assert_allclose(D, loop_of_ot_solve(Mr, A[:2], B), rtol=1e-8)


def test_results_do_not_depend_on_the_chunk_size(data):
    M, A = data
    ref = pot_sns.pairwise(A, M=M, reg=REG)
    for size in (1, 4, 100):
        assert np.array_equal(pot_sns.pairwise(A, M=M, reg=REG, chunk_size=size), ref)


def test_inputs_of_other_backends_and_lists(data):
    torch = pytest.importorskip("torch", reason="torch is not installed")
    if not ot.backend.torch:
        pytest.skip("POT's torch backend is disabled")
    M, A = data
    ref = pot_sns.pairwise(A[:3], M=M, reg=REG)
    D = pot_sns.pairwise(torch.tensor(A[:3]), M=torch.tensor(M), reg=REG)
    assert isinstance(D, np.ndarray)
    assert np.array_equal(D, ref)
    assert np.array_equal(pot_sns.pairwise(A[:3].tolist(), M=M.tolist(), reg=REG), ref)


def test_float32_inputs_are_solved_in_float32(data):
    M, A = data
    M32, A32 = M.astype(np.float32), A[:2].astype(np.float32)
    D = pot_sns.pairwise(A32, M=M32, reg=REG, stopThr=1e-6)
    ref = loop_of_ot_solve(M32, A32, A32, tol=1e-6)
    # two kernels (batched and single) to float32's accuracy at tol 1e-6
    np.testing.assert_allclose(D, ref, rtol=1e-5)
    np.testing.assert_allclose(D, pot_sns.pairwise(A[:2], M=M, reg=REG), rtol=1e-4)


def test_single_histogram(data):
    M, A = data
    D = pot_sns.pairwise(A[:1], M=M, reg=REG)
    np.testing.assert_allclose(D, loop_of_ot_solve(M, A[:1], A[:1]), rtol=1e-8)


def test_solver_options_are_passed_through(data, monkeypatch):
    M, A = data
    seen = []
    real = local.solve_pair

    def spy(job, i, j):
        seen.append(job.settings)
        return real(job, i, j)

    monkeypatch.setattr(local, "solve_pair", spy)
    D = pot_sns.pairwise(A[:2], M=M, reg=REG, stopThr=1e-7, numItermax=500,
                         sparsity="topk", cg_maxiter=50)
    s = seen[0]
    assert (s.stopThr, s.numItermax, s.options.sparsity, s.options.cg_maxiter) == (
        1e-7, 500, "topk", 50)
    ref = loop_of_ot_solve(M, A[:2], A[:2], tol=1e-7, max_iter=500)
    np.testing.assert_allclose(D, ref, rtol=1e-6)


def test_pairwise_samples_equals_the_loop_of_solve_sample():
    rng = np.random.default_rng(0)
    X = [rng.normal(size=(n, 2)) for n in (5, 7, 6)]
    a = [rng.random(len(x)) + 0.1 for x in X]
    a = [w / w.sum() for w in a]
    Y = [rng.normal(size=(n, 2)) + 1 for n in (4, 8)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref_xx = np.array([[ot.solve_sample(xi, xj, ai, aj, reg=0.1, method="sns").value_linear
                            for xj, aj in zip(X, a)] for xi, ai in zip(X, a)])
        ref_xy = np.array([[ot.solve_sample(xi, yj, ai, None, metric="euclidean", reg=0.1,
                                            method="sns").value_linear for yj in Y]
                           for xi, ai in zip(X, a)])
    D, log = pot_sns.pairwise_samples(X, a=a, reg=0.1, log=True)
    assert log["symmetric"]
    np.testing.assert_allclose(D, ref_xx, rtol=1e-8)
    D = pot_sns.pairwise_samples(X, Y, a=a, metric="euclidean", reg=0.1)
    np.testing.assert_allclose(D, ref_xy, rtol=1e-8)


# ---------------------------------------------------------------- checkpoints

def test_checkpoint_files_and_rerun(data, tmp_path, monkeypatch):
    M, A = data
    ck = tmp_path / "ck"
    D, log = pot_sns.pairwise(A, M=M, reg=REG, checkpoint=ck, chunk_size=4, log=True)
    assert log["n_solved"] == 15 and log["n_from_checkpoint"] == 0
    names = sorted(os.listdir(ck))
    assert names[-1] == "manifest.json" and len(names) == 1 + 4  # 15 pairs, chunks of 4
    manifest = json.loads((ck / "manifest.json").read_text())
    assert manifest["kind"] == "pairwise" and manifest["n_pairs"] == 15
    for name in names[:-1]:
        with np.load(ck / name, allow_pickle=False) as f:  # plain arrays, no pickle
            assert set(f.files) >= {"positions", "value_linear", "status"}
    calls = count_solves(monkeypatch)
    D2, log = pot_sns.pairwise(A, M=M, reg=REG, checkpoint=str(ck), chunk_size=7, log=True)
    assert calls == [] and log["n_solved"] == 0 and log["n_from_checkpoint"] == 15
    assert np.array_equal(D2, D)


def test_rerun_solves_only_what_is_missing(data, tmp_path, monkeypatch):
    M, A = data
    ck = tmp_path / "ck"
    calls = count_solves(monkeypatch)
    real = local.solve_pair

    def dies_after_seven(job, i, j):
        if len(calls) == 7:
            raise KeyboardInterrupt  # the job is stopped mid-way
        return real(job, i, j)

    monkeypatch.setattr(local, "solve_pair", dies_after_seven)
    with pytest.raises(KeyboardInterrupt):
        pot_sns.pairwise(A, M=M, reg=REG, checkpoint=ck, chunk_size=3)
    assert len([n for n in os.listdir(ck) if n.endswith(".npz")]) == 2  # 6 problems saved
    monkeypatch.setattr(local, "solve_pair", real)
    calls = count_solves(monkeypatch)
    D, log = pot_sns.pairwise(A, M=M, reg=REG, checkpoint=ck, log=True)
    assert len(calls) == log["n_solved"] == 15 - 6
    np.testing.assert_array_equal(D, pot_sns.pairwise(A, M=M, reg=REG))


def test_an_unreadable_chunk_is_solved_again(data, tmp_path):
    M, A = data
    ck = tmp_path / "ck"
    D = pot_sns.pairwise(A, M=M, reg=REG, checkpoint=ck, chunk_size=5)
    first = sorted(n for n in os.listdir(ck) if n.endswith(".npz"))[0]
    (ck / first).write_bytes(b"not a zip file")
    with pytest.warns(UserWarning, match="unreadable"):
        D2, log = pot_sns.pairwise(A, M=M, reg=REG, checkpoint=ck, log=True)
    assert log["n_solved"] == 5
    assert np.array_equal(D2, D)


def test_checkpoint_of_another_job_is_refused_before_any_work(data, tmp_path, monkeypatch):
    M, A = data
    ck = tmp_path / "ck"
    pot_sns.pairwise(A[:3], M=M, reg=REG, checkpoint=ck)
    before = sorted(os.listdir(ck))
    calls = count_solves(monkeypatch)
    other_A = A[:3].copy()
    other_A[1] = A[4]
    for kwargs in ({"reg": 2 * REG}, {"A": other_A}, {"stopThr": 1e-8},
                   {"cg_maxiter": 7}, {"B": A[:2]}):
        args = dict(A=A[:3], M=M, reg=REG, checkpoint=ck)
        args.update(kwargs)
        with pytest.raises(ValueError, match="checkpoint .*different job"):
            pot_sns.pairwise(args.pop("A"), args.pop("B", None), **args)
    assert calls == [] and sorted(os.listdir(ck)) == before


def test_checkpoint_must_be_a_pot_sns_directory(data, tmp_path):
    M, A = data
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(ValueError, match="checkpoint must be a directory"):
        pot_sns.pairwise(A[:2], M=M, reg=REG, checkpoint=f)
    d = tmp_path / "other"
    d.mkdir()
    (d / "data.csv").write_text("1,2")
    with pytest.raises(ValueError, match="checkpoint .*without a pot_sns manifest"):
        pot_sns.pairwise(A[:2], M=M, reg=REG, checkpoint=d)
    with pytest.raises(TypeError, match="checkpoint must be a directory path"):
        pot_sns.pairwise(A[:2], M=M, reg=REG, checkpoint=3)


def test_sample_checkpoint_tracks_the_clouds(tmp_path):
    rng = np.random.default_rng(1)
    X = [rng.normal(size=(n, 2)) for n in (4, 5, 6)]
    D = pot_sns.pairwise_samples(X, reg=0.1, checkpoint=tmp_path / "ck")
    D2, log = pot_sns.pairwise_samples(X, reg=0.1, checkpoint=tmp_path / "ck", log=True)
    assert log["n_solved"] == 0 and np.array_equal(D, D2)
    X[2] = X[2] + 1e-3
    with pytest.raises(ValueError, match="checkpoint"):
        pot_sns.pairwise_samples(X, reg=0.1, checkpoint=tmp_path / "ck")
    with pytest.raises(ValueError, match="checkpoint"):
        pot_sns.pairwise_samples(X[:3], reg=0.1, metric="euclidean",
                                 checkpoint=tmp_path / "ck")


# ---------------------------------------------------------------- reporting

def test_one_warning_names_the_pairs_that_did_not_converge(data):
    M, A = data
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        D, log = pot_sns.pairwise(A[:3], M=M, reg=1e-3, numItermax=3, log=True)
    ours = [x for x in w if "did not converge" in str(x.message)]
    assert len(ours) == 1, [str(x.message) for x in w]
    msg = str(ours[0].message)
    assert "pairwise: 6 of 6 problems" in msg and "(0, 1)" in msg and "(2, 2)" in msg
    assert ours[0].filename == __file__  # points at the caller
    assert np.isfinite(D).all() and (log["status"] != "converged").all()


def test_progress_bar(data, capsys):
    M, A = data
    pot_sns.pairwise(A[:3], M=M, reg=REG, progress=True)
    err = capsys.readouterr().err
    assert "6/6" in err and "100%" in err
    pot_sns.pairwise(A[:3], M=M, reg=REG)
    assert capsys.readouterr().err == ""


def test_one_blas_thread_nests_and_restores():
    threadpoolctl = pytest.importorskip("threadpoolctl", reason="threadpoolctl not installed")

    def blas():
        return [i["num_threads"] for i in threadpoolctl.threadpool_info()
                if i["user_api"] == "blas"]

    before = blas()
    if not before:
        pytest.skip("no BLAS library seen by threadpoolctl")
    with threadpoolctl.threadpool_limits(2, user_api="blas"):
        outer = blas()
        with one_blas_thread():
            with one_blas_thread():  # a second task of the same worker
                assert set(blas()) == {1}
            assert set(blas()) == {1}  # still limited while the first runs
        assert blas() == outer
    assert blas() == before


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("change, error, pattern", [
    (lambda A, M: (A[:, :10], M), ValueError, r"A must have shape \(K, 64\)"),
    (lambda A, M: (A[:0], M), ValueError, r"A must hold at least one histogram \(K >= 1\)"),
    (lambda A, M: (_set(A, 3, 5, -0.1), M), ValueError, r"A\[3\] must hold non-negative"),
    (lambda A, M: (_set(A, 2, 0, np.nan), M), ValueError, r"A\[2\] must hold finite"),
    (lambda A, M: (_zero(A, 4), M), ValueError, r"A\[4\] must have positive total mass"),
    (lambda A, M: (_scale(A, 1, 2.0), M), ValueError, r"A\[1\] must have the same total mass"),
    (lambda A, M: (A, M[:10]), ValueError, r"A must have shape \(K, 10\)"),
    (lambda A, M: (A, _set(M, 0, 1, np.inf)), ValueError, r"M must hold finite costs"),
    (lambda A, M: (A, M[0]), ValueError, r"M must be a 2-D cost matrix"),
    (lambda A, M: ("A", M), TypeError, r"A must be"),
    (lambda A, M: (A, {"M": 1}), TypeError, r"M must be"),
])
def test_bad_histograms_and_cost(data, monkeypatch, change, error, pattern):
    M, A = data
    calls = count_solves(monkeypatch)
    A2, M2 = change(A.copy(), M.copy())
    with pytest.raises(error, match=pattern):
        pot_sns.pairwise(A2, M=M2, reg=REG)
    assert calls == []


def _set(X, i, j, v):
    X[i, j] = v
    return X


def _zero(X, i):
    X[i] = 0
    return X


def _scale(X, i, s):
    X[i] *= s
    return X


def test_bad_column_histograms_name_b(data):
    M, A = data
    B = A[:3].copy()
    B[2, 7] = -1
    with pytest.raises(ValueError, match=r"B\[2\] must hold non-negative"):
        pot_sns.pairwise(A, B, M=M, reg=REG)
    with pytest.raises(ValueError, match=r"B\[0\] must have the same total mass as A\[0\]"):
        pot_sns.pairwise(A, 2 * A[:2], M=M, reg=REG)
    with pytest.raises(ValueError, match=r"M must be square"):
        pot_sns.pairwise(A, M=M[:, :10], reg=REG)


@pytest.mark.parametrize("kwargs, error, pattern", [
    ({"reg": 0}, ValueError, "reg must be"),
    ({"reg": "small"}, TypeError, "reg must be"),
    ({"reg_type": "L2"}, ValueError, "reg_type must be"),
    ({"value": "both"}, ValueError, "value must be 'linear' or 'entropic'"),
    ({"numItermax": 10.0}, TypeError, "numItermax must be an integer"),
    ({"stopThr": -1}, ValueError, "stopThr must be"),
    ({"chunk_size": 0}, ValueError, "chunk_size must be"),
    ({"chunk_size": 2.5}, TypeError, "chunk_size must be"),
    ({"timeout": -1}, ValueError, "timeout must be"),
    ({"progress": "yes"}, TypeError, "progress must be"),
    ({"client": "tcp://127.0.0.1:8786"}, TypeError, "client must be a dask.distributed.Client"),
    ({"client": object()}, TypeError, "client must be a dask.distributed.Client"),
    ({"not_an_option": 1}, TypeError, "not_an_option"),
    ({"cg_rtol": 2.0}, ValueError, "cg_rtol"),
])
def test_bad_arguments_are_refused_before_any_work(data, tmp_path, monkeypatch, kwargs, error,
                                                   pattern):
    M, A = data
    calls = count_solves(monkeypatch)
    args = dict(M=M, reg=REG, checkpoint=tmp_path / "ck")
    args.update(kwargs)
    with pytest.raises(error, match=pattern):
        pot_sns.pairwise(A, **args)
    assert calls == [] and not (tmp_path / "ck").exists()


def test_bad_point_clouds():
    rng = np.random.default_rng(0)
    X = [rng.normal(size=(n, 2)) for n in (4, 5)]
    cases = [
        (dict(X=[]), ValueError, r"X must hold at least one point cloud"),
        (dict(X=[X[0], rng.normal(size=(3, 3))]), ValueError, r"X\[1\] must have points of "
                                                              r"dimension d=2"),
        (dict(X=[X[0], X[1][:, 0]]), ValueError, r"X\[1\] must be a non-empty 2-D array"),
        (dict(X=X, a=[np.ones(4) / 4, np.ones(4) / 4]), ValueError, r"a\[1\] must have shape"),
        (dict(X=X, a=[np.ones(4) / 4, -np.ones(5)]), ValueError, r"a\[1\] must hold non-neg"),
        (dict(X=X, a=[np.ones(4) / 4]), ValueError, r"a must hold one weight vector per cloud"),
        (dict(X=X, a=[np.ones(4) / 4, np.ones(5)]), ValueError, r"a\[1\] must have the same"),
        (dict(X=X, Y=[rng.normal(size=(3, 4))]), ValueError, r"Y\[0\] must have points"),
        (dict(X=X, b=[np.ones(4) / 4]), ValueError, r"b must be None when Y is None"),
        (dict(X=X, metric="no_such_metric"), ValueError, r"metric must be a metric"),
        (dict(X=X, metric=len), TypeError, r"metric must be the name"),
        (dict(X=5), TypeError, r"X must be a list of point clouds"),
    ]
    for kwargs, error, pattern in cases:
        with pytest.raises(error, match=pattern):
            pot_sns.pairwise_samples(kwargs.pop("X"), kwargs.pop("Y", None), reg=0.1, **kwargs)
