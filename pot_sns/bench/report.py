"""Benchmark output: the results table and its notation, the summary against
the targets, the Table 1 case, the design figures, JSON, the convergence plot
and the reStructuredText fragment of the documentation.

Every formatter of the benchmark lives here; the command line
(:mod:`pot_sns.bench.cli`) only calls them.
"""

import json
import math
import os
import platform
import sys

from .measure import geomean, speedup
from .problems import format_reg
from .runners import POT_METHODS

BASE = "sinkhorn_log"


def format_time(r):
    """``0.0213``, ``>2.01`` (target not reached within the budget) or ``-``."""
    if r.status == "failed" or not r.time == r.time:
        return "-"
    return (">" if r.status == "budget" else "") + "%.3g" % r.time


def _fmt_err(x):
    return "-" if x is None or not x == x else "%.1e" % x


def format_speedup(s):
    """A speed-up ``(factor, is_lower_bound)`` as text.

    ``36.4x`` (36.4 times faster), ``>913x`` (at least: the base ran out of
    its budget), ``1.77x slower``, ``<1.4x slower`` (at most: the base ran
    out of its budget before this solver finished) or ``-`` (no comparison).
    """
    if s is None:
        return "-"
    f, lower = s
    if f >= 1:
        return "%s%sx" % (">" if lower else "", _factor(f))
    return "%s%sx slower" % ("<" if lower else "", _factor(1.0 / f))


def _factor(f):
    return "%.0f" % f if f >= 100 else "%.3g" % f  # 2380, not 2.38e+03


def status_text(r):
    """The status column: ``ok``, ``budget``, ``budget, no iterate`` (not
    even a first error measurement within the budget), ``stalled`` or
    ``failed: reason``."""
    if r.status == "failed":
        return "failed: " + r.info.get("error", "")[:40]
    if r.status == "budget" and not r.trace:
        return "budget, no iterate"
    return r.status


#: the notation of the table and the summary, printed under the table
NOTATION = (
    "time: median seconds to the target; >t: not reached within the budget (t seconds spent).",
    "vs %s: Nx = N times faster; >Nx = at least N times (%s ran out of its budget);" % (
        BASE, BASE),
    "  Nx slower = takes N times as long; <Nx slower = at most N times; - = no comparison.",
    "status: ok (target reached), budget (not within the time budget; 'no iterate': not even",
    "  a first error measurement), stalled (stopped on its own criterion short of the",
    "  target), failed (with the reason).",
)


def instances(results):
    """Results grouped by problem instance, in order of appearance."""
    groups = {}
    for r in results:
        groups.setdefault((r.problem, r.n, r.m, r.reg), []).append(r)
    return groups


def _columns(rows, head):
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h)
              for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def table(results):
    """The results table as text (one line per solver and problem)."""
    head = ("problem", "n", "reg", "solver", "time [s]", "iters", "L1 err", "rel err <M,P>",
            "vs " + BASE, "status")
    rows = []
    for key, group in instances(results).items():
        base = next((r for r in group if r.solver == BASE), None)
        for r in group:
            s = None if r.solver == BASE else speedup(base, r)
            n = str(r.n) if r.n == r.m else "%dx%d" % (r.n, r.m)
            rows.append((r.problem, n, format_reg(r.reg), r.solver, format_time(r),
                         str(r.niter), _fmt_err(r.l1), _fmt_err(r.cost_rel),
                         format_speedup(s), status_text(r)))
    return _columns(rows, head)


def skipped_lines(skipped):
    """One line per skipped solver or problem, with the reason (and how to
    install what it needs)."""
    return ["skipped %s: %s" % kv for kv in skipped.items()]


# ---------------------------------------------------------------- summary
def _by_reg(results):
    by_reg = {}
    for key, group in instances(results).items():
        by_reg.setdefault(key[3], []).append((key, {r.solver: r for r in group}))
    return by_reg


