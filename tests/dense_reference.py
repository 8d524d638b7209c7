"""Exact references for small entropic OT problems, by dense linear algebra.

Independent of pot_sns: no kernel, no sparsified Hessian, no conjugate
gradient. Potentials are in sinkhorn_log's units, the plan is
``P = exp(u_i + v_j - M_ij / reg)``. Meant for ``n + m`` up to a few hundred.
"""

import numpy as np
from scipy.special import logsumexp


def _dual(u, v, a, b, C):
    """Dual objective ``<u, a> + <v, b> - sum(P)`` (in units of ``reg``) and the plan."""
    with np.errstate(over="ignore"):
        P = np.exp(u[:, None] + v[None, :] - C)
    return float(u @ a + v @ b - P.sum()), P


def _solve_scaled(H, g, shift=0.0):
    """``(H + shift * diag(H))^{-1} g`` for the symmetric positive
    semi-definite ``H``, solved in its Jacobi scaling: the weights (the
    diagonal) span many orders of magnitude, and the scaled matrix is far
    better conditioned."""
    s = 1.0 / np.sqrt(np.diag(H))
    Hs = H * s[:, None] * s[None, :]
    Hs[np.diag_indices_from(Hs)] += shift
    return s * np.linalg.solve(Hs, g * s)


def _sweeps(a, b, C, u, v, count):
    """Log-domain Sinkhorn sweeps, ending on the rows (``P 1 = a`` after)."""
    la, lb = np.log(a), np.log(b)
    for _ in range(count):
        v = lb - logsumexp(u[:, None] - C, axis=0)
        u = la - logsumexp(v[None, :] - C, axis=1)
    return u, v


def _l1(P, a, b):
    return float(np.abs(P.sum(1) - a).sum() + np.abs(P.sum(0) - b).sum())


class NotConverged(AssertionError):
    """The reference missed its tolerance: it is no reference, and a test
    must neither pass nor fail on it."""


def dual_newton(a, b, M, reg, tol=1e-12, max_iter=200, n_sweeps=20):
    """Optimal plan and potentials by Newton's method on the dense dual.

    ``n_sweeps`` log-domain Sinkhorn sweeps give the start; then each
    iteration makes one sweep and one damped Newton step (Armijo
    backtracking on the concave dual) that solves the full ``(n + m)``
    Hessian system with ``numpy.linalg.solve``, the last potential held
    fixed (the dual is invariant along ``(1, -1)``). Newton converges
    quadratically: the marginals end at rounding level.

    The result certifies itself: a plan ``exp(u_i + v_j - M_ij / reg)`` with
    the marginals ``a`` and ``b`` is the optimum (the optimality conditions
    hold), so the marginal check at the end is all the trust it needs.

    Parameters
    ----------
    a, b : ndarray, shapes (n,), (m,)
        Positive weights of equal mass.
    M : ndarray, shape (n, m)
        Costs.
    reg : float
        Entropic regularization.
    tol : float
        Largest L1 marginal error, relative to the mass.
    max_iter : int
        Newton steps allowed.
    n_sweeps : int
        Sinkhorn sweeps before the first Newton step.

    Returns
    -------
    P : ndarray, shape (n, m)
    u, v : ndarray, shapes (n,), (m,)

    Raises
    ------
    NotConverged
        When the L1 marginal error does not reach ``tol`` (relative to the
        mass) within ``max_iter`` iterations.
    """
    n, m = M.shape
    C = M / reg
    u, v = np.zeros(n), np.zeros(m)
    mass = float(a.sum())
    for _ in range(max_iter):
        # a sweep first (it never lowers the dual): the rows are then exact,
        # so no row of the plan has underflowed and H's diagonal is positive
        u, v = _sweeps(a, b, C, u, v, n_sweeps)
        n_sweeps = 1
        value, P = _dual(u, v, a, b, C)
        r, c = P.sum(1), P.sum(0)
        g = np.concatenate([a - r, b - c])
        err = float(np.abs(g).sum())
        if err <= tol * mass:
            return P, u, v
        H = np.block([[np.diag(r), P], [P.T, np.diag(c)]])
        # v[-1] held fixed: drop its row and column (H is then definite)
        d = np.zeros(n + m)
        # a Levenberg-Marquardt shift, relative and shrinking with the error:
        # far from the optimum at small reg the plan splits into blocks and H
        # is nearly singular; near it, Newton's quadratic convergence is kept
        d[:-1] = _solve_scaled(H[:-1, :-1], g[:-1], err / mass)
        gd, t = float(g @ d), 1.0
        # near the optimum the dual's rise (~ err^2) is below its rounding:
        # a step that lowers the error and keeps the dual (to rounding) is taken
        noise = 1e-13 * (abs(value) + mass)
        while t > 1e-10:
            un, vn = u + t * d[:n], v + t * d[n:]
            new, Pn = _dual(un, vn, a, b, C)
            if np.isfinite(new) and (new >= value + 1e-4 * t * gd or (
                    new >= value - noise and _l1(Pn, a, b) < err)):
                break
            t *= 0.5
        else:
            break  # no ascent left: the rounding floor, above tol
        u, v = un, vn
    raise NotConverged("dense Newton reference did not converge: L1 marginal error %g > %g"
                       % (err, tol * mass))


def linear_loss_gradients(P, M, reg):
    """Gradients of ``<M, P*>`` w.r.t. ``M``, ``a`` and ``b`` at the optimum.

    Implicit differentiation of the optimality conditions
    ``P 1 = a``, ``P^T 1 = b`` with ``P = exp(u_i + v_j - M_ij / reg)``:
    one dense adjoint solve with the full ``(n + m)`` Hessian
    ``H = [[diag(P 1), P], [P^T, diag(P^T 1)]]``, whose null direction
    ``(1, -1)`` is removed by holding the last potential fixed.

    With ``L = <M, P>``, ``dL = <P - P * M / reg, dM> + <w, (du, dv)>`` where
    ``w = ((P * M) 1, (P * M)^T 1)``, and ``H (du, dv) = (da + (P * dM) 1 / reg,
    db + (P * dM)^T 1 / reg)``. The adjoint ``H lam = w`` gives
    ``dL/da = lam_u``, ``dL/db = lam_v`` and
    ``dL/dM = P * (1 - M / reg) + P * (lam_u_i + lam_v_j) / reg``.

    Parameters
    ----------
    P : ndarray, shape (n, m)
        Optimal plan, to rounding level (see :func:`dual_newton`).
    M : ndarray, shape (n, m)
    reg : float

    Returns
    -------
    gM : ndarray, shape (n, m)
    ga, gb : ndarray, shapes (n,), (m,)
        Defined up to ``(ga + t, gb - t)``: compare them centred.
    """
    n, m = M.shape
    r, c = P.sum(1), P.sum(0)
    H = np.block([[np.diag(r), P], [P.T, np.diag(c)]])
    PM = P * M
    w = np.concatenate([PM.sum(1), PM.sum(0)])
    lam = np.zeros(n + m)
    lam[:-1] = _solve_scaled(H[:-1, :-1], w[:-1])
    # the dropped equation holds too: w is orthogonal to the null direction
    np.testing.assert_allclose(H[-1] @ lam, w[-1], rtol=1e-8, atol=1e-12 * abs(w).max())
    ga, gb = lam[:n], lam[n:]
    gM = P * (1.0 - M / reg) + P * (ga[:, None] + gb[None, :]) / reg
    return gM, ga, gb
