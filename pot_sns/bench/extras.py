"""Design figures beyond the timing table: the paper's Table 1 case, the cost
of one Newton iteration as n grows, dense passes per Newton iteration and
peak memory. :mod:`pot_sns.bench.report` formats them."""

import math
import statistics
import time
import tracemalloc
import warnings

import numpy as np

from . import problems
from .measure import l1_error

#: the paper's options: 20 Sinkhorn sweeps, then Newton (no epsilon scaling)
PAPER_OPTIONS = dict(eps_scaling=False, n_sinkhorn=20, sinkhorn_rate=1e-3)

#: Tang et al. (ICLR 2024), Table 1, random assignment n=500, eta=1200 (CPU)
PAPER_TABLE1 = {"sns_time": 0.34, "sns_iters": "20 + 9", "sinkhorn_time": 233.0,
                "sinkhorn_iters": 56199, "speedup": 686}


class _Counting:
    """Kernel proxy: attributes the kernel's dense passes (and the sparse or
    dense mat-vecs of CG, in units of full passes) to the Sinkhorn sweeps or
    to the Newton steps."""

    SWEEP = ("row_lse", "col_lse")

    def __init__(self, kernel):
        self._k = kernel
        self.sweep = {}
        self.newton = {}
        self.sweeps = 0

    def __getattr__(self, name):
        attr = getattr(self._k, name)
        if not callable(attr) or name.startswith("_") or not hasattr(self._k, "passes"):
            return attr

        def wrapped(*args, **kw):
            into = self.sweep if name in self.SWEEP else self.newton
            out = self.counted(into, attr, *args, **kw)
            self.sweeps += name == "row_lse"
            if name == "evaluate" and out[2] is not None:
                out = (out[0], out[1], _CountingHist(self, out[2]))
            if name == "select":
                return _CountingBlock(self, out, self._k.shape)
            if name == "scaled_sweeps" and out is not None:
                return _CountingSweeps(self, out)
            return out

        return wrapped

    def counted(self, into, fn, *args, **kw):
        """``fn(*args, **kw)``, the kernel's passes it made added to ``into``."""
        before = dict(self._k.passes)
        out = fn(*args, **kw)
        for key, val in self._k.passes.items():
            d = val - before.get(key, 0)
            if d:
                into[key] = into.get(key, 0) + d
        return out


class _CountingSweeps:
    """A kernel's scaled sweeps (see ``scaled_sweeps``), their passes
    attributed to the Sinkhorn sweeps."""

    def __init__(self, owner, sweeps):
        self._o, self._s = owner, sweeps

    def sweep(self):
        err = self._o.counted(self._o.sweep, self._s.sweep)
        self._o.sweeps += err is not None
        return err

    def potentials(self):
        return self._s.potentials()


class _CountingHist:
    def __init__(self, owner, hist):
        self._o, self._h = owner, hist

    def __iter__(self):
        return iter(self._o.counted(self._o.newton, tuple, self._h))


class _CountingBlock:
    def __init__(self, owner, block, shape):
        self._o, self._b = owner, block
        self.nnz = block.nnz
        self._frac = block.nnz / float(shape[0] * shape[1])

    def _tick(self):
        self._o.newton["cg"] = self._o.newton.get("cg", 0) + self._frac

    def matvec(self, x):
        self._tick()
        return self._b.matvec(x)

    def rmatvec(self, y):
        self._tick()
        return self._b.rmatvec(y)

    def sq_matvec(self, x):
        self._tick()
        return self._b.sq_matvec(x)

    def sq_rmatvec(self, y):
        self._tick()
        return self._b.sq_rmatvec(y)


