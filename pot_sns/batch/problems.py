"""Job descriptions of many OT problems: input checks, pair layout, fingerprint.

A *job* is everything the workers need to solve any of its problems: the
shared cost (or the point clouds), the histograms, and the solver settings.
It is validated once, on the caller's side, before any work is sent, and it
is small enough to be sent to each Dask worker once (``broadcast``). A
problem is a pair ``(i, j)``; the pairs are numbered in a fixed order (row
by row, the upper triangle with its diagonal when a collection is compared
with itself), and a *position* in that order is what chunks, checkpoints
and results refer to, whatever the chunk size or the number of workers.
"""

import dataclasses
import hashlib
import json
import numbers

import numpy as np
import ot
from ot.backend import get_backend

from .. import validation
from ..options import SNSOptions

#: ``reg_type`` values (any case), as in :func:`ot.solve`.
REG_TYPES = ("kl", "entropy")

#: cdist metrics for which ``dist(x, y) = dist(y, x).T``: a collection
#: compared with itself then needs each unordered pair once.
SYMMETRIC_METRICS = ("sqeuclidean", "euclidean", "cityblock", "chebyshev", "minkowski",
                     "cosine", "correlation", "canberra", "braycurtis", "jensenshannon")

_NX = get_backend(np.zeros(1))


@dataclasses.dataclass(frozen=True)
class Settings:
    """Solver settings shared by every problem of a job (validated)."""

    reg: float
    reg_type: str  # lower case, one of REG_TYPES
    numItermax: int
    stopThr: float
    options: SNSOptions

    def as_dict(self):
        """JSON-able description; only the SNS options that differ from
        their defaults, so that a new option in a later pot_sns does not
        disown the checkpoints of earlier jobs."""
        default = SNSOptions()
        opts = {f.name: getattr(self.options, f.name) for f in dataclasses.fields(SNSOptions)
                if getattr(self.options, f.name) != getattr(default, f.name)}
        return {"reg": repr(float(self.reg)), "reg_type": self.reg_type,
                "numItermax": int(self.numItermax), "stopThr": repr(float(self.stopThr)),
                "options": opts}


def check_settings(reg, reg_type, numItermax, stopThr, options, caller,
                   names=("numItermax", "stopThr")):
    """Validate the solver settings of a job; errors name the argument.

    Parameters
    ----------
    reg : float
        Entropic regularization, > 0.
    reg_type : str
        ``"KL"`` or ``"entropy"`` (any case).
    numItermax : int
        Iteration budget of each problem, >= 1.
    stopThr : float
        Stopping threshold of each problem, >= 0.
    options : dict
        SNS options (:class:`pot_sns.SNSOptions` names).
    caller : str
        Function named in the message about unknown options.
    names : tuple of str, optional
        How the caller spells ``numItermax`` and ``stopThr``.

    Returns
    -------
    settings : Settings

    Examples
    --------
    >>> from pot_sns.batch.problems import check_settings
    >>> check_settings(1e-2, "KL", 1000, 1e-9, {}, "pairwise").reg_type
    'kl'
    """
    reg = validation.check_reg(reg)
    if not isinstance(reg_type, str) or reg_type.lower() not in REG_TYPES:
        raise ValueError("reg_type must be 'KL' or 'entropy' (any case), got %r" % (reg_type,))
    numItermax, stopThr = validation.check_iteration_args(numItermax, stopThr, names)
    opts = validation.check_options(dict(options), caller)
    return Settings(reg, reg_type.lower(), numItermax, stopThr, opts)


@dataclasses.dataclass(frozen=True)
class PairLayout:
    """Numbering of the pairs ``(i, j)`` of a ``(n_rows, n_cols)`` result.

    ``symmetric``: rows and columns are the same collection and the result
    is symmetric; only ``i <= j`` is solved, row by row.
    """

    n_rows: int
    n_cols: int
    symmetric: bool

    @property
    def n_pairs(self):
        """Number of problems to solve."""
        if self.symmetric:
            return self.n_rows * (self.n_rows + 1) // 2
        return self.n_rows * self.n_cols

    def pairs(self, positions):
        """Row and column of the pairs at ``positions`` (integer array)."""
        p = np.asarray(positions, dtype=np.int64)
        if not self.symmetric:
            return p // self.n_cols, p % self.n_cols
        K = self.n_rows
        rows = np.arange(K, dtype=np.int64)
        starts = rows * K - rows * (rows - 1) // 2  # position of (i, i)
        i = np.searchsorted(starts, p, side="right") - 1
        return i, p - starts[i] + i


