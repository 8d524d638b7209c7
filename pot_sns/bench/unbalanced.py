"""Unbalanced benchmark: SNS against POT's and OTT-JAX's unbalanced Sinkhorn.

Problems: two Gaussian clouds in 2-D (``n`` and ``m`` points, the second
shifted by ``--shift``), squared Euclidean cost divided by its maximum,
uniform weights of total masses 1 and ``--mass`` (1.5), for every ``reg``
and ``reg_m`` of the grid (default ``reg`` 1e-2, 1e-3 and ``reg_m`` 0.1, 1).

Solvers:

- ``sns``: :func:`pot_sns.sinkhorn_newton_sparse_unbalanced`, for
  ``reg_type`` "kl" and "entropy";
- ``pot``: :func:`ot.unbalanced.sinkhorn_unbalanced` with each of
  ``--pot-methods`` (default ``sinkhorn``, what ``ot.solve`` runs,
  ``sinkhorn_stabilized`` and ``sinkhorn_translation_invariant``), both
  ``reg_type``, ``--pot-iter`` iterations at most;
- ``ott``: OTT-JAX's unbalanced Sinkhorn (entropy form,
  ``tau = reg_m / (reg_m + reg)``), in a few configurations, the best
  reported; skipped, with the reason, when jax or ott-jax is missing.

Every plan is judged by the same oracle, the optimality residual of
:func:`pot_sns.unbalanced.residual.optimality_residual` (the L1 distance
between the plan and the plan rebuilt from the potentials its marginals
imply: 0 at the optimum, whatever solver produced it). A plan is reported as
*failed* when it is not finite, or its residual or the error of its mass
exceeds ``--fail`` times the mass of the SNS plan (certified by the same
residual): a wrong answer is a failure, and its mass is shown.

Run ``python -m pot_sns.bench --unbalanced --help``.
"""

import argparse
import json
import os
import platform
import time
import warnings

import numpy as np

SOLVERS = ("sns", "pot", "ott")
POT_METHODS = ("sinkhorn", "sinkhorn_stabilized", "sinkhorn_translation_invariant")


def clouds(n, m, mass_b=1.5, shift=2.0, seed=0):
    """The benchmark's problem: Gaussian clouds, cost / max, uniform weights.

    Parameters
    ----------
    n, m : int
        Number of points of each cloud.
    mass_b : float, optional
        Total mass of the second cloud (the first has mass 1).
    shift : float, optional
        Offset of the second cloud's mean along both axes.
    seed : int, optional
        Random seed.

    Returns
    -------
    a, b, M : ndarray
        Weights (masses 1 and ``mass_b``) and cost matrix (max 1).

    Examples
    --------
    >>> a, b, M = clouds(4, 5)
    >>> round(float(a.sum()), 6), round(float(b.sum()), 6), float(M.max())
    (1.0, 1.5, 1.0)
    """
    rng = np.random.RandomState(seed)
    x = rng.randn(n, 2)
    y = rng.randn(m, 2) + shift
    M = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    return np.full(n, 1.0 / n), np.full(m, mass_b / m), M / M.max()


def _timed(fn, repeat):
    """``(result, best seconds)`` of ``repeat`` calls."""
    best, out = np.inf, None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return out, best


