"""Solver runners: one call of each solver, timed, with its convergence trace.

Every runner takes a :class:`~pot_sns.bench.problems.Problem`, a tolerance in
the solver's own stopping criterion and an iteration cap, and returns a
:class:`Run`. Only the solver call is timed: moving data to the device and
reading the plan back are not. Optional libraries (regot, ott-jax, torch,
cupy) are imported only when their runner is used.
"""

import functools
import math
import os
import time
import warnings
from dataclasses import dataclass, field

import numpy as np

#: the solvers known to the benchmark, in table order
SOLVERS = ["pot_sns", "sinkhorn", "sinkhorn_log", "sinkhorn_stabilized",
           "sinkhorn_epsilon_scaling", "regot_ssns", "regot_newton",
           "ott", "ott_momentum", "ott_anderson"]
POT_METHODS = ["sinkhorn", "sinkhorn_log", "sinkhorn_stabilized", "sinkhorn_epsilon_scaling"]


@dataclass
class Run:
    """Outcome of one solver call.

    Attributes
    ----------
    plan : ndarray or None
        The plan, on the host (None when the solver failed).
    wall : float
        Seconds spent in the solver call (compilation excluded).
    niter : int
        Iterations done, as the solver counts them.
    status : str
        ``"stopped"`` (the solver's own criterion was met), ``"max_iter"``
        (iteration cap, i.e. the time budget), ``"killed"`` (stopped by the
        hard time limit, no plan) or ``"failed"``.
    trace : list of (float, float)
        ``(seconds, error)`` pairs, the error in the solver's own measure.
    info : dict
        Solver-specific details (stages, compile time, error message).
    """

    plan: object
    wall: float
    niter: int
    status: str
    trace: list = field(default_factory=list)
    info: dict = field(default_factory=dict)


def available(name):
    """``(True, "")`` when the solver can run here, else ``(False, reason)``."""
    if name in ("pot_sns",) or name in POT_METHODS:
        return True, ""
    import importlib.util

    if name.startswith("regot"):
        if importlib.util.find_spec("regot") is None:
            return False, ('regot is not installed: pip install "pot_sns[bench]" '
                           "(or pip install regot)")
        return True, ""
    if name in OTT_CONFIGS:
        # not imported here: JAX runs in a worker process (see OTT)
        if importlib.util.find_spec("jax") is None or importlib.util.find_spec("ott") is None:
            return False, 'ott-jax is not installed: pip install "pot_sns[ott]"'
        return True, ""
    return False, "unknown solver %r" % name


# ---------------------------------------------------------------- devices
class Device:
    """Where the problem lives: ``cpu`` (numpy), ``torch-cpu``, ``cuda``
    (torch on the GPU) or ``cupy`` (cupy on the GPU)."""

    NAMES = ("cpu", "torch-cpu", "cuda", "cupy")

    def __init__(self, name):
        if name not in self.NAMES:
            raise ValueError("device must be one of %s, got %r" % (", ".join(self.NAMES), name))
        self.name = name
        self.host = name == "cpu"
        if name in ("torch-cpu", "cuda"):
            import torch

            if name == "cuda" and not torch.cuda.is_available():
                raise RuntimeError("device 'cuda': torch sees no CUDA GPU")
            self._torch = torch
            self._dev = torch.device("cuda" if name == "cuda" else "cpu")
        elif name == "cupy":
            import cupy

            self._cupy = cupy

    def put(self, *arrays):
        if self.host:
            return arrays
        if self.name == "cupy":
            return tuple(self._cupy.asarray(x) for x in arrays)
        return tuple(self._torch.as_tensor(x, device=self._dev) for x in arrays)

    def get(self, x):
        if self.host or x is None:
            return None if x is None else np.asarray(x)
        if self.name == "cupy":
            return self._cupy.asnumpy(x)
        return x.detach().cpu().numpy()

    def sync(self):
        if self.name == "cuda":
            self._torch.cuda.synchronize()
        elif self.name == "cupy":
            self._cupy.cuda.Stream.null.synchronize()


def _spread(trace_errs, wall, niters):
    """Times of errors checked at iterations ``niters`` of a run whose
    iterations all cost the same (Sinkhorn): linear in the iteration."""
    last = max(niters[-1], 1) if niters else 1
    return [(wall * k / last, e) for k, e in zip(niters, trace_errs)]


