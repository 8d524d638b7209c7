"""Matrices of OT costs between collections: :func:`pairwise` and
:func:`pairwise_samples`, in this process or on a Dask cluster."""

import numbers
import time

from . import cluster, local
from .checkpoint import Checkpoint
from .problems import check_settings, make_histogram_job, make_sample_job
from .progress import Bar
from .results import ResultStore, auto_chunk_size, split

#: ``value=`` choices and the result field each one returns
VALUES = {"linear": "value_linear", "entropic": "value"}

_COMMON_DOC = """
    reg_type : {"KL", "entropy"}, optional
        Regularization term of the entropic ``value`` (as in
        :func:`ot.solve`); the plans, hence the linear values, are the same.
    value : {"linear", "entropic"}, optional
        What the matrix holds: ``"linear"`` (default), the transport cost
        :math:`\\langle M, P^\\star\\rangle` of the entropic plan (the
        ``value_linear`` of :func:`ot.solve`), or ``"entropic"``, the
        regularised objective (its ``value``). ``log=True`` returns both.
    numItermax : int, optional
        Iteration budget of each problem (as ``max_iter`` of
        :func:`ot.solve`).
    stopThr : float, optional
        Each problem stops when the 2-norm of its marginal violation is
        below ``stopThr`` (as ``tol`` of :func:`ot.solve`).
    client : distributed.Client, optional
        A ``dask.distributed`` client (``LocalCluster``, dask-jobqueue,
        Kubernetes, ...): the problems are solved on its workers, one BLAS
        thread per worker thread. None (default) solves in this process.
    checkpoint : str or os.PathLike, optional
        A directory for the finished chunks (``.npz`` files and a JSON
        manifest, no pickle). A rerun with the same inputs, settings and
        directory solves only the missing problems, whatever the chunk size
        or the cluster; a directory written for other inputs is refused.
    chunk_size : int, optional
        Problems per task and per checkpoint file. Default: several chunks
        per worker thread, at most 256 problems each.
    progress : bool, optional
        Show a progress bar (tqdm when installed, otherwise on stderr; with
        a client, the dashboard link too, and Dask's widget in Jupyter).
    timeout : float, optional
        With a client: seconds to wait for the whole job before raising
        ``TimeoutError`` (the finished chunks stay in the checkpoint).
    log : bool, optional
        Also return a dict: ``value_linear``, ``value``, ``status``
        (``"converged"``, ``"max_iter"`` or ``"stalled"``), ``niter``,
        ``err`` (final marginal error) as ``(K, L)`` arrays; ``n_pairs``,
        ``n_solved`` (by this call), ``n_from_checkpoint``, ``chunk_size``,
        ``symmetric`` and ``time`` (seconds).
    **kwargs
        SNS options (:class:`pot_sns.SNSOptions`), checked before any work.
"""


def _check_run_args(value, chunk_size, timeout, progress, client):
    """The arguments that say how to run the job, checked up front."""
    if value not in VALUES:
        raise ValueError("value must be 'linear' or 'entropic', got %r" % (value,))
    if chunk_size is not None:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, numbers.Integral):
            raise TypeError("chunk_size must be None or an integer >= 1, got %r"
                            % (chunk_size,))
        if chunk_size < 1:
            raise ValueError("chunk_size must be an integer >= 1, got %r" % (chunk_size,))
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(
            timeout, numbers.Real) or not timeout > 0):
        raise ValueError("timeout must be None or a number of seconds > 0, got %r"
                         % (timeout,))
    if not isinstance(progress, bool):
        raise TypeError("progress must be True or False, got %r" % (progress,))
    if client is not None:
        cluster.check_client(client)
    return VALUES[value]


def _meta(job):
    lay = job.layout
    return {"kind": job.kind, "shape": [lay.n_rows, lay.n_cols], "symmetric": lay.symmetric,
            "n_pairs": lay.n_pairs, "settings": job.settings.as_dict()}


def run_job(job, caller, value="linear", client=None, checkpoint=None, chunk_size=None,
            progress=False, timeout=None, log=False):
    """Solve every problem of a validated ``job`` and return its matrix.

    Parameters
    ----------
    job : HistogramJob or SampleJob
        Validated job (:mod:`pot_sns.batch.problems`).
    caller : str
        Name in the progress bar and the warnings.
    value, client, checkpoint, chunk_size, progress, timeout, log
        See :func:`pot_sns.pairwise`.

    Returns
    -------
    D : ndarray, shape (K, L)
        The values (float64).
    log : dict
        Only when ``log=True``.
    """
    field = _check_run_args(value, chunk_size, timeout, progress, client)
    lay = job.layout
    store = ResultStore(lay)
    ckpt = None
    if checkpoint is not None:
        ckpt = Checkpoint.open(checkpoint, job.fingerprint(), _meta(job))
        for chunk in ckpt.load(lay.n_pairs):
            store.fill(chunk)
    todo = store.missing()
    size = chunk_size or auto_chunk_size(
        len(todo), 1 if client is None else cluster.n_threads(client))
    chunks = split(todo, size)

    def sink(chunk):
        if ckpt is not None:
            ckpt.write(chunk)  # first on disk: a crash after this loses nothing
        store.fill(chunk)

    bar = Bar(lay.n_pairs, progress, caller, initial=lay.n_pairs - len(todo))
    start = time.perf_counter()
    try:
        if client is None:
            local.run_chunks(job, chunks, sink, bar)
        else:
            cluster.run_chunks(client, job, chunks, sink, bar, timeout)
    finally:
        bar.close()
    elapsed = time.perf_counter() - start
    store.warn_failures(caller, job.settings, stacklevel=4)
    D = store.matrix(field)
    if not log:
        return D
    out = {k: store.matrix(k) for k in ("value_linear", "value", "status", "niter", "err")}
    out.update(n_pairs=lay.n_pairs, n_solved=len(todo), n_from_checkpoint=lay.n_pairs - len(todo),
               chunk_size=size, symmetric=lay.symmetric, time=elapsed)
    return D, out