def _vs_base(label, groups, ours, entry):
    sp = [(k[0], speedup(g.get(BASE), g.get(ours))) for k, g in groups]
    vals = [s for _, s in sp if s is not None]
    if not vals:
        return []
    gm = geomean([f for f, _ in vals])
    lower = any(lo for _, lo in vals)
    entry["vs_sinkhorn_log_geomean"] = gm
    entry["vs_sinkhorn_log_lower_bound"] = lower
    return ["reg=%s  %s vs %s: geometric mean %s over %d problems (%s)" % (
        label, ours, BASE, format_speedup((gm, lower)), len(vals),
        ", ".join("%s %s" % (p, format_speedup(s)) for p, s in sp))]


def _vs_other(label, groups, ours, other, entry):
    pairs = [(k[0], speedup(g[other], g.get(ours)), g[other].status)
             for k, g in groups if other in g]
    if not pairs:
        return []
    timed = [(p, s) for p, s, _ in pairs if s is not None]
    faster = [(p, s) for p, s in timed if s[0] > 1]
    slower = [(p, s) for p, s in timed if s[0] <= 1]
    entry["faster_than_" + other] = [len(faster), len(timed)]
    text = "reg=%s  %s faster than %s on %d/%d problems" % (
        label, ours, other, len(faster), len(timed))
    if faster:
        text += " (%s)" % ", ".join("%s %s" % (p, format_speedup(s)) for p, s in faster)
    if slower:
        text += "; slower on %s" % ", ".join("%s (%s)" % (p, format_speedup(s))
                                             for p, s in slower)
    missed = [(p, st) for p, s, st in pairs if s is None]
    if missed:
        text += "; %s did not reach the target on %s" % (
            other, ", ".join("%s (%s)" % m for m in missed))
    return [text]


def _vs_best_ott(label, groups, ours, entry):
    best_ott = []
    for k, g in groups:
        otts = [g[s] for s in g if s.startswith("ott")]
        if otts:
            done = [r for r in otts if r.ok]
            best = min(done, key=lambda r: r.time) if done else max(
                otts, key=lambda r: r.time if r.time == r.time else -1)
            best_ott.append((k[0], best, speedup(best, g.get(ours))))
    if not best_ott:
        return []
    wins = sum(1 for _, _, s in best_ott if s is not None and s[0] > 1)
    entry["faster_than_best_ott"] = [wins, len(best_ott)]
    return ["reg=%s  %s faster than the best OTT-JAX configuration on %d/%d problems (%s)" % (
        label, ours, wins, len(best_ott), ", ".join(
            "%s %s %s" % (p, b.solver, format_speedup(s) if s else b.status)
            for p, b, s in best_ott))]


def _vs_fastest_pot(label, groups, ours, entry):
    ratios = []
    for k, g in groups:
        pot = [g[s] for s in POT_METHODS if s in g and g[s].ok]
        mine = g.get(ours)
        if pot and mine is not None and mine.ok:
            best = min(pot, key=lambda r: r.time)
            ratios.append((k[0], best.solver, mine.time / best.time))
    if not ratios:
        return []
    worst = max(q for _, _, q in ratios)
    entry["time_over_fastest_pot_max"] = worst
    return ["reg=%s  %s time / POT's fastest converging method: worst %.2f (%s)" % (
        label, ours, worst, ", ".join("%s %s %.2f" % r for r in ratios))]


def summary(results, ours="pot_sns"):
    """Figures against the targets, as a dict and as text lines: the
    speed-up over ``sinkhorn_log`` (geometric mean), wins and losses against
    every other solver (by how much, either way), against the best OTT-JAX
    configuration, and the time over POT's fastest converging method."""
    out, lines = {}, []
    by_reg = _by_reg(results)
    for reg in sorted(by_reg, reverse=True):
        entry = {}
        label, groups = format_reg(reg), by_reg[reg]
        lines += _vs_base(label, groups, ours, entry)
        for other in sorted({s for _, g in groups for s in g} - {ours, BASE}):
            lines += _vs_other(label, groups, ours, other, entry)
        lines += _vs_best_ott(label, groups, ours, entry)
        lines += _vs_fastest_pot(label, groups, ours, entry)
        out[label] = entry
    return out, lines


