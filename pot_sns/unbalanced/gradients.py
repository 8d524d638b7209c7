r"""Gradients of unbalanced OT values at the optimum (envelope and implicit).

SNS does not record its iterations; like :mod:`pot_sns.implicit` for the
balanced problem, it differentiates the optimality conditions instead.

**Envelope.** With ``F`` the objective (generalized KL terms, see
:func:`pot_sns.unbalanced.api.objective_value_of`) and ``F* = min_P F``, the
envelope theorem on the dual gives, at the optimum, ``dF*/dM = P`` and

- ``dF*/da_i = rho_a (1 - exp(-f_i / rho_a)) + [reg_type="kl"] reg (sum(b) - r_i / a_i)``
  (``f_i`` for a hard marginal, ``rho_a = inf``; ``r_i / a_i =
  exp(-f_i / rho_a)``),

and the mirror image for ``b``: the exact gradients of ``ot.solve``'s
``value`` and of the ``"total"`` cost.

**Implicit.** For the linear loss ``L = <M, P*>``, with the solver's
potentials ``(u, v)`` (``P = exp(u_i + v_j - M_ij / reg)``) and the
optimality conditions ``G = (t_a(u) - P 1, t_b(v) - P^T 1) = 0``, let
``W = M o P`` and ``(alpha, beta)`` solve ``H (alpha, beta) = (W 1, W^T 1)``
with ``H = [[diag(r + h_a), P], [P^T, diag(c + h_b)]]`` (definite when a
marginal is relaxed). Then ``dL/dM = P + P o (alpha_i + beta_j - M_ij) /
reg`` and ``dL/da = alpha o dt_a/da``: what POT's autograd through its
Sinkhorn iterations converges to. One CG solve with the full plan, two
dense mat-vecs per iteration.
"""

import math
import warnings

from ..kernels.base import DenseBlock
from ..newton import machine_eps, newton_direction


class Optimum:
    """A solved problem on the support of its weights: what gradients need.

    Parameters
    ----------
    nx : ot.backend.Backend
        Backend.
    M : array-like, shape (n, m)
        Cost matrix (detached, without the reference measure).
    P : array-like, shape (n, m)
        Optimal plan.
    u, v : array-like
        Solver potentials, ``P = exp(u_i + v_j - M_eff_ij / reg)``.
    obj : pot_sns.unbalanced.objective.UnbalancedObjective
        The objective solved (its ``kl`` is False for a custom ``c``).
    kl_ab : bool
        Whether the KL term's reference is ``a b^T`` (its derivative in
        ``a`` and ``b`` enters the gradients).
    """

    def __init__(self, nx, M, P, u, v, obj, kl_ab):
        self.nx, self.M, self.P, self.obj, self.kl_ab = nx, M, P, obj, kl_ab
        self.reg = obj.reg
        self.u, self.v = u, v
        logu, logv = obj.dual_potentials(u, v)
        self.f, self.g = obj.reg * logu, obj.reg * logv
        self.r, self.c = nx.sum(P, 1), nx.sum(P, 0)
        # t / w = exp(-s (u - o)), the optimal marginal over the weight (1 if hard)
        self.qa = obj.row_target(u) / obj.a
        self.qb = obj.col_target(v) / obj.b
        # dt/dw: t = exp(log w - s (u - o)) with o = log w (KL) or 0
        self.dta = self.qa * (1.0 + obj.sa) if obj.kl else self.qa
        self.dtb = self.qb * (1.0 + obj.sb) if obj.kl else self.qb


def envelope(opt):
    """``(dF*/dM, dF*/da, dF*/db)`` at the optimum (see the module notes)."""
    nx, obj = opt.nx, opt.obj
    rho_a, rho_b = obj.reg_m
    mass_a, mass_b = float(nx.sum(obj.a)), float(nx.sum(obj.b))
    ga = opt.f if math.isinf(rho_a) else rho_a * (1.0 - opt.qa)
    gb = opt.g if math.isinf(rho_b) else rho_b * (1.0 - opt.qb)
    if opt.kl_ab:
        ga = ga + opt.reg * (mass_b - opt.qa)
        gb = gb + opt.reg * (mass_a - opt.qb)
    return opt.P, _centred(obj, ga), _centred(obj, gb)


