"""Argument checks at the public boundary: clear errors that name the argument.

One module serves every entry point (:func:`pot_sns.sinkhorn_newton_sparse`,
:func:`pot_sns.sinkhorn_newton_sparse2` and the ``method="sns"`` branch of
:func:`ot.solve`): :func:`check_problem` runs all checks in one call and hands
back the inputs converted to a single backend. The individual checks stay
public for callers that need only one of them.

Rules (see ``docs/input_rules.rst``):

- wrong kind of object (a string for ``reg``, a dict for ``M``, mixed array
  libraries, a float ``numItermax``) -> ``TypeError``;
- right kind, wrong shape or value (``M`` not 2-D, shapes that disagree,
  negative/NaN/inf weights, NaN/inf costs, ``reg <= 0``, unequal masses,
  out-of-range ``numItermax``/``stopThr``) -> ``ValueError``;
- unknown SNS option -> ``TypeError``; SNS option out of range or of the
  wrong type -> ``ValueError`` (:class:`pot_sns.SNSOptions` checks them).

Every message starts with the argument's name (as the caller spells it, see
``names`` in :func:`check_problem`) and says what was expected and what was
received. All checks are O(n + m) except the finiteness of ``M`` (two
reductions, no temporary array), and all of them run before any heavy work:
the finiteness scan comes last, after every cheap check passed.
"""

import functools
import math
import numbers
from collections import namedtuple

import numpy as np
from ot.backend import get_backend
from ot.utils import list_to_array

from .options import SNSOptions

#: Relative tolerance on ``|sum(b) - sum(a)| / sum(a)``: the largest of this
#: and ``1000 * eps`` of the weights' dtype (float32 weights: about 1.2e-4),
#: at most 1e-2 (float16 weights).
MASS_RTOL = 1e-6

#: Default spelling of the arguments in messages; ``ot.solve`` passes its own.
DEFAULT_NAMES = {
    "a": "a", "b": "b", "M": "M", "reg": "reg", "numItermax": "numItermax",
    "stopThr": "stopThr", "warmstart": "warmstart",
}

Problem = namedtuple(
    "Problem", "nx a b M reg numItermax stopThr warmstart n_hists options cost_range",
    defaults=(None,))
Problem.__doc__ = """Validated problem returned by :func:`check_problem`.

``a``, ``b`` and ``M`` are arrays of the single backend ``nx`` (lists
converted, ``[]``/``None`` weights made uniform), not yet cast to a common
dtype nor detached. ``n_hists`` is 0 for a 1-D ``b`` and ``b.shape[1]``
otherwise. ``options`` is the :class:`pot_sns.SNSOptions` built from the
options given to :func:`check_problem` (its defaults when none were given):
the options that solving the problem uses, parsed and checked once.
``cost_range`` is ``(min, max)`` of a floating-point ``M`` from the
finiteness scan (None for integer costs, which are not scanned)."""


def _type_name(x):
    t = type(x)
    return t.__name__ if t.__module__ == "builtins" else "%s.%s" % (t.__module__, t.__name__)


def _scalar(x, name, expected):
    """``x`` as a Python float, or TypeError: numbers and 0-d arrays only."""
    if x is None or isinstance(x, (bool, np.bool_, str, bytes)):
        raise TypeError("%s must be %s, got %r" % (name, expected, x))
    if isinstance(x, numbers.Real):
        return float(x)
    shape = getattr(x, "shape", None)
    if shape is not None and tuple(shape) == ():
        kind = getattr(getattr(x, "dtype", None), "kind", None)
        if kind is not None and kind not in "iuf":
            raise TypeError("%s must be %s, got %r" % (name, expected, x))
        try:
            # 0-d numpy array or backend scalar tensor (torch, cupy, jax)
            return float(x)
        except (TypeError, ValueError):
            pass
    raise TypeError("%s must be %s, got %s" % (name, expected, _describe(x)))


