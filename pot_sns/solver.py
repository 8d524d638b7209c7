"""The Sinkhorn-Newton-Sparse iteration, written once over POT's backend ``nx``.

Potentials are kept in sinkhorn_log's units (``u = f / reg``, ``v = g / reg``)
so that ``P = exp(u_i + v_j - M_ij / reg)`` and the dual to maximise is
``L(u, v) = <u, a> + <v, b> - sum(P)``, with gradient ``(a - P1, b - P^T1)``
and negative Hessian ``[[diag(P1), P], [P^T, diag(P^T1)]]``.

Stages: (1) epsilon scaling, a few Sinkhorn sweeps at each of a decreasing
sequence of regularisations (kernels from ``kernel.at_reg``); (2) Sinkhorn
sweeps at ``reg``, for ``n_sinkhorn`` sweeps and on while they contract fast;
(3) Newton steps: the plan's large entries (or, past the kernel's
``dense_density``, all of them) form the Hessian block, the Schur complement
system is solved by Jacobi-preconditioned CG to a tolerance tied to the
gradient (inexact Newton), and an Armijo line search guards the step, with
fall-backs when it fails. All dense work goes through the kernel.
"""

import math
import time
from dataclasses import dataclass, field

from .cg import pcg
from .sparsity import pick_threshold


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


class _Printer:
    """POT-style progress table."""

    def __init__(self, on):
        self.on = on
        self.lines = 0

    def __call__(self, it, stage, err, extra=""):
        if not self.on:
            return
        if self.lines % 200 == 0:
            print("{:5s}|{:8s}|{:12s}|{}".format("It.", "Stage", "Err", "Newton info")
                  + "\n" + "-" * 48)
        print("{:5d}|{:8s}|{:8e}|{}".format(it, stage, err, extra))
        self.lines += 1


def _norm2(nx, x, y):
    return math.sqrt(float(nx.sum(x * x)) + float(nx.sum(y * y)))


def _finite(nx, *arrays):
    # x * 0 is NaN exactly where x is not finite: one reduction per array
    return all(float(nx.sum(x * 0)) == 0.0 for x in arrays)


