"""The Sinkhorn-Newton-Sparse iteration, written once over POT's backend ``nx``.

:func:`solve` runs the stages of SNS on one problem, for any dual objective
(:mod:`pot_sns.objective`; the balanced one, or the unbalanced ones of
:mod:`pot_sns.unbalanced`):

1. warm-up (:mod:`pot_sns.warmup`): epsilon scaling, then Sinkhorn sweeps at
   ``reg`` for ``n_sinkhorn`` sweeps and on while they contract fast;
2. Newton steps (:mod:`pot_sns.newton`): the plan's large entries (or, past
   the kernel's ``dense_density``, all of them) form the Hessian block, the
   Schur complement system is solved by Jacobi-preconditioned CG to a
   tolerance tied to the gradient (inexact Newton), and an Armijo line
   search guards the step;
3. safeguards (here): a step that fails falls back to Sinkhorn sweeps and a
   denser Hessian, well-solved steps that barely help densify the Hessian,
   a run of steps without progress stops the solve, and the best iterate
   seen is what is returned.

Potentials are kept in sinkhorn_log's units (``u = f / reg``,
``v = g / reg``), the plan is ``P = exp(u_i + v_j - M_ij / reg)``, and all
dense work goes through the kernel (:mod:`pot_sns.kernels`).
"""

import math
import time
from dataclasses import dataclass, field

from . import warmup
from .newton import (FORCING, all_finite, hessian_block, line_search, machine_eps,
                     newton_direction, norm2)


@dataclass
class SolverResult:
    """Potentials and diagnostics of one SNS solve."""

    u: object
    v: object
    P: object  # plan at (u, v), or None when it has to be recomputed
    err: float
    status: str  # "converged", "max_iter" or "stalled"
    n_sinkhorn: int = 0
    n_scaling: int = 0  # of the n_sinkhorn sweeps, those of epsilon scaling
    n_newton: int = 0
    errs: list = field(default_factory=list)
    times: list = field(default_factory=list)  # seconds since the start, per err
    stages: list = field(default_factory=list)
    cg_iters: list = field(default_factory=list)
    density: list = field(default_factory=list)
    ls_steps: list = field(default_factory=list)
    fallbacks: list = field(default_factory=list)

    @property
    def niter(self):
        return self.n_sinkhorn + self.n_newton


class Run:
    """One solve in progress: the problem, its limits, its log and the best
    iterate seen."""

    def __init__(self, kernel, objective, opts, numItermax, stopThr, verbose):
        self.kernel, self.objective, self.opts = kernel, objective, opts
        self.nx = kernel.nx
        self.numItermax, self.stopThr = numItermax, stopThr
        self.verbose = verbose
        self.out = SolverResult(None, None, None, math.inf, "max_iter")
        self.t_start = time.perf_counter()
        self.best = (math.inf, None, None)  # (error, u, v)
        # (u, col_lse(u)) of the last log-domain sweep on the run's kernel:
        # the next sweep from u starts with that column log-sum-exp
        self.col_memo = None
        self._lines = 0

    def budget_left(self):
        return self.out.niter < self.numItermax

    def record(self, stage, err, point=None, info=""):
        """Log an error; ``point`` ``(u, v)`` is a candidate best iterate
        when the error was measured exactly there."""
        out = self.out
        out.errs.append(err)
        out.times.append(time.perf_counter() - self.t_start)
        out.stages.append(stage)
        if point is not None and err < self.best[0]:
            self.best = (err, point[0], point[1])
        self.show(stage, err, info)

    def show(self, stage, err, info=""):
        """POT-style progress table (``verbose=True``)."""
        if not self.verbose:
            return
        if self._lines % 200 == 0:
            print("{:5s}|{:8s}|{:12s}|{}".format("It.", "Stage", "Err", "Newton info")
                  + "\n" + "-" * 48)
        print("{:5d}|{:8s}|{:8e}|{}".format(self.out.niter, stage, err, info))
        self._lines += 1


@dataclass
class State:
    """The Newton stage's iterate and its safeguards' memory."""

    u: object
    v: object
    r: object = None  # plan's row sums at (u, v)
    c: object = None  # column sums
    hist: object = None  # histogram of log P at (u, v)
    err: float = math.inf
    current: bool = True  # the kernel's buffer holds the plan at (u, v)
    t0: float = 1.0  # first trial step (shrinks after a failed search)
    boost: float = 1.0  # density multiplier (raised when sparsity holds Newton back)
    ratio: float = 1.0  # dropped mass allowed per unit of gradient
    slow: int = 0  # consecutive full steps that barely reduced the error
    stall: int = 0  # consecutive steps without progress
    dense: bool = False  # every entry kept from now on


