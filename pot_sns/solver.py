"""The Sinkhorn-Newton-Sparse iteration, written once over POT's backend ``nx``.

Potentials are kept in sinkhorn_log's units (``u = f / reg``, ``v = g / reg``)
so that ``P = exp(u_i + v_j - M_ij / reg)`` and the dual to maximise is
``L(u, v) = <u, a> + <v, b> - sum(P)``, with gradient ``(a - P1, b - P^T1)``
and negative Hessian ``[[diag(P1), P], [P^T, diag(P^T1)]]``.
"""

import math
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
    n_newton: int = 0
    errs: list = field(default_factory=list)
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
    kernel : pot_sns.sparse.DenseKernel
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
        out.stages.append(stage)
        if u_ is not None and err < best[0]:
            best[:] = [err, u_, v_]

    def budget_left():
        return out.niter < numItermax

    def sweeps(u, v, count, stage):
        """Log-domain Sinkhorn sweeps; the error is read off the u-update."""
        rates = []
        err = math.inf
        for _ in range(count):
            if not budget_left():
                break
            v = logb - kernel.col_lse(u)
            lse = kernel.row_lse(v)
            # (u, v) has exact column sums; its row sums are exp(u + lse)
            err_new = float(nx.norm(a - nx.exp(u + lse)))
            u = loga - lse
            out.n_sinkhorn += 1
            if math.isfinite(err) and err > 0:
                rates.append(err_new / err)
            err = err_new
            record(stage, err)
            show(out.niter, stage, err)
            if err < stopThr:
                break
        return u, v, err, rates

    with kernel.errstate():
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
        ga, gb = a - r, b - c
        err = _norm2(nx, ga, gb)
        if not math.isfinite(err):
            raise FloatingPointError("non-finite plan at the starting potentials")
        record("newton", err, u, v)
        L = float(nx.dot(u, a)) + float(nx.dot(v, b)) - float(nx.sum(r))
        ratio = opts.mass_ratio
        stall = 0
        eps = _eps_of(nx, a)
        slack = 64 * eps * mass

        while err >= stopThr and budget_left():
            ga, gb = a - r, b - c
            g1 = float(nx.sum(nx.abs(ga))) + float(nx.sum(nx.abs(gb)))
            ginf = max(float(nx.max(nx.abs(ga))), float(nx.max(nx.abs(gb))))
            if opts.sparsity == "mass":
                budget = ("mass", min(opts.max_drop * mass, ratio * g1))
            else:
                dens = opts.density if opts.density is not None else 3.0 / min(n, m)
                budget = ("count", max(1, int(dens * n * m)))
            max_nnz = max(1, int(opts.max_density * n * m))
            tau, kept, dropped = pick_threshold(hist, top, opts.bin_width, budget, max_nnz)
            S = kernel.select(tau)
            shift = opts.shift * ginf + eps * mass / max(n, m)
            rtol = min(opts.cg_rtol, max(opts.cg_rtol_min, math.sqrt(g1 / mass)))
            du, dv, cg_it, cg_status = _newton_direction(
                nx, S, r, c, ga, gb, shift, rtol, opts.cg_maxiter, n <= m, eps)
            out.cg_iters.append(cg_it)
            out.density.append(S.nnz / float(n * m))
            gd = float(nx.dot(ga, du)) + float(nx.dot(gb, dv))
            accepted = False
            ls = 0
            if cg_status != "breakdown" and math.isfinite(gd) and gd > 0 and _finite(nx, du, dv):
                t = 1.0
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
                stall = 0 if errn < best[0] * (1 - 1e-3) else stall + 1
                err = errn
                record("newton", err, u, v)
                show(out.niter, "newton", err,
                     "density %.2e cg %d (%s) step %.3g" % (out.density[-1], cg_it, cg_status, t))
                if stall >= opts.patience:
                    out.status = "stalled"
                    break
                continue
            # Fall back: Sinkhorn sweeps from the best point, then a denser Hessian.
            reason = ("cg_breakdown" if cg_status == "breakdown" else
                      "not_ascent" if not (gd > 0) else "line_search")
            out.fallbacks.append((out.niter, reason))
            show(out.niter, "fallback", err, reason)
            ratio *= 0.1
            u, v = best[1], best[2]
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


def _eps_of(nx, x):
    import numpy as np

    return float(np.finfo(nx.to_numpy(x[:1]).dtype).eps)


def _newton_direction(nx, S, r, c, ga, gb, shift, rtol, maxiter, rows_first, eps):
    """Solve the sparsified Newton system through its Schur complement.

    The larger block is eliminated so that CG runs on ``min(n, m)`` unknowns:
    ``(diag(r) - S diag(1/c) S^T + shift) du = ga - S (gb / c)``, then
    ``dv = (gb - S^T du) / c`` (or the mirror image when ``n > m``).
    """
    tiny = eps * eps
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