def solve(kernel, a, b, opts, numItermax=1000, stopThr=1e-9, warmstart=None,
          verbose=False):
    """Run SNS on one problem with strictly positive weights.

    Parameters
    ----------
    kernel : pot_sns.kernels.DenseKernel
        Backend kernel holding ``M`` and ``reg``.
    a, b : array-like, shapes (n,), (m,)
        Positive weights with equal mass, in the kernel's backend and dtype.
    opts : pot_sns.options.SNSOptions
        Solver options.
    numItermax : int
        Budget of iterations, Sinkhorn sweeps and Newton steps together.
    stopThr : float
        Stop when ``sqrt(||a - P1||^2 + ||b - P^T1||^2) < stopThr``.
    warmstart : tuple or None
        ``(u, v)`` initial potentials (sinkhorn_log's ``log_u``, ``log_v``).
    verbose : bool
        Print a progress table.

    Returns
    -------
    SolverResult
    """
    t_start = time.perf_counter()
    nx = kernel.nx
    n, m = kernel.shape
    out = SolverResult(None, None, None, math.inf, "max_iter")
    show = _Printer(verbose)
    mass = float(nx.sum(a))
    top = math.log(max(float(nx.max(a)), float(nx.max(b))))
    loga, logb = nx.log(a), nx.log(b)
    if warmstart is None:
        u = a * 0
        v = b * 0
    else:
        u, v = warmstart
    best = [math.inf, u, v]

    def record(stage, err, u_=None, v_=None):
        """Log an error; (u_, v_) is a candidate best iterate when its error
        was measured exactly at that point."""
        out.errs.append(err)
        out.times.append(time.perf_counter() - t_start)
        out.stages.append(stage)
        if u_ is not None and err < best[0]:
            best[:] = [err, u_, v_]

    def budget_left():
        return out.niter < numItermax

    def sweeps(u, v, count, stage, kern=kernel, tol=None):
        """Sinkhorn sweeps (log-domain potentials); the error is read off the
        u-update. They stop early below ``tol`` (default ``stopThr``)."""
        tol = stopThr if tol is None else tol
        rates = []
        err = math.inf
        for _ in range(count):
            if not budget_left():
                break
            v = logb - kern.col_lse(u)
            lse = kern.row_lse(v)
            # (u, v) has exact column sums; its row sums are exp(u + lse)
            err_new = float(nx.norm(a - nx.exp(u + lse)))
            u = loga - lse
            out.n_sinkhorn += 1
            if math.isfinite(err) and err > 0:
                rates.append(err_new / err)
            err = err_new
            record(stage, err)
            show(out.niter, stage, err)
            if err < tol:
                break
        return u, v, err, rates

    with kernel.errstate():
        if warmstart is None:
            # Epsilon scaling: a few sweeps at each of a decreasing sequence of
            # larger regularisations carry the potentials across the cost's
            # scale, where Sinkhorn at a tiny reg crawls and damped Newton
            # needs many steps (the dual is far from quadratic there).
            prev = None
            for r_k in _scaling_schedule(nx, kernel, opts):
                if not budget_left():
                    break
                if prev is not None:
                    u, v = u * (prev / r_k), v * (prev / r_k)
                stage = kernel.at_reg(r_k)
                # an intermediate reg needs no more than a rough solve
                u, v, _, _ = sweeps(u, v, opts.scaling_sweeps, "sinkhorn", stage,
                                    max(stopThr, SCALING_TOL * mass))
                out.n_scaling = out.n_sinkhorn
                prev = r_k
                del stage
            if prev is not None:
                u, v = u * (prev / kernel.reg), v * (prev / kernel.reg)
        # Sinkhorn stage: fixed warm-up, then on while Sinkhorn contracts fast.
        if warmstart is None and opts.n_sinkhorn > 0:
            u, v, err, rates = sweeps(u, v, opts.n_sinkhorn, "sinkhorn")
            while budget_left() and err >= stopThr and len(rates) >= 3:
                rate = math.exp(sum(math.log(max(x, 1e-300)) for x in rates[-3:]) / 3)
                if rate > opts.sinkhorn_rate:
                    break
                u, v, err, more = sweeps(u, v, 5, "sinkhorn")
                rates += more

        r, c, hist = kernel.evaluate(u, v, top)
        P_current = True
        err = _norm2(nx, a - r, b - c)
        if not math.isfinite(err) and budget_left():
            # A warm start from a related problem can overflow the plan; one
            # sweep ends on a u-update, after which P_ij <= a_i everywhere.
            out.fallbacks.append((out.niter, "warmstart_overflow"))
            u, v, _, _ = sweeps(u, v, 1, "fallback")
            r, c, hist = kernel.evaluate(u, v, top)
            err = _norm2(nx, a - r, b - c)
        if not math.isfinite(err):
            raise FloatingPointError("non-finite plan at the starting potentials")
        record("newton", err, u, v)
        L = float(nx.dot(u, a)) + float(nx.dot(v, b)) - float(nx.sum(r))
        ratio = opts.mass_ratio
        stall = 0
        # safeguard state: first trial step of the line search (shrinks after a
        # failed search, grows back after successes) and a density multiplier
        # raised when sparsification is what holds Newton back
        t0, boost, slow = 1.0, 1.0, 0
        eps = _eps_of(nx, a)
        slack = 64 * eps * mass
        max_density = opts.max_density
        if max_density is None:
            max_density = getattr(kernel, "max_density", 0.25)
        # kernels that can use the whole plan as the Hessian block say from
        # which kept fraction on that is cheaper than a sparse copy
        dense_at = getattr(kernel, "dense_density", None)
        dense = False

        while err >= stopThr and budget_left():
            ga, gb = a - r, b - c
            g1 = float(nx.sum(nx.abs(ga))) + float(nx.sum(nx.abs(gb)))
            ginf = max(float(nx.max(nx.abs(ga))), float(nx.max(nx.abs(gb))))
            if opts.sparsity == "mass":
                budget = ("mass", min(opts.max_drop * mass, ratio * g1))
            else:
                dens = opts.density if opts.density is not None else 3.0 / min(n, m)
                budget = ("count", max(1, int(min(1.0, dens * boost) * n * m)))
            max_nnz = max(1, int(min(1.0, max_density * boost) * n * m))
            if not dense:
                tau, kept, dropped = pick_threshold(hist, top, opts.bin_width, budget,
                                                    max_nnz)
                # Past the kernel's dense_density, a sparse copy of the kept
                # entries costs more than mat-vecs with the whole plan: keep
                # everything (the exact Hessian) from then on. The rule's
                # budget only shrinks as the error falls.
                dense = (dense_at is not None and kept > dense_at * n * m
                         and max_nnz >= n * m and opts.sparsity == "mass")
            if dense:
                tau = 0.0
            S = kernel.select(tau)
            shift = opts.shift * ginf + eps * mass / max(n, m)
            rtol = min(opts.cg_rtol, max(opts.cg_rtol_min, (g1 / mass) ** FORCING))
            du, dv, cg_it, cg_status = _newton_direction(
                nx, S, r, c, ga, gb, shift, rtol, opts.cg_maxiter, n <= m, eps)
            out.cg_iters.append(cg_it)
            out.density.append(S.nnz / float(n * m))
            gd = float(nx.dot(ga, du)) + float(nx.dot(gb, dv))
            accepted = False
            ls = 0
            ascent = (cg_status != "breakdown" and math.isfinite(gd) and gd > 0
                      and _finite(nx, du, dv))
            if ascent:
                t = t0
                base = float(nx.sum(r))
                for ls in range(opts.ls_maxiter):
                    un, vn = u + t * du, v + t * dv
                    rn, cn, hn = kernel.evaluate(un, vn, top)
                    P_current = False
                    errn = _norm2(nx, a - rn, b - cn)
                    dL = t * (float(nx.dot(du, a)) + float(nx.dot(dv, b))) - (
                        float(nx.sum(rn)) - base)
                    if math.isfinite(errn) and math.isfinite(dL) and (
                            dL >= opts.ls_c1 * t * gd - slack
                            or (errn < err and dL >= -slack)):
                        accepted = True
                        break
                    t *= opts.ls_beta
            out.ls_steps.append(ls)
            if accepted:
                u, v, r, c, hist = un, vn, rn, cn, hn
                P_current = True
                L += dL
                out.n_newton += 1
                # Far from the optimum (tiny reg) damped Newton raises the dual
                # for many steps while the error does not yet fall: that is
                # progress too. Only a step that helps neither is a stall. The
                # rise must beat the rounding of the plan's exponents, which
                # grows with the potentials (float32 at small reg).
                noise = slack * (1.0 + float(nx.max(nx.abs(u))) + float(nx.max(nx.abs(v))))
                progress = errn < best[0] * (1 - 1e-3) or dL > noise
                stall = 0 if progress else stall + 1
                # Full, well-solved steps that barely reduce the error mean the
                # sparsified Hessian is too far from the true one: densify.
                poor = t == 1.0 and cg_status == "converged" and errn > 0.5 * err
                slow = slow + 1 if poor and S.nnz < n * m else 0
                t0 = min(1.0, t0 / opts.ls_beta)
                err = errn
                record("newton", err, u, v)
                show(out.niter, "newton", err,
                     "density %.2e cg %d (%s) step %.3g" % (out.density[-1], cg_it, cg_status, t))
                if stall >= opts.patience:
                    out.status = "stalled"
                    break
                if slow >= 3:
                    out.fallbacks.append((out.niter, "sparsity"))
                    show(out.niter, "fallback", err, "sparsity: denser Hessian")
                    boost *= 4.0
                    ratio *= 0.1
                    slow = 0
                continue
            # Fall back: Sinkhorn sweeps, then a denser Hessian. The sweeps start
            # from the current iterate, not the best-error one: every accepted
            # step raised the dual, and at tiny reg the lowest error is often
            # the far-behind warm-up point (the best is still what is returned).
            reason = ("cg_breakdown" if cg_status == "breakdown" else
                      "line_search" if ascent else "not_ascent")
            out.fallbacks.append((out.niter, reason))
            show(out.niter, "fallback", err, reason)
            ratio *= 0.1
            slow = 0
            if reason == "line_search":
                t0 = t  # the next search resumes where this one gave up
            u, v, _, _ = sweeps(u, v, max(1, opts.fallback_sweeps), "fallback")
            r, c, hist = kernel.evaluate(u, v, top)
            P_current = True
            err = _norm2(nx, a - r, b - c)
            L = float(nx.dot(u, a)) + float(nx.dot(v, b)) - float(nx.sum(r))
            record("fallback", err, u, v)
            stall += 1
            if stall >= opts.patience:
                out.status = "stalled"
                break

    if err < stopThr:
        out.status = "converged"
    if best[0] < err:  # never hand back worse than the best iterate seen
        u, v, err = best[1], best[2], best[0]
        P_current = False
        if err < stopThr:
            out.status = "converged"
    out.u, out.v, out.err = u, v, err
    out.P = kernel.P if P_current else None
    return out


