"""Public unbalanced solvers, with the signatures of :mod:`ot.unbalanced`'s Sinkhorn."""

import warnings

import numpy as np

from .. import implicit
from ..api import DIAGNOSTICS, _cast, _embed, _embed_solution, _support
from ..kernels import make_kernel
from ..solver import solve
from . import gradients
from .objective import UnbalancedObjective
from .validation import check_unbalanced_problem

NOT_CONVERGED = (
    "Unbalanced SNS did not converge (gradient norm {err:.3g} > stopThr {thr:.3g}). You "
    "might want to increase the number of iterations `numItermax` or the regularization "
    "parameter `reg`."
)

#: log keys with one entry per solve, merged into lists for several histograms


def sinkhorn_newton_sparse_unbalanced(a, b, M, reg, reg_m, reg_type="kl", c=None,
                                      warmstart=None, numItermax=1000, stopThr=1e-6,
                                      verbose=False, log=False, warn=True, **kwargs):
    r"""Solve unbalanced entropic OT with the Sinkhorn-Newton-Sparse algorithm.

    Same problem, arguments and outputs as
    :func:`ot.unbalanced.sinkhorn_unbalanced` (every argument but ``method``):

    .. math::
        \gamma = \mathop{\arg \min}_{\gamma \geq 0} \ \langle \gamma, \mathbf{M} \rangle_F
        + \mathrm{reg} \cdot \Omega(\gamma)
        + \mathrm{reg_{m1}} \cdot \mathrm{KL}(\gamma \mathbf{1}, \mathbf{a})
        + \mathrm{reg_{m2}} \cdot \mathrm{KL}(\gamma^T \mathbf{1}, \mathbf{b})

    with :math:`\Omega(\gamma) = \mathrm{KL}(\gamma, \mathbf{c})`
    (``reg_type="kl"``, :math:`\mathbf{c} = \mathbf{a}\mathbf{b}^T` by default)
    or :math:`\sum_{ij} \gamma_{ij} (\log \gamma_{ij} - 1)` (``"entropy"``)
    and the generalized KL divergence. Log-domain Sinkhorn sweeps (damped
    by :math:`\mathrm{reg_m} / (\mathrm{reg_m} + \mathrm{reg})`), with
    epsilon scaling at small ``reg``, are followed by Newton steps on the
    dual with a sparsified Hessian [1]_; the marginal penalties add a
    positive diagonal to it, which makes the Newton systems better
    conditioned than in the balanced case. Converges at regularizations
    where POT's unbalanced Sinkhorn solvers underflow or diverge.

    Parameters
    ----------
    a : array-like, shape (dim_a,)
        Unnormalized source histogram (``[]``: uniform ``1 / dim_a``).
    b : array-like, shape (dim_b,) or (dim_b, n_hists)
        Unnormalized target histogram(s) (``[]``: uniform). With several
        histograms the linear costs are returned.
    M : array-like, shape (dim_a, dim_b)
        Cost matrix.
    reg : float
        Entropic regularization, > 0.
    reg_m : float or indexable of length 1 or 2
        Marginal relaxation ``(reg_m1, reg_m2)``, each > 0; ``float("inf")``
        makes that marginal a hard constraint (``inf`` on one side is
        semi-relaxed OT, on both balanced OT, which needs equal masses).
    reg_type : {"kl", "entropy"}, optional
        Regularization term (any case), as in POT (default ``"kl"``).
    c : array-like, shape (dim_a, dim_b), optional
        Reference measure of the KL term (positive entries); ignored, with
        POT's warning, for ``reg_type="entropy"``.
    warmstart : tuple of arrays, shapes (dim_a,), (dim_b,), optional
        Initial potentials ``(logu, logv)`` in POT's convention (the
        ``logu``, ``logv`` of a previous log, i.e. ``f / reg``, ``g / reg``);
        one pair per histogram with several. Skips the Sinkhorn warm-up.
    numItermax : int, optional
        Largest number of iterations (Sinkhorn sweeps and Newton steps).
    stopThr : float, optional
        Stop when the 2-norm of the dual gradient, the violation of the
        optimality conditions ``P 1 = a exp(-f / reg_m1)``,
        ``P^T 1 = b exp(-g / reg_m2)``, is below this threshold.
    verbose : bool, optional
        Print a progress table.
    log : bool, optional
        Also return a dict of diagnostics.
    warn : bool, optional
        Warn (``UserWarning``) when ``stopThr`` was not reached.
    **kwargs
        SNS options, see :class:`pot_sns.SNSOptions`; unknown names raise
        ``TypeError``.

    Returns
    -------
    gamma : array-like, shape (dim_a, dim_b)
        Optimal plan (the linear costs ``<gamma_k, M>`` with several
        histograms), in the backend, dtype and device of the inputs.
    log : dict
        Only when ``log=True``: POT's keys ``err`` (gradient norm per
        iteration), ``logu``, ``logv`` (``f / reg``, ``g / reg``, ``-inf`` at
        zero weights), ``cost`` (``<gamma, M>``) and ``total_cost`` (the
        objective, see :func:`~pot_sns.unbalanced.api.objective_value_of`),
        and SNS's
        ``niter``, ``n_sinkhorn``, ``n_newton``, ``status``, ... (lists with
        several histograms, whose ``logu``, ``logv`` have one column each).

    Raises
    ------
    ValueError
        ``reg_m`` <= 0, NaN or of a wrong length, negative or non-finite
        weights, an unsupported ``reg_type``, ... (the argument named), before
        any work.

    Notes
    -----
    With several histograms POT's Sinkhorn solves the ``"entropy"`` problem
    whatever ``reg_type``; SNS solves the one asked for.

    Examples
    --------
    >>> import numpy as np, pot_sns
    >>> a = [.5, .5]
    >>> b = [.5, .5]
    >>> M = [[0., 1.], [1., 0.]]
    >>> np.round(pot_sns.sinkhorn_newton_sparse_unbalanced(a, b, M, 1., 1.), 5)
    array([[0.32205, 0.11848],
           [0.11848, 0.32205]])

    References
    ----------
    .. [1] X. Tang, M. Shavlovsky, H. Rahmanian, E. Tardini, K. K. Thekumparampil,
       T. Xiao, L. Ying. Accelerating Sinkhorn Algorithm with Sparse Newton
       Iterations. ICLR 2024.
    """
    p = check_unbalanced_problem(a, b, M, reg, reg_m, reg_type, c, numItermax, stopThr,
                                 warmstart, options=kwargs)
    if p.n_hists:
        res, out = _solve_hists(p, verbose, warn, "linear")
        return (res, out) if log else res
    sol = solve_unbalanced_checked(p, verbose, warn)
    if not log:
        return sol.plan
    lg = dict(sol.log)
    lg["cost"], lg["total_cost"] = objective_value(sol)
    return sol.plan, lg