def passes_per_newton(prob, stopThr=1e-9, **options):
    """Dense passes over n-by-m arrays per Newton iteration, by kind."""
    import ot

    from ..kernels import make_kernel
    from ..objective import BalancedObjective
    from ..options import SNSOptions
    from ..solver import solve

    opts = SNSOptions.from_kwargs(options)
    nx = ot.backend.get_backend(prob.M)
    kernel = _Counting(make_kernel(nx, prob.M, prob.reg, opts.bin_width, opts.n_bins))
    res = solve(kernel, BalancedObjective(nx, prob.a, prob.b, prob.reg), opts, 100000, stopThr)
    k = max(res.n_newton, 1)
    per = {key: val / k for key, val in sorted(kernel.newton.items())}
    # sweeps at the target reg (those of the epsilon-scaling warm-up use
    # kernels of their own and are not counted here)
    sweeps = sum(kernel.sweep.values()) / max(kernel.sweeps, 1)
    return {"problem": prob.label, "n_sinkhorn": res.n_sinkhorn, "n_newton": res.n_newton,
            "n_scaling": res.n_scaling, "sweeps_counted": kernel.sweeps,
            "per_newton": per, "per_newton_total": sum(per.values()),
            "per_sweep_total": sweeps, "cg_iters": [int(c) for c in res.cg_iters],
            "density": [float(d) for d in res.density]}


def newton_iteration_time(prob, **options):
    """One solve's time per Newton iteration: the Newton stage's wall time
    (from the first Newton record to the last, line searches, threshold
    selection and block copies included) over its Newton iterations; also
    the median of the single steps, and CG iterations per step."""
    import pot_sns

    _, log = pot_sns.sinkhorn_newton_sparse(prob.a, prob.b, prob.M, prob.reg, stopThr=1e-10,
                                            numItermax=100000, log=True, warn=False,
                                            **options)
    t, s = log["times"], log["stages"]
    if log["n_newton"] == 0:
        return math.nan, math.nan, math.nan
    start = s.index("newton")
    steps = [t[i] - t[i - 1] for i in range(start + 1, len(t)) if s[i] == "newton"
             and s[i - 1] == "newton"]
    return ((t[-1] - t[start]) / log["n_newton"], statistics.median(steps),
            sum(log["cg_iters"]) / float(log["n_newton"]))


def _gemv_time(n, dtype):
    A, x = np.ones((n, n), dtype=dtype), np.ones(n, dtype=dtype)
    A @ x
    batches = []
    for _ in range(7):  # the fastest batch: what the machine can do
        t0 = time.perf_counter()
        for _ in range(10):
            A @ x
        batches.append((time.perf_counter() - t0) / 10)
    return min(batches)


def scaling(name="gaussmix", reg=1e-3, sizes=(1000, 2000, 4000), repeat=3, **options):
    """Time per Newton iteration at doubling sizes (medians of ``repeat``
    solves, the sizes interleaved so that a change in the machine's load hits
    them alike) and the ratios of consecutive sizes (O(nm): 4). Also the time
    of one mat-vec with an n-by-n array in float64 (the gradient's passes) and
    float32 (CG's): their own ratios show what the cache hierarchy adds to
    O(nm)."""
    probs = {n: problems.make(name, n, reg) for n in sizes}
    runs = {n: [] for n in sizes}
    for _ in range(repeat):
        for n in sizes:
            runs[n].append(newton_iteration_time(probs[n], **options))
    med = {n: [statistics.median(r[k] for r in runs[n]) for k in range(3)] for n in sizes}
    times = {n: med[n][0] for n in sizes}
    gemv = {n: _gemv_time(n, np.float64) for n in sizes}
    gemv32 = {n: _gemv_time(n, np.float32) for n in sizes}
    pairs = list(zip(sizes[:-1], sizes[1:]))

    def ratios(d):
        return {"%d/%d" % (hi, lo): d[hi] / d[lo] for lo, hi in pairs}

    steps = {n: med[n][1] for n in sizes}
    return {"problem": name, "reg": reg, "per_newton_s": {str(n): t for n, t in times.items()},
            "median_step_s": {str(n): t for n, t in steps.items()},
            "cg_per_newton": {str(n): med[n][2] for n in sizes},
            "gemv_s": {str(n): t for n, t in gemv.items()},
            "gemv32_s": {str(n): t for n, t in gemv32.items()},
            "ratios": ratios(times), "median_step_ratios": ratios(steps),
            "gemv_ratios": ratios(gemv), "gemv32_ratios": ratios(gemv32),
            "ratio": times[sizes[1]] / times[sizes[0]], "size_ratio": 4.0}