def judge(P, ref_mass, problem, reg, reg_m, reg_type, fail):
    """Mass, residual and verdict of a plan (see the module notes).

    Returns
    -------
    figures : dict
        ``mass``, ``residual``, ``status`` (``"ok"`` or ``"failed"``).
    """
    from ..unbalanced.residual import optimality_residual

    a, b, M = problem
    P = np.asarray(P, dtype=np.float64)
    mass = float(P.sum())
    if not np.isfinite(P).all():
        return {"mass": mass, "residual": None, "status": "failed"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # log(0) of a failed plan
        res = optimality_residual(M, P, a, b, reg, reg_m, reg_type)
    bad = not np.isfinite(res) or res > fail * ref_mass or abs(mass - ref_mass) > \
        fail * ref_mass
    return {"mass": mass, "residual": float(res), "status": "failed" if bad else "ok"}


def run_sns(problem, reg, reg_m, reg_type, tol, repeat):
    """SNS on one problem; its plan's mass is the reference of the others."""
    import pot_sns

    a, b, M = problem
    (P, log), seconds = _timed(lambda: pot_sns.sinkhorn_newton_sparse_unbalanced(
        a, b, M, reg, reg_m, reg_type=reg_type, stopThr=tol, log=True, warn=False), repeat)
    entry = {"solver": "sns", "reg_type": reg_type, "seconds": seconds,
             "iterations": log["niter"], "n_newton": log["n_newton"],
             "converged": log["status"] == "converged"}
    entry.update(judge(P, float(P.sum()), problem, reg, reg_m, reg_type, fail=1e-3))
    return P, entry


def run_pot(problem, method, reg, reg_m, reg_type, tol, max_iter, repeat, ref_mass, fail):
    """One of POT's unbalanced Sinkhorn solvers, with its warnings counted."""
    import ot

    a, b, M = problem
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        P, seconds = _timed(lambda: ot.unbalanced.sinkhorn_unbalanced(
            a, b, M, reg, reg_m, method=method, reg_type=reg_type, numItermax=max_iter,
            stopThr=tol), repeat)
    entry = {"solver": "pot " + method, "reg_type": reg_type, "seconds": seconds,
             "warnings": sorted({str(w.message)[:60] for w in caught
                                 if "overwritten by the one matrix" not in str(w.message)})}
    entry.update(judge(P, ref_mass, problem, reg, reg_m, reg_type, fail))
    return entry


def ott_configs():
    """OTT-JAX Sinkhorn configurations tried (the best is reported)."""
    return [{"lse_mode": True},
            {"lse_mode": True, "momentum": "adaptive"},
            {"lse_mode": True, "anderson": 5}]


def run_ott(problem, reg, reg_m, tol, max_iter, repeat, ref_mass, fail):
    """OTT-JAX's unbalanced Sinkhorn (entropy form); the fastest configuration
    whose plan is not failed. A skip entry with the reason when OTT-JAX or
    jax is missing."""
    skip = {"solver": "ott-jax", "reg_type": "entropy"}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import jax

            jax.config.update("jax_enable_x64", True)
            import jax.numpy as jnp
            from ott.geometry import geometry
            from ott.problems.linear import linear_problem
            from ott.solvers.linear import sinkhorn
    except ImportError as e:
        return dict(skip, skipped="jax / ott-jax not installed (%s)" % e)
    a, b, M = (jnp.asarray(x) for x in problem)
    tau = reg_m / (reg_m + reg)
    prob = linear_problem.LinearProblem(geometry.Geometry(cost_matrix=M, epsilon=reg),
                                        a=a, b=b, tau_a=tau, tau_b=tau)
    best = None
    for config in ott_configs():
        kwargs = dict(config, threshold=tol, max_iterations=max_iter)
        if "momentum" in kwargs:
            from ott.solvers.linear import acceleration

            kwargs["momentum"] = acceleration.Momentum(start=20)
        if "anderson" in kwargs:
            from ott.solvers.linear import acceleration

            kwargs["anderson"] = acceleration.AndersonAcceleration(memory=kwargs["anderson"])
        try:
            solve = jax.jit(sinkhorn.Sinkhorn(**kwargs))
            jax.block_until_ready(solve(prob).matrix)  # compile
            out, seconds = _timed(lambda: jax.block_until_ready(solve(prob)), repeat)
        except Exception as e:  # a configuration this OTT version lacks
            entry = dict(skip, config=str(config), skipped="%s: %s" % (type(e).__name__, e))
        else:
            entry = dict(skip, config=str(config), seconds=seconds,
                         converged=bool(out.converged))
            entry.update(judge(np.asarray(out.matrix), ref_mass, problem, reg, reg_m,
                               "entropy", fail))
        if best is None or _better(entry, best):
            best = entry
    return best


def _better(e, best):
    """Whether ``e`` beats ``best``: not failed first, then faster."""
    def key(x):
        return (x.get("status") != "ok", x.get("seconds", np.inf))
    return key(e) < key(best)


def parser():
    """The options of the unbalanced benchmark.

    Returns
    -------
    parser : argparse.ArgumentParser
    """
    p = argparse.ArgumentParser(
        prog="python -m pot_sns.bench --unbalanced",
        description="Unbalanced entropic OT (KL marginal penalties): SNS against POT's "
                    "unbalanced Sinkhorn solvers and OTT-JAX on Gaussian clouds.")
    p.add_argument("--n", type=int, default=400, help="points of the first cloud (400)")
    p.add_argument("--m", type=int, default=500, help="points of the second cloud (500)")
    p.add_argument("--mass", type=float, default=1.5, help="mass of the second cloud (1.5)")
    p.add_argument("--shift", type=float, default=2.0, help="offset of its mean (2)")
    p.add_argument("--reg", nargs="+", type=float, default=[1e-2, 1e-3])
    p.add_argument("--reg-m", nargs="+", type=float, default=[0.1, 1.0])
    p.add_argument("--tol", type=float, default=1e-9,
                   help="stopping threshold of every solver (1e-9)")
    p.add_argument("--pot-iter", type=int, default=10000,
                   help="iteration budget of POT's and OTT's solvers (10000)")
    p.add_argument("--pot-methods", default=",".join(POT_METHODS))
    p.add_argument("--solvers", default=",".join(SOLVERS),
                   help="comma-separated subset of %s" % ", ".join(SOLVERS))
    p.add_argument("--repeat", type=int, default=3, help="best of this many runs (3)")
    p.add_argument("--fail", type=float, default=1e-2,
                   help="failed when the residual or the mass error exceeds this times "
                        "the SNS plan's mass (1e-2)")
    p.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    return p


def machine():
    """Platform, versions and load average, for the report."""
    import ot

    import pot_sns

    info = {"platform": platform.platform(), "cpu_count": os.cpu_count(),
            "python": platform.python_version(), "numpy": np.__version__,
            "pot": ot.__version__, "pot_sns": pot_sns.__version__}
    if hasattr(os, "getloadavg"):
        info["load_average"] = list(os.getloadavg())
    return info


def run(args):
    """Every measurement of ``args`` (see :func:`parser`): a list of dicts,
    one per solver, ``reg_type``, ``reg`` and ``reg_m``."""
    solvers = [s for s in args.solvers.split(",") if s]
    problem = clouds(args.n, args.m, args.mass, args.shift)
    results = []
    for reg in args.reg:
        for reg_m in args.reg_m:
            common = {"reg": reg, "reg_m": reg_m, "n": args.n, "m": args.m}
            refs = {}
            for reg_type in ("kl", "entropy"):
                P, e = run_sns(problem, reg, reg_m, reg_type, args.tol, args.repeat)
                refs[reg_type] = float(P.sum())
                if "sns" in solvers:
                    results.append(dict(common, **e))
            for reg_type in ("kl", "entropy"):
                for method in [x for x in args.pot_methods.split(",") if x]:
                    if "pot" in solvers:
                        results.append(dict(common, **run_pot(
                            problem, method, reg, reg_m, reg_type, args.tol, args.pot_iter,
                            args.repeat, refs[reg_type], args.fail)))
            if "ott" in solvers:
                results.append(dict(common, **run_ott(
                    problem, reg, reg_m, args.tol, args.pot_iter, args.repeat,
                    refs["entropy"], args.fail)))
    return results


def table(results):
    """The figures as a text table."""
    lines = ["%-6s %-5s %-36s %-8s %9s %9s %10s  %s" % (
        "reg", "rho", "solver", "reg_type", "seconds", "mass", "residual", "status")]
    for e in results:
        head = "%-6g %-5g %-36s %-8s" % (e["reg"], e["reg_m"], e["solver"], e["reg_type"])
        if "skipped" in e:
            lines.append(head + " skipped: " + e["skipped"])
            continue
        res = "-" if e["residual"] is None else "%.2e" % e["residual"]
        lines.append("%s %9.4f %9.4g %10s  %s%s" % (
            head, e["seconds"], e["mass"], res, e["status"],
            "  " + e["config"] if "config" in e else ""))
    return "\n".join(lines)


def main(argv=None):
    """Run the unbalanced benchmark; print a table, write JSON.

    Parameters
    ----------
    argv : list of str, optional
        Command-line arguments (``sys.argv[1:]`` by default).

    Returns
    -------
    status : int
        0 on success.

    Examples
    --------
    >>> from pot_sns.bench.unbalanced import main
    >>> main(["--n", "20", "--m", "30", "--reg", "0.1", "--reg-m", "1",
    ...       "--solvers", "sns", "--repeat", "1"])  # doctest: +ELLIPSIS
    reg    rho   solver ...
    0
    """
    args = parser().parse_args(argv)
    unknown = sorted(set(s for s in args.solvers.split(",") if s) - set(SOLVERS))
    if unknown:
        parser().error("unknown solver(s) %s; choose among %s" % (unknown, ", ".join(SOLVERS)))
    if min(args.n, args.m, args.repeat, args.pot_iter) < 1 or args.tol <= 0 or \
            min(args.reg + args.reg_m) <= 0:
        parser().error("--n, --m, --repeat, --pot-iter, --tol, --reg and --reg-m must be "
                       "positive")
    results = run(args)
    print(table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine(), "args": vars(args), "results": results}, f,
                      indent=1)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(main())