def _walls(call, repeat, budget):
    """Wall times of ``repeat`` calls of ``call`` (returning a :class:`Run`),
    fewer once they exceed ``budget`` in all, more for short calls: on until
    :data:`SHORT_TOTAL` seconds or :data:`MAX_CALLS` calls. A failed or
    killed call ends the series.

    A call of a few milliseconds is at the mercy of the machine: a time slice
    lost to another process, a cache flushed, changes its time by half. The
    median of many such calls is what a user's loop of them sees.
    """
    walls = []
    while len(walls) < max(repeat, MAX_CALLS):
        spent = sum(walls)
        if spent > budget or (len(walls) >= repeat and spent >= SHORT_TOTAL):
            break
        out = call()
        if out.status in ("failed", "killed"):
            break
        walls.append(out.wall)
    return walls


#: short calls are repeated until they took this many seconds in all ...
SHORT_TOTAL = 0.25
#: ... or this many calls were timed
MAX_CALLS = 50


# ---------------------------------------------------------------- runners
def _error(exc):
    text = str(exc).splitlines()[0] if str(exc) else ""
    return {"error": "%s: %s" % (type(exc).__name__, text)}


def _context():
    """The start method of the isolated calls: ``forkserver`` (None where
    there is none, e.g. Windows).

    The children fork from a server process that has imported the solvers
    once and has run nothing, not from the benchmark's process: forking a
    process where JAX, torch or BLAS threads run can deadlock the child
    (Python warns), and a fork server has none running. It starts a child
    in milliseconds, where ``spawn`` would import numpy, POT and torch again
    for every call.
    """
    import multiprocessing

    try:
        ctx = multiprocessing.get_context("forkserver")
        from multiprocessing import forkserver
    except (ValueError, ImportError):
        return None
    # where the server is not running yet: it preloads the solvers' modules,
    # without POT's torch, JAX and TensorFlow backends (its children solve
    # numpy problems only), which would take seconds to import
    ctx.set_forkserver_preload([__name__, "pot_sns", "ot", "pot_sns.bench.cli"])
    saved = {k: os.environ.get(k) for k in _SERVER_ENV}
    os.environ.update(_SERVER_ENV)
    try:
        forkserver.ensure_running()  # inherits this environment when it starts
    finally:
        for k, v in saved.items():
            if v is None:
                del os.environ[k]
            else:
                os.environ[k] = v
    return ctx


#: the fork server's environment (see :func:`_context`)
_SERVER_ENV = {"POT_BACKEND_DISABLE_%s" % k: "1" for k in ("PYTORCH", "JAX", "TENSORFLOW",
                                                           "CUPY")}


def _child(fn, send):
    """The isolated child: ``fn()``, its :class:`Run` sent back on ``send``."""
    try:
        out = fn()
    except BaseException as exc:  # noqa: B902 - reported to the parent
        out = Run(None, math.nan, 0, "failed", info=_error(exc))
    try:
        send.send(out)
    finally:
        send.close()


def _isolated(fn, timeout):
    """``fn()`` (picklable) in a child process, killed after ``timeout`` seconds.

    Returns the child's :class:`Run`, a ``"killed"`` run when it was killed,
    or a ``"failed"`` one when it crashed. Without a fork server (Windows),
    runs ``fn()`` here, without a hard time limit.
    """
    ctx = _context()
    if ctx is None:
        return fn()
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_child, args=(fn, send), daemon=True)
    t0 = time.perf_counter()
    proc.start()
    send.close()
    try:
        if recv.poll(timeout):
            try:
                return recv.recv()
            except (EOFError, OSError):
                proc.join(1.0)
                return Run(None, math.nan, 0, "failed",
                           info={"error": "crashed (exit code %s)" % proc.exitcode})
        return Run(None, time.perf_counter() - t0, 0, "killed",
                   info={"error": "killed after %.3g s" % timeout})
    finally:
        recv.close()
        if proc.is_alive():
            proc.kill()
        proc.join()


