"""Quiet and loaded times (``python -m pot_sns.bench --busy N``).

A solver picked for speed should stay fast on a machine that other jobs
keep busy. The load test times the solvers on one problem instance twice,
with the benchmark's own protocol (:func:`~pot_sns.bench.suite.run_suite`):
on the machine as it is, then while ``N`` busy processes started by the
benchmark itself each keep a core busy, and reports both times and their
ratio.

The busy processes are pure-Python spin loops in subprocesses (no BLAS, no
memory traffic: they take cores, not caches). Each stops by itself after a
time limit or when the benchmark's process is gone, and the benchmark stops
them as soon as the loaded measurement ends.
"""

import os
import subprocess
import sys
import time

from .problems import FAMILIES, format_reg
from .report import format_time, status_text
from .suite import run_suite

#: the spin loop of one busy process; stops at its deadline, or once its
#: parent (the benchmark) is gone
SPIN = """import os, time
deadline, parent = time.monotonic() + {limit!r}, os.getppid()
while time.monotonic() < deadline and os.getppid() == parent:
    for _ in range(200000):
        pass
"""


class BusyProcesses:
    """``count`` spin loops in subprocesses, for a ``with`` block.

    Parameters
    ----------
    count : int
        Number of busy processes (one core each).
    limit : float
        Seconds after which each stops by itself (a bound in case the
        benchmark cannot stop them).
    """

    def __init__(self, count, limit):
        self.count, self.limit = int(count), float(limit)
        self.procs = []

    def __enter__(self):
        code = SPIN.format(limit=self.limit)
        for _ in range(self.count):
            self.procs.append(subprocess.Popen(
                [sys.executable, "-c", code], stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        time.sleep(0.3)  # started and spinning before the first timed call
        return self

    def running(self):
        """How many of the busy processes still run."""
        return sum(p.poll() is None for p in self.procs)

    def stop(self):
        """Kill the busy processes and wait for them."""
        for p in self.procs:
            if p.poll() is None:
                p.kill()
        for p in self.procs:
            p.wait()
        self.procs = []

    def __exit__(self, *exc):
        self.stop()


def _load():
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def load_test(name, n, reg, solvers, busy, quiet=False, **measure):
    """Times of ``solvers`` on one problem instance, quiet and loaded.

    Parameters
    ----------
    name : str
        Problem family.
    n : int or None
        Size (None: the family's default).
    reg : float
        Regularization.
    solvers : list of str
        Solvers to time.
    busy : int
        Busy processes started for the loaded measurement.
    quiet : bool
        No progress display.
    **measure
        ``tol``, ``cost_tol``, ``budget``, ``repeat``, ``device`` of
        :func:`~pot_sns.bench.suite.run_suite`.

    Returns
    -------
    dict
        ``quiet`` and ``loaded`` (lists of
        :class:`~pot_sns.bench.measure.Result`), ``skipped``, the 1-minute
        load averages before each measurement, the busy processes still
        running when the loaded one ended and the CPU count.
    """
    out = {"problem": name, "n": n, "reg": reg, "busy": int(busy), "cpus": os.cpu_count()}
    if not quiet:
        print("the machine as it is:", file=sys.stderr)
    out["load_quiet"] = _load()
    t0 = time.perf_counter()
    out["quiet"], out["skipped"] = run_suite([name], [reg], solvers, n=n, quiet=quiet, **measure)
    # the loaded run takes longer than the quiet one, and the busy processes
    # must outlive it; they stop by themselves at worst an hour later
    limit = min(3600.0, 60.0 + 20.0 * (time.perf_counter() - t0))
    if not quiet:
        print("with %d busy processes started by the benchmark:" % busy, file=sys.stderr)
    with BusyProcesses(busy, limit) as procs:
        out["load_loaded"] = _load()
        out["loaded"], _ = run_suite([name], [reg], solvers, n=n, quiet=quiet, **measure)
        out["busy_at_end"] = procs.running()
    return out


def format_load_test(doc):
    """The load test (:func:`load_test`) as text."""
    n = doc["n"] if doc["n"] is not None else FAMILIES[doc["problem"]][1]
    lines = ["quiet and loaded: %s n=%s reg=%s; %d busy processes (spin loops) on %s CPUs" % (
        doc["problem"], n, format_reg(doc["reg"]), doc["busy"], doc["cpus"])]
    rows = [("solver", "quiet [s]", "loaded [s]", "loaded/quiet", "status quiet/loaded")]
    for q, lo in zip(doc["quiet"], doc["loaded"]):
        ratio = "-"
        if q.ok and lo.ok:
            ratio = "%.2fx" % (lo.time / q.time)
        elif q.ok and lo.status == "budget":
            ratio = ">%.2fx" % (lo.time / q.time)
        rows.append((q.solver, format_time(q), format_time(lo), ratio,
                     "%s / %s" % (status_text(q), status_text(lo))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.append("load average (1 min) before: %.2f quiet, %.2f loaded" % (
        doc["load_quiet"], doc["load_loaded"]))
    if doc.get("busy_at_end", doc["busy"]) < doc["busy"]:
        lines.append("warning: %d of the %d busy processes had stopped before the loaded "
                     "measurement ended" % (doc["busy"] - doc["busy_at_end"], doc["busy"]))
    return "\n".join(lines)