# ---------------------------------------------------------------- extras
def format_table1(t1):
    """The paper's Table 1 case (:func:`pot_sns.bench.extras.table1`) as text."""
    lines = ["Table 1 case (%s), to machine accuracy (L2 marginal error < 1e-13):" % t1["problem"],
             "  %-26s %10s %18s %10s %16s  %s" % ("method", "time [s]", "iterations",
                                                   "L1 err", "vs sinkhorn", "status")]
    for r in t1["rows"]:
        its = ("%d + %d" % (r["sinkhorn_iters"], r["newton_iters"]) if r["newton_iters"]
               else "%d" % r["sinkhorn_iters"])
        f = r["speedup_vs_sinkhorn"]
        if r["method"] == "sinkhorn" or (r["status"] == "budget" and f >= 1):
            sp = "-"  # the base itself, or out of budget sooner than the base: unknown
        elif r["status"] == "budget":  # its time is a lower bound: at least this slower
            sp = ">%sx slower" % _factor(1.0 / f)
        else:
            sp = format_speedup((f, r["speedup_lower_bound"]))
        lines.append("  %-26s %10.3g %18s %10.1e %16s  %s" % (
            r["method"], r["time"], its, r["l1"], sp, r["status"]))
    p = t1["paper"]
    lines.append("  paper (CPU): SNS %.2f s, %s iterations; Sinkhorn %.0f s, %d iterations; %dx"
                 % (p["sns_time"], p["sns_iters"], p["sinkhorn_time"], p["sinkhorn_iters"],
                    p["speedup"]))
    return "\n".join(lines)


def _sizes(d, unit=1e3, fmt="%.3g ms"):
    return ", ".join(("n=%s " + fmt) % (n, unit * v) for n, v in d.items())


def _ratios(d):
    return ", ".join("%s %.2f" % kv for kv in d.items())


def format_design(extra):
    """The design figures (:mod:`pot_sns.bench.extras`: ``scaling``,
    ``passes``, ``memory``) as text."""
    s = extra["scaling"]
    lines = ["Newton iteration time (Newton stage / Newton iterations), %s reg=%s: %s; "
             "ratios %s (nm ratio 4)" % (s["problem"], format_reg(s["reg"]),
                                        _sizes(s["per_newton_s"]), _ratios(s["ratios"])),
             "  median single step: %s; ratios %s; CG iterations per step: %s" % (
                 _sizes(s["median_step_s"]), _ratios(s["median_step_ratios"]),
                 _sizes(s["cg_per_newton"], 1, "%.1f")),
             "  one n-by-n mat-vec, float64: %s, ratios %s; float32: %s, ratios %s" % (
                 _sizes(s["gemv_s"]), _ratios(s["gemv_ratios"]), _sizes(s["gemv32_s"]),
                 _ratios(s["gemv32_ratios"]))]
    for p in extra["passes"]:
        lines.append("dense passes per Newton iteration, %s: %.1f (%s); per sweep %.1f; "
                     "%d sweeps + %d Newton" % (
                         p["problem"], p["per_newton_total"],
                         ", ".join("%s %.2f" % kv for kv in p["per_newton"].items()),
                         p["per_sweep_total"], p["n_sinkhorn"], p["n_newton"]))
    for mem in extra["memory"]:
        lines.append("peak memory, %s: %.2f n-by-m float64 arrays (M included)" % (
            mem["problem"], mem["peak_arrays"]))
    return "\n".join(lines)