def _timed_calls(runner, prob, tol, max_iter, repeat, budget, wall):
    """The timed calls of :meth:`Runner.timed`, as one :class:`Run` whose
    ``info["walls"]`` holds their wall times."""
    for _ in range(warm_up_calls(wall)):
        runner._run(prob, tol, max_iter)
    walls = _walls(functools.partial(runner._run, prob, tol, max_iter), repeat, budget)
    return Run(None, sum(walls), len(walls), "stopped", info={"walls": walls})


class Runner:
    """Base class: ``run(prob, tol, max_iter)`` -> :class:`Run`."""

    name = "?"
    #: iterations of the probe run that estimates the cost of one iteration
    probe_iters = 10
    #: lengthen the probe until its fixed costs are negligible
    probe_grow = True
    #: the solver stops on the L1 (True) or L2 (False) marginal error
    l1_criterion = False
    #: hard wall-clock limit of one call (seconds); None: no limit. Calls
    #: then run in a child process (where available), killed on time.
    timeout = None

    def __init__(self, device):
        self.device = device

    def prepare(self, prob):
        """Device copies of the problem (not timed)."""
        return self.device.put(prob.a, prob.b, prob.M)

    def run(self, prob, tol, max_iter):
        if self.timeout is not None and self.device.host:
            return _isolated(functools.partial(self._run, prob, tol, max_iter), self.timeout)
        return self._run(prob, tol, max_iter)

    def timed(self, prob, tol, max_iter, repeat, budget, wall):
        """Wall times of ``repeat`` calls (see :func:`_walls`), in one child
        process when calls are isolated, after untimed warm-up calls when
        one call (``wall``, measured before) takes less than
        :data:`WARM_UP_BELOW` seconds (see :func:`warm_up_calls`)."""
        calls = functools.partial(_timed_calls, self, prob, tol, max_iter, repeat, budget, wall)
        if self.timeout is not None and self.device.host:
            limit = (repeat + 4) * (wall + self.timeout) + budget + SHORT_TOTAL
            out = _isolated(calls, limit)
        else:
            out = calls()
        return out.info.get("walls", [])

    def _run(self, prob, tol, max_iter):
        data = self.prepare(prob)
        self.device.sync()
        try:
            t0 = time.perf_counter()
            out = self.call(data, prob.reg, tol, max_iter)
            self.device.sync()
            wall = time.perf_counter() - t0
        except Exception as exc:  # a failing solver is reported, never hidden
            return Run(None, math.nan, 0, "failed", info=_error(exc))
        return self.finish(out, wall, tol, max_iter)


#: a call shorter than this (seconds) gets untimed warm-up calls first
WARM_UP_BELOW = 1.0


def warm_up_calls(wall):
    """Untimed calls before the timed ones, for a call of ``wall`` seconds.

    The first calls in a process pay for its first touches of memory (page
    faults); the allocator hands the same memory back to later calls after
    a few of them. Calls under a tenth of a second get three (the first
    fault-free call was the third for pot_sns and POT's ``sinkhorn`` at
    n = 500), longer ones under a second one.
    """
    if wall < 0.1:
        return 3
    return 1 if wall < WARM_UP_BELOW else 0


class PotSNS(Runner):
    name = "pot_sns"
    probe_iters = 0  # never capped by the probe: iterations differ too much

    def __init__(self, device, **options):
        super().__init__(device)
        self.options = options

    def call(self, data, reg, tol, max_iter):
        import pot_sns

        a, b, M = data
        return pot_sns.sinkhorn_newton_sparse(a, b, M, reg, numItermax=max_iter, stopThr=tol,
                                              log=True, warn=False, **self.options)

    def finish(self, out, wall, tol, max_iter):
        P, log = out
        status = "stopped" if log["status"] == "converged" else log["status"]
        info = {"n_sinkhorn": log["n_sinkhorn"], "n_newton": log["n_newton"],
                "cg_iters": int(sum(log["cg_iters"])),
                "max_density": float(max(log["density"])) if log["density"] else 0.0,
                "fallbacks": len(log["fallbacks"])}
        times = log.get("times")
        errs = log["err"]
        if times is not None and len(times) == len(errs):
            trace = list(zip(times, errs))
        else:  # no timestamps: spread the errors over the run
            trace = _spread(errs, wall, list(range(1, len(errs) + 1)))
        # the epsilon-scaling sweeps measure errors at other regs: the trace
        # starts at the target reg (its times still count the warm-up)
        skip = int(log.get("n_scaling", 0))
        info["n_scaling"] = skip
        trace = trace[skip:]
        return Run(self.device.get(P), wall, log["niter"], status, trace, info)


