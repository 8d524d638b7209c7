r"""``method="sns"`` for POT's unbalanced entry points and domain adaptation.

:mod:`pot_sns.plugin` wraps POT's functions; this module holds what their
unbalanced ``method="sns"`` branches run:

- :func:`solve_unbalanced_sns`: ``ot.solve(M, a, b, reg=..., unbalanced=...,
  method="sns")`` (and ``ot.solve_sample``, which calls it), returning POT's
  :class:`~ot.utils.OTResult` as POT's unbalanced branch does;
- :func:`sinkhorn_unbalanced_sns`, :func:`sinkhorn_unbalanced2_sns`:
  :func:`ot.unbalanced.sinkhorn_unbalanced` and ``..2`` (also the copy
  ``ot.da`` imports, which ``ot.da.UnbalancedSinkhornTransport`` calls);
- :func:`register_da` / :func:`unregister_da`: ``ot.da.SinkhornTransport``
  with ``method="sns"`` runs SNS, also with ``out_of_sample_map="continuous"``
  (POT's ``fit`` would switch to ``"sinkhorn_log"`` there, with a warning);
  SNS's log supplies the ``log_u``, ``log_v`` that map needs.
"""

import functools
import math
import numbers

import numpy as np
from ot.utils import OTResult

from .. import implicit
from ..api import sinkhorn_newton_sparse
from . import gradients
from .api import (objective_value, objective_value_of, sinkhorn_newton_sparse_unbalanced,
                  sinkhorn_newton_sparse_unbalanced2, solve_unbalanced_checked)
from .validation import (UnsupportedError, check_reg_type, check_unbalanced_problem,
                         check_unbalanced_type)

GRAD_MODES = ("autodiff", "envelope", "detach", "last_step")

SOLVE_NAMES = {"numItermax": "max_iter", "stopThr": "tol", "warmstart": "potentials_init",
               "reg_m": "unbalanced"}


