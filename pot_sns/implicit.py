"""Gradients of the linear loss ``<M, P*>`` by implicit differentiation.

POT's ``sinkhorn2`` (and ``ot.solve``'s ``value_linear``) are differentiated
by autograd through the Sinkhorn iterations, which converges to the
derivative of the loss at the optimal plan ``P*(M, a, b)``. SNS does not
record its iterations; it differentiates the optimality conditions instead.

With ``f, g`` the dual potentials (``P_ij = exp((f_i + g_j - M_ij) / reg)``)
and ``H = [[diag(P1), P], [P^T, diag(P^T1)]]`` (the negative dual Hessian),
a perturbation keeps the marginals when ``H (df, dg) = ((P o dM) 1,
(P o dM)^T 1) + reg (da, db)``. For ``L = <M, P>`` and ``W = M o P`` the
adjoint ``(alpha, beta)``, solution of ``H (alpha, beta) = (W 1, W^T 1)``,
gives

- ``dL/dM = P o (1 + (alpha_i + beta_j - M_ij) / reg)``,
- ``dL/da = alpha``, ``dL/db = beta`` (centred: the masses stay equal).

``H`` is singular along ``(1, -1)`` and the right-hand side is orthogonal to
it; the system is solved through its Schur complement by the solver's own
preconditioned CG (one solve, two dense mat-vecs per iteration).
"""

import math
import warnings

from .newton import machine_eps, newton_direction
from .kernels.base import DenseBlock


def linear_loss_gradients(nx, M, P, reg, rtol=None, maxiter=None):
    """Gradients of ``<M, P*>`` w.r.t. ``M``, ``a`` and ``b`` at the optimum.

    Parameters
    ----------
    nx : ot.backend.Backend
        Backend of the arrays.
    M : array-like, shape (n, m)
        Cost matrix (detached).
    P : array-like, shape (n, m)
        Optimal plan for ``M`` (detached); its marginals are the weights.
    reg : float
        Regularization of the problem ``P`` solves.
    rtol : float, optional
        Relative residual of CG (default: about the dtype's accuracy).
    maxiter : int, optional
        CG iterations (default ``max(200, 2 * min(n, m))``).

    Returns
    -------
    gM : array-like, shape (n, m)
    ga : array-like, shape (n,)
    gb : array-like, shape (m,)
        ``ga`` and ``gb`` centred (mean 0).

    Examples
    --------
    >>> import numpy as np
    >>> from ot.backend import get_backend
    >>> from pot_sns import sinkhorn_newton_sparse
    >>> from pot_sns.implicit import linear_loss_gradients
    >>> M = np.array([[0., 1.], [1., 0.]])
    >>> P = sinkhorn_newton_sparse([.5, .5], [.5, .5], M, 1.0)
    >>> gM, ga, gb = linear_loss_gradients(get_backend(M), M, P, 1.0)
    >>> gM.round(6)  # d<M, P*>/dM_01 = 0.036165, as a finite difference gives
    array([[0.463835, 0.036165],
           [0.036165, 0.463835]])
    """
    n, m = P.shape
    eps = machine_eps(nx, P)
    if rtol is None:
        rtol = max(1e-10, 100 * eps)
    if maxiter is None:
        maxiter = max(200, 2 * min(n, m))
    r, c = nx.sum(P, 1), nx.sum(P, 0)
    W = M * P
    wr, wc = nx.sum(W, 1), nx.sum(W, 0)
    mass = float(nx.sum(r))
    # the smallest shift that keeps CG away from the null direction (1, -1)
    shift = eps * mass / max(n, m)
    alpha, beta, _, status = newton_direction(
        nx, DenseBlock(nx, P, n * m), r, c, wr, wc, shift, rtol, maxiter, n <= m, eps)
    if status != "converged" or not all(
            math.isfinite(float(nx.sum(x))) for x in (alpha, beta)):
        warnings.warn(
            "the gradient of the SNS loss is inaccurate: its linear system did not "
            "converge (%s) in %d CG iterations" % (status, maxiter), UserWarning,
            stacklevel=3)
    gM = P + P * (alpha[:, None] + beta[None, :] - M) / reg
    return gM, alpha - nx.mean(alpha), beta - nx.mean(beta)


def requires_grad(*arrays):
    """Whether any of the arrays is a tensor that records gradients (torch)."""
    return any(bool(getattr(x, "requires_grad", False)) for x in arrays)


def attach(nx, loss, pairs):
    """``loss`` with the gradients of ``pairs`` ``[(input, gradient), ...]``
    set for autograd; inputs that are not tensors are left out."""
    pairs = [(x, g) for x, g in pairs if hasattr(x, "requires_grad")]
    if not pairs:
        return loss
    inputs = tuple(x for x, _ in pairs)
    grads = tuple(g.to(dtype=x.dtype, device=x.device).reshape(x.shape) for x, g in pairs)
    return nx.set_gradients(loss, inputs, grads)