class PotMethod(Runner):
    """One of POT's ``ot.sinkhorn`` methods."""

    def __init__(self, device, method):
        super().__init__(device)
        self.name = self.method = method
        if method == "sinkhorn_epsilon_scaling":
            self.probe_iters = 1  # iterations are outer loops of many sweeps

    def call(self, data, reg, tol, max_iter):
        import ot

        a, b, M = data
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            P, log = ot.sinkhorn(a, b, M, reg, method=self.method, numItermax=max_iter,
                                 stopThr=tol, log=True, warn=False)
        return P, log, [str(w.message) for w in caught]

    def finish(self, out, wall, tol, max_iter):
        P, log, caught = out
        niter = int(log.get("niter", log.get("n_iter", 0)))
        errs = [float(e) for e in log.get("err", [])]
        # POT checks the error every 10 sweeps (epsilon scaling: every outer loop)
        step = max(1, math.ceil(niter / max(len(errs), 1)))
        trace = _spread(errs, wall, [min((k + 1) * step, niter) for k in range(len(errs))])
        stopped = bool(errs) and errs[-1] <= tol
        status = "stopped" if stopped else "max_iter"
        Ph = self.device.get(P)
        info = {}
        # POT's kernel-domain sinkhorn gives up (and warns) on under/overflow
        aborted = [w for w in caught if "numerical errors" in w]
        if aborted:
            status = "failed"
            info["error"] = aborted[0].strip()
        if not np.all(np.isfinite(Ph)):
            status = "failed"
            info.setdefault("error", "non-finite plan")
        return Run(Ph, wall, niter, status, trace, info)


class Regot(Runner):
    """regot's C++ solvers (CPU, float64, Fortran-ordered cost)."""

    probe_iters = 3

    def __init__(self, device, which):
        super().__init__(device)
        self.name = "regot_" + which
        self.which = which

    def prepare(self, prob):
        return (np.ascontiguousarray(prob.a, dtype=np.float64),
                np.ascontiguousarray(prob.b, dtype=np.float64),
                np.asfortranarray(prob.M, dtype=np.float64))

    def call(self, data, reg, tol, max_iter):
        import regot

        a, b, M = data
        fn = {"ssns": regot.sinkhorn_ssns, "newton": regot.sinkhorn_newton}[self.which]
        return fn(M, a, b, reg, tol=tol, max_iter=max_iter)

    def finish(self, out, wall, tol, max_iter):
        errs = [float(e) for e in out.mar_errs]
        times = [float(t) / 1000.0 for t in out.run_times]  # milliseconds
        trace = list(zip(times, errs))
        status = "stopped" if errs and errs[-1] < tol else "max_iter"
        P = np.asarray(out.plan)
        info = {}
        if not np.all(np.isfinite(P)):
            status = "failed"
            info["error"] = "non-finite plan"
        return Run(P, wall, int(out.niter), status, trace, info)


#: OTT-JAX configurations: the default Sinkhorn, adaptive momentum (Lehmann
#: et al., from the error decay after ``start`` iterations) and Anderson
OTT_CONFIGS = {
    "ott": {},
    "ott_momentum": {"momentum": ("Momentum", {"start": 30, "error_threshold": 1.0})},
    "ott_anderson": {"anderson": ("AndersonAcceleration", {"memory": 5})},
}
_OTT_COMPILED = {}