def host_array(x, name, what):
    """``x`` (list, numpy array or array of a POT backend) as a numpy array
    of real numbers, or ``TypeError`` naming ``name``."""
    if x is None or isinstance(x, (str, bytes, dict, set, numbers.Number)):
        raise TypeError("%s must be %s, got %r" % (name, what, x))
    if isinstance(x, (list, tuple)):
        try:
            arr = np.asarray(x)
        except ValueError:
            raise ValueError("%s must be a rectangular array of numbers, got a ragged "
                             "nested list" % name) from None
    elif isinstance(x, np.ndarray):
        arr = x
    else:
        try:
            nx = get_backend(x)
        except (ValueError, TypeError):
            raise TypeError("%s must be %s (numpy, torch, ... array or list), got %s"
                            % (name, what, type(x).__name__)) from None
        arr = nx.to_numpy(nx.detach(x))
    if arr.dtype.kind not in "biuf" and arr.size:
        raise TypeError("%s must hold real numbers, got dtype %s" % (name, arr.dtype))
    return arr


def float_dtype(*arrays):
    """POT's promotion: the common dtype, float64 for integers."""
    dtype = np.result_type(*arrays)
    return dtype if dtype.kind == "f" else np.dtype(np.float64)


def check_rows(H, name, n, cost_name, cost_shape, axis_name="dim"):
    """``H`` must be (K, n), K >= 1, with finite non-negative rows of
    positive mass; errors name the row, e.g. ``A[3]``. Returns the masses."""
    if H.ndim != 2 or H.shape[1] != n:
        raise ValueError("%s must have shape (K, %d) (one histogram per row) to match %s of "
                         "shape %s, got shape %s" % (name, n, cost_name, cost_shape, H.shape))
    if H.shape[0] == 0:
        raise ValueError("%s must hold at least one histogram (K >= 1), got shape %s"
                         % (name, H.shape))
    bad = ~np.isfinite(H).all(axis=1)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise ValueError("%s[%d] must hold finite weights, found NaN or infinite entries"
                         % (name, k))
    neg = (H < 0).any(axis=1)
    if neg.any():
        k = int(np.flatnonzero(neg)[0])
        raise ValueError("%s[%d] must hold non-negative weights, found %g"
                         % (name, k, H[k].min()))
    mass = H.sum(axis=1, dtype=np.float64)
    if (mass <= 0).any():
        k = int(np.flatnonzero(mass <= 0)[0])
        raise ValueError("%s[%d] must have positive total mass, got sum(%s[%d])=%g"
                         % (name, k, name, k, mass[k]))
    return mass


def check_vector(w, name):
    """A 1-D weight vector: finite, non-negative, positive mass (returned)."""
    if not np.isfinite(w).all():
        raise ValueError("%s must hold finite weights, found NaN or infinite entries" % name)
    if (w < 0).any():
        raise ValueError("%s must hold non-negative weights, found %g" % (name, w.min()))
    mass = float(w.sum(dtype=np.float64))
    if mass <= 0:
        raise ValueError("%s must have positive total mass, got sum=%g" % (name, mass))
    return mass


def check_equal_masses(masses, dtype):
    """All histograms of a balanced job must have the mass of the first one.

    ``masses``: ``[(name, array of masses), ...]``."""
    ref_name, ref = masses[0][0], masses[0][1][0]
    rtol = validation.mass_tolerance(dtype)
    for name, mass in masses:
        dev = np.abs(mass - ref) / ref
        if (dev > rtol).any():
            k = int(np.flatnonzero(dev > rtol)[0])
            raise ValueError(
                "%s[%d] must have the same total mass as %s[0] (balanced OT): sum=%.10g, "
                "expected %.10g; normalise the histograms, e.g. A / A.sum(1, keepdims=True)"
                % (name, k, ref_name, mass[k], ref))


def _hash_arrays(h, named):
    for name, arr in named:
        arr = np.ascontiguousarray(arr)
        h.update(("%s|%s|%s|" % (name, arr.dtype.str, arr.shape)).encode())
        h.update(memoryview(arr).cast("B"))


