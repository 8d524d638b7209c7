"""Batch mode of the benchmark: throughput (problems per second) on many
small problems, the workload of a distance matrix.

Problems: pairs of scikit-learn's handwritten digits (8x8 images, upsampled
to 16x16 by pixel repetition with ``--grid 16``), normalised to histograms;
the near-empty pixels stay at zero, as in the images. Cost: squared
Euclidean distance between the pixel centres (W2 on the grid), normalised
to max 1. Every solver gets the same pairs, the same ``reg`` and the same
tolerance; a baseline slower than ``--budget`` seconds runs on a subset and
its throughput is extrapolated (and labelled so).

Solvers (``--solvers``):

- ``pot_sns``: :func:`pot_sns.pairwise` in this process;
- ``dask``: the same on a ``distributed.LocalCluster`` of ``--workers``
  worker processes, one thread each (cluster start-up and the workers'
  imports excluded, after a warm-up job);
- ``pot_solve``: a loop of ``ot.solve(M, a, b, reg=reg)``, POT's default
  entropic solver (log-domain Sinkhorn), with enough iterations to reach the
  tolerance or the budget;
- ``pot_batch``: ``ot.batch.solve_batch(..., method="log_sinkhorn")`` on a
  batch of the pairs;
- ``ott``: OTT-JAX's Sinkhorn under ``jax.vmap`` (when installed), JIT
  compiled before timing.

Every run reports the marginal error of its plans (2-norm of
``(P 1 - a, P^T 1 - b)``) and the largest relative difference of its
``<M, P>`` with pot_sns's.

Run ``python -m pot_sns.bench.batch --help`` (or the ``batch`` mode of
``python -m pot_sns.bench``).
"""

import argparse
import contextlib
import io
import json
import math
import os
import platform
import sys
import time
import warnings

import numpy as np

SOLVERS = ("pot_sns", "dask", "pot_solve", "pot_batch", "ott")

#: largest batch given to POT's batch solver and to OTT-JAX's vmap
BATCH_SUBSET = 16


# ---------------------------------------------------------------- problems

def digit_histograms(grid=16, count=None):
    """Digits of :func:`sklearn.datasets.load_digits` as histograms.

    Parameters
    ----------
    grid : {8, 16}
        Side of the images (16: each pixel repeated 2x2).
    count : int, optional
        Number of digits (all 1797 by default).

    Returns
    -------
    H : ndarray, shape (count, grid * grid)
        Rows of mass 1, with zeros where the image is empty.
    """
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError("the batch benchmark uses scikit-learn's digits: pip install "
                          "scikit-learn") from None
    if grid not in (8, 16):
        raise ValueError("grid must be 8 or 16, got %r" % (grid,))
    images = load_digits().images[:count].astype(np.float64)
    if grid == 16:
        images = np.kron(images, np.ones((1, 2, 2)))
    H = images.reshape(len(images), -1)
    return H / H.sum(axis=1, keepdims=True)