def sinkhorn_newton_sparse_unbalanced2(a, b, M, reg, reg_m, reg_type="kl", c=None,
                                       warmstart=None, returnCost="linear", numItermax=1000,
                                       stopThr=1e-6, verbose=False, log=False, warn=True,
                                       **kwargs):
    r"""Unbalanced entropic OT loss with the Sinkhorn-Newton-Sparse solver.

    Mirrors :func:`ot.unbalanced.sinkhorn_unbalanced2` (every argument but
    ``method``); see :func:`sinkhorn_newton_sparse_unbalanced` for the
    problem and the arguments.

    Parameters
    ----------
    a, b, M, reg, reg_m, reg_type, c, warmstart, numItermax, stopThr, verbose, log, warn
        See :func:`sinkhorn_newton_sparse_unbalanced`.
    returnCost : {"linear", "total"}, optional
        ``"linear"``: :math:`\langle \gamma^*, \mathbf{M} \rangle_F`;
        ``"total"``: the objective (generalized KL terms, see
        :func:`~pot_sns.unbalanced.api.objective_value_of`; POT's Sinkhorn
        returns a sum that vanishes at the optimum), also with several
        histograms.
    **kwargs
        SNS options (:class:`pot_sns.SNSOptions`).

    Returns
    -------
    ot_cost : float or array-like, shape (n_hists,)
        The cost(s), in the backend of the inputs. When ``M``, ``a`` or
        ``b`` record gradients (torch), so does the cost: its exact
        derivative at the optimum (:mod:`pot_sns.unbalanced.gradients`:
        implicit differentiation for ``"linear"``, the envelope theorem for
        ``"total"``), what autograd through converged iterations gives.
    log : dict
        Only when ``log=True``; see :func:`sinkhorn_newton_sparse_unbalanced`.

    Examples
    --------
    >>> import numpy as np, pot_sns
    >>> a = [.5, .10]
    >>> b = [.5, .5]
    >>> M = [[0., 1.], [1., 0.]]
    >>> cost = pot_sns.sinkhorn_newton_sparse_unbalanced2(a, b, M, 1., 1., stopThr=1e-12)
    >>> round(float(cost), 8)  # POT's default stopThr stops at 0.19600125
    0.19600123
    """
    if returnCost not in ("linear", "total"):
        raise ValueError("returnCost must be 'linear' or 'total', got %r" % (returnCost,))
    p = check_unbalanced_problem(a, b, M, reg, reg_m, reg_type, c, numItermax, stopThr,
                                 warmstart, options=kwargs,
                                 caller="sinkhorn_newton_sparse_unbalanced2")
    if p.n_hists:
        res, out = _solve_hists(p, verbose, warn, returnCost)
        return (res, out) if log else res
    sol = solve_unbalanced_checked(p, verbose, warn)
    cost = _cost(sol, returnCost)
    if not log:
        return cost
    lg = dict(sol.log)
    lg["cost"], lg["total_cost"] = objective_value(sol)
    return cost, lg


