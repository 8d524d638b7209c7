"""``python -m pot_sns.bench``: the benchmark command line."""

import argparse
import sys
import time

from . import extras, problems, report
from .runners import SOLVERS, Device, available
from .suite import describe, run_suite

#: the default run (under 2 minutes on 2 cores); ``--solvers all`` adds POT's
#: stabilized and epsilon-scaling methods, regot's dense Newton and OTT-JAX
DEFAULT_SOLVERS = ["pot_sns", "sinkhorn", "sinkhorn_log", "regot_ssns"]


def _list(values, cast=str):
    out = []
    for v in values or []:
        out += [cast(x) for x in str(v).split(",") if x]
    return out


def _reg(x):
    x = x.strip()
    if x.startswith("1/"):
        return 1.0 / float(x[2:])
    return float(x)


def parser():
    p = argparse.ArgumentParser(
        prog="python -m pot_sns.bench",
        description="Time to a target accuracy of pot_sns and of POT's, regot's and OTT-JAX's "
                    "Sinkhorn solvers on a suite of entropic OT problems.")
    p.add_argument("--problems", nargs="+", metavar="NAME",
                   help="problems among %s (default: the public suite, %s)" % (
                       ", ".join(problems.FAMILIES), ", ".join(problems.SUITE)))
    p.add_argument("--n", type=int, help="size of every problem (default: 500 for "
                   "assignment, 1000 otherwise)")
    p.add_argument("--reg", nargs="+", metavar="REG",
                   help="regularisations, e.g. 1e-2 1e-3 1/1200 (default: 1e-2 1e-3)")
    p.add_argument("--solvers", nargs="+", metavar="NAME",
                   help="solvers among %s, or 'all' (default: %s; the optional ones when "
                   "installed)" % (", ".join(SOLVERS), ", ".join(DEFAULT_SOLVERS)))
    p.add_argument("--tol", type=float, default=1e-6,
                   help="target L1 marginal error ||P1-a||_1 + ||P^T1-b||_1 (default 1e-6)")
    p.add_argument("--cost-tol", type=float, default=1e-6,
                   help="target relative error of <M,P> against the reference (default 1e-6)")
    p.add_argument("--repeat", type=int, default=3,
                   help="timed calls per measurement; the median is reported (default 3; "
                   "fewer when they would exceed the budget)")
    p.add_argument("--budget", type=float, default=2.0,
                   help="seconds allowed to each solver call; a solver that needs more "
                   "is reported as not converged, its time a lower bound (default 2)")
    p.add_argument("--device", default="cpu", choices=["cpu", "torch-cpu", "cuda", "cupy"],
                   help="where pot_sns and POT's solvers run: numpy (cpu), torch on the CPU, "
                   "torch on CUDA or cupy (default cpu)")
    p.add_argument("--json", metavar="FILE", help="write every figure and trace as JSON")
    p.add_argument("--plot", metavar="FILE.png", help="write the convergence plot")
    p.add_argument("--rst", metavar="FILE",
                   help="write the results as a reStructuredText fragment (documentation)")
    p.add_argument("--table1", action="store_true",
                   help="also reproduce the paper's Table 1 case (assignment n=500, reg=1/1200)")
    p.add_argument("--design", action="store_true",
                   help="also measure Newton iteration time at n=1000, 2000 and 4000, dense "
                   "passes per Newton iteration and peak memory")
    p.add_argument("--load", metavar="FILE",
                   help="measure nothing: print the table of a JSON file written by --json "
                   "(and write --plot or --rst from it)")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    if args.load:
        return _replay(args)
    names = _list(args.problems) or list(problems.SUITE)
    for name in names:
        if name not in problems.FAMILIES:
            parser().error("unknown problem %r; choose among %s"
                           % (name, ", ".join(problems.FAMILIES)))
    regs = _list(args.reg, _reg) or [1e-2, 1e-3]
    if any(not r > 0 for r in regs):
        parser().error("--reg must be > 0")
    solvers = _list(args.solvers)
    if solvers == ["all"]:
        solvers = list(SOLVERS)
    elif not solvers:
        solvers = [s for s in DEFAULT_SOLVERS if available(s)[0]]
    for s in solvers:
        if s not in SOLVERS:
            parser().error("unknown solver %r; choose among %s" % (s, ", ".join(SOLVERS)))
    if args.n is not None and args.n < 2:
        parser().error("--n must be >= 2")
    if args.repeat < 1 or args.budget <= 0 or args.tol <= 0 or args.cost_tol <= 0:
        parser().error("--repeat, --budget, --tol and --cost-tol must be positive")
    try:
        Device(args.device)
    except (RuntimeError, ImportError) as exc:
        parser().error("--device %s: %s" % (args.device, exc))
    if "pot_sns" in solvers:
        solvers = ["pot_sns"] + [s for s in solvers if s != "pot_sns"]
    if "sinkhorn_log" not in solvers:
        print("note: sinkhorn_log is not among the solvers: no speed-up column",
              file=sys.stderr)

    t0 = time.perf_counter()
    print("pot_sns benchmark: %s" % describe(names, regs, args.n), file=sys.stderr)
    print("target: L1 marginal error <= %g and <M,P> within %g (relative) of the reference; "
          "budget %g s per call; median of %d" % (args.tol, args.cost_tol, args.budget,
                                                 args.repeat), file=sys.stderr)
    results, skipped = run_suite(names, regs, solvers, n=args.n, tol=args.tol,
                                 cost_tol=args.cost_tol, budget=args.budget,
                                 repeat=args.repeat, device=args.device, quiet=args.quiet)
    print()
    print(report.table(results))
    print()
    _, lines = report.summary(results)
    for line in lines:
        print(line)
    for name, why in skipped.items():
        print("skipped %s: %s" % (name, why))
    extra = {}
    if args.table1:
        if not args.quiet:
            print("\nTable 1 case...", file=sys.stderr)
        extra["table1"] = extras.table1(budget=max(args.budget, 30.0), repeat=args.repeat)
        print()
        print(extras.format_table1(extra["table1"]))
    if args.design:
        if not args.quiet:
            print("\ndesign figures...", file=sys.stderr)
        extra["scaling"] = extras.scaling(repeat=max(args.repeat, 3))
        extra["passes"] = [extras.passes_per_newton(problems.make(p, None, 1e-3))
                           for p in problems.SUITE]
        extra["memory"] = [extras.peak_memory("gaussmix", n, r) for n in (1000, 2000)
                           for r in (1e-2, 1e-3)]
        print()
        print(format_design(extra))
    settings = {"command": _command(argv),
                "problems": names, "n": args.n, "regs": regs, "solvers": solvers,
                "tol": args.tol, "cost_tol": args.cost_tol, "repeat": args.repeat,
                "budget": args.budget, "device": args.device, "skipped": skipped,
                "seconds": time.perf_counter() - t0}
    if args.json:
        report.write_json(args.json, results, settings, extra or None)
        print("\nwrote %s" % args.json)
    if args.rst:
        with open(args.rst, "w") as f:
            f.write(report.rst(results, settings, extra or None, settings["command"]))
        print("wrote %s" % args.rst)
    if args.plot:
        try:
            report.plot(args.plot, results, args.tol)
        except ImportError:
            print("no plot: matplotlib is not installed (pip install matplotlib)",
                  file=sys.stderr)
        else:
            print("wrote %s" % args.plot)
    print("\n(%.1f s in all)" % (time.perf_counter() - t0), file=sys.stderr)
    return 0