def solve_unbalanced_sns(M, a=None, b=None, reg=None, c=None, reg_type="KL",
                         unbalanced=None, unbalanced_type="KL", method="sns", n_threads=1,
                         max_iter=None, plan_init=None, potentials_init=None, tol=None,
                         verbose=False, grad="autodiff"):
    r"""The ``method="sns"`` branch of :func:`ot.solve` for unbalanced entropic OT.

    Solves, by :func:`pot_sns.sinkhorn_newton_sparse_unbalanced`,

    .. math::
        \min_{\mathbf{T} \geq 0} \ \langle \mathbf{T}, \mathbf{M} \rangle_F
        + \lambda R(\mathbf{T})
        + \lambda_1 \mathrm{KL}(\mathbf{T} \mathbf{1}, \mathbf{a})
        + \lambda_2 \mathrm{KL}(\mathbf{T}^T \mathbf{1}, \mathbf{b})

    with :math:`R` the KL divergence to ``c`` (default
    :math:`\mathbf{a}\mathbf{b}^T`, ``reg_type="KL"``) or the negative
    entropy (``"entropy"``). The arguments are those of :func:`ot.solve`.

    Parameters
    ----------
    M : array-like, shape (dim_a, dim_b)
        Cost matrix.
    a, b : array-like, shapes (dim_a,), (dim_b,), optional
        Weights of any masses; ``None`` means uniform.
    reg : float
        Entropic regularization, > 0.
    c : array-like, shape (dim_a, dim_b), optional
        Reference measure of the KL term (positive entries).
    reg_type : {"KL", "entropy"}, optional
        Regularization (any case).
    unbalanced : float or pair
        ``(lambda_1, lambda_2)``, each > 0 or ``inf`` (hard marginal).
    unbalanced_type : {"KL"}
        Marginal penalty; only ``"KL"`` (any case).
    method : str
        ``"sns"`` or ``"sinkhorn_newton_sparse"``.
    n_threads, plan_init
        Ignored, as by POT's Sinkhorn branch.
    max_iter : int, optional
        Iteration budget (default 1000, as POT).
    potentials_init : tuple of arrays, optional
        Warm start ``(logu, logv)``, e.g. ``res.potentials`` of a previous
        solve.
    tol : float, optional
        Stop when the 2-norm of the dual gradient is below ``tol`` (default
        1e-9, as POT).
    verbose : bool, optional
        Print the SNS progress table.
    grad : {"autodiff", "envelope", "detach", "last_step"}, optional
        Gradients of ``value`` (torch, jax, tensorflow):

        - ``"envelope"``: ``value``, the optimal objective, gets its exact
          gradients by the envelope theorem: ``plan`` w.r.t. ``M``,
          ``reg_m1 (1 - exp(-f / reg_m1))`` (plus
          ``reg (sum(b) - exp(-f / reg_m1))`` for ``"KL"``; ``f`` for an
          infinite ``reg_m1``) w.r.t. ``a``, and the mirror image w.r.t.
          ``b``; other outputs are detached.
        - ``"autodiff"``: the same for ``value``, and ``value_linear`` gets
          the exact gradient of ``<M, plan>`` at the optimum (torch;
          implicit differentiation, one CG solve): what POT's autograd
          through converged iterations gives. ``plan`` is detached.
        - ``"detach"``: no gradients.
        - ``"last_step"``: ``max_iter - 1`` iterations, then one
          differentiable unbalanced Sinkhorn step.

    Returns
    -------
    res : ot.utils.OTResult
        ``plan``; ``value_linear`` (``<M, plan>``); ``value``, the objective
        with generalized KL terms (as POT's L-BFGS-B branch computes it for
        ``"entropy"``; POT's Sinkhorn branch for ``"KL"`` returns a sum
        without the KL mass terms, which vanishes at the optimum);
        ``potentials=(logu, logv)`` (``f / reg``, ``g / reg``, POT's
        convention); ``status``; ``log``.

    Raises
    ------
    ValueError
        ``reg`` None or 0, a bad ``unbalanced`` (<= 0, NaN, wrong length),
        weights, ``grad``, ... (named in the message).
    pot_sns.unbalanced.validation.UnsupportedError
        (a ``ValueError`` and a ``NotImplementedError``) for an
        ``unbalanced_type`` other than ``"KL"`` or a ``reg_type`` other than
        ``"KL"``/``"entropy"``.

    Examples
    --------
    >>> import numpy as np, ot, pot_sns
    >>> M = np.array([[0., 1.], [1., 0.]])
    >>> res = ot.solve(M, [.5, .5], [.5, .5], reg=1.0, unbalanced=1.0, method="sns")
    >>> res.plan.round(7)
    array([[0.3220536, 0.1184769],
           [0.1184769, 0.3220536]])
    """
    _check_supported(reg, unbalanced_type, reg_type, grad)
    max_iter = 1000 if max_iter is None else max_iter
    tol = 1e-9 if tol is None else tol
    if grad == "last_step" and isinstance(max_iter, numbers.Integral) and max_iter < 2:
        raise ValueError("max_iter must be >= 2 with grad='last_step' (method='sns' runs "
                         "max_iter - 1 iterations, then one differentiable Sinkhorn step), "
                         "got %r" % (max_iter,))
    n_iter = max_iter - 1 if grad == "last_step" else max_iter
    p = check_unbalanced_problem(a, b, M, reg, unbalanced, reg_type, c, n_iter, tol,
                                 potentials_init, names_given=SOLVE_NAMES, caller="ot.solve")
    if p.n_hists:
        raise ValueError("b must be a 1-D weight vector of shape (%d,) for ot.solve, got "
                         "shape %s" % (p.M.shape[1], tuple(p.b.shape)))
    nx = p.nx
    sol = solve_unbalanced_checked(p, verbose=verbose, warn=True)
    log = dict(sol.log)
    value_linear, value = log["cost"], log["total_cost"] = objective_value(sol)
    if grad == "last_step":
        return _last_step_result(sol, p, log, max_iter)
    M0, a0, b0 = sol.given
    if grad in ("envelope", "autodiff") and nx.__name__ not in ("numpy", "cupy"):
        # numpy and cupy carry no gradients (set_gradients is a no-op there)
        # value is the optimal objective: its envelope gradients are exact
        opt = sol.optimum()
        value = nx.set_gradients(value, (M0, a0, b0),
                                 sol.full_gradients(gradients.envelope(opt)))
        if grad == "autodiff" and implicit.requires_grad(M0, a0, b0):
            lin = sol.full_gradients(gradients.linear_gradients(opt), envelope_outside=False)
            value_linear = implicit.attach(nx, value_linear, list(zip((M0, a0, b0), lin)))
    return OTResult(potentials=(log["logu"], log["logv"]), value=value,
                    value_linear=value_linear, plan=sol.plan, status=log["status"],
                    backend=nx, log=log)


