# -*- coding: utf-8 -*-
"""
=============================================
Convergence: marginal error against wall time
=============================================

This example compares SNS with POT's Sinkhorn solvers on two problems
where the regularization is small:

- the random assignment problem of the SNS paper, with i.i.d. uniform
  costs and ``reg = 1/1200``;
- two 2-D point clouds with a squared Euclidean cost and ``reg = 1e-3``.

For each solver and each iteration budget ``k``, the solver is run from
scratch with ``numItermax=k``. The plot shows the L1 marginal error of the
plan it returns against the wall time of that run (the faster of two
runs, for runs shorter than 0.1 s). Each point is therefore a real run, not an estimate. Each curve stops when the solver meets its
stopping criterion (``stopThr=1e-9``), when a run takes longer than a time
budget, or when the solver fails.

``python -m pot_sns.bench --plot FILE.png`` runs the full version of this
comparison, with larger problems, more solvers and repeated timings. See the
benchmarks page of this documentation.
"""

# License: MIT License
# sphinx_gallery_thumbnail_number = 1

import time
import warnings

import matplotlib.pyplot as plt
import numpy as np
import ot

import pot_sns

##############################################################################
# Problems
# --------
#
# Both costs are scaled to a maximum of 1. The sizes are smaller than in the
# benchmark, so that this page builds in seconds.

rng = np.random.default_rng(0)

n = 300
M_assign = rng.random((n, n))
a_assign = b_assign = ot.unif(n)

x = rng.normal(size=(n, 2))
y = rng.normal(size=(n, 2)) * 0.7 + [1.5, 0.5]
M_cloud = ot.dist(x, y)
M_cloud /= M_cloud.max()
a_cloud, b_cloud = ot.unif(n), ot.unif(n)

problems = {
    "random assignment, n=%d, reg=1/1200" % n: (a_assign, b_assign, M_assign, 1 / 1200),
    "2-D point clouds (W2), n=%d, reg=1e-3" % n: (a_cloud, b_cloud, M_cloud, 1e-3),
}

##############################################################################
# Solvers and traces
# ------------------
#
# Every solver is called with the same arguments: the weights, the cost,
# ``reg``, an iteration budget, and ``stopThr=1e-9``.
#
# POT's kernel-domain ``sinkhorn`` is the fastest per sweep. Once
# :math:`e^{-M/\mathrm{reg}}` underflows, it fails, and the failure is
# shown as such. ``sinkhorn_log`` is stable, but each sweep costs more.

TOL = 1e-9
TIME_BUDGET = 0.6  # seconds for the longest run of a solver on a problem
REPEAT = 2  # short runs are timed twice and the faster time is kept


def pot_solver(method):
    def solve(a, b, M, reg, k):
        P, log = ot.sinkhorn(a, b, M, reg, method=method, numItermax=k,
                             stopThr=TOL, log=True)
        # the solver stopped before its budget: it met its own criterion
        done = log.get("niter", log.get("n_iter", k)) < k - 1
        return P, done
    return solve


def sns(a, b, M, reg, k):
    P, log = pot_sns.sinkhorn_newton_sparse(a, b, M, reg, numItermax=k,
                                            stopThr=TOL, warn=False, log=True)
    return P, log["status"] == "converged"


solvers = {
    "SNS (pot_sns)": (sns, range(1, 1000)),
    "POT sinkhorn": (pot_solver("sinkhorn"), None),
    "POT sinkhorn_log": (pot_solver("sinkhorn_log"), None),
    "POT sinkhorn_stabilized": (pot_solver("sinkhorn_stabilized"), None),
}


def doubling_budgets():
    k = 10
    while True:
        yield k
        k *= 2


def marginal_error(P, a, b):
    return float(np.abs(P.sum(1) - a).sum() + np.abs(P.sum(0) - b).sum())


def trace(solve, budgets, a, b, M, reg):
    """(time, error) of runs with growing budgets, and how the trace ended."""
    times, errors = [], []
    for k in budgets or doubling_budgets():
        elapsed = np.inf
        for _ in range(REPEAT):
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")  # "did not converge": expected
                t0 = time.perf_counter()
                P, done = solve(a, b, M, reg, k)
                elapsed = min(elapsed, time.perf_counter() - t0)
            if elapsed > 0.1:  # long runs are timed reliably once
                break
        err = marginal_error(P, a, b)
        if not np.isfinite(err):
            return times, errors, "fails (non-finite plan)"
        times.append(elapsed)
        errors.append(err)
        if done:
            return times, errors, "converged"
        if elapsed > TIME_BUDGET:
            return times, errors, "time budget reached"
    return times, errors, "budget list exhausted"


results = {}
for pname, (a, b, M, reg) in problems.items():
    for sname, (solve, budgets) in solvers.items():
        results[pname, sname] = trace(solve, budgets, a, b, M, reg)

##############################################################################
# Error against time
# ------------------

fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
for ax, pname in zip(axes, problems):
    for i, sname in enumerate(solvers):
        times, errors, status = results[pname, sname]
        label = sname if status in ("converged", "time budget reached") else (
            "%s: %s" % (sname, status))
        if times:
            ax.loglog(times, errors, ".-" if i == 0 else "-", color="C%d" % i,
                      label=label)
        else:
            ax.plot([], [], color="C%d" % i, label=label)
    ax.axhline(TOL, color="k", lw=0.8, ls="--")
    ax.set_title(pname)
    ax.set_xlabel("wall time of the run (s)")
    ax.grid(True, which="major", alpha=0.3)
axes[0].set_ylabel("L1 marginal error of the returned plan")
axes[0].legend(loc="lower left", fontsize=8)
fig.tight_layout()

##############################################################################
# Time to reach a marginal error of 1e-6
# --------------------------------------
#
# This is the first budget whose run reaches the threshold. A dash means
# that the solver did not reach it within the time budget.

for pname in problems:
    print(pname)
    for sname in solvers:
        times, errors, status = results[pname, sname]
        hit = [t for t, e in zip(times, errors) if e <= 1e-6]
        best = min(errors) if errors else float("nan")
        print("  %-24s %10s   smallest error %.1e  (%s)"
              % (sname, "%.3f s" % hit[0] if hit else "-", best, status))

plt.show()