def _describe(x):
    shape = getattr(x, "shape", None)
    if shape is not None:
        return "%s of shape %s" % (_type_name(x), tuple(shape))
    return "%s %r" % (_type_name(x), x)


def check_reg(reg, name="reg"):
    """Return ``reg`` as a positive finite float or raise.

    Parameters
    ----------
    reg : float
        Entropic regularization; Python or NumPy number, or a 0-d array.
    name : str, optional
        Name of the argument in the messages.

    Returns
    -------
    reg : float

    Raises
    ------
    TypeError
        ``reg`` is not a real number (``None``, a string, a bool, an array
        with more than one element).
    ValueError
        ``reg`` is NaN, infinite, zero or negative.
    """
    value = _scalar(reg, name, "a positive number (float)")
    if not math.isfinite(value) or value <= 0:
        raise ValueError("%s must be a finite number > 0, got %r" % (name, value))
    return value


def check_iteration_args(numItermax, stopThr, names=("numItermax", "stopThr")):
    """Validate the iteration budget and the stopping threshold.

    ``numItermax`` must be an integer >= 1 (a float such as ``1e4`` is a
    ``TypeError``, as in POT, whose loops call ``range(numItermax)``);
    ``stopThr`` a finite number >= 0.

    Returns
    -------
    numItermax : int
    stopThr : float
    """
    n_name, s_name = names
    if isinstance(numItermax, (bool, np.bool_)) or not isinstance(numItermax, numbers.Integral):
        hint = " (write int(%r))" % numItermax if (
            isinstance(numItermax, float) and numItermax.is_integer()) else ""
        raise TypeError("%s must be an integer >= 1, got %s %r%s"
                        % (n_name, _type_name(numItermax), numItermax, hint))
    if numItermax < 1:
        raise ValueError("%s must be an integer >= 1, got %r" % (n_name, numItermax))
    value = _scalar(stopThr, s_name, "a number >= 0")
    if not (value >= 0 and math.isfinite(value)):
        raise ValueError("%s must be a finite number >= 0, got %r" % (s_name, value))
    return int(numItermax), value


def check_options(kwargs, caller="sinkhorn_newton_sparse"):
    """Parse and check SNS options, once: :func:`check_problem` calls this.

    Parameters
    ----------
    kwargs : dict, SNSOptions or None
        The solver's ``**kwargs`` (option names and values), options already
        built, or ``None`` for the defaults.
    caller : str, optional
        Function named in the message about unknown options.

    Returns
    -------
    opts : SNSOptions
        Checked options, numbers as Python ``int`` and ``float`` (NumPy
        scalars such as ``np.int64(50)`` are accepted and converted).

    Raises
    ------
    TypeError
        An unknown option name, or ``kwargs`` of another type.
    ValueError
        An option out of its range or of the wrong type, naming the option.

    Examples
    --------
    >>> import numpy as np
    >>> from pot_sns.validation import check_options
    >>> check_options({"cg_maxiter": np.int64(50)}).cg_maxiter
    50
    """
    if kwargs is None or (isinstance(kwargs, dict) and not kwargs):
        # the defaults are frozen: one checked instance serves every solve
        # (building and checking them is a twentieth of an easy solve)
        return _default_options()
    if isinstance(kwargs, SNSOptions):
        return kwargs  # checked when it was built (SNSOptions.__post_init__)
    if not isinstance(kwargs, dict):
        raise TypeError("%s: SNS options must be a dict of keyword arguments, got %s"
                        % (caller, _type_name(kwargs)))
    try:
        return SNSOptions.from_kwargs(kwargs)
    except TypeError as e:
        raise TypeError(str(e).replace("sinkhorn_newton_sparse", caller, 1)) from None


@functools.lru_cache(maxsize=1)
def _default_options():
    return SNSOptions()


def _is_listlike(x):
    return isinstance(x, (list, tuple))


