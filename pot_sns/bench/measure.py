"""Time to a target accuracy, measured the same way for every solver.

A solver "reaches the target" when its plan has an L1 marginal error
``||P 1 - a||_1 + ||P^T 1 - b||_1 <= tol`` and a cost ``<M, P>`` within
``cost_tol`` (relative) of a high-accuracy reference. Solvers stop on their
own criteria (POT: the 2-norm of one marginal every 10 sweeps; regot: the
2-norm of the gradient; OTT: the 1-norm of one marginal; pot_sns: the 2-norm
of both marginals), so the benchmark calls each one, unmodified, with its own
tolerance set to ``tol`` and, if the returned plan misses the target, again
with a tolerance tightened by the observed excess (times :data:`MARGIN`),
until the target is met (at most :data:`MAX_TRIES` calls). The reported time
is the median wall time of ``repeat`` calls at the tolerance that met the
target (fewer calls when they would take more than the budget in all, more
for short calls: they are repeated until they took a quarter of a second in
all, at most 50).

Every CPU call runs in a child process, killed past twice the budget (a
safety net for solvers whose time the probe underestimates), so that no
solver's threads or state reach the benchmark process. The children come
from a fork server (:func:`pot_sns.bench.runners._context`): a process
that imported the solvers once and runs no threads of JAX or torch, so
that forking is safe. The timed calls run together in one child, after
untimed warm-up calls when a call takes less than a second (three under a
tenth of a second): a fresh child pays for its first touches of memory
(page faults, about 20 ms at n=1000), which a user's call in a running
program does not, and its allocator hands memory back to later calls only
after a few of them.

Each solver gets a time budget: a short probe run gives the cost of one
iteration and the iteration cap is ``budget / cost``. A solver that hits the
cap has not converged within the budget; its time is then a lower bound.
"""

import math
import statistics
from dataclasses import dataclass, field

import numpy as np

MAX_TRIES = 4
#: factor beyond the observed excess by which a missed target tightens the
#: native tolerance: a little room for an error that falls less than the
#: tolerance (each retry is a whole call), where a larger margin would time
#: a solver to an accuracy the target does not ask for (a Newton solver
#: whose last step lands between the two tolerances pays a whole step more)
MARGIN = 1.25


@dataclass
class Result:
    """One solver on one problem.

    ``status`` is ``"ok"`` (target reached), ``"budget"`` (iteration cap of
    the time budget hit first, or killed at twice the budget), ``"stalled"``
    (the solver stopped on its own criterion but its plan never met the
    target) or ``"failed"`` (an exception, a non-finite plan, or a plan that
    lost or gained half the mass: diverged).
    """

    problem: str
    n: int
    m: int
    reg: float
    solver: str
    status: str
    time: float
    niter: int
    l1: float
    cost_rel: float
    native_tol: float = math.nan
    tries: int = 0
    times: list = field(default_factory=list)
    trace: list = field(default_factory=list)
    info: dict = field(default_factory=dict)

    @property
    def ok(self):
        return self.status == "ok"


def l1_error(P, a, b):
    """``||P 1 - a||_1 + ||P^T 1 - b||_1``."""
    return float(np.abs(P.sum(1) - a).sum() + np.abs(P.sum(0) - b).sum())


def reference(prob):
    """High-accuracy reference cost ``<M, P*>`` and its L1 marginal error.

    The entropic plan is the only plan of the form ``exp(u + v - M/reg)``
    with the right marginals, so a plan of that form whose marginals are
    exact to ~1e-12 certifies itself; pot_sns computes it.
    """
    import pot_sns

    P, log = pot_sns.sinkhorn_newton_sparse(prob.a, prob.b, prob.M, prob.reg, stopThr=1e-13,
                                            numItermax=100000, log=True, warn=False)
    err = l1_error(P, prob.a, prob.b)
    if not err <= 1e-9:
        import ot

        P = ot.sinkhorn(prob.a, prob.b, prob.M, prob.reg, method="sinkhorn_log", stopThr=1e-14,
                        numItermax=200000, warn=False)
        err = min(err, l1_error(P, prob.a, prob.b))
    return float(np.sum(prob.M * P)), err