def _cost(sol, returnCost, hist=None):
    """The linear or total cost of a solution, with its exact gradients
    attached when the caller's arrays record them (torch)."""
    linear, total = objective_value(sol)
    cost = linear if returnCost == "linear" else total
    if not implicit.requires_grad(*sol.given):
        return cost
    opt = sol.optimum()
    grads = (gradients.linear_gradients(opt) if returnCost == "linear"
             else gradients.envelope(opt))
    gM, ga, gb = sol.full_gradients(grads, envelope_outside=returnCost != "linear")
    M0, a0, b0 = sol.given
    nx = sol.nx
    if hist is not None:
        gb = nx.stack([gb if k == hist else gb * 0 for k in range(b0.shape[1])], 1)
    return implicit.attach(nx, cost, [(M0, gM), (a0, ga), (b0, gb)])


def _solve_hists(p, verbose, warn, returnCost):
    """One problem per column of ``b``: the costs and a merged log."""
    starts = p.warmstart if p.warmstart is not None else [None] * p.n_hists
    costs, logs = [], []
    for k in range(p.n_hists):
        pk = p._replace(b=p.b[:, k], n_hists=0, warmstart=starts[k])
        sol = solve_unbalanced_checked(pk, verbose, warn, given_b=p.b)
        costs.append(_cost(sol, returnCost, hist=k))
        logs.append(sol.log)
    nx = p.nx
    out = {"err": [lg["err"] for lg in logs],
           "logu": nx.stack([lg["logu"] for lg in logs], 1),
           "logv": nx.stack([lg["logv"] for lg in logs], 1)}
    for key in DIAGNOSTICS:
        out[key] = [lg[key] for lg in logs]
    return nx.stack(costs), out