#: marginal error (relative to the mass) at which a stage of the epsilon
#: scaling stops before its ``scaling_sweeps``
SCALING_TOL = 1e-4

#: exponent of the inexact-Newton forcing term: CG solves to a relative
#: residual of (||grad||_1 / mass) ** FORCING, capped by ``cg_rtol``
FORCING = 0.5


def _scaling_schedule(nx, kernel, opts):
    """Regularisations of the epsilon-scaling warm-up, largest first.

    They start at ``scaling_start`` times the spread of the costs and divide
    by ``scaling_factor`` down to (excluded) the target ``reg``; empty when
    the target is at least ``scaling_from`` times the spread, or the kernel
    cannot change its reg.
    """
    if not opts.eps_scaling or not hasattr(kernel, "at_reg"):
        return []
    spread = float(nx.max(kernel.M)) - float(nx.min(kernel.M))
    reg = kernel.reg
    if not reg < opts.scaling_from * spread:
        return []
    r_k = opts.scaling_start * spread
    out = []
    while r_k > reg * opts.scaling_factor and len(out) < 60:
        out.append(r_k)
        r_k /= opts.scaling_factor
    if out:
        out.append(max(r_k, reg * opts.scaling_factor ** 0.5))
    return out


def _eps_of(nx, x):
    import numpy as np

    return float(np.finfo(nx.to_numpy(x[:1]).dtype).eps)


def _newton_direction(nx, S, r, c, ga, gb, shift, rtol, maxiter, rows_first, eps):
    """Solve the sparsified Newton system through its Schur complement.

    The larger block is eliminated so that CG runs on ``min(n, m)`` unknowns:
    ``(diag(r) - S diag(1/c) S^T + shift) du = ga - S (gb / c)``, then
    ``dv = (gb - S^T du) / c`` (or the mirror image when ``n > m``).
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
