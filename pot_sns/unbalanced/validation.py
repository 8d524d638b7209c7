"""Argument checks of the unbalanced solvers: clear errors, before any work.

The rules of :mod:`pot_sns.validation` (``TypeError`` for the wrong kind of
object, ``ValueError`` for a wrong shape or value, the argument named first
in the message), with what unbalanced OT changes:

- the masses of ``a`` and ``b`` may differ (no mass check), unless
  ``reg_m`` is infinite on both sides (that is balanced OT);
- ``reg_m`` is a number or a pair, each > 0 (``inf``: a hard marginal);
- ``reg_type`` is ``"kl"`` or ``"entropy"`` and ``unbalanced_type``
  ``"KL"`` (any case); others raise :class:`UnsupportedError`, both a
  ``ValueError`` and a ``NotImplementedError`` (what :func:`ot.solve` raises
  for problems it cannot solve);
- ``c``, POT's reference measure of the KL term, is ``None`` or an array of
  positive finite numbers of ``M``'s shape.
"""

import dataclasses
import math
import numbers
import warnings
from collections import namedtuple

import numpy as np

from .. import validation as base

UProblem = namedtuple(
    "UProblem",
    "nx a b M reg reg_m kl c numItermax stopThr warmstart n_hists options")
UProblem.__doc__ = """Validated unbalanced problem (:func:`check_unbalanced_problem`).

``a``, ``b``, ``M`` (and ``c``, or None) are arrays of the backend ``nx``,
not yet cast nor detached; ``reg_m`` is the pair ``(rho_a, rho_b)`` of
Python floats (``inf`` allowed); ``kl`` is True for ``reg_type="kl"``."""


class UnsupportedError(ValueError, NotImplementedError):
    """A problem SNS does not solve (``reg_type``, ``unbalanced_type``).

    Both a ``ValueError`` (a bad argument value) and a
    ``NotImplementedError`` (what :func:`ot.solve` raises for combinations
    it does not implement), so that either ``except`` catches it.
    """


def _type_name(x):
    t = type(x)
    return t.__name__ if t.__module__ == "builtins" else "%s.%s" % (t.__module__, t.__name__)


def _as_float(x, name):
    """A number or a one-element array as a Python float, else TypeError."""
    if x is None or isinstance(x, (bool, np.bool_, str, bytes)):
        raise TypeError("%s must be a positive number or inf, got %r" % (name, x))
    if isinstance(x, numbers.Real):
        return float(x)
    if hasattr(x, "detach"):
        x = x.detach()  # float() of a torch tensor that requires grad warns
    shape = getattr(x, "shape", None)
    if shape is not None and int(np.prod(tuple(shape))) == 1:
        kind = getattr(getattr(x, "dtype", None), "kind", "f")
        if kind in "iuf":
            return float(np.asarray(x.cpu() if hasattr(x, "cpu") else x).reshape(-1)[0])
    raise TypeError("%s must be a positive number or inf, got %s" % (name, _type_name(x)))


def check_reg_m(reg_m, name="reg_m"):
    """``reg_m`` as the pair ``(rho_a, rho_b)`` of floats, or raise.

    Parameters
    ----------
    reg_m : float or indexable of length 1 or 2
        Marginal relaxation, as in :func:`ot.unbalanced.sinkhorn_unbalanced`:
        a number (both sides), or one or two entries (a list, a tuple or a
        backend array); ``inf`` makes that marginal a hard constraint.
    name : str, optional
        Name of the argument in the messages (``"unbalanced"`` for
        :func:`ot.solve`).

    Returns
    -------
    reg_m : tuple of float
        ``(rho_a, rho_b)``, each > 0 or ``inf``.

    Raises
    ------
    TypeError
        Not a number nor an indexable of numbers.
    ValueError
        A length other than 1 or 2, a NaN, or a value <= 0.

    Examples
    --------
    >>> check_reg_m(0.5)
    (0.5, 0.5)
    >>> check_reg_m([float("inf"), 2])
    (inf, 2.0)
    >>> check_reg_m(-1.0)
    Traceback (most recent call last):
        ...
    ValueError: reg_m must be > 0 (inf for a hard marginal), got -1.0
    """
    shape = getattr(reg_m, "shape", None)
    if isinstance(reg_m, numbers.Real) or (shape is not None and tuple(shape) == ()):
        pair = (_as_float(reg_m, name),) * 2
    elif isinstance(reg_m, (list, tuple)) or shape is not None:
        n = len(reg_m)
        if n not in (1, 2):
            raise ValueError("%s must be a number or a pair (reg_m_a, reg_m_b), got %d "
                             "values" % (name, n))
        values = [_as_float(reg_m[k], "%s[%d]" % (name, k)) for k in range(n)]
        pair = (values[0], values[-1])
    else:
        raise TypeError("%s must be a positive number, inf, or a pair of them, got %s"
                        % (name, _type_name(reg_m)))
    for r in pair:
        if math.isnan(r):
            raise ValueError("%s must not be NaN, got %r" % (name, reg_m))
        if r <= 0:
            raise ValueError("%s must be > 0 (inf for a hard marginal), got %r" % (name, r))
    return pair