def pairwise(A, B=None, *, M, reg, reg_type="KL", value="linear", numItermax=1000,
             stopThr=1e-9, client=None, checkpoint=None, chunk_size=None, progress=False,
             timeout=None, log=False, **kwargs):
    r"""Matrix of entropic OT costs between histograms on a common support.

    ``D[i, j]`` is ``ot.solve(M, A[i], B[j], reg=reg, method="sns").value_linear``
    (the same solver, the same numbers), computed for every pair, in this
    process or on a Dask cluster, with checkpoints for long jobs.

    Parameters
    ----------
    A : array-like, shape (K, n)
        K histograms, one per row (numpy, torch, list, ...). Zero entries are
        allowed; all rows of ``A`` and ``B`` must have the same mass.
    B : array-like, shape (L, m), optional
        L histograms. None compares ``A`` with itself: when ``M`` is
        symmetric each unordered pair is solved once (the diagonal too: at
        ``reg > 0`` it is not 0) and ``D`` is filled symmetrically.
    M : array-like, shape (n, m)
        Cost matrix, keyword-only.
    reg : float
        Entropic regularization, > 0, keyword-only.
    {common}
    Returns
    -------
    D : ndarray, shape (K, L)
        float64 numpy array (whatever the backend of the inputs).
    log : dict
        Only when ``log=True``.

    Raises
    ------
    ValueError, TypeError
        Before any work, naming the argument: shapes that do not match
        ``M``, a negative, NaN or zero-mass histogram (e.g. ``A[3]``),
        ``K = 0``, a ``client`` that is not a Client, a ``checkpoint``
        written for other inputs, an unknown SNS option.

    Warns
    -----
    UserWarning
        Once, naming the pairs that did not converge; their values (from
        the solver's best iterate) are still returned.

    See Also
    --------
    pot_sns.pairwise_samples : the same for point clouds.

    Examples
    --------
    >>> import numpy as np, pot_sns
    >>> M = np.array([[0., 1., 4.], [1., 0., 1.], [4., 1., 0.]]) / 4
    >>> A = np.array([[.5, .5, 0.], [0., .5, .5], [.2, .6, .2]])
    >>> D = pot_sns.pairwise(A, M=M, reg=1e-2)
    >>> D.shape, bool(np.allclose(D, D.T))
    ((3, 3), True)
    >>> round(float(D[0, 1]), 4)
    0.25
    """
    settings = check_settings(reg, reg_type, numItermax, stopThr, kwargs, "pairwise")
    _check_run_args(value, chunk_size, timeout, progress, client)
    job = make_histogram_job(M, A, B, settings)
    return run_job(job, "pairwise", value, client, checkpoint, chunk_size, progress, timeout,
                   log)


def pairwise_samples(X, Y=None, *, reg, a=None, b=None, metric="sqeuclidean",
                     reg_type="KL", value="linear", numItermax=1000, stopThr=1e-9,
                     client=None, checkpoint=None, chunk_size=None, progress=False,
                     timeout=None, log=False, **kwargs):
    r"""Matrix of entropic OT costs between weighted point clouds.

    ``D[i, j]`` is ``ot.solve_sample(X[i], Y[j], a[i], b[j], metric=metric,
    reg=reg, method="sns").value_linear``: the cost of each pair is
    ``ot.dist(X[i], Y[j], metric)``, built where the problem is solved (on
    the worker, with a client), so clouds of different sizes are fine.

    Parameters
    ----------
    X : list of array-like, shapes (n_i, d)
        K point clouds (or a 3-D array of shape (K, n, d)).
    Y : list of array-like, shapes (m_j, d), optional
        L point clouds; None compares ``X`` with itself (each unordered pair
        once for the symmetric metrics, e.g. ``"sqeuclidean"``).
    reg : float
        Entropic regularization, > 0, keyword-only.
    a : list of array-like, optional
        Weights of each cloud of ``X`` (None: uniform). All clouds must have
        the same mass.
    b : list of array-like, optional
        Weights of each cloud of ``Y`` (None: uniform; must be None when
        ``Y`` is).
    metric : str, optional
        Metric of :func:`ot.dist` (default ``"sqeuclidean"``, as
        :func:`ot.solve_sample`).
    {common}
    Returns
    -------
    D : ndarray, shape (K, L)
        float64 numpy array.
    log : dict
        Only when ``log=True``.

    See Also
    --------
    pot_sns.pairwise : the same for histograms on one support.

    Examples
    --------
    >>> import numpy as np, pot_sns
    >>> rng = np.random.default_rng(0)
    >>> X = [rng.normal(size=(n, 2)) for n in (5, 6, 7)]
    >>> D = pot_sns.pairwise_samples(X, reg=0.1)
    >>> D.shape, bool(np.all(D > 0))
    ((3, 3), True)
    """
    settings = check_settings(reg, reg_type, numItermax, stopThr, kwargs, "pairwise_samples")
    _check_run_args(value, chunk_size, timeout, progress, client)
    job = make_sample_job(X, Y, a, b, metric, settings)
    return run_job(job, "pairwise_samples", value, client, checkpoint, chunk_size, progress,
                   timeout, log)


# the options shared by both functions are documented once
for _f in (pairwise, pairwise_samples):
    _f.__doc__ = _f.__doc__.replace("    {common}\n", _COMMON_DOC.lstrip("\n") + "\n")
del _f
