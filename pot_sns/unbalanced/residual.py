"""A self-certifying optimality residual for unbalanced entropic OT plans.

At the optimum of the KL-penalized problem the plan's marginals determine
the dual potentials: ``P 1 = a exp(-f / rho_a)`` gives
``f = -rho_a log(P 1 / a)`` (and ``g`` likewise), and the plan must then be
``P_ij = c_ij exp((f_i + g_j - M_ij) / reg)``. Rebuilding the plan from the
potentials read off its own marginals and comparing it with the plan is an
oracle that needs no other solver: it is zero exactly at the optimum, and
any plan that is not optimal fails it. For a hard marginal
(``rho = inf``) the potential is the soft c-transform that gives the rebuilt
plan that marginal exactly, so the residual also measures its violation.
"""

import math

import numpy as np


def optimality_residual(M, P, a, b, reg, reg_m, reg_type="kl", c=None):
    """L1 distance between a plan and the optimal plan its marginals imply.

    Parameters
    ----------
    M : array-like, shape (n, m)
        Cost matrix.
    P : array-like, shape (n, m)
        Plan to certify (numpy or torch; computed in float64 on the host).
    a, b : array-like, shapes (n,), (m,)
        Positive weights.
    reg : float
        Entropic regularization.
    reg_m : float or pair
        Marginal relaxations (``inf`` for a hard marginal, not on both sides).
    reg_type : {"kl", "entropy"}, optional
        Regularization: reference ``a b^T`` (or ``c``) or ones.
    c : array-like, shape (n, m), optional
        Custom reference measure (``"kl"`` only).

    Returns
    -------
    residual : float
        ``sum |P* - P|`` with ``P*`` rebuilt from ``P``'s marginals; 0 at the
        optimum.

    Examples
    --------
    >>> import numpy as np, pot_sns
    >>> M = np.array([[0., 1.], [1., 0.]])
    >>> a, b = np.array([.5, .5]), np.array([.3, .9])
    >>> P = pot_sns.sinkhorn_newton_sparse_unbalanced(a, b, M, .1, 1., stopThr=1e-12)
    >>> optimality_residual(M, P, a, b, .1, 1.) < 1e-10
    True
    >>> optimality_residual(M, P * 1.01, a, b, .1, 1.) > 1e-3
    True
    """
    M, P, a, b = (_host(x) for x in (M, P, a, b))
    rho_a, rho_b = (float(r) for r in (reg_m if np.ndim(reg_m) else (reg_m, reg_m)))
    if math.isinf(rho_a) and math.isinf(rho_b):
        raise ValueError("reg_m must be finite on at least one side (balanced OT has no "
                         "potentials to read off the marginals)")
    if c is not None:
        logc = np.log(_host(c))
    elif reg_type.lower() == "kl":
        logc = np.log(a)[:, None] + np.log(b)[None, :]
    else:
        logc = np.zeros_like(M)
    # log P* = log c + (f_i + g_j - M_ij) / reg
    base = logc - M / reg
    with np.errstate(divide="ignore"):
        f = None if math.isinf(rho_a) else -rho_a * np.log(P.sum(1) / a)
        g = None if math.isinf(rho_b) else -rho_b * np.log(P.sum(0) / b)
    if f is None:  # hard row marginal: rows of P* sum to a
        f = -reg * _lse(base + g[None, :] / reg, 1) + reg * np.log(a)
    if g is None:
        g = -reg * _lse(base + f[:, None] / reg, 0) + reg * np.log(b)
    rebuilt = np.exp(base + (f[:, None] + g[None, :]) / reg)
    return float(np.abs(rebuilt - P).sum())


def _lse(x, axis):
    top = x.max(axis=axis, keepdims=True)
    return (top + np.log(np.exp(x - top).sum(axis=axis, keepdims=True))).squeeze(axis)


def _host(x):
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=np.float64)