def _precheck_object(x, name, kind):
    """Reject what no backend can hold, with the argument's name; convert
    tuples to lists and check that lists are rectangular arrays of numbers.
    Returns ``x`` (a list, or the original object)."""
    if x is None:
        raise TypeError("%s must be an array, got None" % name)
    if isinstance(x, (str, bytes, dict, set)) or isinstance(x, (numbers.Number, np.generic)):
        raise TypeError("%s must be %s, got %s %r" % (name, kind, _type_name(x), x))
    if hasattr(x, "toarray") and hasattr(x, "nnz"):
        raise TypeError("%s must be a dense array; sparse matrices (%s) are not "
                        "supported, convert with .toarray()" % (name, _type_name(x)))
    if _is_listlike(x):
        try:
            arr = np.asarray(x)
        except ValueError:
            raise ValueError("%s must be a rectangular array of numbers, got a ragged "
                             "nested list" % name) from None
        if arr.size and arr.dtype.kind not in "biuf":
            raise TypeError("%s must hold real numbers, got %s entries"
                            % (name, arr.dtype.name if arr.dtype.kind != "U" else "string"))
        return list(x) if isinstance(x, tuple) else x
    return x


def as_arrays(a, b, M, names=None):
    """Convert ``a``, ``b``, ``M`` (arrays of one backend, or lists) to arrays
    of one POT backend, following POT's rules for lists.

    ``a`` or ``b`` equal to ``None``, ``[]`` or an empty array mean uniform
    weights; they are returned as ``None``.

    Returns
    -------
    nx : ot.backend.Backend
    a, b, M : arrays (``a``/``b`` may be ``None``)
    """
    names = dict(DEFAULT_NAMES, **(names or {}))
    M = _precheck_object(M, names["M"], "a 2-D cost matrix")
    args = {}
    for key, x in (("a", a), ("b", b)):
        if x is None or (_is_listlike(x) and len(x) == 0):
            args[key] = None
            continue
        args[key] = _precheck_object(x, names[key], "an array of weights")
    arrays = [x for x in (args["a"], args["b"], M) if x is not None and not _is_listlike(x)]
    if arrays:
        try:
            get_backend(*arrays)
        except (ValueError, TypeError):
            for key, x in (("a", args["a"]), ("b", args["b"]), ("M", M)):
                if x is None or _is_listlike(x):
                    continue
                try:
                    get_backend(x)
                except (ValueError, TypeError):
                    raise TypeError("%s must be an array of a backend POT supports (numpy, "
                                    "torch, jax, cupy, tensorflow), got %s"
                                    % (names[key], _type_name(x))) from None
            raise TypeError(
                "%s, %s and %s must be arrays of the same library (backend), got %s"
                % (names["a"], names["b"], names["M"], ", ".join(
                    "%s: %s" % (names[k], _type_name(x)) for k, x in
                    (("a", args["a"]), ("b", args["b"]), ("M", M)) if x is not None))
            ) from None
    present = [x for x in (args["a"], args["b"], M) if x is not None]
    converted = list_to_array(*present) if len(present) > 1 else [list_to_array(present[0])]
    it = iter(converted)
    a = next(it) if args["a"] is not None else None
    b = next(it) if args["b"] is not None else None
    M = next(it)
    nx = get_backend(*[x for x in (M, a, b) if x is not None])
    # an empty array (e.g. np.array([])) means uniform too, as in POT
    if a is not None and len(a.shape) == 1 and a.shape[0] == 0:
        a = None
    if b is not None and len(b.shape) == 1 and b.shape[0] == 0:
        b = None
    return nx, a, b, M


def _dtype_kind(nx, x):
    # the dtype of a one-element slice: no host copy of a device array
    return nx.to_numpy(nx.reshape(x, (-1,))[:1]).dtype.kind