class HistogramJob:
    """Histograms on one support: problem ``(i, j)`` is ``(M, A[i], B[j])``.

    Parameters
    ----------
    M : ndarray, shape (n, m)
        Shared cost.
    A : ndarray, shape (K, n)
        Row histograms.
    B : ndarray, shape (L, m) or None
        Column histograms; None compares ``A`` with itself.
    settings : Settings
        Validated solver settings.
    """

    kind = "pairwise"

    def __init__(self, M, A, B, settings):
        self.M, self.A, self.B, self.settings = M, A, B, settings
        # A against itself is symmetric only when the cost is: D[j, i]
        # solves the problem with M.T
        symmetric = B is None and M.shape[0] == M.shape[1] and np.array_equal(M, M.T)
        n_cols = A.shape[0] if B is None else B.shape[0]
        self.layout = PairLayout(A.shape[0], n_cols, symmetric)

    def problem(self, i, j):
        """Cost and weights of pair ``(i, j)``."""
        B = self.A if self.B is None else self.B
        return self.M, self.A[i], B[j]

    def fingerprint(self):
        """sha256 of the inputs and settings (not of the chunking)."""
        h = hashlib.sha256(b"pot_sns.pairwise/1|")
        _hash_arrays(h, [("M", self.M), ("A", self.A)]
                     + ([] if self.B is None else [("B", self.B)]))
        h.update(json.dumps(self.settings.as_dict(), sort_keys=True).encode())
        return h.hexdigest()


class SampleJob:
    """Weighted point clouds: problem ``(i, j)`` has the cost
    ``ot.dist(X[i], Y[j], metric)``, as :func:`ot.solve_sample` builds it.

    Parameters
    ----------
    X, wX : list of ndarray
        Row clouds (n_i, d) and their weights (n_i,).
    Y, wY : list of ndarray or None
        Column clouds and weights; None compares ``X`` with itself.
    metric : str
        Metric of :func:`ot.dist`.
    settings : Settings
        Validated solver settings.
    """

    kind = "pairwise_samples"

    def __init__(self, X, wX, Y, wY, metric, settings):
        self.X, self.wX, self.Y, self.wY = X, wX, Y, wY
        self.metric, self.settings = metric, settings
        symmetric = Y is None and metric in SYMMETRIC_METRICS
        self.layout = PairLayout(len(X), len(X) if Y is None else len(Y), symmetric)

    def problem(self, i, j):
        """Cost and weights of pair ``(i, j)``."""
        Y, wY = (self.X, self.wX) if self.Y is None else (self.Y, self.wY)
        return ot.dist(self.X[i], Y[j], metric=self.metric), self.wX[i], wY[j]

    def fingerprint(self):
        """sha256 of the clouds, weights, metric and settings."""
        h = hashlib.sha256(b"pot_sns.pairwise_samples/1|")
        groups = [("X", self.X), ("wX", self.wX)]
        if self.Y is not None:
            groups += [("Y", self.Y), ("wY", self.wY)]
        for name, arrays in groups:
            _hash_arrays(h, [("%s[%d]" % (name, k), x) for k, x in enumerate(arrays)])
        h.update(("metric|%s|" % self.metric).encode())
        h.update(json.dumps(self.settings.as_dict(), sort_keys=True).encode())
        return h.hexdigest()


def make_histogram_job(M, A, B, settings):
    """Check the inputs of :func:`pot_sns.pairwise` and build its job.

    Everything is checked here, cheapest first, before any work: shapes,
    then the histograms (naming the row), then the finiteness of ``M``.

    Parameters
    ----------
    M : array-like, shape (n, m)
        Cost.
    A : array-like, shape (K, n)
        Row histograms.
    B : array-like, shape (L, m) or None
        Column histograms.
    settings : Settings
        Validated solver settings.

    Returns
    -------
    job : HistogramJob
        Numpy arrays of one float dtype (POT's promotion).
    """
    M = host_array(M, "M", "a 2-D cost matrix")
    A = host_array(A, "A", "an array of histograms of shape (K, n)")
    B = None if B is None else host_array(B, "B", "an array of histograms of shape (L, m)")
    validation.check_cost(_NX, M, "M", values=False)
    masses = [("A", check_rows(A, "A", M.shape[0], "M", M.shape))]
    if B is not None:
        masses.append(("B", check_rows(B, "B", M.shape[1], "M", M.shape)))
    elif M.shape[0] != M.shape[1]:
        raise ValueError("M must be square, shape (n, n), to compare A with itself (B=None), "
                         "got shape %s; pass B of shape (L, %d)" % (M.shape, M.shape[1]))
    dtype = float_dtype(*[x for x in (M, A, B) if x is not None])
    check_equal_masses(masses, dtype)
    validation.check_cost_values(_NX, M, "M")
    M, A = M.astype(dtype, copy=False), A.astype(dtype, copy=False)
    B = None if B is None else B.astype(dtype, copy=False)
    return HistogramJob(M, A, B, settings)