def _check_supported(reg, unbalanced_type, reg_type, grad):
    """What SNS cannot solve, refused before any work, naming what it can."""
    if reg is None or (isinstance(reg, numbers.Real) and not isinstance(reg, bool)
                       and reg == 0):
        raise ValueError(
            "method='sns' solves entropic OT and needs reg > 0, got reg=%r; for exact "
            "unbalanced OT use ot.solve without method" % (reg,))
    check_unbalanced_type(unbalanced_type)
    if isinstance(reg_type, tuple):
        raise UnsupportedError("reg_type must be 'KL' or 'entropy' for method='sns', got a "
                               "custom (f, df) pair")
    check_reg_type(reg_type)
    if grad not in GRAD_MODES:
        raise ValueError("grad must be one of %s, got %r"
                         % (", ".join(map(repr, GRAD_MODES)), grad))


def _last_step_result(sol, p, log, max_iter):
    """POT's ``grad="last_step"``: one unbalanced Sinkhorn step, from the SNS
    potentials, with the caller's (differentiable) arrays."""
    nx, obj = sol.nx, sol.obj
    M0, a0, b0 = sol.given
    Meff = M0 if sol.c is None else M0 - obj.reg * nx.log(sol.c)
    loga, logb = nx.log(a0), nx.log(b0)
    oa, ob = (loga, logb) if sol.kl_ab else (0.0, 0.0)
    # POT's potentials -> solver units (u = logu + o), then v- and u-updates
    u = log["logu"] + (nx.log(sol.a) if sol.kl_ab else 0.0)
    v = obj.kb * (logb - nx.logsumexp(u[:, None] - Meff / obj.reg, 0)) + (1 - obj.kb) * ob
    u = obj.ka * (loga - nx.logsumexp(v[None, :] - Meff / obj.reg, 1)) + (1 - obj.ka) * oa
    plan = nx.exp(u[:, None] + v[None, :] - Meff / obj.reg)
    potentials = (u - oa, v - ob)
    log.update(niter=max_iter, logu=potentials[0], logv=potentials[1])
    value_linear, value = objective_value_of(nx, M0, plan, a0, b0, sol.c, obj.reg,
                                             obj.reg_m, sol.kl_ab)
    return OTResult(potentials=potentials, value=value, value_linear=value_linear,
                    plan=plan, status=log["status"], backend=nx, log=log)


def sinkhorn_unbalanced_sns(a, b, M, reg, reg_m, method="sns", reg_type="kl", c=None,
                            warmstart=None, numItermax=1000, stopThr=1e-6, verbose=False,
                            log=False, **kwargs):
    """``ot.unbalanced.sinkhorn_unbalanced(..., method="sns")``.

    Parameters
    ----------
    a, b, M, reg, reg_m, reg_type, c, warmstart, numItermax, stopThr, verbose, log
        As in :func:`ot.unbalanced.sinkhorn_unbalanced`; see
        :func:`pot_sns.sinkhorn_newton_sparse_unbalanced`.
    method : str
        ``"sns"`` or ``"sinkhorn_newton_sparse"`` (any case).
    **kwargs
        ``warn`` and SNS options (:class:`pot_sns.SNSOptions`).

    Returns
    -------
    gamma : array-like, shape (dim_a, dim_b)
        Optimal plan (linear costs with several histograms).
    log : dict
        Only when ``log=True``.

    Examples
    --------
    >>> import numpy as np, ot, pot_sns
    >>> P = ot.unbalanced.sinkhorn_unbalanced([.5, .5], [.5, .5], [[0., 1.], [1., 0.]],
    ...                                       1., 1., method="sns")
    >>> np.round(P, 5)
    array([[0.32205, 0.11848],
           [0.11848, 0.32205]])
    """
    return sinkhorn_newton_sparse_unbalanced(
        a, b, M, reg, reg_m, reg_type=reg_type, c=c, warmstart=warmstart,
        numItermax=numItermax, stopThr=stopThr, verbose=verbose, log=log, **kwargs)


