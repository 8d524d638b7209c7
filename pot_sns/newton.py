"""The Newton step of SNS: Hessian block, Newton system, line search.

A Newton step at potentials ``(u, v)`` (see :mod:`pot_sns.objective`):

1. :func:`hessian_block` picks the kept entries of the plan (a threshold
   from the histogram of ``log P``, :mod:`pot_sns.sparsity`) and asks the
   kernel for them as a block ``S``;
2. :func:`newton_direction` solves the sparsified Newton system
   ``[[diag(r + h_a) + s, S], [S^T, diag(c + h_b) + s]] (du, dv) = grad``
   through its Schur complement by Jacobi-preconditioned CG;
3. :func:`line_search` backtracks along ``(du, dv)`` until the dual rises
   enough (Armijo) or the marginal error falls.

:mod:`pot_sns.solver` drives these steps and their safeguards;
:mod:`pot_sns.implicit` reuses :func:`newton_direction` for exact gradients.
"""

import math

import numpy as np

from .cg import pcg
from .sparsity import pick_threshold

#: exponent of the inexact-Newton forcing term: CG solves to a relative
#: residual of (||grad||_1 / mass) ** FORCING, capped by ``cg_rtol``
FORCING = 0.5


def machine_eps(nx, x):
    """Machine epsilon of the dtype of backend array ``x``."""
    return float(np.finfo(nx.to_numpy(x[:1]).dtype).eps)


def norm2(nx, x, y):
    """2-norm of the pair of vectors ``(x, y)``."""
    return math.sqrt(float(nx.sum(x * x)) + float(nx.sum(y * y)))


def all_finite(nx, *arrays):
    """Whether every entry of the arrays is finite."""
    # x * 0 is NaN exactly where x is not finite: one reduction per array
    return all(float(nx.sum(x * 0)) == 0.0 for x in arrays)


def hessian_block(kernel, opts, hist, top, mass, g1, boost, ratio, caps, dense):
    """Kept plan entries for this step's Hessian, as a kernel block.

    Parameters
    ----------
    kernel : pot_sns.kernels.DenseKernel
        Kernel whose buffer holds the plan at the current point.
    opts : pot_sns.SNSOptions
        ``sparsity``, ``max_drop``, ``density``, ``bin_width``.
    hist : tuple of ndarray
        Histogram ``(counts, mass)`` of ``log P`` at the current point.
    top : float
        Top edge of the histogram.
    mass : float
        Scale of the marginals.
    g1 : float
        L1 norm of the gradient.
    boost : float
        Density multiplier raised by the sparsity safeguard.
    ratio : float
        Dropped mass allowed per unit of ``g1`` (``"mass"`` rule).
    caps : tuple of float
        ``(max_density, dense_density)``: the cap on the kept fraction, and
        the kept fraction from which the whole plan is the cheaper block
        (None: never), read from the kernel once per solve.
    dense : bool
        Whether an earlier step switched to the whole plan.

    Returns
    -------
    S : block
        ``matvec``, ``rmatvec``, ``sq_matvec``, ``sq_rmatvec``, ``nnz``.
    dense : bool
        Whether this and every later step keep the whole plan.
    """
    n, m = kernel.shape
    max_density, dense_at = caps
    if opts.sparsity == "mass":
        budget = ("mass", min(opts.max_drop * mass, ratio * g1))
    else:
        dens = opts.density if opts.density is not None else 3.0 / min(n, m)
        budget = ("count", max(1, int(min(1.0, dens * boost) * n * m)))
    max_nnz = max(1, int(min(1.0, max_density * boost) * n * m))
    if not dense:
        tau, kept, _ = pick_threshold(hist, top, opts.bin_width, budget, max_nnz)
        # Past the kernel's dense_density, a sparse copy of the kept entries
        # costs more than mat-vecs with the whole plan: keep everything (the
        # exact Hessian) from then on. The rule's budget only shrinks as the
        # error falls.
        dense = (dense_at is not None and kept > dense_at * n * m
                 and max_nnz >= n * m and opts.sparsity == "mass")
    return kernel.select(0.0 if dense else tau), dense