class Solution:
    """One solved problem: the plan and POT's potentials on the full index
    sets, the solver's log, and what the gradients need (the problem on the
    support of the weights).

    Attributes
    ----------
    plan, log : the results (``log`` without ``cost`` and ``total_cost``).
    given : the caller's ``(M, a, b)``, which may record gradients.
    M, a, b, c : the detached full problem (``c`` None unless custom).
    ia, ib : indices of the positive weights.
    Ms, Ms_eff, Ps, u, v, obj : the problem solved on the support (costs
        without and with the reference measure), its plan, the solver's
        potentials and the objective.
    kl_ab : whether the KL term's reference is ``a b^T``.
    """

    def __init__(self, nx, **fields):
        self.nx = nx
        self.__dict__.update(fields)

    def optimum(self):
        """The :class:`~pot_sns.unbalanced.gradients.Optimum` on the support."""
        return gradients.Optimum(self.nx, self.Ms, self.Ps, self.u, self.v, self.obj,
                                 self.kl_ab)

    def full_gradients(self, grads, envelope_outside=True):
        """Gradients on the support, embedded in the full index sets; at zero
        weights the envelope's limit (see
        :func:`~pot_sns.unbalanced.gradients.outside_envelope`), or 0 for the
        linear loss."""
        nx, ia, ib, obj = self.nx, self.ia, self.ib, self.obj
        gM, ga, gb = grads
        n, m = self.M.shape
        if len(ia) == n and len(ib) == m:
            return gM, ga, gb
        gM = _embed(nx, gM, ia, ib, (n, m))
        out_a = np.setdiff1d(np.arange(n), ia)
        out_b = np.setdiff1d(np.arange(m), ib)
        fill_a = fill_b = None
        if envelope_outside:
            M_eff = self.M if self.c is None else self.M - obj.reg * nx.log(self.c)
            ta, tb = nx.from_numpy(ia), nx.from_numpy(ib)
            if len(out_a):
                rows = M_eff[nx.from_numpy(out_a)][:, tb]
                fill_a = gradients.outside_envelope(nx, rows, self.v, obj, 0,
                                                    float(nx.sum(obj.b)), self.kl_ab)
            if len(out_b):
                cols = M_eff[ta][:, nx.from_numpy(out_b)].T
                fill_b = gradients.outside_envelope(nx, cols, self.u, obj, 1,
                                                    float(nx.sum(obj.a)), self.kl_ab)
        else:
            warnings.warn("the gradient of the linear cost w.r.t. zero weights is not "
                          "computed (set to 0)", UserWarning, stacklevel=4)
        ga = _embed(nx, ga, ia, None, (n,), values=(out_a, fill_a))
        gb = _embed(nx, gb, ib, None, (m,), values=(out_b, fill_b))
        if envelope_outside and not obj.kl:
            # with a reference measure that does not vanish with the weight
            warnings.warn("the gradients w.r.t. zero weights are -inf with "
                          "reg_type='entropy' or a custom c (the optimal value is not "
                          "differentiable there); reg_type='kl' gives finite ones",
                          UserWarning, stacklevel=4)
        return gM, ga, gb


def solve_unbalanced_checked(p, verbose=False, warn=True, given_b=None):
    """Solve a one-histogram problem that
    :func:`~pot_sns.unbalanced.validation.check_unbalanced_problem` checked.

    Parameters
    ----------
    p : pot_sns.unbalanced.validation.UProblem
        The checked problem (``p.n_hists == 0``).
    verbose, warn : bool, optional
        See :func:`sinkhorn_newton_sparse_unbalanced`.
    given_b : array-like, optional
        The caller's whole ``b`` when ``p`` is one of its histograms.

    Returns
    -------
    Solution
        ``plan`` and ``log`` (without ``cost`` and ``total_cost``, see
        :func:`objective_value`).
    """
    nx = p.nx
    given = (p.M, p.a, p.b if given_b is None else given_b)
    M, a, b, c = _promote(nx, p.M, p.a, p.b, p.c)
    ia, ib, full = _support(nx, a, b)
    ta, tb = nx.from_numpy(ia), nx.from_numpy(ib)
    Ms, As, Bs = (M, a, b) if full else (M[ta][:, tb], a[ta], b[tb])
    Cs = c if (c is None or full) else c[ta][:, tb]
    if all(np.isinf(p.reg_m)):
        # balanced OT: masses equal up to rounding (checked); make them exact
        Bs = Bs * (nx.sum(As) / nx.sum(Bs))
    # a custom reference c is the entropy form with the cost M - reg log c
    Ms_eff = Ms if Cs is None else Ms - p.reg * nx.log(Cs)
    kl_ab = p.kl and c is None
    obj = UnbalancedObjective(nx, As, Bs, p.reg, p.reg_m, kl=kl_ab)
    ws = p.warmstart
    if ws is not None:
        ws = tuple(_cast(nx, w, a) for w in ws)
        ws = obj.solver_potentials(*(ws if full else (ws[0][ta], ws[1][tb])))
    kernel = make_kernel(nx, Ms_eff, p.reg, p.options.bin_width, p.options.n_bins)
    res = solve(kernel, obj, p.options, p.numItermax, p.stopThr, ws, verbose)
    Ps = res.P if res.P is not None else kernel.plan(res.u, res.v)
    logu, logv = obj.dual_potentials(res.u, res.v)
    P = Ps
    if not full:
        P, logu, logv = _embed_solution(nx, Ps, logu, logv, ia, ib, M.shape)
    if res.status != "converged" and warn:
        warnings.warn(NOT_CONVERGED.format(err=res.err, thr=p.stopThr), UserWarning,
                      stacklevel=4)
    lg = {"err": res.errs, "logu": logu, "logv": logv}
    lg.update((key, getattr(res, key)) for key in DIAGNOSTICS)
    return Solution(nx, plan=P, log=lg, given=given, M=M, a=a, b=b, c=c, ia=ia, ib=ib,
                    Ms=Ms, Ms_eff=Ms_eff, Ps=Ps, u=res.u, v=res.v, obj=obj, kl_ab=kl_ab)