def check_reg_type(reg_type, name="reg_type"):
    """True for ``"kl"``, False for ``"entropy"`` (any case); else raise
    :class:`UnsupportedError` naming what SNS supports."""
    if isinstance(reg_type, str) and reg_type.lower() in ("kl", "entropy"):
        return reg_type.lower() == "kl"
    raise UnsupportedError(
        "%s must be 'kl' or 'entropy' (any case) for the SNS unbalanced solver, got %r"
        % (name, reg_type if isinstance(reg_type, str) else _type_name(reg_type)))


def check_unbalanced_type(unbalanced_type, name="unbalanced_type"):
    """Raise :class:`UnsupportedError` unless ``unbalanced_type`` is ``"KL"``."""
    if isinstance(unbalanced_type, str) and unbalanced_type.lower() == "kl":
        return
    raise UnsupportedError(
        "%s must be 'KL' for method='sns' (entropic OT with KL marginal penalties), got "
        "%r; use method=None for POT's solvers of the other divergences"
        % (name, unbalanced_type))


def check_weights(nx, a, b, M, names):
    """Shapes, finiteness, signs and positive total masses of ``a`` and ``b``
    (any masses: no equal-mass check). O(n + m) on host copies."""
    na, nb, nM = names["a"], names["b"], names["M"]
    n, m = M.shape
    if len(a.shape) != 1 or a.shape[0] != n:
        raise ValueError("%s must have shape (%d,) to match %s of shape (%d, %d), got "
                         "shape %s" % (na, n, nM, n, m, tuple(a.shape)))
    if len(b.shape) not in (1, 2) or b.shape[0] != m or (len(b.shape) == 2
                                                           and b.shape[1] == 0):
        raise ValueError("%s must have shape (%d,) or (%d, n_hists) to match %s of shape "
                         "(%d, %d), got shape %s" % (nb, m, m, nM, n, m, tuple(b.shape)))
    for name, x in ((na, nx.to_numpy(a)), (nb, nx.to_numpy(b))):
        if x.dtype.kind not in "biuf":
            raise TypeError("%s must hold real numbers, got dtype %s" % (name, x.dtype))
        if not np.isfinite(x).all():
            raise ValueError("%s must hold finite weights, found %s entries"
                             % (name, "NaN" if np.isnan(x).any() else "infinite"))
        if (x < 0).any():
            raise ValueError("%s must hold non-negative weights, found %g at index %s"
                             % (name, x.min(), np.unravel_index(np.argmin(x), x.shape)[0]))
        masses = x.sum(axis=0, dtype=np.float64).reshape(-1)
        if (masses <= 0).any():
            raise ValueError("%s must have positive total mass, got sum(%s)=%s"
                             % (name, name, np.array2string(masses)))


def check_reference(nx, c, M, kl, name="c"):
    """``c`` (the reference measure of the KL term) checked, or None.

    With ``reg_type="entropy"`` POT replaces ``c`` by ones: it is ignored
    here too, with POT's warning.
    """
    if c is None:
        return None
    if not kl:
        warnings.warn("If reg_type = entropy, then the matrix c is overwritten by the one "
                      "matrix.", UserWarning, stacklevel=4)
        return None
    shape = tuple(getattr(c, "shape", np.shape(c)))
    if shape != tuple(M.shape):
        raise ValueError("%s must have the shape %s of M, got shape %s"
                         % (name, tuple(M.shape), shape))
    if isinstance(c, (list, tuple)):
        c = nx.from_numpy(np.asarray(c, dtype=float), type_as=M)
    ch = nx.to_numpy(nx.detach(c)) if hasattr(c, "shape") else np.asarray(c)
    if ch.dtype.kind not in "biuf" or not np.isfinite(ch).all() or (ch <= 0).any():
        raise ValueError("%s must hold positive finite values (a zero entry would forbid a "
                         "pair, which SNS does not support: use a tiny positive value)" % name)
    return c