def grid_cost(grid):
    """Squared Euclidean distance between the pixel centres, max 1."""
    g = np.stack(np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij"), -1)
    g = g.reshape(-1, 2).astype(np.float64)
    M = ((g[:, None, :] - g[None, :, :]) ** 2).sum(-1)
    return M / M.max()


def pair_sets(n_pairs, grid):
    """Rows ``A`` and columns ``B`` of a ``K x L`` block of digit pairs with
    ``K * L >= n_pairs`` (about square; distinct digits)."""
    K = max(1, int(math.floor(math.sqrt(n_pairs))))
    L = int(math.ceil(n_pairs / K))
    H = digit_histograms(grid, K + L)
    return H[:K], H[K:K + L]


def marginal_error(P, a, b):
    """2-norm of ``(P 1 - a, P^T 1 - b)``."""
    return float(np.sqrt(np.sum((P.sum(1) - a) ** 2) + np.sum((P.sum(0) - b) ** 2)))


def _entry(solver, reg, n, seconds, **extra):
    out = {"solver": solver, "reg": reg, "problems": int(n), "seconds": float(seconds),
           "throughput": float(n / seconds) if seconds > 0 else float("nan")}
    out.update(extra)
    return out


def _rel(values, ref):
    values, ref = np.asarray(values, float), np.asarray(ref, float)
    return float(np.max(np.abs(values - ref) / np.abs(ref))) if len(ref) else float("nan")


# ---------------------------------------------------------------- pot_sns

def run_pot_sns(A, B, M, reg, tol, client=None, label="pot_sns", workers=0):
    """:func:`pot_sns.pairwise` of every pair, in this process or on ``client``."""
    import pot_sns

    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # non-convergence is counted below
        D, log = pot_sns.pairwise(A, B, M=M, reg=reg, stopThr=tol, client=client, log=True)
    seconds = time.perf_counter() - start
    ok = int((log["status"] == "converged").sum())
    return D, _entry(label, reg, D.size, seconds, workers=workers, converged=ok,
                     max_err=float(np.nanmax(log["err"])), max_rel_diff=0.0,
                     note="all %d pairs" % D.size)


def run_dask(A, B, M, reg, tol, n_workers, D_ref):
    """pot_sns on a fresh LocalCluster of ``n_workers`` processes (1 thread each)."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        return _skipped("dask", reg, "dask.distributed is not installed (pip install "
                        "'pot_sns[dask]')", workers=n_workers)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "Port 8787 is already in use"
        cluster = LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True,
                               host="127.0.0.1", dashboard_address=None, silence_logs=40)
    with cluster, Client(cluster, timeout=120) as client:
        client.run(__import__, "pot_sns")
        # warm-up: the workers' first solve (imports, caches) is not timed
        run_pot_sns(A[:1], B[:2 * n_workers], M, reg, tol, client=client)
        D, entry = run_pot_sns(A, B, M, reg, tol, client=client,
                               label="dask (%d worker%s)" % (n_workers, "s" * (n_workers > 1)),
                               workers=n_workers)
    entry["max_rel_diff"] = _rel(D.ravel(), D_ref.ravel())
    return entry


def _skipped(solver, reg, reason, **extra):
    print("  %s skipped: %s" % (solver, reason))
    out = {"solver": solver, "reg": reg, "skipped": reason}
    out.update(extra)
    return out


# ---------------------------------------------------------------- POT

def _pairs(A, B):
    return [(i, j) for i in range(len(A)) for j in range(len(B))]


def run_pot_solve(A, B, M, reg, tol, budget, D_ref):
    """A loop of ``ot.solve`` (POT's default entropic solver) over the pairs
    until ``budget`` seconds are spent; extrapolated to all pairs."""
    import ot

    pairs = _pairs(A, B)
    # per-iteration cost, to give each call as many iterations as the budget allows
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ot.solve(M, A[0], B[0], reg=reg, max_iter=50, tol=0.0)
    per_iter = (time.perf_counter() - start) / 50
    done, errs, values, ref, spent = 0, [], [], [], 0.0
    for i, j in pairs:
        left = budget - spent
        if done and left <= 0:
            break
        max_iter = int(max(100, min(10 ** 6, left / per_iter)))
        start = time.perf_counter()
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            # POT prints a line per call for weights with zeros; it warns when it
            # stops at max_iter (counted below)
            warnings.simplefilter("ignore")
            res = ot.solve(M, A[i], B[j], reg=reg, max_iter=max_iter, tol=tol)
        spent += time.perf_counter() - start
        done += 1
        errs.append(marginal_error(res.plan, A[i], B[j]))
        values.append(float(res.value_linear))
        ref.append(D_ref[i, j])
    converged = int(sum(e <= 10 * tol for e in errs))
    note = ("measured on all %d pairs" % done if done == len(pairs) else
            "extrapolated from %d of %d pairs" % (done, len(pairs)))
    return _entry("ot.solve loop", reg, done, spent, converged=converged, max_err=max(errs),
                  max_rel_diff=_rel(values, ref), extrapolated=done < len(pairs), note=note)


def run_pot_batch(A, B, M, reg, tol, budget, D_ref):
    """``ot.batch.solve_batch`` (log-Sinkhorn) on a batch of at most
    :data:`BATCH_SUBSET` pairs, with the iterations that fit in ``budget``."""
    import ot.batch
    from pot_sns.batch.hooks import pot_solve_batch

    solve_batch = pot_solve_batch()  # POT's, whether pot_sns is registered or not
    pairs = _pairs(A, B)[:BATCH_SUBSET]
    a = np.stack([A[i] for i, _ in pairs])
    b = np.stack([B[j] for _, j in pairs])
    Ms = np.broadcast_to(M, (len(pairs),) + M.shape).copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # log(0) of the zero weights
        start = time.perf_counter()
        solve_batch(Ms, reg, a, b, method="log_sinkhorn", max_iter=10, tol=0.0)
        per_iter = (time.perf_counter() - start) / 10
        max_iter = int(max(10, min(10 ** 6, budget / per_iter)))
        start = time.perf_counter()
        res = solve_batch(Ms, reg, a, b, method="log_sinkhorn", max_iter=max_iter, tol=tol)
        seconds = time.perf_counter() - start
    P = np.asarray(res.plan)
    errs = [marginal_error(P[k], a[k], b[k]) for k in range(len(pairs))]
    total = len(A) * len(B)
    note = "batch of %d pairs, max_iter=%d (%s)" % (
        len(pairs), max_iter, "all pairs" if len(pairs) == total else
        "extrapolated to the %d pairs" % total)
    return _entry("ot.batch.solve_batch", reg, len(pairs), seconds,
                  converged=int(sum(e <= 10 * tol for e in errs)), max_err=max(errs),
                  max_rel_diff=_rel(np.asarray(res.value_linear),
                                    [D_ref[i, j] for i, j in pairs]),
                  extrapolated=len(pairs) < total, note=note)


# ---------------------------------------------------------------- OTT-JAX

def run_ott(A, B, M, reg, tol, D_ref, max_iter=20000):
    """OTT-JAX's Sinkhorn under ``jax.vmap`` over a batch of pairs (float64),
    compiled before timing; skipped with the reason when not installed."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # e.g. jaxopt's notice
            import jax

            jax.config.update("jax_enable_x64", True)
            import jax.numpy as jnp
            from ott.geometry import geometry
            from ott.problems.linear import linear_problem
            from ott.solvers.linear import sinkhorn
    except ImportError as e:
        return _skipped("ott-jax vmap", reg, "OTT-JAX is not installed (pip install "
                        "'pot_sns[ott]'): %s" % e)
    pairs = _pairs(A, B)[:BATCH_SUBSET]
    a = jnp.asarray(np.stack([A[i] for i, _ in pairs]))
    b = jnp.asarray(np.stack([B[j] for _, j in pairs]))
    geom = geometry.Geometry(cost_matrix=jnp.asarray(M), epsilon=reg)
    solver = sinkhorn.Sinkhorn(threshold=tol, max_iterations=max_iter, inner_iterations=10)

    def one(ai, bi):
        out = solver(linear_problem.LinearProblem(geom, a=ai, b=bi))
        return out.matrix, out.converged

    start = time.perf_counter()
    fn = jax.jit(jax.vmap(one)).lower(a, b).compile()
    compile_s = time.perf_counter() - start
    start = time.perf_counter()
    P, conv = fn(a, b)
    P = np.asarray(jax.block_until_ready(P))
    seconds = time.perf_counter() - start
    an, bn = np.asarray(a), np.asarray(b)
    errs = [marginal_error(P[k], an[k], bn[k]) for k in range(len(pairs))]
    values = [float(np.sum(M * P[k])) for k in range(len(pairs))]
    total = len(A) * len(B)
    return _entry("ott-jax vmap", reg, len(pairs), seconds, compile_s=compile_s,
                  converged=int(np.sum(np.asarray(conv))), max_err=max(errs),
                  max_rel_diff=_rel(values, [D_ref[i, j] for i, j in pairs]),
                  extrapolated=len(pairs) < total,
                  note="vmap over %d pairs, max_iterations=%d" % (len(pairs), max_iter))


# ---------------------------------------------------------------- command line

def parser():
    """The options of the batch benchmark.

    Returns
    -------
    parser : argparse.ArgumentParser
    """
    p = argparse.ArgumentParser(
        prog="python -m pot_sns.bench batch",
        description="Throughput (problems/s) of pot_sns on many small OT problems (pairs of "
                    "digit histograms), in this process and on a dask LocalCluster, against "
                    "POT's ot.solve loop, ot.batch.solve_batch and OTT-JAX's vmap.")
    p.add_argument("--pairs", type=int, default=256,
                   help="number of digit pairs (default 256; rounded up to a K x L block)")
    p.add_argument("--reg", nargs="+", type=float, default=[1e-2, 1e-3],
                   help="regularisations (default 1e-2 1e-3)")
    p.add_argument("--workers", default="1,2",
                   help="LocalCluster sizes, comma-separated (default 1,2; 0 for none)")
    p.add_argument("--grid", type=int, default=16, choices=(8, 16),
                   help="image side: 8 (the digits) or 16 (upsampled 2x2; default)")
    p.add_argument("--tol", type=float, default=1e-9,
                   help="stopping threshold of every solver (default 1e-9, ot.solve's)")
    p.add_argument("--budget", type=float, default=30.0,
                   help="seconds allowed to each baseline measurement; slower baselines run "
                        "on a subset and are extrapolated (default 30)")
    p.add_argument("--solvers", default=",".join(SOLVERS),
                   help="comma-separated subset of %s (default: all)" % ", ".join(SOLVERS))
    p.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="plot throughput against workers")
    return p


def _options(argv):
    args = parser().parse_args(argv)
    args.solvers = [s for s in args.solvers.split(",") if s]
    unknown = sorted(set(args.solvers) - set(SOLVERS))
    if unknown:
        parser().error("unknown solver(s) %s; choose among %s" % (unknown, ", ".join(SOLVERS)))
    try:
        args.workers = [int(w) for w in str(args.workers).split(",") if w.strip()]
    except ValueError:
        parser().error("--workers must be comma-separated integers, got %r" % args.workers)
    args.workers = [w for w in args.workers if w > 0]
    if args.pairs < 1 or args.budget <= 0 or any(r <= 0 for r in args.reg):
        parser().error("--pairs, --budget and --reg must be positive")
    return args


def machine():
    """The machine and library versions, for the report.

    Returns
    -------
    info : dict
    """
    import ot

    import pot_sns

    info = {"platform": platform.platform(), "processor": platform.processor(),
            "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "pot": ot.__version__, "pot_sns": pot_sns.__version__}
    if hasattr(os, "getloadavg"):
        info["load_average"] = list(os.getloadavg())
    return info


def run(args):
    """Every measurement of ``args`` (see :func:`parser`).

    Returns
    -------
    results : list of dict
        One entry per solver and ``reg``.
    """
    A, B = pair_sets(args.pairs, args.grid)
    M = grid_cost(args.grid)
    results = []
    for reg in args.reg:
        print("reg=%g: %d pairs of %dx%d digit histograms (n=%d)"
              % (reg, len(A) * len(B), args.grid, args.grid, M.shape[0]))
        D, entry = run_pot_sns(A, B, M, reg, args.tol)
        todo = [entry] if "pot_sns" in args.solvers else []
        if "dask" in args.solvers:
            todo += [run_dask(A, B, M, reg, args.tol, w, D) for w in args.workers]
        if "pot_solve" in args.solvers:
            todo.append(run_pot_solve(A, B, M, reg, args.tol, args.budget, D))
        if "pot_batch" in args.solvers:
            todo.append(run_pot_batch(A, B, M, reg, args.tol, args.budget, D))
        if "ott" in args.solvers:
            todo.append(run_ott(A, B, M, reg, args.tol, D))
        for e in todo:
            e["speedup_of_pot_sns"] = (entry["throughput"] / e["throughput"]
                                       if e.get("throughput") else None)
        results += todo
    return results


def table(results):
    """The figures as a text table.

    Parameters
    ----------
    results : list of dict
        From :func:`run`.

    Returns
    -------
    text : str
    """
    lines = ["%-9s %-22s %9s %11s %8s %10s %10s  %s" % (
        "reg", "solver", "problems", "problems/s", "conv.", "max err", "rel diff", "note")]
    for e in results:
        if "skipped" in e:
            lines.append("%-9g %-22s %s" % (e["reg"], e["solver"], "skipped: " + e["skipped"]))
            continue
        lines.append("%-9g %-22s %9d %11.3g %8s %10.2g %10.2g  %s%s" % (
            e["reg"], e["solver"], e["problems"], e["throughput"],
            "%d/%d" % (e["converged"], e["problems"]), e["max_err"], e["max_rel_diff"],
            e.get("note", ""), "; not all converged: an upper bound" * (
                e["converged"] < e["problems"])))
    return "\n".join(lines)


def _flags(e):
    """How to read a figure: extrapolated from a subset, or an upper bound
    (not every problem reached the tolerance within the budget)."""
    flags = []
    if e.get("extrapolated"):
        flags.append("extrap.")
    if e.get("converged", 0) < e.get("problems", 0):
        flags.append("upper bound")
    return " (%s)" % ", ".join(flags) if flags else ""


def plot(results, path):
    """Throughput against the number of workers, one colour per ``reg``.

    Parameters
    ----------
    results : list of dict
        From :func:`run`.
    path : str
        Where to write the figure.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4.2))
    regs = sorted({e["reg"] for e in results}, reverse=True)
    styles = {"pot_sns": "--", "ot.solve loop": ":", "ot.batch.solve_batch": "-.",
              "ott-jax vmap": (0, (6, 2, 1, 2, 1, 2))}
    for k, reg in enumerate(regs):
        color = "C%d" % k
        mine = [e for e in results if e["reg"] == reg and "skipped" not in e]
        dask = sorted((e["workers"], e["throughput"]) for e in mine
                      if e["solver"].startswith("dask"))
        if dask:
            ax.plot(*zip(*dask), "o-", color=color, label="pot_sns on dask, reg=%g" % reg)
        for e in mine:
            if e["solver"] in styles:
                ax.axhline(e["throughput"], color=color, ls=styles[e["solver"]], lw=1,
                           label="%s%s, reg=%g" % (e["solver"], _flags(e), reg))
    ax.set_yscale("log")
    workers = sorted({e["workers"] for e in results if e.get("workers")})
    if workers:
        ax.set_xticks(workers)
    ax.set_xlabel("dask workers (one thread each)")
    ax.set_ylabel("problems / s")
    ax.set_title("Digit pairs: throughput (lines: one process)")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    """Run the batch benchmark; print a table, write JSON and a plot.

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
    >>> from pot_sns.bench.batch import main
    >>> main(["--help"])  # doctest: +SKIP
    """
    args = _options(argv)
    info = machine()
    print("pot_sns batch benchmark on %s (%s CPUs, load %s)" % (
        info["platform"], info["cpu_count"], info.get("load_average")))
    results = run(args)
    print(table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": info, "options": vars(args), "results": results}, f,
                      indent=2, default=str)
    if args.plot:
        plot(results, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
