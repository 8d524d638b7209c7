"""Benchmark output: the results table, the summary against the targets,
JSON and the convergence plot."""

import json
import math
import os
import platform
import sys

from .measure import geomean, speedup
from .problems import format_reg
from .runners import POT_METHODS

BASE = "sinkhorn_log"


def _fmt_time(r):
    if r.status == "failed" or not r.time == r.time:
        return "-"
    return (">" if r.status == "budget" else "") + "%.3g" % r.time


def _fmt_err(x):
    return "-" if x is None or not x == x else "%.1e" % x


def _fmt_speedup(s):
    if s is None:
        return "-"
    f, lower = s
    return ("≥" if lower else "") + ("%.3gx" % f)


def instances(results):
    """Results grouped by problem instance, in order of appearance."""
    groups = {}
    for r in results:
        groups.setdefault((r.problem, r.n, r.m, r.reg), []).append(r)
    return groups


def table(results):
    """The results table as text (one line per solver and problem)."""
    head = ("problem", "n", "reg", "solver", "time [s]", "iters", "L1 err", "rel err <M,P>",
            "vs sinkhorn_log", "status")
    rows = []
    for key, group in instances(results).items():
        base = next((r for r in group if r.solver == BASE), None)
        for r in group:
            s = None if r.solver == BASE else speedup(base, r)
            n = str(r.n) if r.n == r.m else "%dx%d" % (r.n, r.m)
            status = r.status
            if r.status == "failed":
                status = "failed: " + r.info.get("error", "")[:40]
            rows.append((r.problem, n, format_reg(r.reg), r.solver, _fmt_time(r),
                         str(r.niter), _fmt_err(r.l1), _fmt_err(r.cost_rel),
                         _fmt_speedup(s), status))
    widths = [max(len(h), *(len(row[i]) for row in rows)) if rows else len(h)
              for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths)) for row in rows]
    return "\n".join(line.rstrip() for line in lines)


def summary(results, ours="pot_sns"):
    """Figures against the targets, as a dict and as text lines."""
    out, lines = {}, []
    by_reg = {}
    for key, group in instances(results).items():
        by_reg.setdefault(key[3], []).append((key, {r.solver: r for r in group}))
    for reg in sorted(by_reg, reverse=True):
        entry = {}
        label = format_reg(reg)
        groups = by_reg[reg]
        # against sinkhorn_log
        sp = [(k[0], speedup(g.get(BASE), g.get(ours))) for k, g in groups]
        vals = [s for _, s in sp if s is not None]
        if vals:
            gm = geomean([f for f, _ in vals])
            lower = any(lo for _, lo in vals)
            entry["vs_sinkhorn_log_geomean"] = gm
            entry["vs_sinkhorn_log_lower_bound"] = lower
            lines.append("reg=%s  %s vs sinkhorn_log: geometric mean %s%.3gx over %d problems (%s)"
                         % (label, ours, "≥" if lower else "", gm, len(vals),
                            ", ".join("%s %s" % (p, _fmt_speedup(s)) for p, s in sp)))
        # against every other solver that reached the target
        for other in sorted({s for _, g in groups for s in g} - {ours, BASE}):
            pairs = []
            for k, g in groups:
                if other in g:
                    pairs.append((k[0], speedup(g[other], g.get(ours)), g[other].status))
            if not pairs:
                continue
            timed = [(p, s) for p, s, _ in pairs if s is not None]
            wins = sum(1 for _, s in timed if s[0] > 1)
            entry["faster_than_" + other] = [wins, len(timed)]
            text = "reg=%s  %s faster than %s on %d/%d problems" % (
                label, ours, other, wins, len(timed))
            if timed:
                text += " (%s)" % ", ".join("%s %s" % (p, _fmt_speedup(s)) for p, s in timed)
            missed = [(p, st) for p, s, st in pairs if s is None]
            if missed:
                text += "; %s did not reach the target on %s" % (
                    other, ", ".join("%s (%s)" % m for m in missed))
            lines.append(text)
        # against the fastest OTT-JAX configuration that reached the target
        best_ott = []
        for k, g in groups:
            otts = [g[s] for s in g if s.startswith("ott")]
            if otts:
                done = [r for r in otts if r.ok]
                best = min(done, key=lambda r: r.time) if done else max(
                    otts, key=lambda r: r.time if r.time == r.time else -1)
                best_ott.append((k[0], best, speedup(best, g.get(ours))))
        if best_ott:
            wins = sum(1 for _, _, s in best_ott if s is not None and s[0] > 1)
            entry["faster_than_best_ott"] = [wins, len(best_ott)]
            lines.append("reg=%s  %s faster than the best OTT-JAX configuration on %d/%d "
                         "problems (%s)" % (label, ours, wins, len(best_ott), ", ".join(
                             "%s %s %s" % (p, b.solver, _fmt_speedup(s) if s else b.status)
                             for p, b, s in best_ott)))
        # against POT's fastest method that reached the target
        ratios = []
        for k, g in groups:
            pot = [g[s] for s in POT_METHODS if s in g and g[s].ok]
            mine = g.get(ours)
            if pot and mine is not None and mine.ok:
                best = min(pot, key=lambda r: r.time)
                ratios.append((k[0], best.solver, mine.time / best.time))
        if ratios:
            worst = max(q for _, _, q in ratios)
            entry["time_over_fastest_pot_max"] = worst
            lines.append("reg=%s  %s time / POT's fastest converging method: worst %.2f (%s)" % (
                label, ours, worst, ", ".join("%s %s %.2f" % r for r in ratios)))
        out[label] = entry
    return out, lines


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