def check_unbalanced_problem(a, b, M, reg, reg_m, reg_type="kl", c=None, numItermax=1000,
                             stopThr=1e-6, warmstart=None, options=None, names_given=None,
                             caller="sinkhorn_newton_sparse_unbalanced"):
    """Validate an unbalanced entropic OT problem; convert it to one backend.

    Cheap checks first; the only O(nm) scans (finiteness of ``M``, and of
    ``c`` when given) come last. Nothing is solved, cast or moved.

    Parameters
    ----------
    a, b, M, reg, numItermax, stopThr, warmstart
        As in :func:`pot_sns.validation.check_problem`, without the equal
        mass rule.
    reg_m : float or pair
        See :func:`check_reg_m`.
    reg_type : str
        ``"kl"`` or ``"entropy"``.
    c : array-like, optional
        Reference measure (``reg_type="kl"`` only).
    options : dict or SNSOptions, optional
        SNS keyword options.
    names_given : dict, optional
        How the caller spells the arguments (e.g. ``{"reg_m": "unbalanced",
        "numItermax": "max_iter"}`` for :func:`ot.solve`).
    caller : str, optional
        Function named in the message about unknown options.

    Returns
    -------
    UProblem

    Examples
    --------
    >>> p = check_unbalanced_problem([], [.2, .5], [[0., 1.], [1., 0.]], 0.1, (1., 2.))
    >>> p.a, p.reg_m, p.kl
    (array([0.5, 0.5]), (1.0, 2.0), True)
    """
    names = dict(base.DEFAULT_NAMES, reg_m="reg_m", reg_type="reg_type", c="c")
    names.update(names_given or {})
    opts = base.check_options(options, caller)
    reg = base.check_reg(reg, names["reg"])
    pair = check_reg_m(reg_m, names["reg_m"])
    kl = check_reg_type(reg_type, names["reg_type"])
    numItermax, stopThr = base.check_iteration_args(
        numItermax, stopThr, (names["numItermax"], names["stopThr"]))
    nx, a, b, M = base.as_arrays(a, b, M, names)
    base.check_cost(nx, M, names["M"], values=False)
    n, m = M.shape
    a = base.uniform_weights(nx, n, M) if a is None else a
    b = base.uniform_weights(nx, m, M) if b is None else b
    check_weights(nx, a, b, M, names)
    if math.isinf(pair[0]) and math.isinf(pair[1]):
        _check_equal_masses(nx, a, b, names)
    n_hists = b.shape[1] if len(b.shape) == 2 else 0
    base.check_warmstart(warmstart, n, m, n_hists, a, b, names["warmstart"])
    c = check_reference(nx, c, M, kl, names["c"])
    base.check_cost_values(nx, M, names["M"])
    opts = default_shift(opts, options, reg, pair)
    return UProblem(nx, a, b, M, reg, pair, kl, c, numItermax, stopThr, warmstart,
                    n_hists, opts)


def default_shift(opts, given, reg, reg_m):
    """The options with the unbalanced default of ``shift`` unless the
    caller gave one.

    The Levenberg-Marquardt shift ``shift * max|grad|`` damps the Newton
    steps; the balanced default (1e-3) dwarfs the dual's curvature along
    ``(1, -1)``, ``reg / rho`` times the mass, when ``rho >> reg``: the
    potentials must move by about ``rho / reg`` along that direction when
    the masses differ, and damped steps cover it in hundreds of iterations
    (measured: 400x500, reg=1e-3, rho=1e3, masses 1 and 3: 1128 Newton steps
    with 1e-3, 7 with 1e-5). The shift follows the curvature, within
    ``[1e-5, 1e-3]``.
    """
    if isinstance(given, dict) and "shift" in given:
        return opts
    if given is not None and not isinstance(given, dict):
        return opts  # an SNSOptions object: the caller chose every field
    s = min((reg / r for r in reg_m if not math.isinf(r)), default=None)
    if s is None:
        return opts
    return dataclasses.replace(opts, shift=min(opts.shift, max(1e-5, 10 * s)))


def _check_equal_masses(nx, a, b, names):
    ma = float(nx.to_numpy(a).sum(dtype=np.float64))
    mb = nx.to_numpy(b).sum(axis=0, dtype=np.float64).reshape(-1)
    tol = base.mass_tolerance(nx.to_numpy(a[:1]).dtype, nx.to_numpy(b[:1]).dtype)
    if float(np.max(np.abs(mb - ma))) > tol * ma:
        raise ValueError(
            "%s is infinite on both sides, which is balanced OT: %s and %s must have the "
            "same total mass, got sum(%s)=%.10g, sum(%s)=%s" % (
                names["reg_m"], names["a"], names["b"], names["a"], ma, names["b"],
                np.array2string(mb, precision=10)))