def _clouds(X, name, d=None):
    """Sequence (or 3-D array) of 2-D point clouds ``(n_k, d)``, checked."""
    if isinstance(X, (str, bytes, dict, set)) or not hasattr(X, "__len__"):
        raise TypeError("%s must be a list of point clouds (arrays of shape (n_k, d)) or a "
                        "3-D array, got %s" % (name, type(X).__name__))
    if len(X) == 0:
        raise ValueError("%s must hold at least one point cloud (K >= 1), got none" % name)
    out = []
    for k in range(len(X)):
        x = host_array(X[k], "%s[%d]" % (name, k), "a 2-D array of points (n, d)")
        if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError("%s[%d] must be a non-empty 2-D array of points (n, d), got "
                             "shape %s" % (name, k, x.shape))
        if d is not None and x.shape[1] != d:
            raise ValueError("%s[%d] must have points of dimension d=%d like the other "
                             "clouds, got shape %s" % (name, k, d, x.shape))
        if not np.isfinite(x).all():
            raise ValueError("%s[%d] must hold finite coordinates" % (name, k))
        d = x.shape[1]
        out.append(x)
    return out


def _cloud_weights(w, clouds, name, cloud_name):
    """Weights of each cloud (uniform when ``w`` is None), checked per row."""
    if w is None:
        return [np.full(len(x), 1.0 / len(x)) for x in clouds], np.ones(len(clouds))
    if isinstance(w, (str, bytes, dict, set)) or not hasattr(w, "__len__"):
        raise TypeError("%s must be None or a list of weight vectors, one per cloud of %s, "
                        "got %s" % (name, cloud_name, type(w).__name__))
    if len(w) != len(clouds):
        raise ValueError("%s must hold one weight vector per cloud of %s (%d), got %d"
                         % (name, cloud_name, len(clouds), len(w)))
    out, masses = [], []
    for k, x in enumerate(clouds):
        wk = host_array(w[k], "%s[%d]" % (name, k), "a 1-D array of weights")
        if wk.shape != (len(x),):
            raise ValueError("%s[%d] must have shape (%d,) to match %s[%d] of shape %s, got "
                             "shape %s" % (name, k, len(x), cloud_name, k, x.shape, wk.shape))
        masses.append(check_vector(wk, "%s[%d]" % (name, k)))
        out.append(wk)
    return out, np.array(masses)


def make_sample_job(X, Y, a, b, metric, settings):
    """Check the inputs of :func:`pot_sns.pairwise_samples` and build its job.

    Parameters
    ----------
    X, Y : list of array-like
        Point clouds (``Y`` None: ``X`` against itself).
    a, b : list of array-like or None
        Their weights (None: uniform).
    metric : str
        Metric of :func:`ot.dist`.
    settings : Settings
        Validated solver settings.

    Returns
    -------
    job : SampleJob
    """
    if not isinstance(metric, str):
        raise TypeError("metric must be the name of a metric of ot.dist (str), got %r"
                        % (metric,))
    X = _clouds(X, "X")
    Y = None if Y is None else _clouds(Y, "Y", X[0].shape[1])
    if Y is None and b is not None:
        raise ValueError("b must be None when Y is None (X is compared with itself, with "
                         "the weights a)")
    wX, mX = _cloud_weights(a, X, "a", "X")
    masses = [("a", mX)]
    wY = None
    if Y is not None:
        wY, mY = _cloud_weights(b, Y, "b", "Y")
        masses.append(("b", mY))
    arrays = X + wX + (Y + wY if Y is not None else [])
    dtype = float_dtype(*arrays)
    check_equal_masses(masses, dtype)
    try:
        ot.dist(X[0][:1], X[0][:1], metric=metric)
    except (ValueError, TypeError, KeyError) as e:
        raise ValueError("metric must be a metric of ot.dist, got %r (%s)" % (metric, e)) \
            from None
    cast = [[x.astype(dtype, copy=False) for x in group] if group is not None else None
            for group in (X, wX, Y, wY)]
    return SampleJob(*cast[:2], *cast[2:], metric, settings)