def _command(argv):
    """The command line, without its output files."""
    args, skip = [], False
    for a in (argv if argv is not None else sys.argv[1:]):
        if skip:
            skip = False
            continue
        if a in ("--json", "--plot", "--rst", "--load"):
            skip = True
            continue
        if a != "--quiet":
            args.append(a)
    return " ".join(["python -m pot_sns.bench"] + args)


def _replay(args):
    results, settings, extra = report.load_json(args.load)
    print(report.table(results))
    print()
    for line in report.summary(results)[1]:
        print(line)
    if "table1" in extra:
        print()
        print(extras.format_table1(extra["table1"]))
    if "scaling" in extra:
        print()
        print(format_design(extra))
    if args.rst:
        with open(args.rst, "w") as f:
            f.write(report.rst(results, settings, extra, settings.get("command")))
        print("wrote %s" % args.rst)
    if args.plot:
        report.plot(args.plot, results, settings.get("tol"))
        print("wrote %s" % args.plot)
    return 0


def format_design(extra):
    lines = []
    s = extra["scaling"]

    def sizes(d, unit=1e3, fmt="%.3g ms"):
        return ", ".join(("n=%s " + fmt) % (n, unit * v) for n, v in d.items())

    def ratios(d):
        return ", ".join("%s %.2f" % kv for kv in d.items())

    lines.append("Newton iteration time (Newton stage / Newton iterations), %s reg=%s: %s; "
                 "ratios %s (nm ratio 4)" % (s["problem"], problems.format_reg(s["reg"]),
                                            sizes(s["per_newton_s"]), ratios(s["ratios"])))
    lines.append("  median single step: %s; ratios %s; CG iterations per step: %s" % (
        sizes(s["median_step_s"]), ratios(s["median_step_ratios"]),
        sizes(s["cg_per_newton"], 1, "%.1f")))
    lines.append("  one n-by-n mat-vec, float64: %s, ratios %s; float32: %s, ratios %s" % (
        sizes(s["gemv_s"]), ratios(s["gemv_ratios"]), sizes(s["gemv32_s"]),
        ratios(s["gemv32_ratios"])))
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


if __name__ == "__main__":
    sys.exit(main())