def solve(kernel, objective, opts, numItermax=1000, stopThr=1e-9, warmstart=None,
          verbose=False):
    """Run SNS on one problem with strictly positive weights.

    Parameters
    ----------
    kernel : pot_sns.kernels.DenseKernel
        Backend kernel holding ``M`` and ``reg``.
    objective : pot_sns.objective.Objective
        The dual to maximise (its weights in the kernel's backend and dtype).
    opts : pot_sns.options.SNSOptions
        Solver options.
    numItermax : int
        Budget of iterations, Sinkhorn sweeps and Newton steps together.
    stopThr : float
        Stop when the 2-norm of the gradient (the marginal violation) is
        below this threshold.
    warmstart : tuple or None
        ``(u, v)`` initial potentials (sinkhorn_log's ``log_u``, ``log_v``);
        the warm-up is skipped.
    verbose : bool
        Print a progress table.

    Returns
    -------
    result : SolverResult
        Potentials ``u``, ``v``, the plan ``P`` when the kernel holds it,
        the error, the status and the diagnostics of the log.

    Examples
    --------
    The balanced problem of :func:`pot_sns.sinkhorn_newton_sparse`, driven
    by hand:

    >>> import numpy as np
    >>> from ot.backend import get_backend
    >>> from pot_sns import SNSOptions
    >>> from pot_sns.kernels import make_kernel
    >>> from pot_sns.objective import BalancedObjective
    >>> from pot_sns.solver import solve
    >>> M = np.array([[0., 1.], [1., 0.]])
    >>> a = b = np.array([.5, .5])
    >>> nx = get_backend(M)
    >>> res = solve(make_kernel(nx, M, 1.0), BalancedObjective(nx, a, b, 1.0), SNSOptions())
    >>> res.status, np.round(np.exp(res.u[:, None] + res.v[None, :] - M), 8)
    ('converged', array([[0.36552929, 0.13447071],
           [0.13447071, 0.36552929]]))
    """
    run = Run(kernel, objective, opts, numItermax, stopThr, verbose)
    with kernel.errstate():
        if warmstart is None:
            u, v = warmup.epsilon_scaling(run, *objective.start())
            if opts.n_sinkhorn > 0:
                u, v = warmup.sinkhorn_stage(run, u, v)
        else:
            u, v = warmstart
        st = _start_newton(run, u, v)
        while st.err >= stopThr and run.budget_left():
            if not _newton_iteration(run, st):
                break
    return _finish(run, st)


def _evaluate(run, st):
    """Plan sums, histogram and error at ``(st.u, st.v)``."""
    obj = run.objective
    st.r, st.c, st.hist = run.kernel.evaluate(st.u, st.v, obj.top)
    st.current = True
    st.err = norm2(run.nx, obj.row_target(st.u) - st.r, obj.col_target(st.v) - st.c)


def _start_newton(run, u, v):
    st = State(u, v, ratio=run.opts.mass_ratio)
    _evaluate(run, st)
    if not math.isfinite(st.err) and run.budget_left():
        # A warm start from a related problem can overflow the plan; one
        # sweep ends on a u-update, after which P_ij <= a_i everywhere.
        run.out.fallbacks.append((run.out.niter, "warmstart_overflow"))
        st.u, st.v, _, _ = warmup.sweeps(run, st.u, st.v, 1, "fallback")
        _evaluate(run, st)
    if not math.isfinite(st.err):
        raise FloatingPointError("non-finite plan at the starting potentials")
    run.record("newton", st.err, (st.u, st.v))
    # constant over the stage: the floors of the shift and of the line search
    run.eps = machine_eps(run.nx, st.u)
    run.slack = 64 * run.eps * run.objective.mass
    max_density = run.opts.max_density
    if max_density is None:
        max_density = run.kernel.max_density
    # kernels that can use the whole plan as the Hessian block say from
    # which kept fraction on that is cheaper than a sparse copy
    run.caps = (max_density, run.kernel.dense_density)
    return st