def sinkhorn_unbalanced2_sns(a, b, M, reg, reg_m, method="sns", reg_type="kl", c=None,
                             warmstart=None, returnCost="linear", numItermax=1000,
                             stopThr=1e-6, verbose=False, log=False, **kwargs):
    """``ot.unbalanced.sinkhorn_unbalanced2(..., method="sns")``.

    Parameters
    ----------
    a, b, M, reg, reg_m, reg_type, c, warmstart, returnCost, numItermax, stopThr
        As in :func:`ot.unbalanced.sinkhorn_unbalanced2`; see
        :func:`pot_sns.sinkhorn_newton_sparse_unbalanced2`.
    verbose, log
        As in POT.
    method : str
        ``"sns"`` or ``"sinkhorn_newton_sparse"`` (any case).
    **kwargs
        ``warn`` and SNS options (:class:`pot_sns.SNSOptions`).

    Returns
    -------
    ot_cost : float or array-like, shape (n_hists,)
    log : dict
        Only when ``log=True``.

    Examples
    --------
    >>> import ot, pot_sns
    >>> cost = ot.unbalanced.sinkhorn_unbalanced2([.5, .1], [.5, .5], [[0., 1.], [1., 0.]],
    ...                                           1., 1., method="sns", stopThr=1e-12)
    >>> round(float(cost), 8)
    0.19600123
    """
    return sinkhorn_newton_sparse_unbalanced2(
        a, b, M, reg, reg_m, reg_type=reg_type, c=c, warmstart=warmstart,
        returnCost=returnCost, numItermax=numItermax, stopThr=stopThr, verbose=verbose,
        log=log, **kwargs)


#: POT functions (in :mod:`ot`) that gain ``method="sns"``, and what runs it
IMPLS = {"sinkhorn_unbalanced": sinkhorn_unbalanced_sns,
         "sinkhorn_unbalanced2": sinkhorn_unbalanced2_sns}


# ---------------------------------------------------------------------------
# ot.da
# ---------------------------------------------------------------------------

#: ``SinkhornTransport`` methods replaced for ``method="sns"``
DA_METHODS = ("fit", "transform", "inverse_transform")

_DA_ORIGINALS = {}  # (class, method name) -> POT's function


def _is_sns(method):
    return isinstance(method, str) and method.lower() in ("sns", "sinkhorn_newton_sparse")


def _forbidden(nx, M):
    """Mask of the pairs ``ot.da`` forbids: costs at infinity or at the
    largest float (its semi-supervised mode with ``limit_max=inf`` writes
    the float maximum, ``nan_to_num`` of ``inf``)."""
    big = 0.5 * float(np.finfo(nx.to_numpy(M[:1, :1]).dtype).max)
    return M >= big


def _finite_cost(nx, M, reg, bad):
    """``M`` with its forbidden entries (``bad``) made a large finite cost:
    SNS works with finite costs of a moderate spread. The gap of twice the
    spread plus ``200 reg`` above the largest allowed cost makes those
    entries of the plan at most about ``exp(-200)`` of the others."""
    hi = float(nx.max(nx.where(bad, nx.full(M.shape, -math.inf, type_as=M), M)))
    lo = float(nx.min(M))
    if not math.isfinite(hi):
        return M  # every pair forbidden: let the solver's checks say so
    return nx.where(bad, nx.full(M.shape, hi + 2 * (hi - lo) + 200 * reg, type_as=M), M)


def _sns_fit(self, Xs, ys, Xt, yt):
    """POT's ``SinkhornTransport.fit`` with SNS and without the switch to
    ``"sinkhorn_log"``."""
    import ot.da

    # BaseTransport.fit: cost matrix, weights, semi-supervised costs
    super(ot.da.SinkhornTransport, self).fit(Xs, ys, Xt, yt)
    if self.out_of_sample_map == "continuous":
        self.log = True  # the map reads log_["log_u"], log_["log_v"]
    nx = self.nx
    bad = _forbidden(nx, self.cost_)
    forbid = bool(nx.any(bad))
    M = _finite_cost(nx, self.cost_, self.reg_e, bad) if forbid else self.cost_
    returned = sinkhorn_newton_sparse(
        self.mu_s, self.mu_t, M, self.reg_e, numItermax=int(self.max_iter),
        stopThr=self.tol, verbose=self.verbose, log=self.log)
    coupling, self.log_ = returned if self.log else (returned, dict())
    # the forbidden pairs carry at most exp(-200) of the mass: exactly 0, as in POT
    self.coupling_ = nx.where(bad, coupling * 0, coupling) if forbid else coupling
    return self


