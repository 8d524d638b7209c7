"""pot_sns.pairwise on a 2-worker dask LocalCluster (loopback only): the
same numbers as the loop of ot.solve, a worker process killed mid-job, a
checkpoint shared by the cluster and this process, one BLAS thread per task.

Skipped when dask.distributed is not installed (``pip install
pot_sns[dask]``; ``tox -e dask`` installs it)."""

import os
import signal
import threading
import time

import numpy as np
import pytest

import pot_sns
from pot_sns.batch import blas, cluster

from test_pairwise import REG, digits_like, grid_cost, loop_of_ot_solve

distributed = pytest.importorskip(
    "distributed", reason="dask.distributed is not installed (pip install 'pot_sns[dask]')")

#: seconds: a test never waits longer for the cluster
TIMEOUT = 120


@pytest.fixture(scope="module")
def client():
    """A LocalCluster of 2 worker processes, 1 thread each, on 127.0.0.1."""
    cl = distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  host="127.0.0.1", dashboard_address=None,
                                  silence_logs=40)  # logging.ERROR: a killed worker is expected
    c = distributed.Client(cl, timeout=TIMEOUT)
    try:
        c.run(__import__, "pot_sns")  # the workers' imports, once, before any timing
        yield c
    finally:
        c.close(timeout=30)
        cl.close(timeout=30)


@pytest.fixture
def ready(client):
    client.wait_for_workers(2, timeout=TIMEOUT)
    return client


@pytest.fixture(scope="module")
def data():
    return grid_cost(8), digits_like(5, seed=1)


def test_cluster_equals_the_loop_of_ot_solve(data, ready):
    M, A = data
    D, log = pot_sns.pairwise(A, M=M, reg=REG, client=ready, timeout=TIMEOUT, log=True)
    np.testing.assert_allclose(D, loop_of_ot_solve(M, A, A), rtol=1e-8, atol=0)
    assert log["n_solved"] == 15 and np.array_equal(D, D.T)
    # the same numbers as in this process, whatever the chunking
    np.testing.assert_allclose(D, pot_sns.pairwise(A, M=M, reg=REG), rtol=1e-12)
    for size in (1, 4):
        D2 = pot_sns.pairwise(A, M=M, reg=REG, client=ready, chunk_size=size, timeout=TIMEOUT)
        assert np.array_equal(D2, D)


def test_two_collections_and_point_clouds(data, ready):
    M, A = data
    B = digits_like(2, seed=9)
    D = pot_sns.pairwise(A[:3], B, M=M, reg=REG, value="entropic", client=ready,
                         timeout=TIMEOUT)
    np.testing.assert_allclose(D, loop_of_ot_solve(M, A[:3], B, "value"), rtol=1e-8)
    rng = np.random.default_rng(0)
    X = [rng.normal(size=(n, 2)) for n in (4, 6, 5)]
    np.testing.assert_allclose(
        pot_sns.pairwise_samples(X, reg=0.1, client=ready, timeout=TIMEOUT),
        pot_sns.pairwise_samples(X, reg=0.1), rtol=1e-12)