def newton_direction(nx, S, r, c, ga, gb, shift, rtol, maxiter, rows_first, eps):
    """Solve the sparsified Newton system through its Schur complement.

    The larger block is eliminated so that CG runs on ``min(n, m)`` unknowns:
    ``(diag(r) - S diag(1/c) S^T + shift) du = ga - S (gb / c)``, then
    ``dv = (gb - S^T du) / c`` (or the mirror image when ``n > m``).

    Parameters
    ----------
    nx : ot.backend.Backend
        Backend of the vectors.
    S : block
        Off-diagonal block (kept plan entries), see :func:`hessian_block`.
    r, c : array-like, shapes (n,), (m,)
        Diagonal of the two blocks (the plan's sums plus the objective's
        curvature).
    ga, gb : array-like, shapes (n,), (m,)
        Gradient.
    shift : float
        Added to both diagonals (> 0: keeps the system definite).
    rtol : float
        Relative residual of CG.
    maxiter : int
        CG iterations.
    rows_first : bool
        Run CG on the ``u`` unknowns (``n <= m``).
    eps : float
        Machine epsilon of the dtype (floors of the divisions).

    Returns
    -------
    du, dv : array-like
        Direction.
    n_iter : int
        CG iterations done.
    status : str
        CG status (``"converged"``, ``"maxiter"`` or ``"breakdown"``).

    Examples
    --------
    With every entry kept, the direction solves the shifted Newton system:

    >>> import numpy as np
    >>> from ot.backend import get_backend
    >>> from pot_sns.kernels.base import DenseBlock
    >>> from pot_sns.newton import newton_direction
    >>> P = np.array([[.3, .1], [.1, .5]])
    >>> r, c = P.sum(1), P.sum(0)
    >>> ga, gb = np.array([.1, -.1]), np.array([-.05, .05])
    >>> nx = get_backend(P)
    >>> du, dv, it, status = newton_direction(nx, DenseBlock(nx, P, 4), r, c, ga, gb,
    ...                                       1e-9, 1e-12, 10, True, 2.2e-16)
    >>> H = np.block([[np.diag(r), P], [P.T, np.diag(c)]]) + 1e-9 * np.eye(4)
    >>> status, np.allclose(H @ np.concatenate([du, dv]), np.concatenate([ga, gb]))
    ('converged', True)
    """
    # floors relative to the shift (> 0): the weights' scale is arbitrary
    tiny = shift * eps
    if rows_first:
        cs = nx.maximum(c + shift, tiny)
        diag = nx.maximum(r + shift - S.sq_matvec(1.0 / cs), shift + tiny)

        def op(x):
            return (r + shift) * x - S.matvec(S.rmatvec(x) / cs)

        rhs = ga - S.matvec(gb / cs)
        du, it, status = pcg(nx, op, rhs, diag, rtol, maxiter)
        dv = (gb - S.rmatvec(du)) / cs
    else:
        rs = nx.maximum(r + shift, tiny)
        diag = nx.maximum(c + shift - S.sq_rmatvec(1.0 / rs), shift + tiny)

        def op(y):
            return (c + shift) * y - S.rmatvec(S.matvec(y) / rs)

        rhs = gb - S.rmatvec(ga / rs)
        dv, it, status = pcg(nx, op, rhs, diag, rtol, maxiter)
        du = (ga - S.matvec(dv)) / rs
    return du, dv, it, status


class Trial:
    """A point tried by the line search: potentials, sums, histogram, error,
    dual increase over the start of the search and step length."""

    __slots__ = ("u", "v", "r", "c", "hist", "err", "gain", "t")

    def __init__(self, u, v, r, c, hist, err, gain, t):
        self.u, self.v, self.r, self.c, self.hist = u, v, r, c, hist
        self.err, self.gain, self.t = err, gain, t


def line_search(kernel, objective, opts, u, v, du, dv, sum_r, err, gd, t, slack):
    """Backtracking line search on the dual along ``(du, dv)``.

    A step is accepted when the dual rises by Armijo's fraction of the
    predicted ``t * gd`` (up to ``slack``, the rounding of the plan's total
    mass), or when the marginal error falls without the dual falling.

    Parameters
    ----------
    kernel, objective :
        The problem's kernel and :class:`~pot_sns.objective.Objective`.
    opts : pot_sns.SNSOptions
        ``ls_c1``, ``ls_beta``, ``ls_maxiter``.
    u, v, du, dv : array-like
        Start point and direction.
    sum_r : float
        Total mass of the plan at the start point.
    err : float
        Marginal error at the start point.
    gd : float
        Directional derivative ``<grad, (du, dv)>`` (> 0).
    t : float
        First step length tried.
    slack : float
        Tolerance of the dual comparisons.

    Returns
    -------
    trial : Trial or None
        The accepted point, None when every step was refused.
    n_steps : int
        Index of the last step tried.
    t : float
        Last step length tried.
    """
    nx = kernel.nx
    ls = 0
    for ls in range(opts.ls_maxiter):
        un, vn = u + t * du, v + t * dv
        rn, cn, hn = kernel.evaluate(un, vn, objective.top)
        errn = norm2(nx, objective.row_target(un) - rn, objective.col_target(vn) - cn)
        dL = objective.gain(u, v, du, dv, t) - (float(nx.sum(rn)) - sum_r)
        if math.isfinite(errn) and math.isfinite(dL) and (
                dL >= opts.ls_c1 * t * gd - slack or (errn < err and dL >= -slack)):
            return Trial(un, vn, rn, cn, hn, errn, dL, t), ls, t
        t *= opts.ls_beta
    return None, ls, t