def objective_value(sol):
    """``(cost, total_cost)`` of a :class:`Solution`; see :func:`objective_value_of`."""
    return objective_value_of(sol.nx, sol.M, sol.plan, sol.a, sol.b, sol.c, sol.obj.reg,
                              sol.obj.reg_m, sol.kl_ab)


def objective_value_of(nx, M, P, a, b, c, reg, reg_m, kl_ab):
    """The linear cost ``<M, P>`` and the objective of unbalanced entropic OT.

    ``total = <M, P> + reg R(P) + rho_a KL(P 1 | a) + rho_b KL(P^T 1 | b)``
    with generalized KL divergences (``KL(p | q) = sum p log(p / q) - p +
    q``), ``R(P) = KL(P | c)`` (``c = a b^T`` or the custom ``c``) or
    ``sum P (log P - 1)`` (``"entropy"``), as POT's L-BFGS-B solver
    defines it. Terms of an infinite ``reg_m`` are left out, and
    ``0 log 0 = 0`` where weights are zero.

    POT's Sinkhorn solvers compute their ``total_cost`` with ``kl_div``
    without its mass terms: that sum vanishes at the optimum, whatever the
    problem (``<M, P> + sum P (f + g - M) - <P 1, f> - <P^T 1, g> = 0``), so
    it is not returned here.

    Parameters
    ----------
    nx : ot.backend.Backend
    M, P : array-like, shape (n, m)
        Costs (without the reference measure) and plan.
    a, b : array-like, shapes (n,), (m,)
        Weights.
    c : array-like or None
        Custom reference measure of the KL term.
    reg : float
    reg_m : tuple of float
    kl_ab : bool
        Whether the KL reference is ``a b^T`` (``reg_type="kl"``, no ``c``).

    Returns
    -------
    cost, total_cost : backend scalars
    """
    linear = nx.sum(M * P)
    if c is None and not kl_ab:  # entropy
        total = linear + reg * (nx.sum(P * nx.log(P + 1e-16)) - nx.sum(P))
    else:
        ref = c if c is not None else a[:, None] * b[None, :]
        total = linear + reg * (_kl(nx, P, ref) - nx.sum(P) + nx.sum(ref))
    for rho, marg, w in ((reg_m[0], nx.sum(P, 1), a), (reg_m[1], nx.sum(P, 0), b)):
        if not np.isinf(rho):
            total = total + rho * (_kl(nx, marg, w) + nx.sum(w - marg))
    return linear, total


def _kl(nx, p, q):
    """POT's ``kl_div(p, q)`` (``sum p log(p / q + 1e-16)``, no mass terms)
    with ``0 log 0 = 0``: no NaN where ``p = q = 0``."""
    q = nx.where(p > 0, q, q * 0 + 1)
    return nx.sum(p * nx.log(p / q + 1e-16))


def _promote(nx, M, a, b, c):
    """Detached arrays in POT's common float dtype (that of ``M``, ``a``, ``b``)."""
    M, a, b = nx.detach(M, a, b)
    probe = M[:1, 0] * 0 + a[:1] * 0 + nx.reshape(b, (-1,))[:1] * 0
    if not nx.is_floating_point(probe):
        probe = probe * 1.0
    dtype = nx.dtype_device(probe)[0]
    # probe[:1], not probe[0]: torch (and cupy) do not promote on 0-d operands
    M, a, b = (x if nx.dtype_device(x)[0] == dtype else x + probe[:1] for x in (M, a, b))
    if c is not None:
        c = nx.detach(c)
        c = c if nx.dtype_device(c)[0] == dtype else c + probe[:1]
    return M, a, b, c