def machine():
    """Machine and library versions for the JSON record."""
    info = {"platform": platform.platform(), "python": sys.version.split()[0],
            "cpus": os.cpu_count(), "processor": platform.processor() or platform.machine()}
    from importlib import metadata

    for mod, dist in (("numpy", "numpy"), ("scipy", "scipy"), ("ot", "POT"),
                      ("pot_sns", "pot_sns"), ("regot", "regot"), ("jax", "jax"),
                      ("ott", "ott-jax"), ("torch", "torch"), ("cupy", None)):
        try:
            info[mod] = metadata.version(dist) if dist else sys.modules[mod].__version__
        except (metadata.PackageNotFoundError, KeyError, AttributeError):
            pass
    if hasattr(os, "getloadavg"):  # how busy the machine was
        info["loadavg"] = list(os.getloadavg())
    try:
        import threadpoolctl  # noqa: F401 - BLAS threads, when available
        info["blas"] = [{k: d.get(k) for k in ("internal_api", "num_threads", "version")}
                        for d in threadpoolctl.threadpool_info()]
    except ImportError:
        pass
    return info


def _clean(x):
    if isinstance(x, float) and not math.isfinite(x):
        return None if x != x else ("inf" if x > 0 else "-inf")
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if hasattr(x, "item") and not isinstance(x, (list, dict)):
        try:
            return _clean(x.item())
        except (TypeError, ValueError):
            return str(x)
    return x


def dump(path, doc):
    """Write ``doc`` as JSON (non-finite numbers as ``null``/``"inf"``)."""
    with open(path, "w") as f:
        json.dump(_clean(doc), f, indent=1)


def result_dict(r):
    """A :class:`~pot_sns.bench.measure.Result` as a dict (for JSON)."""
    return dict(problem=r.problem, n=r.n, m=r.m, reg=r.reg, solver=r.solver, status=r.status,
                time=r.time, times=r.times, niter=r.niter, l1=r.l1, cost_rel=r.cost_rel,
                native_tol=r.native_tol, tries=r.tries, info=r.info, trace=r.trace)


def write_json(path, results, settings, extras=None):
    """Every figure and trace of a run, with the machine and the settings,
    as JSON (read back by :func:`load_json`)."""
    summ, _ = summary(results)
    doc = {"machine": machine(), "settings": settings, "summary": summ,
           "results": [result_dict(r) for r in results]}
    if extras:
        doc["extras"] = extras
    dump(path, doc)


def have_matplotlib():
    """Whether the convergence plot can be drawn (matplotlib is installed)."""
    import importlib.util

    return importlib.util.find_spec("matplotlib") is not None


#: how to get the plot when matplotlib is missing
NO_MATPLOTLIB = ('no convergence plot: matplotlib is not installed (pip install "pot_sns[bench]"'
                 " or pip install matplotlib)")


def _trace_points(r):
    return [(t, e) for t, e in r.trace if t is not None and e is not None
            and t > 0 and e > 0 and math.isfinite(e)]