def iteration_cap(runner, prob, budget):
    """Iterations that fit in ``budget`` seconds, from probe runs of growing
    length (the cost of one iteration is the slope between the last two, so
    that fixed costs, such as computing the kernel, are not counted per
    iteration)."""
    if runner.probe_iters <= 0:
        return 100000
    k = runner.probe_iters
    prev = None
    while True:
        probe = runner.run(prob, 0.0, k)
        if probe.status in ("failed", "killed") or not probe.wall > 0:
            return k
        # POT reports the index of the last iteration: k - 1 when it ran all.
        # Two probes at least, for a slope.
        if (not getattr(runner, "probe_grow", True) or probe.niter < k - 1 or k >= 10 ** 6
                or (prev is not None and probe.wall - prev.wall >= 0.02 * budget)):
            break
        prev = probe
        k *= 4
    if prev is not None and probe.niter > prev.niter and probe.wall > prev.wall:
        per_iter = (probe.wall - prev.wall) / (probe.niter - prev.niter)
        fixed = max(probe.wall - per_iter * probe.niter, 0.0)
    else:
        per_iter, fixed = probe.wall / max(probe.niter, 1), 0.0
    return max(runner.probe_iters, int(max(budget - fixed, 0.0) / per_iter))


def _broken(run, mass):
    """Why the plan of ``run`` is no plan, or "" when it may be one.

    A run cut by the iteration cap may still be far from its marginals (a
    Newton iterate can carry 1.7 times the mass): that is a solver out of
    its budget. A plan that has collapsed (mass below 1e-3 of the weights',
    e.g. POT's stabilized absorption underflowing), or that a solver
    returns as converged with half the mass lost or gained, has diverged.
    """
    total = float(np.sum(run.plan))
    if not total >= 1e-3 * mass:
        return "diverged (plan mass %.3g instead of %.3g)" % (total, mass)
    if run.status == "stopped" and not abs(total - mass) < 0.5 * mass:
        return "diverged (plan mass %.3g instead of %.3g)" % (total, mass)
    return ""


def time_to_target(runner, prob, ref_cost, tol, cost_tol, budget, repeat=1):
    """Measure ``runner`` on ``prob``; returns a :class:`Result`."""
    n, m = prob.M.shape
    mass = float(prob.a.sum())
    old_timeout = getattr(runner, "timeout", None)
    # a safety net for solvers whose later iterations cost more than the
    # probe's: the call is killed past twice the budget
    runner.timeout = 2.0 * budget + 1.0
    try:
        cap = iteration_cap(runner, prob, budget)
        native = tol
        tries = 0
        run = None
        met = False
        l1 = rel = math.nan
        while tries < MAX_TRIES:
            tries += 1
            run = runner.run(prob, native, cap)
            if run.status in ("failed", "killed"):
                break
            l1 = l1_error(run.plan, prob.a, prob.b)
            rel = abs(float(np.sum(prob.M * run.plan)) - ref_cost) / max(abs(ref_cost), 1e-300)
            why = _broken(run, mass)
            if why:
                run.status = "failed"
                run.info["error"] = why
                break
            met = l1 <= tol and rel <= cost_tol
            if met or run.status != "stopped":
                break
            # Stopped on its own criterion too early: ask for the error it
            # reached, reduced by the excess over the target.
            excess = max(l1 / tol, rel / cost_tol, 1.0)
            reached = run.trace[-1][1] if run.trace else native
            if reached > 0 and math.isfinite(reached):
                native = min(native, reached)
            native /= min(max(MARGIN * excess, 2.0), 1e4)
            if native < 1e-15:
                break
        walls = [run.wall]
        if met:
            walls = runner.timed(prob, native, cap, max(repeat, 1), budget, run.wall) or walls
    finally:
        runner.timeout = old_timeout
    if run.status == "failed":
        status = "failed"
    elif met:
        status = "ok"
    elif run.status == "stopped":
        status = "stalled"
    else:
        status = "budget"
    info = dict(run.info)
    info["iteration_cap"] = cap
    return Result(prob.name, n, m, prob.reg, runner.name, status,
                  statistics.median(walls) if walls and not math.isnan(walls[0]) else math.nan,
                  run.niter, l1, rel, native, tries, walls, run.trace, info)


def speedup(base, res):
    """``(factor, is_lower_bound)`` of ``res`` over ``base``, or None.

    A base that ran out of its budget gives a lower bound; a result that did
    not reach the target gives none.
    """
    if base is None or res is None or not res.ok or not res.time > 0:
        return None
    if base.ok:
        return base.time / res.time, False
    if base.status == "budget" and base.time > 0:
        return base.time / res.time, True
    return None


def geomean(values):
    vals = [v for v in values if v is not None and v > 0]
    if not vals:
        return None
    return math.exp(sum(math.log(v) for v in vals) / len(vals))
