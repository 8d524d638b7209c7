"""Argument checks at the public boundary: clear errors that name the argument.

Every check here is O(n + m) except the finiteness check of ``M`` (one pass),
and all of them run before any heavy work.
"""

import math
import numbers

import numpy as np


def _host(nx, x):
    return nx.to_numpy(x)


def check_reg(reg):
    """Return ``reg`` as a positive finite float or raise."""
    if isinstance(reg, bool) or reg is None:
        raise TypeError("reg must be a positive number, got %r" % (reg,))
    try:
        value = float(reg)
    except (TypeError, ValueError):
        raise TypeError("reg must be a positive number, got %r" % (reg,)) from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError("reg must be a finite number > 0, got %r" % (value,))
    return value


def check_iteration_args(numItermax, stopThr):
    """Validate the iteration budget and the stopping threshold."""
    if isinstance(numItermax, bool) or not isinstance(numItermax, numbers.Integral):
        raise TypeError("numItermax must be an integer >= 1, got %r" % (numItermax,))
    if numItermax < 1:
        raise ValueError("numItermax must be an integer >= 1, got %r" % (numItermax,))
    if isinstance(stopThr, bool) or not isinstance(stopThr, numbers.Real):
        raise TypeError("stopThr must be a number >= 0, got %r" % (stopThr,))
    if not (stopThr >= 0 and math.isfinite(stopThr)):
        raise ValueError("stopThr must be a finite number >= 0, got %r" % (stopThr,))


def check_cost(nx, M):
    """``M`` must be a 2-D array of finite numbers."""
    if len(M.shape) != 2:
        raise ValueError("M must be a 2-D cost matrix, got shape %s" % (tuple(M.shape),))
    if M.shape[0] == 0 or M.shape[1] == 0:
        raise ValueError("M must not be empty, got shape %s" % (tuple(M.shape),))
    kind = _host(nx, M[:1, :1]).dtype.kind
    if kind not in "biuf":
        raise TypeError("M must hold real numbers, got dtype %s" % _host(nx, M[:1, :1]).dtype)
    if kind == "f":
        # reductions in the backend: no host copy of a device array
        if bool(nx.any(nx.isnan(M))):
            raise ValueError("M must hold finite costs, found NaN entries")
        if bool(nx.any(nx.isinf(M))):
            raise ValueError("M must hold finite costs, found infinite entries")


def check_weights(nx, a, b, M):
    """Shapes of ``a`` (n,), ``b`` (m,) or (m, k) against ``M``; values >= 0,
    finite, with positive and equal mass (relative tolerance)."""
    n, m = M.shape
    if len(a.shape) != 1 or a.shape[0] != n:
        raise ValueError(
            "a must have shape (%d,) to match M of shape (%d, %d), got %s"
            % (n, n, m, tuple(a.shape)))
    if len(b.shape) not in (1, 2) or b.shape[0] != m:
        raise ValueError(
            "b must have shape (%d,) or (%d, n_hists) to match M of shape (%d, %d), got %s"
            % (m, m, n, m, tuple(b.shape)))
    ah, bh = _host(nx, a), _host(nx, b)
    for name, x in (("a", ah), ("b", bh)):
        if x.dtype.kind not in "biuf":
            raise TypeError("%s must hold real numbers, got dtype %s" % (name, x.dtype))
        if not np.isfinite(x).all():
            raise ValueError("%s must hold finite weights, found NaN or infinite entries" % name)
        if (x < 0).any():
            raise ValueError("%s must hold non-negative weights, found %g" % (name, x.min()))
    mass_a = float(ah.sum())
    if mass_a <= 0:
        raise ValueError("a must have positive total mass, got %g" % mass_a)
    mass_b = bh.sum(axis=0).astype(np.float64).reshape(-1)
    if (mass_b <= 0).any():
        raise ValueError("b must have positive total mass, got %s" % mass_b)
    eps = np.finfo(np.result_type(ah.dtype, bh.dtype, np.float32)).eps
    rtol = max(1e-6, 1000 * eps)
    worst = float(np.max(np.abs(mass_b - mass_a))) / mass_a
    if worst > rtol:
        raise ValueError(
            "a and b must have the same total mass (balanced OT): sum(a)=%.10g, "
            "sum(b)=%s (relative difference %.3g > %.1g)"
            % (mass_a, np.array2string(mass_b, precision=10), worst, rtol))


def check_warmstart(warmstart, n, m, n_hists):
    """``warmstart`` is ``None``, a pair ``(log_u, log_v)``, or with several
    histograms (as in POT) a sequence of ``n_hists`` such pairs or ``None``."""
    if warmstart is None:
        return
    if n_hists:
        if not isinstance(warmstart, (tuple, list)) or len(warmstart) != n_hists:
            raise TypeError(
                "warmstart must be None or a list of %d pairs (log_u, log_v), one per "
                "histogram of b" % n_hists)
        for w in warmstart:
            check_warmstart(w, n, m, 0)
        return
    if not isinstance(warmstart, (tuple, list)) or len(warmstart) != 2:
        raise TypeError("warmstart must be None or a pair (log_u, log_v)")
    want = ((n,), (m,))
    for name, x, shape in (("log_u", warmstart[0], want[0]), ("log_v", warmstart[1], want[1])):
        if tuple(getattr(x, "shape", np.shape(x))) != shape:
            raise ValueError(
                "warmstart %s must have shape %s, got %s"
                % (name, shape, tuple(getattr(x, "shape", np.shape(x)))))