def _newton_iteration(run, st):
    """One Newton step and the safeguards that follow it; False to stop."""
    nx, opts, obj, kernel = run.nx, run.opts, run.objective, run.kernel
    n, m = kernel.shape
    ha, hb = obj.curvature(st.u, st.v)
    dr = st.r if ha is None else st.r + ha
    dc = st.c if hb is None else st.c + hb
    ga, gb = obj.row_target(st.u) - st.r, obj.col_target(st.v) - st.c
    g1 = float(nx.sum(nx.abs(ga))) + float(nx.sum(nx.abs(gb)))
    ginf = max(float(nx.max(nx.abs(ga))), float(nx.max(nx.abs(gb))))
    S, st.dense = hessian_block(kernel, opts, st.hist, obj.top, obj.mass, g1, st.boost,
                                st.ratio, run.caps, st.dense)
    shift = opts.shift * ginf + run.eps * obj.mass / max(n, m)
    rtol = min(opts.cg_rtol, max(opts.cg_rtol_min, (g1 / obj.mass) ** FORCING))
    du, dv, cg_it, cg_status = newton_direction(
        nx, S, dr, dc, ga, gb, shift, rtol, opts.cg_maxiter, n <= m, run.eps)
    run.out.cg_iters.append(cg_it)
    run.out.density.append(S.nnz / float(n * m))
    gd = float(nx.dot(ga, du)) + float(nx.dot(gb, dv))
    ascent = (cg_status != "breakdown" and math.isfinite(gd) and gd > 0
              and all_finite(nx, du, dv))
    trial, ls, t = None, 0, st.t0
    if ascent:
        trial, ls, t = line_search(kernel, obj, opts, st.u, st.v, du, dv,
                                   float(nx.sum(st.r)), st.err, gd, st.t0, run.slack)
        st.current = False
    run.out.ls_steps.append(ls)
    if trial is not None:
        info = "density %.2e cg %d (%s) step %.3g" % (run.out.density[-1], cg_it,
                                                      cg_status, trial.t)
        return _accept(run, st, trial, S.nnz < n * m and cg_status == "converged", info)
    reason = ("cg_breakdown" if cg_status == "breakdown" else
              "line_search" if ascent else "not_ascent")
    return _fall_back(run, st, reason, t)


def _accept(run, st, trial, sparse_solved, info):
    """Move to an accepted trial point; stall and densify safeguards."""
    nx, opts = run.nx, run.opts
    obj = run.objective
    st.r, st.c, st.hist = trial.r, trial.c, trial.hist
    st.u, st.v = obj.translate(trial.u, trial.v)
    if st.u is not trial.u:
        # the exact maximum along the plan-preserving direction: the sums
        # and the histogram stay valid, only the targets (the error) move
        trial.err = norm2(nx, obj.row_target(st.u) - st.r, obj.col_target(st.v) - st.c)
    st.current = True
    run.out.n_newton += 1
    # Far from the optimum (tiny reg) damped Newton raises the dual for many
    # steps while the error does not yet fall: that is progress too. Only a
    # step that helps neither is a stall. The rise must beat the rounding of
    # the plan's exponents, which grows with the potentials (float32 at
    # small reg).
    noise = run.slack * (1.0 + float(nx.max(nx.abs(st.u))) + float(nx.max(nx.abs(st.v))))
    progress = trial.err < run.best[0] * (1 - 1e-3) or trial.gain > noise
    st.stall = 0 if progress else st.stall + 1
    # Full, well-solved steps that barely reduce the error mean the
    # sparsified Hessian is too far from the true one: densify.
    poor = trial.t == 1.0 and sparse_solved and trial.err > 0.5 * st.err
    st.slow = st.slow + 1 if poor else 0
    st.t0 = min(1.0, st.t0 / opts.ls_beta)
    st.err = trial.err
    run.record("newton", st.err, (st.u, st.v), info)
    if st.stall >= opts.patience:
        run.out.status = "stalled"
        return False
    if st.slow >= 3:
        run.out.fallbacks.append((run.out.niter, "sparsity"))
        run.show("fallback", st.err, "sparsity: denser Hessian")
        st.boost *= 4.0
        st.ratio *= 0.1
        st.slow = 0
    return True


def _fall_back(run, st, reason, t):
    """A refused Newton step: Sinkhorn sweeps, then a denser Hessian.

    The sweeps start from the current iterate, not the best-error one: every
    accepted step raised the dual, and at tiny reg the lowest error is often
    the far-behind warm-up point (the best is still what is returned).
    """
    run.out.fallbacks.append((run.out.niter, reason))
    run.show("fallback", st.err, reason)
    st.ratio *= 0.1
    st.slow = 0
    if reason == "line_search":
        st.t0 = t  # the next search resumes where this one gave up
    st.u, st.v, _, _ = warmup.sweeps(run, st.u, st.v, max(1, run.opts.fallback_sweeps),
                                     "fallback")
    _evaluate(run, st)
    run.record("fallback", st.err, (st.u, st.v))
    st.stall += 1
    if st.stall >= run.opts.patience:
        run.out.status = "stalled"
        return False
    return True


def _finish(run, st):
    """The result: the last iterate, or the best one seen when it is better."""
    out = run.out
    u, v, err, current = st.u, st.v, st.err, st.current
    if err < run.stopThr:
        out.status = "converged"
    best_err, best_u, best_v = run.best
    if best_err < err:  # never hand back worse than the best iterate seen
        u, v, err, current = best_u, best_v, best_err, False
        if err < run.stopThr:
            out.status = "converged"
    out.u, out.v, out.err = u, v, err
    out.P = run.kernel.P if current else None
    return out
