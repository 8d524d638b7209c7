"""Run a suite: every (problem, reg) instance, every solver, time to target."""

import sys
import time

from . import problems
from .measure import reference, time_to_target, Result
from .problems import format_reg
from .runners import Device, available, make_runner


class Progress:
    """One line per measurement on ``stream`` (stderr by default)."""

    def __init__(self, total, stream=None, quiet=False):
        self.total = total
        self.done = 0
        self.stream = stream if stream is not None else sys.stderr
        self.quiet = quiet
        self.t0 = time.perf_counter()

    def start(self, what):
        if not self.quiet:
            self.stream.write("[%*d/%d %5.1fs] %-44s " % (
                len(str(self.total)), self.done + 1, self.total,
                time.perf_counter() - self.t0, what))
            self.stream.flush()

    def end(self, text):
        self.done += 1
        if not self.quiet:
            self.stream.write(text + "\n")
            self.stream.flush()


def make_runners(solvers, device, sns_options=None):
    """The runners of ``solvers`` that can run here on ``device`` (a
    :class:`~pot_sns.bench.runners.Device`), and the others with the reason.

    Returns
    -------
    runners : dict
        Solver name to runner, in the order of ``solvers``.
    skipped : dict
        Solver name to why it cannot run here and how to install it.
    """
    runners, skipped = {}, {}
    for name in solvers:
        ok, why = available(name)
        if ok:
            try:
                runners[name] = make_runner(name, device, sns_options)
            except (ValueError, ImportError) as exc:
                ok, why = False, str(exc)
        if not ok:
            skipped[name] = why
    return runners, skipped


def run_suite(problem_names, regs, solvers, n=None, tol=1e-6, cost_tol=1e-6, budget=2.0,
              repeat=1, device="cpu", sns_options=None, quiet=False, stream=None):
    """Measure ``solvers`` on every problem instance.

    Parameters
    ----------
    problem_names : list of str
        Keys of :data:`~pot_sns.bench.problems.FAMILIES`.
    regs : list of float
        Regularizations.
    solvers : list of str
        Among :data:`~pot_sns.bench.runners.SOLVERS`.
    n : int, list of int or None
        Size(s) of every problem; None: each family's default.

    Returns
    -------
    results : list of :class:`~pot_sns.bench.measure.Result`
    skipped : dict
        Solvers and problems that could not run here, with the reason.
    """
    runners, skipped = make_runners(solvers, Device(device), sns_options)
    sizes = list(n) if isinstance(n, (list, tuple)) else [n]
    names = []
    for name in problem_names:
        ok, why = problems.available(name)
        if ok:
            names.append(name)
        else:
            skipped[name] = why
    insts = [(p, size, r) for p in names for size in sizes for r in regs]
    progress = Progress(len(insts) * (len(runners) + 1), stream, quiet)
    results = []
    try:
        _measure_all(insts, runners, tol, cost_tol, budget, repeat, progress, results)
    finally:
        from .runners import OTT

        OTT.shutdown()
    return results, skipped


def _measure_all(insts, runners, tol, cost_tol, budget, repeat, progress, results):
    for name, n, reg in insts:
        prob = problems.make(name, n, reg)
        progress.start("%s: reference" % prob.label)
        ref_cost, ref_err = reference(prob)
        progress.end("<M,P> = %.10g (L1 err %.1e)" % (ref_cost, ref_err))
        for sname, runner in runners.items():
            progress.start("%s: %s" % (prob.label, sname))
            try:
                res = time_to_target(runner, prob, ref_cost, tol, cost_tol, budget, repeat)
            except Exception as exc:  # reported, never hidden
                res = Result(prob.name, prob.M.shape[0], prob.M.shape[1], reg, sname, "failed",
                             float("nan"), 0, float("nan"), float("nan"),
                             info={"error": "%s: %s" % (type(exc).__name__, exc)})
            res.info["reference_cost"] = ref_cost
            results.append(res)
            if res.ok:
                text = "%.3g s, %d it" % (res.time, res.niter)
            elif res.status == "budget":
                text = "not converged within %.3g s (%d it)" % (res.time, res.niter)
            else:
                text = res.status + (": " + res.info["error"] if "error" in res.info else "")
            progress.end(text)


def describe(problem_names, regs, n):
    """``gaussmix n=1000, ...; reg in {1e-02, 1e-03}``: what a run measures."""
    sizes = list(n) if isinstance(n, (list, tuple)) else [n]
    parts = []
    for p in problem_names:
        ns = [size if size is not None else problems.FAMILIES[p][1] for size in sizes]
        parts.append("%s n=%s" % (p, ",".join(str(x) for x in ns)))
    return "%s; reg in {%s}" % (", ".join(parts), ", ".join(format_reg(r) for r in regs))