def _ott_call(name, a, b, M, reg, tol, max_iter):
    """One OTT-JAX solve, in the worker process (see :class:`OTT`)."""
    try:
        import jax

        jax.config.update("jax_enable_x64", True)
        import jax.numpy as jnp
        from ott.geometry import geometry
        from ott.problems.linear import linear_problem
        from ott.solvers.linear import acceleration, sinkhorn

        geom = geometry.Geometry(cost_matrix=jnp.asarray(M), epsilon=reg)
        lp = linear_problem.LinearProblem(geom, a=jnp.asarray(a), b=jnp.asarray(b))
        key = (name, M.shape, reg, tol, max_iter)
        t0 = time.perf_counter()
        if key not in _OTT_COMPILED:
            kw = {k: getattr(acceleration, cls)(**args)
                  for k, (cls, args) in OTT_CONFIGS[name].items()}
            solver = sinkhorn.Sinkhorn(threshold=tol, max_iterations=max(max_iter, 10),
                                       inner_iterations=10, **kw)
            _OTT_COMPILED.clear()
            _OTT_COMPILED[key] = jax.jit(lambda p: solver(p)).lower(lp).compile()
        compile_s = time.perf_counter() - t0
        fn = _OTT_COMPILED[key]
        t0 = time.perf_counter()
        out = fn(lp)
        out.f.block_until_ready()
        wall = time.perf_counter() - t0
    except Exception as exc:
        return Run(None, math.nan, 0, "failed", info=_error(exc))
    niter = int(out.n_iters)
    errs = [float(e) for e in np.asarray(out.errors).ravel() if e >= 0]
    trace = _spread(errs, wall, [10 * (k + 1) for k in range(len(errs))])
    P = np.asarray(out.matrix)
    status = "stopped" if bool(out.converged) else "max_iter"
    info = {"compile_s": compile_s}
    if not np.all(np.isfinite(P)):
        status = "failed"
        info["error"] = "non-finite plan"
    return Run(P, wall, niter, status, trace, info)


def _ott_loop(conn):
    """Worker process: solve the OTT-JAX calls it receives until closed."""
    while True:
        try:
            args = conn.recv()
        except (EOFError, OSError):
            break
        conn.send(_ott_call(*args))


class _Worker:
    """One spawned process running :func:`_ott_loop`."""

    def __init__(self):
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_ott_loop, args=(child,), daemon=True)
        self.proc.start()
        child.close()

    def call(self, args, timeout):
        """``_ott_call(*args)`` there; None after ``timeout`` seconds."""
        self.conn.send(args)
        if not self.conn.poll(timeout):
            return None
        return self.conn.recv()  # EOFError if the worker died

    def close(self):
        self.conn.close()
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join()


class OTT(Runner):
    """OTT-JAX's ``Sinkhorn`` (float64, log-domain), JIT compiled ahead of
    the timed call; the compile time is reported apart.

    JAX runs in a worker process of its own (started once, by ``spawn``):
    the benchmark process stays free of XLA's threads, so that the other
    solvers can still run in forked children, and a call past its time
    limit is stopped by killing the worker.
    """

    l1_criterion = True  # norm_error=1
    probe_iters = 200  # one compilation per probe length: a single probe
    probe_grow = False
    _worker = None

    def __init__(self, device, name):
        super().__init__(device)
        self.name = name

    @classmethod
    def shutdown(cls):
        if OTT._worker is not None:
            OTT._worker.close()
            OTT._worker = None

    def timed(self, prob, tol, max_iter, repeat, budget, wall):
        # the worker is warm (and compiled) already
        return _walls(lambda: self.run(prob, tol, max_iter), repeat, budget)

    def run(self, prob, tol, max_iter):
        # compilation and transfers are not timed but take time: a generous limit
        limit = None if self.timeout is None else 2.0 * self.timeout + 30.0
        try:
            if OTT._worker is None:
                OTT._worker = _Worker()
            out = OTT._worker.call(
                (self.name, prob.a, prob.b, prob.M, prob.reg, tol, max_iter), limit)
        except (EOFError, OSError) as exc:
            OTT.shutdown()
            return Run(None, math.nan, 0, "failed",
                       info={"error": "OTT-JAX worker died (%s)" % type(exc).__name__})
        if out is None:
            OTT.shutdown()
            return Run(None, limit, 0, "killed", info={"error": "killed after %.3g s" % limit})
        return out


def make_runner(name, device, sns_options=None):
    """The runner of solver ``name`` on ``device`` (a :class:`Device`)."""
    if name == "pot_sns":
        return PotSNS(device, **(sns_options or {}))
    if name in POT_METHODS:
        return PotMethod(device, name)
    if not device.host:
        raise ValueError("solver %r runs on the CPU only (numpy inputs)" % name)
    if name.startswith("regot_"):
        return Regot(device, name[len("regot_"):])
    if name in OTT_CONFIGS:
        return OTT(device, name)
    raise ValueError("unknown solver %r; known: %s" % (name, ", ".join(SOLVERS)))
