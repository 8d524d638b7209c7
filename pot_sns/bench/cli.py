"""``python -m pot_sns.bench``: the benchmark's command line.

By default it measures the public suite, prints the table, and writes every
figure as JSON (``bench-results.json``) and the convergence plot
(``bench-convergence.png``) in the current directory. ``--busy N`` times
one problem quiet and with ``N`` busy processes; ``--batch`` and
``--unbalanced`` (or ``batch`` and ``unbalanced`` as the first argument)
hand the rest of the command line to the ``main(argv)`` of the batch and
unbalanced benchmarks (``pot_sns.bench.batch``, ``pot_sns.bench.unbalanced``).
"""

import argparse
import importlib
import os
import sys
import time

from . import extras, problems, report
from .busy import format_load_test, load_test
from .runners import SOLVERS, Device
from .suite import describe, make_runners, run_suite

#: the default run (a few minutes on 2 cores); ``--solvers all`` adds POT's
#: stabilized and epsilon-scaling methods, regot's dense Newton and OTT-JAX
DEFAULT_SOLVERS = ["pot_sns", "sinkhorn", "sinkhorn_log", "regot_ssns"]
#: the outputs of a run, in the current directory unless --json/--plot say
DEFAULT_JSON = "bench-results.json"
DEFAULT_PLOT = "bench-convergence.png"
DEFAULT_BUSY_JSON = "bench-busy.json"
#: the load test's problem instance unless --problems/--n/--reg say
BUSY_PROBLEM = ("gaussmix", None, 1e-3)
#: flags handing the command line to another benchmark: module of pot_sns.bench
#: (``python -m pot_sns.bench --batch ...`` or ``python -m pot_sns.bench batch ...``)
MODES = {"--batch": "batch", "--unbalanced": "unbalanced"}


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


def _what(p):
    p.add_argument("--problems", nargs="+", metavar="NAME",
                   help="problems among %s (default: the public suite, %s)" % (
                       ", ".join(problems.FAMILIES), ", ".join(problems.SUITE)))
    p.add_argument("--n", nargs="+", type=int, metavar="N",
                   help="size(s) of every problem (default: 500 for assignment, 784 (28x28 "
                   "pixels) for the digits, 1000 otherwise)")
    p.add_argument("--reg", nargs="+", metavar="REG",
                   help="regularisations, e.g. 1e-2 1e-3 1/1200 (default: 1e-2 1e-3)")
    p.add_argument("--solvers", nargs="+", metavar="NAME",
                   help="solvers among %s, or 'all' (default: %s)" % (
                       ", ".join(SOLVERS), " ".join(DEFAULT_SOLVERS)))
    p.add_argument("--tol", type=float, default=1e-6,
                   help="target L1 marginal error ||P1-a||_1 + ||P^T1-b||_1 (default 1e-6)")
    p.add_argument("--cost-tol", type=float, default=1e-6,
                   help="target relative error of <M,P> against the reference (default 1e-6)")
    p.add_argument("--repeat", type=int, default=3,
                   help="timed calls per measurement; the median is reported (default 3; "
                   "fewer when they would exceed the budget)")
    p.add_argument("--budget", type=float, default=2.0,
                   help="seconds allowed to each solver call; a solver that needs more "
                   "is reported as not converged, with the time it spent (default 2)")
    p.add_argument("--device", default="cpu", choices=["cpu", "torch-cpu", "cuda", "cupy"],
                   help="where pot_sns and POT's solvers run: numpy (cpu), torch on the CPU, "
                   "torch on CUDA or cupy (default cpu)")


def _outputs(p):
    p.add_argument("--json", metavar="FILE",
                   help="every figure and trace as JSON (default %s; with --busy, %s)" % (
                       DEFAULT_JSON, DEFAULT_BUSY_JSON))
    p.add_argument("--plot", metavar="FILE.png",
                   help="the convergence plot (default %s; needs matplotlib)" % DEFAULT_PLOT)
    p.add_argument("--no-save", action="store_true",
                   help="print the table only: no JSON, no plot unless --json/--plot say")
    p.add_argument("--rst", metavar="FILE",
                   help="the results as a reStructuredText fragment (documentation)")
    p.add_argument("--load", metavar="FILE",
                   help="measure nothing: print the table of a JSON file written by --json "
                   "(and write --plot or --rst from it)")
    p.add_argument("--quiet", action="store_true", help="no progress display")


def _modes(p):
    p.add_argument("--table1", action="store_true",
                   help="also reproduce the paper's Table 1 case (assignment n=500, reg=1/1200)")
    p.add_argument("--design", action="store_true",
                   help="also measure Newton iteration time at n=1000, 2000 and 4000, dense "
                   "passes per Newton iteration and peak memory")
    p.add_argument("--busy", type=int, metavar="N",
                   help="load test: time the solvers (default pot_sns) on one problem "
                   "(default gaussmix n=1000 reg=1e-3) quiet, then with N busy processes "
                   "started by the benchmark, and report both times and their ratio")
    p.add_argument("--batch", action="store_true",
                   help="run the batch benchmark instead (python -m pot_sns.bench --batch --help)")
    p.add_argument("--unbalanced", action="store_true",
                   help="run the unbalanced benchmark instead "
                   "(python -m pot_sns.bench --unbalanced --help)")