def check_cost(nx, M, name="M", values=True):
    """``M`` must be a non-empty 2-D array of finite real numbers.

    With ``values=False`` only the shape and dtype are checked (O(1)); the
    finiteness scan is two reductions over ``M`` and no temporary array.
    """
    shape = tuple(M.shape)
    if len(shape) != 2:
        raise ValueError("%s must be a 2-D cost matrix of shape (dim_a, dim_b), got %d-D "
                         "array of shape %s" % (name, len(shape), shape))
    if shape[0] == 0 or shape[1] == 0:
        raise ValueError("%s must not be empty, got shape %s" % (name, shape))
    kind = _dtype_kind(nx, M)
    if kind not in "biuf":
        raise TypeError("%s must hold real numbers, got dtype %s"
                        % (name, nx.to_numpy(M[:1, :1]).dtype))
    if values and kind == "f":
        check_cost_values(nx, M, name)


def check_cost_values(nx, M, name="M"):
    """Raise ``ValueError`` if ``M`` holds NaN or infinite entries; else
    return ``(min, max)`` of ``M`` as floats.

    Two backend reductions, ``min`` and ``max``, which propagate NaN and see
    both infinities (a sum would take as long as both, and overflow on
    large finite costs). No n-by-m temporary, no host copy of a device
    array. The range is what the solver's kernel needs first (the
    epsilon-scaling schedule, the first exp pass): it takes it from here
    instead of scanning ``M`` again.
    """
    M = nx.detach(M)  # float() of a tensor that requires grad warns in torch
    lo, hi = float(nx.min(M)), float(nx.max(M))
    if math.isnan(lo) or math.isnan(hi):
        raise ValueError("%s must hold finite costs, found NaN entries" % name)
    if math.isinf(lo) or math.isinf(hi):
        raise ValueError("%s must hold finite costs, found infinite entries (to forbid a "
                         "pair, use a large finite cost instead)" % name)
    return lo, hi


def uniform_weights(nx, n, M):
    """Uniform weights ``1/n`` in the backend/device of ``M`` (float, even
    when ``M`` holds integers)."""
    ref = M if nx.is_floating_point(M) else M[:1, 0] * 1.0
    return nx.full((n,), 1.0 / n, type_as=ref)


def check_weights(nx, a, b, M, names=None):
    """Shapes of ``a`` (n,), ``b`` (m,) or (m, n_hists) against ``M``; values
    >= 0 and finite, with positive and equal mass (relative tolerance
    :func:`mass_tolerance`). O(n + m), on host copies of the weights.
    """
    names = dict(DEFAULT_NAMES, **(names or {}))
    na, nb, nM = names["a"], names["b"], names["M"]
    n, m = M.shape
    if len(a.shape) != 1 or a.shape[0] != n:
        raise ValueError(
            "%s must have shape (%d,) to match %s of shape (%d, %d), got shape %s"
            % (na, n, nM, n, m, tuple(a.shape)))
    if len(b.shape) not in (1, 2) or b.shape[0] != m:
        raise ValueError(
            "%s must have shape (%d,) or (%d, n_hists) to match %s of shape (%d, %d), "
            "got shape %s" % (nb, m, m, nM, n, m, tuple(b.shape)))
    if len(b.shape) == 2 and b.shape[1] == 0:
        raise ValueError("%s must hold at least one histogram, got shape %s"
                         % (nb, tuple(b.shape)))
    ah, bh = nx.to_numpy(a), nx.to_numpy(b)
    masses = []
    for name, x in ((na, ah), (nb, bh)):
        if x.dtype.kind not in "biuf":
            raise TypeError("%s must hold real numbers, got dtype %s" % (name, x.dtype))
        mass = x.sum(axis=0, dtype=np.float64)
        # a finite sum and a minimum >= 0 clear the entries (a NaN or an
        # infinity makes the sum NaN or infinite); only a failure pays for
        # the scans that name the culprit
        if not (np.isfinite(mass).all() and x.min() >= 0):
            _check_entries(name, x)
        masses.append(mass)
    mass_a = float(masses[0])
    if mass_a <= 0:
        raise ValueError("%s must have positive total mass, got sum(%s)=%g"
                         % (na, na, mass_a))
    mass_b = masses[1].reshape(-1)
    if (mass_b <= 0).any():
        raise ValueError("%s must have positive total mass, got sum(%s)=%s"
                         % (nb, nb, np.array2string(mass_b)))
    rtol = mass_tolerance(ah.dtype, bh.dtype)
    worst = float(np.max(np.abs(mass_b - mass_a))) / mass_a
    if worst > rtol:
        raise ValueError(
            "%s and %s must have the same total mass (balanced OT): sum(%s)=%.10g, "
            "sum(%s)=%s (relative difference %.3g > %.1g); normalise them, e.g. "
            "a / a.sum() and b / b.sum()"
            % (na, nb, na, mass_a, nb, np.array2string(mass_b, precision=10), worst, rtol))