def _continuous_map(self, X, Y, logw, batch_size):
    """POT's out-of-sample map ``softmax(-M(X, Y) / reg + logw) Y``, in the
    log domain: at a small ``reg_e`` POT's ``exp`` overflows to NaN (its
    potentials are of order ``cost / reg``)."""
    from ot.utils import cost_normalization, dist

    nx = self.nx
    out = []
    for i0 in range(0, X.shape[0], batch_size):
        M = dist(X[i0:i0 + batch_size], Y, metric=self.metric)
        M = cost_normalization(M, self.norm, value=self.norm_cost_)
        logK = -M / self.reg_e + logw[None, :]
        K = nx.exp(logK - nx.max(logK, axis=1, keepdims=True))
        out.append(nx.dot(K, Y) / nx.sum(K, axis=1)[:, None])
    return nx.concatenate(out, axis=0)


def _make_da_method(name, original):
    """SinkhornTransport's ``fit``, ``transform`` or ``inverse_transform``:
    SNS's for ``method="sns"``, POT's otherwise."""
    def sns_transform(self, Xs=None, ys=None, Xt=None, yt=None, batch_size=128):
        if self.out_of_sample_map != "continuous":
            return original(self, Xs, ys, Xt, yt, batch_size)
        if name == "transform":
            return _continuous_map(self, Xs, self.xt_, self.log_["log_v"], batch_size)
        return _continuous_map(self, Xt, self.xs_, self.log_["log_u"], batch_size)

    @functools.wraps(original)
    def method(self, *args, **kwargs):
        if not _is_sns(getattr(self, "method", None)):
            return original(self, *args, **kwargs)
        if name == "fit":
            return _sns_fit(self, *_da_args(args, kwargs))
        return sns_transform(self, *args, **kwargs)

    method.__pot_sns_original__ = original
    return method


def _da_args(args, kwargs):
    names = ("Xs", "ys", "Xt", "yt")
    values = dict(zip(names, args), **kwargs)
    return tuple(values.get(k) for k in names)


def register_da():
    """``ot.da.SinkhornTransport(method="sns")`` runs SNS (idempotent).

    Its ``fit`` is replaced by one that, for ``method`` ``"sns"`` /
    ``"sinkhorn_newton_sparse"``, does what POT's does with
    :func:`pot_sns.sinkhorn_newton_sparse` in place of ``ot.sinkhorn`` and
    without the switch to ``"sinkhorn_log"`` (forbidden pairs of the
    semi-supervised mode get a large finite cost and an exact 0 in the
    coupling); ``transform`` and ``inverse_transform`` compute POT's
    continuous map in the log domain (POT's overflows at small ``reg_e``).
    Other methods run POT's code. ``ot.da.UnbalancedSinkhornTransport``
    needs no change: it calls ``ot.da.sinkhorn_unbalanced``, which
    :mod:`pot_sns.plugin` wraps.

    Examples
    --------
    ``import pot_sns`` calls it (through :func:`pot_sns.register`):

    >>> import numpy as np, ot, pot_sns
    >>> rng = np.random.default_rng(0)
    >>> Xs, Xt = rng.normal(size=(30, 2)), rng.normal(size=(40, 2)) + 1
    >>> da = ot.da.SinkhornTransport(reg_e=1e-2, norm="max", method="sns").fit(Xs=Xs, Xt=Xt)
    >>> bool(np.allclose(da.coupling_.sum(1), 1 / 30))
    True
    """
    import ot.da

    cls = ot.da.SinkhornTransport
    for name in DA_METHODS:
        current = cls.__dict__[name]
        if getattr(current, "__pot_sns_original__", None) is None:
            _DA_ORIGINALS[(cls, name)] = current
            setattr(cls, name, _make_da_method(name, current))


def unregister_da():
    """Put POT's ``SinkhornTransport`` methods back (idempotent)."""
    for (cls, name), original in _DA_ORIGINALS.items():
        if getattr(cls.__dict__.get(name), "__pot_sns_original__", None) is original:
            setattr(cls, name, original)