def parser():
    """The argument parser of ``python -m pot_sns.bench``."""
    p = argparse.ArgumentParser(
        prog="python -m pot_sns.bench",
        description="Time to a target accuracy of pot_sns and of POT's, regot's and OTT-JAX's "
                    "Sinkhorn solvers on a suite of entropic OT problems. Prints a table and "
                    "writes %s and %s in the current directory." % (DEFAULT_JSON, DEFAULT_PLOT))
    _what(p)
    _outputs(p)
    _modes(p)
    return p


def main(argv=None):
    """Run the benchmark command line ``argv`` (default ``sys.argv[1:]``);
    returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in MODES.values():  # the subcommand form: ``batch ...``
        return _dispatch(argv[0], argv[0], argv[1:])
    for flag, module in MODES.items():
        if flag in argv:
            return _dispatch(module, flag, [a for a in argv if a != flag])
    args = _parse(argv)
    if args.load:
        return _replay(args)
    if args.busy is not None:
        return _run_busy(args, argv)
    return _run(args, argv)


def _dispatch(module, flag, argv):
    """``pot_sns.bench.<module>.main(argv)``, imported only now."""
    name = "%s.%s" % (__package__, module)
    try:
        mod = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name != name:  # a dependency of the module is missing: say which
            raise
        print("python -m pot_sns.bench %s: this version of pot_sns has no %s benchmark (%s "
              "is missing)" % (flag, module, name), file=sys.stderr)
        return 2
    rc = mod.main(argv)
    return 0 if rc is None else rc


def _parse(argv):
    """Parsed and checked arguments, with the problems, sizes, regs and
    solvers resolved (``names``, ``sizes``, ``regs``, ``solvers``)."""
    p = parser()
    args = p.parse_args(argv)
    busy = args.busy is not None
    if busy and args.busy < 1:
        p.error("--busy must be >= 1")
    args.names = _list(args.problems) or ([BUSY_PROBLEM[0]] if busy else list(problems.SUITE))
    args.sizes = args.n or [BUSY_PROBLEM[1] if busy else None]
    for name in args.names:
        if name not in problems.FAMILIES:
            p.error("unknown problem %r; choose among %s" % (name, ", ".join(problems.FAMILIES)))
        for n in args.sizes:
            try:
                problems.check_size(name, n)
            except ValueError as exc:
                p.error("--n: %s" % exc)
    args.regs = _list(args.reg, _reg) or ([BUSY_PROBLEM[2]] if busy else [1e-2, 1e-3])
    if any(not r > 0 for r in args.regs):
        p.error("--reg must be > 0")
    args.solvers = _list(args.solvers) or (["pot_sns"] if busy else list(DEFAULT_SOLVERS))
    if args.solvers == ["all"]:
        args.solvers = list(SOLVERS)
    for s in args.solvers:
        if s not in SOLVERS:
            p.error("unknown solver %r; choose among %s" % (s, ", ".join(SOLVERS)))
    if "pot_sns" in args.solvers:
        args.solvers = ["pot_sns"] + [s for s in args.solvers if s != "pot_sns"]
    if args.repeat < 1 or args.budget <= 0 or args.tol <= 0 or args.cost_tol <= 0:
        p.error("--repeat, --budget, --tol and --cost-tol must be positive")
    try:
        Device(args.device)
    except (RuntimeError, ImportError) as exc:
        p.error("--device %s: %s" % (args.device, exc))
    if not args.load and not args.no_save:
        args.json = args.json or (DEFAULT_BUSY_JSON if busy else DEFAULT_JSON)
        if not busy:
            args.plot = args.plot or DEFAULT_PLOT
    return args


def _skipped(args):
    """Requested solvers and problems that cannot run here, with the reason."""
    _, skipped = make_runners(args.solvers, Device(args.device))
    for name in args.names:
        ok, why = problems.available(name)
        if not ok:
            skipped[name] = why
    return skipped


def _announce(args):
    """What will be measured, and what will not, before measuring."""
    err = sys.stderr
    print("pot_sns benchmark: %s" % describe(args.names, args.regs, args.n), file=err)
    print("solvers: %s" % ", ".join(args.solvers), file=err)
    print("target: L1 marginal error <= %g and <M,P> within %g (relative) of the reference; "
          "budget %g s per call; median of %d warm calls (short calls: more)"
          % (args.tol, args.cost_tol, args.budget, args.repeat), file=err)
    for line in report.skipped_lines(_skipped(args)):
        print(line, file=err)
    if args.solvers == DEFAULT_SOLVERS:
        print('more solvers: --solvers all (POT\'s stabilized and epsilon-scaling methods, '
              'regot\'s Newton, OTT-JAX: pip install "pot_sns[ott]")', file=err)
    if "sinkhorn_log" not in args.solvers:
        print("note: sinkhorn_log is not among the solvers: no speed-up column", file=err)
    if args.plot and not report.have_matplotlib():
        print(report.NO_MATPLOTLIB + "; the table and the JSON are still written", file=err)


def _run(args, argv):
    t0 = time.perf_counter()
    _announce(args)
    results, skipped = run_suite(args.names, args.regs, args.solvers, n=args.n, tol=args.tol,
                                 cost_tol=args.cost_tol, budget=args.budget,
                                 repeat=args.repeat, device=args.device, quiet=args.quiet)
    _print_results(results, skipped)
    extra = _extras(args)
    settings = {"command": _command(argv), "problems": args.names, "n": args.n,
                "regs": args.regs, "solvers": args.solvers, "tol": args.tol,
                "cost_tol": args.cost_tol, "repeat": args.repeat, "budget": args.budget,
                "device": args.device, "skipped": skipped,
                "seconds": time.perf_counter() - t0}
    _write(args, results, settings, extra)
    print("\n(%.1f s in all)" % (time.perf_counter() - t0), file=sys.stderr)
    return 0


def _print_results(results, skipped):
    print()
    print(report.table(results))
    print()
    print("\n".join(report.NOTATION))
    lines = report.summary(results)[1] + report.skipped_lines(skipped)
    if lines:
        print()
        print("\n".join(lines))


def _extras(args):
    """The Table 1 case and the design figures, when asked for."""
    extra = {}
    if args.table1:
        if not args.quiet:
            print("\nTable 1 case...", file=sys.stderr)
        extra["table1"] = extras.table1(budget=max(args.budget, 30.0), repeat=args.repeat)
        print()
        print(report.format_table1(extra["table1"]))
    if args.design:
        if not args.quiet:
            print("\ndesign figures...", file=sys.stderr)
        extra["scaling"] = extras.scaling(repeat=max(args.repeat, 3))
        extra["passes"] = [extras.passes_per_newton(problems.make(p, None, 1e-3))
                           for p in problems.SUITE if problems.available(p)[0]]
        extra["memory"] = [extras.peak_memory("gaussmix", n, r) for n in (1000, 2000)
                           for r in (1e-2, 1e-3)]
        print()
        print(report.format_design(extra))
    return extra


def _wrote(path):
    print("wrote %s" % os.path.abspath(path))


def _write(args, results, settings, extra):
    """The JSON, the reStructuredText fragment and the plot that were asked
    for (JSON and plot by default), with their paths."""
    print()
    if args.json:
        report.write_json(args.json, results, settings, extra or None)
        _wrote(args.json)
    if args.rst:
        with open(args.rst, "w") as f:
            f.write(report.rst(results, settings, extra or None, settings["command"]))
        _wrote(args.rst)
    if args.plot:
        if report.have_matplotlib():
            report.plot(args.plot, results, settings.get("tol"))
            _wrote(args.plot)
        else:
            print(report.NO_MATPLOTLIB)


def _command(argv):
    """The command line, without its output files."""
    args, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--json", "--plot", "--rst", "--load"):
            skip = True
            continue
        if a not in ("--quiet", "--no-save"):
            args.append(a)
    return " ".join(["python -m pot_sns.bench"] + args)


def _replay(args):
    results, settings, extra = report.load_json(args.load)
    print(report.table(results))
    print()
    print("\n".join(report.NOTATION))
    print()
    for line in report.summary(results)[1]:
        print(line)
    if "table1" in extra:
        print()
        print(report.format_table1(extra["table1"]))
    if "scaling" in extra:
        print()
        print(report.format_design(extra))
    _write(args, results, settings, extra)
    return 0


def _run_busy(args, argv):
    """The load test of every requested problem instance (``--busy N``)."""
    t0 = time.perf_counter()
    for line in report.skipped_lines(_skipped(args)):
        print(line, file=sys.stderr)
    docs = []
    for name in args.names:
        for n in args.sizes:
            for reg in args.regs:
                doc = load_test(name, n, reg, args.solvers, args.busy, quiet=args.quiet,
                                tol=args.tol, cost_tol=args.cost_tol, budget=args.budget,
                                repeat=args.repeat, device=args.device)
                print()
                print(format_load_test(doc))
                docs.append(doc)
    if args.json:
        report.dump(args.json, {
            "machine": report.machine(), "command": _command(argv),
            "settings": {"tol": args.tol, "cost_tol": args.cost_tol, "repeat": args.repeat,
                         "budget": args.budget, "device": args.device},
            "load_tests": [dict(d, quiet=[report.result_dict(r) for r in d["quiet"]],
                                loaded=[report.result_dict(r) for r in d["loaded"]])
                           for d in docs]})
        print()
        _wrote(args.json)
    print("\n(%.1f s in all)" % (time.perf_counter() - t0), file=sys.stderr)
    return 0