def _check_entries(name, x):
    """Name the NaN, infinite or negative entries of weights ``x``."""
    if x.dtype.kind == "f":
        if np.isnan(x).any():
            raise ValueError("%s must hold finite weights, found NaN entries" % name)
        if np.isinf(x).any():
            raise ValueError("%s must hold finite weights, found infinite entries" % name)
    if (x < 0).any():
        raise ValueError("%s must hold non-negative weights, found %g at index %s"
                         % (name, x.min(), np.unravel_index(np.argmin(x), x.shape)[0]))


@functools.lru_cache(maxsize=64)
def mass_tolerance(*dtypes):
    """Relative tolerance of the equal-mass check for weights of ``dtypes``."""
    eps = float(np.finfo(np.result_type(*dtypes, np.float16)).eps)
    # 1000 eps: room for the rounding of n weights; capped for float16
    return max(MASS_RTOL, min(1000 * eps, 1e-2))


def _host_vector(x):
    if _is_listlike(x) or isinstance(x, (numbers.Number, np.generic)):
        return np.asarray(x, dtype=float)
    if isinstance(x, np.ndarray):
        return x
    return get_backend(x).to_numpy(x)


def check_warmstart(warmstart, n, m, n_hists, a=None, b=None, name="warmstart"):
    """``warmstart`` is ``None``, a pair ``(log_u, log_v)`` of shapes (n,),
    (m,), or with several histograms (as in POT) a sequence of ``n_hists``
    such pairs (or ``None``).

    When the weights ``a`` and ``b`` (host or backend arrays) are given, the
    values are checked too: no NaN, no ``+inf``, and finite wherever the
    weight is positive (``-inf`` where a weight is zero, as in the ``log_u``
    returned for zero weights, is accepted).
    """
    if warmstart is None:
        return
    if n_hists:
        if not (_is_listlike(warmstart) and len(warmstart) == n_hists and all(
                w is None or (_is_listlike(w) and len(w) == 2) for w in warmstart)):
            raise TypeError(
                "%s must be None or, with b of shape (%d, %d), a list of %d pairs "
                "(log_u, log_v) or None, one per histogram (as in ot.sinkhorn), got %s"
                % (name, m, n_hists, n_hists, _type_name(warmstart)))
        bh = None if b is None else _host_vector(b)
        for k, w in enumerate(warmstart):
            check_warmstart(w, n, m, 0, a, None if bh is None else bh[:, k],
                            "%s[%d]" % (name, k))
        return
    if not _is_listlike(warmstart) or len(warmstart) != 2:
        raise TypeError("%s must be None or a pair (log_u, log_v), got %s"
                        % (name, _type_name(warmstart)))
    for part, x, size, w in (("log_u", warmstart[0], n, a), ("log_v", warmstart[1], m, b)):
        shape = tuple(x.shape) if hasattr(x, "shape") else np.shape(x)
        if shape != (size,):
            raise ValueError("%s %s must have shape (%d,), got shape %s"
                             % (name, part, size, shape))
        if w is None:
            continue
        xh, wh = _host_vector(x), _host_vector(w)
        if xh.dtype.kind not in "iuf":
            raise TypeError("%s %s must hold real numbers, got dtype %s"
                            % (name, part, xh.dtype))
        if np.isnan(xh).any() or np.isposinf(xh).any():
            raise ValueError("%s %s must not hold NaN or +inf" % (name, part))
        if not np.isfinite(xh[wh > 0]).all():
            raise ValueError("%s %s must be finite where the weights are positive"
                             % (name, part))