def _panel(ax, key, group, colors, tol):
    """One problem instance: each solver's error against time; a solver with
    no iterate to draw gets a legend entry that says so."""
    top = 0.0  # largest error drawn by a solver that reached the target
    for r in group:
        pts = _trace_points(r)
        if pts and r.ok:
            top = max(top, max(y for _, y in pts))
        lw = 2.2 if r.solver == "pot_sns" else 1.2
        if not pts:
            why = ("no iterate within its %.3g s" % r.time if r.status == "budget"
                   and r.time == r.time else status_text(r)[:30])
            ax.plot([], [], ":", color=colors[r.solver], lw=lw, label="%s: %s" % (r.solver, why))
            continue
        xs, ys = zip(*pts)
        ax.plot(xs, ys, "-" if r.ok else ":", color=colors[r.solver], lw=lw,
                label=r.solver + ("" if r.ok else " (%s)" % status_text(r)[:30]))
    if tol:
        ax.axhline(tol, color="0.5", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_yscale("log")
    if top > 0 and ax.get_ylim()[1] > 1e3 * top:
        # a diverging solver's errors (1e200) would flatten every other line
        ax.set_ylim(top=1e3 * top)
    ax.set_title("%s n=%d reg=%s" % (key[0], key[1], format_reg(key[3])), fontsize=9)
    ax.set_xlabel("wall time [s]", fontsize=8)
    ax.set_ylabel("marginal error (solver's own norm)", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=6, loc="best")


def plot(path, results, tol=None):
    """Convergence plot: marginal error against wall time, log scale, one
    panel per problem instance, one line per solver (dotted: did not reach
    the target; dashed grey: the target)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(instances(results).items())
    k = len(groups)
    cols = min(4, max(1, k))
    rows = int(math.ceil(k / cols)) if k else 1
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows + 0.4), squeeze=False)
    solvers = list(dict.fromkeys(r.solver for _, g in groups for r in g))
    cmap = plt.get_cmap("tab10")
    colors = {s: cmap(i % 10) for i, s in enumerate(solvers)}
    for ax, (key, group) in zip(axes.ravel(), groups):
        _panel(ax, key, group, colors, tol)
    for ax in axes.ravel()[k:]:
        ax.axis("off")
    fig.text(0.5, 0.005, "solid: reached the target; dotted: did not (budget, stalled or "
             "failed); dashed grey: the target error%s" % (" %g" % tol if tol else ""),
             ha="center", va="bottom", fontsize=7)
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def rst(results, settings, extras=None, command=None,
        parts=("table", "summary", "table1", "design")):
    """The results as a reStructuredText fragment (for the documentation):
    the machine, the command, then the ``parts`` among the table (with its
    notation), the summary, the Table 1 case and the design figures."""
    m = settings.get("machine") or machine()
    out = []
    libs = ", ".join("%s %s" % (k, m[k]) for k in ("numpy", "scipy", "ot", "regot", "jax", "ott")
                     if k in m)
    out.append("Measured on %s, %s CPU(s) (%s), Python %s; %s." % (
        m["platform"], m["cpus"], m["processor"], m["python"], libs))
    if command:
        out += ["", "Command:", "", ".. code-block:: bash", "", "    " + command]
    if "table" in parts or "summary" in parts:
        out += ["", "Target: L1 marginal error <= %g and <M,P> within %g (relative) of the "
                "reference; medians of %d warm calls (fewer past the budget; calls under "
                "0.25 s repeated until they took 0.25 s, at most 50); budget %g s per call." % (
                    settings["tol"], settings["cost_tol"], settings["repeat"],
                    settings["budget"])]
    if "table" in parts:
        lines = table(results).splitlines() + [""] + list(NOTATION)
        out += ["", "::", ""] + [("    " + line).rstrip() for line in lines]
    if "summary" in parts:
        _, lines = summary(results)
        if lines:  # none with a single solver
            out += ["", "Summary:", "", "::", ""] + ["    " + line for line in lines]
    extras = extras or {}
    if "table1" in extras and "table1" in parts:
        out += ["", "::", ""] + ["    " + line
                                 for line in format_table1(extras["table1"]).splitlines()]
    if "scaling" in extras and "design" in parts:
        out += ["", "::", ""] + ["    " + line for line in format_design(extras).splitlines()]
    return "\n".join(out) + "\n"


def load_json(path):
    """``(results, settings, extras)`` from a file written by :func:`write_json`."""
    from .measure import Result

    with open(path) as f:
        doc = json.load(f)

    def num(x):
        return float("nan") if x is None else (float("inf") if x == "inf" else x)

    results = [Result(r["problem"], r["n"], r["m"], r["reg"], r["solver"], r["status"],
                      num(r["time"]), r["niter"], num(r["l1"]), num(r["cost_rel"]),
                      num(r["native_tol"]), r["tries"], r["times"],
                      [tuple(map(num, p)) for p in r["trace"]], r["info"])
               for r in doc["results"]]
    settings = dict(doc["settings"], machine=doc.get("machine"))
    return results, settings, doc.get("extras") or {}