def peak_memory(name="gaussmix", n=1000, reg=1e-3, **options):
    """Peak traced memory of one solve, in n-by-m float64 arrays, M included
    (the float32 scratch an earlier solve left for reuse is freed first, so
    that it counts)."""
    import pot_sns
    from pot_sns.kernels.numpy import clear_scratch

    prob = problems.make(name, n, reg)
    unit = prob.M.size * 8.0
    clear_scratch()
    tracemalloc.start()
    try:
        P = pot_sns.sinkhorn_newton_sparse(prob.a, prob.b, prob.M, reg, warn=False, **options)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    del P
    return {"problem": prob.label, "peak_arrays": 1.0 + peak / unit}


def table1(budget=60.0, repeat=1):
    """The paper's Table 1 case: random assignment, n=500, reg=1/1200, solved
    to machine accuracy by SNS (paper's options and defaults) and by Sinkhorn."""
    import ot

    import pot_sns

    prob = problems.make("assignment", 500, problems.PAPER_REG)
    a, b, M, reg = prob.a, prob.b, prob.M, prob.reg
    rows = []

    def timed(fn):
        walls, out = [], None
        for _ in range(repeat):
            if sum(walls) > budget:  # slow runs: fewer repeats
                break
            t0 = time.perf_counter()
            out = fn()
            walls.append(time.perf_counter() - t0)
        return statistics.median(walls), out

    for label, opts in (("pot_sns (paper options)", PAPER_OPTIONS), ("pot_sns (defaults)", {})):
        wall, (P, log) = timed(lambda: pot_sns.sinkhorn_newton_sparse(
            a, b, M, reg, stopThr=1e-13, numItermax=100000, log=True, warn=False, **opts))
        rows.append({"method": label, "time": wall, "sinkhorn_iters": log["n_sinkhorn"],
                     "newton_iters": log["n_newton"], "l1": l1_error(P, a, b),
                     "status": log["status"]})
    # Sinkhorn to the same accuracy: POT's kernel-domain sinkhorn (its fastest),
    # and sinkhorn_log within the time budget
    for method in ("sinkhorn", "sinkhorn_log"):
        k = 10
        while True:
            t0 = time.perf_counter()
            ot.sinkhorn(a, b, M, reg, method=method, numItermax=k, stopThr=0.0, warn=False)
            probe = time.perf_counter() - t0
            if probe >= 0.02 * budget or k >= 10 ** 6:
                break
            k *= 4
        cap = max(10, int(budget * k / probe))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            wall, (P, log) = timed(lambda: ot.sinkhorn(
                a, b, M, reg, method=method, numItermax=cap, stopThr=1e-13, log=True,
                warn=False))
        ok = bool(np.all(np.isfinite(P)))
        err = l1_error(P, a, b) if ok else math.nan
        stopped = bool(log["err"]) and log["err"][-1] <= 1e-13
        rows.append({"method": method, "time": wall, "sinkhorn_iters": int(log["niter"]),
                     "newton_iters": 0, "l1": err,
                     "status": "converged" if stopped else ("failed" if not ok else "budget")})
    base = next(r for r in rows if r["method"] == "sinkhorn")
    for r in rows:
        r["speedup_vs_sinkhorn"] = base["time"] / r["time"]
        r["speedup_lower_bound"] = base["status"] == "budget"
    return {"problem": prob.label, "rows": rows, "paper": PAPER_TABLE1}