def check_problem(a, b, M, reg, numItermax=1000, stopThr=1e-9, warmstart=None,
                  options=None, names=None, caller="sinkhorn_newton_sparse"):
    """Validate a balanced entropic OT problem and convert it to one backend.

    The single entry point used by :func:`pot_sns.sinkhorn_newton_sparse`,
    :func:`pot_sns.sinkhorn_newton_sparse2` and ``ot.solve(..., method="sns")``.
    Cheap checks run first; the only O(nm) check (finiteness of ``M``) runs
    last. Nothing is solved, copied to another device or cast.

    Parameters
    ----------
    a : array-like, shape (dim_a,), list, [] or None
        Source weights; ``[]`` or ``None`` mean uniform.
    b : array-like, shape (dim_b,) or (dim_b, n_hists), list, [] or None
        Target weights; ``[]`` or ``None`` mean uniform.
    M : array-like, shape (dim_a, dim_b)
        Cost matrix.
    reg : float
        Entropic regularization, > 0.
    numItermax : int, optional
        Iteration budget, >= 1.
    stopThr : float, optional
        Stopping threshold, >= 0.
    warmstart : tuple or list, optional
        ``(log_u, log_v)`` or one pair per histogram of ``b``.
    options : dict or SNSOptions, optional
        SNS keyword options, as the solver's ``**kwargs`` (unknown names
        raise ``TypeError``). They are checked first, and the problem
        returned carries them: :func:`pot_sns.api.solve_checked` solves with
        ``p.options``.
    names : dict, optional
        How the caller spells the arguments in messages, e.g.
        ``{"numItermax": "max_iter", "stopThr": "tol",
        "warmstart": "potentials_init"}`` for :func:`ot.solve`.
    caller : str, optional
        Function named in the message about unknown options.

    Returns
    -------
    Problem
        Named tuple ``(nx, a, b, M, reg, numItermax, stopThr, warmstart,
        n_hists, options, cost_range)``.

    Raises
    ------
    TypeError, ValueError
        With a message that starts with the argument's name.

    Examples
    --------
    >>> from pot_sns.validation import check_problem
    >>> p = check_problem([], [], [[0., 1.], [1., 0.]], 0.1)
    >>> p.a, p.n_hists
    (array([0.5, 0.5]), 0)
    >>> p = check_problem([], [], [[0., 1.], [1., 0.]], 0.1, options={"n_sinkhorn": 5})
    >>> p.options.n_sinkhorn
    5
    >>> check_problem([.5, .5], [.5, .5], [[0., 1.], [1., 0.]], -1)
    Traceback (most recent call last):
        ...
    ValueError: reg must be a finite number > 0, got -1.0
    """
    names = dict(DEFAULT_NAMES, **(names or {}))
    opts = check_options(options, caller)
    reg = check_reg(reg, names["reg"])
    numItermax, stopThr = check_iteration_args(
        numItermax, stopThr, (names["numItermax"], names["stopThr"]))
    nx, a, b, M = as_arrays(a, b, M, names)
    check_cost(nx, M, names["M"], values=False)
    n, m = M.shape
    if a is None:
        a = uniform_weights(nx, n, M)
    if b is None:
        b = uniform_weights(nx, m, M)
    check_weights(nx, a, b, M, names)
    n_hists = b.shape[1] if len(b.shape) == 2 else 0
    check_warmstart(warmstart, n, m, n_hists, a, b, names["warmstart"])
    cost_range = None
    if _dtype_kind(nx, M) == "f":
        cost_range = check_cost_values(nx, M, names["M"])
    return Problem(nx, a, b, M, reg, numItermax, stopThr, warmstart, n_hists, opts,
                   cost_range)