def write_json(path, results, settings, extras=None):
    summ, _ = summary(results)
    doc = {"machine": machine(), "settings": settings, "summary": summ,
           "results": [dict(problem=r.problem, n=r.n, m=r.m, reg=r.reg, solver=r.solver,
                            status=r.status, time=r.time, times=r.times, niter=r.niter,
                            l1=r.l1, cost_rel=r.cost_rel, native_tol=r.native_tol,
                            tries=r.tries, info=r.info, trace=r.trace) for r in results]}
    if extras:
        doc["extras"] = extras
    with open(path, "w") as f:
        json.dump(_clean(doc), f, indent=1)


def plot(path, results, tol=None):
    """Convergence plot: marginal error against wall time, log scale, one
    panel per problem instance, one line per solver."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(instances(results).items())
    k = len(groups)
    cols = min(4, max(1, k))
    rows = int(math.ceil(k / cols)) if k else 1
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.4 * rows), squeeze=False)
    solvers = []
    for _, g in groups:
        for r in g:
            if r.solver not in solvers:
                solvers.append(r.solver)
    cmap = plt.get_cmap("tab10")
    colors = {s: cmap(i % 10) for i, s in enumerate(solvers)}
    for ax, (key, group) in zip(axes.ravel(), groups):
        for r in group:
            pts = [(t, e) for t, e in r.trace if t is not None and e is not None
                   and t > 0 and e > 0 and math.isfinite(e)]
            if not pts:
                continue
            xs, ys = zip(*pts)
            style = "-" if r.ok else ":"
            ax.plot(xs, ys, style, color=colors[r.solver], lw=2.2 if r.solver == "pot_sns" else 1.2,
                    label=r.solver + ("" if r.ok else " (%s)" % r.status))
        if tol:
            ax.axhline(tol, color="0.5", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title("%s n=%d reg=%s" % (key[0], key[1], format_reg(key[3])), fontsize=9)
        ax.set_xlabel("wall time [s]", fontsize=8)
        ax.set_ylabel("marginal error (solver's own norm)", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.legend(fontsize=6, loc="best")
    for ax in axes.ravel()[k:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def rst(results, settings, extras=None, command=None,
        parts=("table", "summary", "table1", "design")):
    """The results as a reStructuredText fragment (for the documentation):
    the machine, the command, then the ``parts`` among the table, the
    summary, the Table 1 case and the design figures."""
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
                "reference; medians of up to %d calls; budget %g s per call." % (
                    settings["tol"], settings["cost_tol"], settings["repeat"],
                    settings["budget"])]
    if "table" in parts:
        out += ["", "::", ""] + ["    " + line for line in table(results).splitlines()]
    if "summary" in parts:
        _, lines = summary(results)
        if lines:  # none with a single solver
            out += ["", "Summary:", "", "::", ""] + ["    " + line for line in lines]
    extras = extras or {}
    if "table1" in extras and "table1" in parts:
        from .extras import format_table1

        out += ["", "::", ""] + ["    " + line
                                 for line in format_table1(extras["table1"]).splitlines()]
    if "scaling" in extras and "design" in parts:
        from .__main__ import format_design

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
