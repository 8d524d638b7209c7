"""The Sinkhorn stages of SNS: epsilon scaling and log-domain sweeps.

Sinkhorn sweeps are exact block-coordinate ascent on the dual
(:mod:`pot_sns.objective`); they bring the potentials to where Newton's
method converges fast. Epsilon scaling runs a few sweeps at each of a
decreasing sequence of larger regularizations first, carrying the
potentials across the cost's scale (Sinkhorn at a tiny ``reg`` crawls there,
and damped Newton needs many steps: the dual is far from quadratic).
"""

import math

#: marginal error (relative to the mass) at which a stage of the epsilon
#: scaling stops before its ``scaling_sweeps``
SCALING_TOL = 1e-4


def sweeps(run, u, v, count, stage, kernel=None, objective=None, tol=None):
    """Up to ``count`` Sinkhorn sweeps from ``(u, v)``.

    Each sweep updates ``v`` then ``u``; its error, the marginal violation
    at the point it reaches (whose row sums are exact: the distance of its
    column sums to their target, what POT's ``sinkhorn`` measures), is
    recorded in ``run``. Those column sums are the next sweep's first
    half-sweep, so measuring costs no pass. The sweeps stop early below
    ``tol`` (default: the run's ``stopThr``) or when the run's iteration
    budget is spent.

    Parameters
    ----------
    run : pot_sns.solver.Run
        The solve in progress (budget, log, stopping threshold).
    u, v : array-like
        Start potentials.
    count : int
        Largest number of sweeps.
    stage : str
        Name of the stage in the log.
    kernel, objective : optional
        Kernel and objective of the sweeps (default: the run's; the epsilon
        scaling passes those of a larger reg).
    tol : float, optional
        Error at which to stop.

    Returns
    -------
    u, v : array-like
        Potentials after the last sweep.
    err : float
        Error of the last sweep (inf when none was done).
    rates : list of float
        Contraction factors of the error between successive sweeps.
    """
    kern = run.kernel if kernel is None else kernel
    obj = run.objective if objective is None else objective
    nx = run.nx
    tol = run.stopThr if tol is None else tol
    rates = []
    err = math.inf
    targets = obj.scaling_targets()
    fast = None  # sweeps in scaling form, where the kernel offers them
    # the column log-sum-exp the run's last sweep left at u (only the run's
    # own kernel: a memo must not keep an epsilon-scaling stage's alive)
    memo = run.col_memo if kern is run.kernel else None
    lse_c = memo[1] if memo is not None and memo[0] is u else None
    for _ in range(count):
        if not run.budget_left():
            break
        if fast is None and targets is not None:
            fast = kern.scaled_sweeps(targets, u, v, lse_c)
            if fast is None and lse_c is None:
                # the column half-sweep, which the log-domain sweep needs
                # too, may bring the plan into kernel form (an exp pass)
                lse_c = kern.col_lse(u)
                fast = kern.scaled_sweeps(targets, u, v, lse_c)
        err_new = None if fast is None else fast.sweep()
        if err_new is None:
            if fast is not None:
                u, v = fast.potentials()
                fast = lse_c = None
            if lse_c is None:
                lse_c = kern.col_lse(u)
            v = obj.col_update(lse_c)
            u = obj.row_update(kern.row_lse(v))
            lse_c = kern.col_lse(u)
            # (u, v) has exact row sums; its column sums are exp(v + lse_c)
            err_new = float(nx.norm(obj.col_target(v) - nx.exp(v + lse_c)))
        run.out.n_sinkhorn += 1
        if math.isfinite(err) and err > 0:
            rates.append(err_new / err)
        err = err_new
        run.record(stage, err)
        if err < tol:
            break
    if fast is not None:
        u, v = fast.potentials()
        lse_c = None
    run.col_memo = None if lse_c is None or kern is not run.kernel else (u, lse_c)
    # Sinkhorn crawls along the direction that leaves the plan unchanged
    # (unbalanced duals with reg_m >> reg): the objective steps there exactly
    u, v = obj.translate(u, v)
    return u, v, err, rates


def scaling_schedule(kernel, opts):
    """Regularizations of the epsilon-scaling warm-up, largest first.

    They start at ``scaling_start`` times the spread of the costs and divide
    by ``scaling_factor`` down to (excluded) the target ``reg``; empty when
    the target is at least ``scaling_from`` times the spread.
    """
    if not opts.eps_scaling:
        return []
    lo, hi = kernel.cost_range()
    spread = hi - lo
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


def epsilon_scaling(run, u, v):
    """Sweeps at each regularization of :func:`scaling_schedule`; returns the
    potentials rescaled to the run's ``reg``."""
    opts = run.opts
    prev = None
    for r_k in scaling_schedule(run.kernel, opts):
        if not run.budget_left():
            break
        obj = run.objective.at_reg(r_k)
        if prev is not None:
            u, v = obj.rescale(u, v, prev / r_k)
        stage = run.kernel.at_reg(r_k)
        # an intermediate reg needs no more than a rough solve
        u, v, _, _ = sweeps(run, u, v, opts.scaling_sweeps, "sinkhorn", stage, obj,
                            max(run.stopThr, SCALING_TOL * run.objective.mass))
        run.out.n_scaling = run.out.n_sinkhorn
        prev = r_k
        del stage
    if prev is not None:
        u, v = run.objective.rescale(u, v, prev / run.kernel.reg)
    return u, v


def sinkhorn_stage(run, u, v):
    """``n_sinkhorn`` sweeps at the target ``reg``, then on, five at a time,
    while the error contracts by at least ``sinkhorn_rate`` per sweep
    (Sinkhorn is then cheaper than Newton)."""
    opts = run.opts
    u, v, err, rates = sweeps(run, u, v, opts.n_sinkhorn, "sinkhorn")
    while run.budget_left() and err >= run.stopThr and len(rates) >= 3:
        rate = math.exp(sum(math.log(max(x, 1e-300)) for x in rates[-3:]) / 3)
        if rate > opts.sinkhorn_rate:
            break
        u, v, err, more = sweeps(run, u, v, 5, "sinkhorn")
        rates += more
    return u, v