def adjoint(nx, P, dr, dc, wr, wc, rtol=None, maxiter=None):
    """Solve ``[[diag(dr), P], [P^T, diag(dc)]] (alpha, beta) = (wr, wc)`` by
    CG on the Schur complement (the smaller side), with the full plan.

    A tiny shift keeps CG off the null direction ``(1, -1)`` when both
    marginals are hard (the balanced case, whose right-hand sides are
    orthogonal to it).
    """
    n, m = P.shape
    eps = machine_eps(nx, P)
    rtol = max(1e-12, 100 * eps) if rtol is None else rtol
    maxiter = max(200, 2 * min(n, m)) if maxiter is None else maxiter
    shift = eps * float(nx.sum(P)) / max(n, m)
    alpha, beta, _, status = newton_direction(nx, DenseBlock(nx, P, n * m), dr, dc, wr, wc,
                                              shift, rtol, maxiter, n <= m, eps)
    if status != "converged" or not all(
            math.isfinite(float(nx.sum(x))) for x in (alpha, beta)):
        warnings.warn("the gradient of the unbalanced SNS value is inaccurate: its linear "
                      "system did not converge (%s) in %d CG iterations" % (status, maxiter),
                      UserWarning, stacklevel=4)
    return alpha, beta


def _hessian_diagonals(opt):
    ha, hb = opt.obj.curvature(opt.u, opt.v)
    dr = opt.r if ha is None else opt.r + ha
    dc = opt.c if hb is None else opt.c + hb
    return dr, dc


def linear_gradients(opt):
    """Exact gradients of ``<M, P*>`` w.r.t. ``(M, a, b)`` at the optimum.

    ``W = M o P``; with the adjoint ``(alpha, beta)`` of ``(W 1, W^T 1)``:
    ``dL/dM = P o (1 + (alpha_i + beta_j - M_ij) / reg)``,
    ``dL/da = alpha o dt_a/da``, ``dL/db = beta o dt_b/db``.
    """
    nx, P, M = opt.nx, opt.P, opt.M
    W = M * P
    alpha, beta = adjoint(nx, P, *_hessian_diagonals(opt), nx.sum(W, 1), nx.sum(W, 0))
    gM = P + P * (alpha[:, None] + beta[None, :] - M) / opt.reg
    return gM, _centred(opt.obj, alpha * opt.dta), _centred(opt.obj, beta * opt.dtb)


def _centred(obj, g):
    # with two hard marginals the masses are tied: gradients up to a constant
    if math.isinf(obj.reg_m[0]) and math.isinf(obj.reg_m[1]):
        return g - obj.nx.mean(g)
    return g


def outside_envelope(nx, M_rows, v, obj, side, mass_other, kl_ab):
    """Envelope gradient at zero weights (outside the support), from the
    soft c-transform of the other side's potentials.

    Parameters
    ----------
    nx : ot.backend.Backend
    M_rows : array-like, shape (k, m_s)
        Costs (with the reference measure) from the ``k`` zero-weight points
        to the support of the other side, oriented with them as rows.
    v : array-like, shape (m_s,)
        Solver potentials of the other side.
    obj : UnbalancedObjective
    side : {0, 1}
        0 for ``a``'s zero weights, 1 for ``b``'s.
    mass_other : float
        Total mass of the other side's weights.
    kl_ab : bool
        Whether the KL reference is ``a b^T``.

    Returns
    -------
    g : array-like, shape (k,)
        The limit of the envelope gradient as the weight goes to 0 (``-inf``
        for ``reg_type="entropy"``, where the optimal value is not
        differentiable there).
    """
    reg, rho = obj.reg, obj.reg_m[side]
    lse = nx.logsumexp(v[None, :] - M_rows / reg, 1)
    if not obj.kl:
        return lse * 0 - math.inf
    k = obj.ka if side == 0 else obj.kb
    f = -reg * k * lse  # u = log w - k lse: f / reg = -k lse, finite as w -> 0
    q = 1.0 if math.isinf(rho) else nx.exp(-f / rho)
    g = f if math.isinf(rho) else rho * (1.0 - q)
    if kl_ab:
        g = g + reg * (mass_other - q)
    return g
