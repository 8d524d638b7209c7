"""The Dask runner: chunks of problems as tasks on a ``distributed`` cluster.

The job (cost matrix, histograms, settings) goes to every worker once
(``scatter(..., broadcast=True)``); each task receives a reference to it and
an array of positions, so a task's message is a few hundred bytes whatever
the size of ``M``. Tasks are pure functions of the job and their positions:
when a worker dies, the scheduler runs its tasks again elsewhere and the
results are the same. ``dask.distributed`` is imported only here, lazily.
"""

import uuid

from .blas import one_blas_thread
from .local import solve_chunk

_INSTALL = "pip install 'pot_sns[dask]'"


def check_client(client):
    """``client`` must be a running ``dask.distributed.Client``.

    Parameters
    ----------
    client : object
        What the caller passed as ``client``.

    Raises
    ------
    TypeError
        Not a Client (or dask.distributed is not installed).
    ValueError
        A closed client.
    """
    try:
        from distributed import Client
    except ImportError:
        raise TypeError("client must be a dask.distributed.Client or None, got %s; "
                        "dask.distributed is not installed (%s)"
                        % (type(client).__name__, _INSTALL)) from None
    if not isinstance(client, Client):
        raise TypeError("client must be a dask.distributed.Client or None (None solves "
                        "in this process), got %s" % type(client).__name__)
    if client.status != "running":
        raise ValueError("client must be a running dask.distributed.Client, got one whose "
                         "status is %r" % client.status)


def n_threads(client):
    """Worker threads of the cluster (at least 1)."""
    try:
        return max(1, sum(client.nthreads().values()))
    except Exception:  # a scheduler that cannot be reached fails later, clearly
        return 1


def chunk_task(job, positions):
    """A Dask task: one chunk, with one BLAS thread (runs on a worker)."""
    with one_blas_thread():
        return solve_chunk(job, positions)


def _dashboard(client, bar):
    try:
        services = client.scheduler_info().get("services", {})
        link = client.dashboard_link if "dashboard" in services else None
    except Exception:  # no dashboard (dashboard_address=None), or no bokeh
        link = None
    if link:
        bar.note("pot_sns: dask dashboard at %s" % link)


def _notebook_progress(futures):
    """Dask's own progress widget when running in a Jupyter kernel."""
    try:
        from distributed import progress
        from distributed.utils import is_kernel

        if is_kernel():
            progress(futures, notebook=True)  # returns at once (a widget)
    except Exception:  # no ipywidgets: the text bar is still there
        pass


def run_chunks(client, job, chunks, sink, bar, timeout=None):
    """Solve ``chunks`` on the cluster of ``client``, handing each finished
    chunk to ``sink`` (checkpoint, results) as soon as it arrives.

    Parameters
    ----------
    client : distributed.Client
        A checked client.
    job : HistogramJob or SampleJob
        Validated job.
    chunks : list of ndarray
        Positions of each chunk.
    sink : callable
        Called with each chunk result, in the order they finish.
    bar : pot_sns.batch.progress.Bar
        Updated after each chunk.
    timeout : float, optional
        Seconds to wait for the whole job; ``TimeoutError`` after that.

    Raises
    ------
    TimeoutError
        The cluster did not finish in ``timeout`` seconds (the finished
        chunks went to ``sink``; the others are cancelled).
    """
    from distributed import as_completed

    if not chunks:
        return
    if bar.enabled:
        _dashboard(client, bar)
    job_future = client.scatter(job, broadcast=True, hash=False)
    token = uuid.uuid4().hex[:8]
    futures = [client.submit(chunk_task, job_future, positions, pure=False,
                             key="pot_sns-chunk-%s-%d" % (token, k))
               for k, positions in enumerate(chunks)]
    if bar.enabled:
        _notebook_progress(futures)
    pending = set(futures)
    try:
        for future in as_completed(futures, timeout=timeout):
            chunk = future.result()
            sink(chunk)
            pending.discard(future)
            future.release()  # its result lives here now, not on a worker
            bar.update(len(chunk["positions"]))
    except TimeoutError:
        raise TimeoutError("the cluster did not finish within timeout=%gs: %d of %d chunks "
                           "done (kept in the checkpoint, if any)"
                           % (timeout, len(futures) - len(pending), len(futures))) from None
    finally:
        # on any error or interrupt, stop the cluster's work for this job
        if pending:
            client.cancel(list(pending))
        job_future.release()