def test_worker_killed_mid_job(ready, tmp_path):
    """Kill one of the 2 worker processes (started by this module's cluster)
    while the job runs: Dask reschedules its tasks, nothing is lost."""
    M = grid_cost(8)
    A = digits_like(10, seed=4)  # 55 problems, one per task
    pids = ready.run(os.getpid)
    assert len(pids) == 2 and os.getpid() not in pids.values()
    victim = sorted(pids.values())[0]
    ck = tmp_path / "ck"
    out = {}

    def job():
        try:
            out["D"], out["log"] = pot_sns.pairwise(A, M=M, reg=REG, client=ready,
                                                    chunk_size=1, checkpoint=ck,
                                                    timeout=TIMEOUT, log=True)
        except BaseException as e:  # reported by the main thread
            out["error"] = e

    thread = threading.Thread(target=job, daemon=True)
    thread.start()
    deadline = time.monotonic() + TIMEOUT
    while time.monotonic() < deadline and thread.is_alive():
        if ck.is_dir() and len([n for n in os.listdir(ck) if n.endswith(".npz")]) >= 3:
            break
        time.sleep(0.01)
    done_at_kill = len([n for n in os.listdir(ck) if n.endswith(".npz")])
    os.kill(victim, signal.SIGKILL)
    alive_at_kill = thread.is_alive()
    thread.join(TIMEOUT)
    assert not thread.is_alive(), "the job did not finish after the worker was killed"
    assert "error" not in out, repr(out.get("error"))
    assert alive_at_kill and 3 <= done_at_kill < 55, "the worker was not killed mid-job"
    with pytest.raises(ProcessLookupError):
        os.kill(victim, 0)  # it is gone
    D = out["D"]
    assert out["log"]["n_solved"] == 55
    assert (out["log"]["status"] == "converged").all()
    iu = np.triu_indices(len(A))  # the pairs solved; D is symmetric (checked elsewhere)
    ref = [loop_of_ot_solve(M, A[i:i + 1], A[j:j + 1])[0, 0] for i, j in zip(*iu)]
    np.testing.assert_allclose(D[iu], ref, rtol=1e-8, atol=0)
    assert np.array_equal(D, D.T)
    assert len([n for n in os.listdir(ck) if n.endswith(".npz")]) == 55
    ready.wait_for_workers(2, timeout=TIMEOUT)  # the nanny restarted it


def test_checkpoint_shared_by_cluster_and_process(data, ready, tmp_path, monkeypatch):
    M, A = data
    ck = tmp_path / "ck"
    D = pot_sns.pairwise(A, M=M, reg=REG, client=ready, checkpoint=ck, chunk_size=2,
                         timeout=TIMEOUT)
    # a rerun here, with another chunking, solves nothing
    D2, log = pot_sns.pairwise(A, M=M, reg=REG, checkpoint=ck, log=True)
    assert log["n_solved"] == 0 and np.array_equal(D, D2)
    # a chunk lost: the cluster solves just that one
    os.remove(ck / sorted(n for n in os.listdir(ck) if n.endswith(".npz"))[0])
    D3, log = pot_sns.pairwise(A, M=M, reg=REG, client=ready, checkpoint=ck, log=True,
                               timeout=TIMEOUT)
    assert log["n_solved"] == 2 and np.array_equal(D, D3)
    with pytest.raises(ValueError, match="checkpoint .*different job"):
        pot_sns.pairwise(A, M=M, reg=2 * REG, client=ready, checkpoint=ck)


def test_progress_and_non_convergence_on_cluster(data, ready, capsys):
    M, A = data
    with pytest.warns(UserWarning, match=r"pairwise: 3 of 3 problems did not converge"):
        D = pot_sns.pairwise(A[:2], M=M, reg=1e-3, numItermax=2, client=ready, progress=True,
                             timeout=TIMEOUT)
    assert np.isfinite(D).all()
    assert "3/3" in capsys.readouterr().err


def test_tasks_run_with_one_blas_thread(ready):
    threadpoolctl = pytest.importorskip("threadpoolctl", reason="threadpoolctl not installed")

    def blas_threads_in_task():
        with blas.one_blas_thread():
            return [i["num_threads"] for i in threadpoolctl.threadpool_info()
                    if i["user_api"] == "blas"]

    counts = ready.submit(blas_threads_in_task, pure=False).result(timeout=TIMEOUT)
    assert counts and set(counts) == {1}


def test_a_closed_client_is_refused(data, client):
    M, A = data
    other = distributed.Client(client.scheduler.address, timeout=TIMEOUT)
    other.close()
    with pytest.raises(ValueError, match="client must be a running"):
        pot_sns.pairwise(A, M=M, reg=REG, client=other)
    with pytest.raises(TypeError, match="client must be a dask.distributed.Client"):
        pot_sns.pairwise(A, M=M, reg=REG, client=client.cluster)
    assert cluster.n_threads(client) == 2
