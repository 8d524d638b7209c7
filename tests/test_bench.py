"""The benchmark: problems, the time-to-target protocol, and the command line
end to end on a tiny suite (a valid table, JSON and plot, by default). Speed
is never asserted here: the benchmark measures it."""

import json
import math
import os
import sys
import time
import types

import numpy as np
import ot
import pytest
from scipy.spatial.distance import cdist

from pot_sns.bench import busy, cli, extras, problems, report, suite
from pot_sns.bench.cli import main
from pot_sns.bench.measure import Result, l1_error, reference, speedup, time_to_target
from pot_sns.bench.runners import Device, PotSNS, Run, available, make_runner


# ---------------------------------------------------------------- problems

def _needs(name):
    if name in problems.IMAGES:
        pytest.importorskip("sklearn", reason="the digits problems need scikit-learn")


@pytest.mark.parametrize("name", list(problems.FAMILIES))
def test_problems_are_normalised_balanced_and_reproducible(name):
    _needs(name)
    p = problems.make(name, 64, 1e-2, seed=3)
    assert p.M.shape == (64, 64) and p.a.shape == (64,) and p.b.shape == (64,)
    assert p.M.max() == pytest.approx(1.0) and p.M.min() >= 0
    assert np.all(p.a > 0) and np.all(p.b > 0)
    assert p.a.sum() == pytest.approx(1.0) and p.b.sum() == pytest.approx(1.0)
    q = problems.make(name, 64, 1e-2, seed=3)
    np.testing.assert_array_equal(p.M, q.M)
    np.testing.assert_array_equal(p.a, q.a)


def test_default_sizes_and_labels():
    assert problems.make("assignment").M.shape == (500, 500)
    assert problems.make("gaussmix", 20).label == "gaussmix n=20 reg=1e-03"
    assert set(problems.SUITE) < set(problems.FAMILIES)
    assert set(problems.IMAGES) <= set(problems.SUITE)
    assert problems.FAMILIES["digits_w1"][1] == 28 * 28  # MNIST's size, as in the paper
    assert problems.format_reg(1 / 1200) == "1/1200"
    with pytest.raises(ValueError, match="problems"):
        problems.make("nope")


@pytest.mark.parametrize("side", [16, 28])
def test_digits_are_upsampled_images_with_pixel_grid_costs(side):
    """Histograms of two digits on a side-by-side grid; W1 is the Euclidean
    distance between pixel centres, W2 its square, both over their max."""
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    n = side * side
    w1, w2 = problems.make("digits_w1", n, 1e-3), problems.make("digits_w2", n, 1e-3)
    assert w1.M.shape == (n, n) and w1.a.shape == (n,)
    grid = np.array([(i, j) for i in range(side) for j in range(side)], dtype=float)
    d = cdist(grid, grid)
    np.testing.assert_allclose(w1.M, d / d.max(), atol=1e-14)
    np.testing.assert_allclose(w2.M, d ** 2 / (d ** 2).max(), atol=1e-14)
    np.testing.assert_array_equal(w1.a, w2.a)
    # near-empty pixels, as in real images: a tenth at least carry only the floor
    for h in (w1.a, w2.b):
        floor = problems.DIGITS_FLOOR / (1 + problems.DIGITS_FLOOR) * h.max()
        assert np.mean(h <= floor * (1 + 1e-9)) > 0.1
        assert h.min() == pytest.approx(floor, rel=1e-9)
    # zoom 1 keeps the image: its grey levels over their sum, plus the floor
    img = sklearn_datasets.load_digits().images[5]
    h = problems.digit_histogram(img, 8)
    expect = img.ravel() / img.sum()
    expect = expect + problems.DIGITS_FLOOR * expect.max()
    np.testing.assert_allclose(h, expect / expect.sum(), rtol=1e-12)


def test_digits_sizes_are_squares_and_need_scikit_learn(monkeypatch):
    with pytest.raises(ValueError, match="n must be a square"):
        problems.make("digits_w2", 30)
    with pytest.raises(SystemExit):
        main(["--problems", "digits_w1", "--n", "30"])

    def missing():
        raise ImportError("the digits problems need scikit-learn, which is not installed")

    monkeypatch.setattr(problems, "_digit_images", missing)
    ok, why = problems.available("digits_w1")
    assert not ok and "scikit-learn" in why
    results, skipped = suite.run_suite(["digits_w1", "gaussmix"], [5e-2], ["pot_sns"], n=36,
                                       budget=0.5, quiet=True)
    assert "scikit-learn" in skipped["digits_w1"]
    assert [r.problem for r in results] == ["gaussmix"]


def test_reference_is_the_entropic_optimum():
    p = problems.make("gaussmix", 60, 1e-2)
    cost, err = reference(p)
    P = ot.sinkhorn(p.a, p.b, p.M, p.reg, method="sinkhorn_log", stopThr=1e-13,
                    numItermax=100000)
    assert err < 1e-10
    assert cost == pytest.approx(float(np.sum(p.M * P)), rel=1e-9)


# ---------------------------------------------------------------- protocol

class FakeRunner:
    """Plans whose L1 error equals the tolerance asked for times ``excess``."""

    name = "fake"
    probe_iters = 0

    def __init__(self, prob, excess, status="stopped"):
        self.prob, self.excess, self.status, self.calls = prob, excess, status, []

    def run(self, prob, tol, max_iter):
        self.calls.append(tol)
        if self.status == "failed":
            return Run(None, math.nan, 0, "failed", info={"error": "boom"})
        P = np.outer(prob.a, prob.b)
        P[0, 0] += 0.5 * tol * self.excess  # row and column: L1 error = tol * excess
        return Run(P, 0.01, 7, self.status, [(0.01, tol)])

    def timed(self, prob, tol, max_iter, repeat, budget, wall):
        return [self.run(prob, tol, max_iter).wall for _ in range(repeat)]


def _prob():
    return problems.make("assignment", 20, 1e-1)


def test_time_to_target_tightens_the_native_tolerance():
    p = _prob()
    runner = FakeRunner(p, excess=8.0)
    cost = float(np.sum(p.M * np.outer(p.a, p.b)))
    res = time_to_target(runner, p, cost, tol=1e-6, cost_tol=1.0, budget=1.0, repeat=3)
    assert res.status == "ok" and res.tries == 2
    assert runner.calls[1] < runner.calls[0] / 8  # tightened by the observed excess
    # ... and not much more: a tolerance far below the one that meets the
    # target would time a Newton solver one step more than it needs
    assert runner.calls[1] >= runner.calls[0] / (1.5 * 8)
    assert res.l1 <= 1e-6 and len(res.times) == 3 and res.time == pytest.approx(0.01)


class SpyRunner(PotSNS):
    """pot_sns, recording the process of each call (picklable: the isolated
    calls run in a child process)."""

    def __init__(self, device):
        super().__init__(device)
        self.pids = []

    def _run(self, prob, tol, max_iter):
        out = super()._run(prob, tol, max_iter)
        self.pids.append(os.getpid())  # in a child: lost with it
        out.info["pid"] = os.getpid()
        return out


def _short_series(walls, repeat):
    """A series of short calls: at least ``repeat``, on until SHORT_TOTAL
    seconds or MAX_CALLS calls (and no call more)."""
    from pot_sns.bench.runners import MAX_CALLS, SHORT_TOTAL

    return (repeat <= len(walls) <= MAX_CALLS
            and (len(walls) == MAX_CALLS or sum(walls) >= SHORT_TOTAL)
            and sum(walls[:-1]) < SHORT_TOTAL)


def test_timed_calls_run_together_in_one_child_after_a_warm_up():
    """Every call runs in a child process (no solver state reaches this
    process); the timed ones share one child, after untimed warm-ups, and
    short calls are repeated until they took SHORT_TOTAL seconds."""
    p = _prob()
    runner = SpyRunner(Device("cpu"))
    ref_cost, _ = reference(p)
    res = time_to_target(runner, p, ref_cost, 1e-6, 1e-6, budget=5.0, repeat=3)
    assert res.ok and _short_series(res.times, 3) and runner.pids == []  # nothing ran here
    assert res.info["pid"] != os.getpid()  # the search call, in a child
    assert runner.timeout is None  # restored
    # the timed calls, here without isolation: three warm-ups for a call of
    # 10 ms, then the series
    walls = runner.timed(p, 1e-6, 1000, 3, 5.0, 0.01)
    assert _short_series(walls, 3) and runner.pids == [os.getpid()] * (3 + len(walls))
    runner.pids.clear()
    # a call known to take 2 s: no warm-up
    walls = runner.timed(p, 1e-6, 1000, 2, 5.0, 2.0)
    assert _short_series(walls, 2) and len(runner.pids) == len(walls)


def test_series_of_long_calls_stops_at_repeat_or_budget():
    from pot_sns.bench.runners import _walls

    slow = Run(None, 0.3, 1, "stopped")
    assert _walls(lambda: slow, 3, 10.0) == [0.3] * 3  # long calls: repeat
    assert _walls(lambda: slow, 5, 0.5) == [0.3] * 2  # the budget cuts the series
    fail = Run(None, math.nan, 0, "failed")
    assert _walls(lambda: fail, 3, 10.0) == []


def test_isolated_calls_do_not_fork_this_process():
    """Children come from a fork server, not from this process, where JAX or
    torch may run threads (forking them can deadlock)."""
    from pot_sns.bench import runners

    ctx = runners._context()
    if ctx is None:
        pytest.skip("no fork server on this platform: calls run in this process")
    assert ctx.get_start_method() == "forkserver"
    out = runners._isolated(os.getppid, 30.0)
    assert out != os.getpid()  # the parent of the child is the server


def test_time_to_target_reports_budget_and_failure():
    p = _prob()
    cost = float(np.sum(p.M * np.outer(p.a, p.b)))
    res = time_to_target(FakeRunner(p, 8.0, "max_iter"), p, cost, 1e-6, 1.0, 1.0)
    assert res.status == "budget" and res.tries == 1
    res = time_to_target(FakeRunner(p, 8.0, "failed"), p, cost, 1e-6, 1.0, 1.0)
    assert res.status == "failed" and res.info["error"] == "boom"


class PlanRunner:
    """Returns a fixed plan, with the status of a solver stopped on its own
    criterion or cut by its iteration cap."""

    name, probe_iters = "plan", 0

    def __init__(self, plan, status):
        self.plan, self.status = plan, status

    def run(self, prob, tol, max_iter):
        return Run(self.plan, 0.01, 7, self.status, [(0.01, 1.0)])


@pytest.mark.parametrize("scale, status, expect", [
    (1.7, "max_iter", "budget"),  # a Newton iterate cut by the cap: out of budget
    (0.4, "max_iter", "budget"),
    (1e-6, "max_iter", "failed"),  # collapsed (POT's stabilized absorption)
    (0.4, "stopped", "failed"),  # returned as converged with half the mass lost
    (1.7, "stopped", "failed"),
])
def test_plans_far_off_are_out_of_budget_when_capped_and_diverged_when_collapsed(
        scale, status, expect):
    p = _prob()
    cost = float(np.sum(p.M * np.outer(p.a, p.b)))
    res = time_to_target(PlanRunner(scale * np.outer(p.a, p.b), status), p, cost, 1e-6, 1.0,
                         1.0)
    assert res.status == expect and res.l1 > 1e-6
    assert (expect == "failed") == ("diverged" in res.info.get("error", ""))


def _result(solver, status, t):
    return Result("p", 5, 5, 1e-3, solver, status, t, 1, 0.0, 0.0)


def test_speedup_is_a_lower_bound_when_the_base_ran_out_of_budget():
    assert speedup(_result("b", "ok", 2.0), _result("s", "ok", 0.5)) == (4.0, False)
    assert speedup(_result("b", "budget", 2.0), _result("s", "ok", 0.5)) == (4.0, True)
    assert speedup(_result("b", "ok", 2.0), _result("s", "budget", 0.5)) is None
    assert speedup(_result("b", "failed", 2.0), _result("s", "ok", 0.5)) is None


# ---------------------------------------------------------------- runners

@pytest.mark.parametrize("solver", ["pot_sns", "sinkhorn", "sinkhorn_log",
                                    "sinkhorn_stabilized", "sinkhorn_epsilon_scaling"])
def test_runners_return_the_plan_and_a_trace(solver):
    p = problems.make("gaussmix", 40, 5e-2)
    run = make_runner(solver, Device("cpu")).run(p, 1e-9, 5000)
    assert run.status == "stopped", run.info
    assert l1_error(run.plan, p.a, p.b) < 1e-6
    assert run.trace and all(t >= 0 for t, _ in run.trace) and run.wall > 0


def test_a_failing_solver_is_reported():
    p = problems.make("gaussmix", 30, 1e-2)
    run = make_runner("pot_sns", Device("cpu"), {"cg_maxiter": 0}).run(p, 1e-6, 100)
    assert run.status == "failed" and "cg_maxiter" in run.info["error"]


@pytest.mark.skipif(not available("regot_ssns")[0], reason="regot is not installed")
def test_regot_runner():
    p = problems.make("gaussmix", 40, 5e-2)
    run = make_runner("regot_ssns", Device("cpu")).run(p, 1e-10, 200)
    assert run.status == "stopped" and l1_error(run.plan, p.a, p.b) < 1e-8
    assert run.trace[-1][0] > 0


def test_torch_device_runs_pot_sns_and_sinkhorn_log_there():
    # imported here: the isolated calls import this module in their process
    pytest.importorskip("torch", reason="torch is not installed")
    if not ot.backend.torch:
        pytest.skip("POT's torch backend is disabled (POT_BACKEND_DISABLE_PYTORCH)")
    p = problems.make("assignment", 30, 5e-2)
    dev = Device("torch-cpu")
    for solver in ("pot_sns", "sinkhorn_log"):
        run = make_runner(solver, dev).run(p, 1e-10, 5000)
        assert isinstance(run.plan, np.ndarray) and run.status == "stopped"
        assert l1_error(run.plan, p.a, p.b) < 1e-8
    with pytest.raises(ValueError, match="CPU only"):
        make_runner("regot_ssns", dev)


def test_unknown_device_and_solver():
    with pytest.raises(ValueError, match="device"):
        Device("tpu")
    with pytest.raises(ValueError, match="unknown solver"):
        make_runner("greenkhorn", Device("cpu"))


# ---------------------------------------------------------------- end to end

TINY = ["--problems", "assignment,grid1d_w2", "--n", "40", "--reg", "5e-2", "1e-2",
        "--solvers", "pot_sns", "sinkhorn", "sinkhorn_log", "--budget", "0.5", "--repeat", "2"]


def test_command_line_tiny_suite_writes_table_json_and_plot_by_default(tmp_path, monkeypatch,
                                                                       capsys):
    """The README's command: the table, then the JSON and the plot in the
    current directory, with their paths."""
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    assert main(TINY) == 0
    out, err = capsys.readouterr()
    js, png = tmp_path / cli.DEFAULT_JSON, tmp_path / cli.DEFAULT_PLOT
    assert "wrote %s" % js in out and "wrote %s" % png in out
    assert "problem" in out and "vs sinkhorn_log" in out and "pot_sns" in out
    assert report.NOTATION[0] in out and "≥" not in out
    assert "[" in err and "reference" in err  # progress display
    doc = json.loads(js.read_text())
    assert doc["settings"]["solvers"] == ["pot_sns", "sinkhorn", "sinkhorn_log"]
    assert len(doc["results"]) == 2 * 2 * 3
    assert {"platform", "cpus", "numpy", "ot"} <= set(doc["machine"])
    for r in doc["results"]:
        assert r["status"] in ("ok", "budget", "stalled", "failed")
        if r["solver"] == "pot_sns":
            # the benchmark's own check of the plan, independent of the solver
            assert r["status"] == "ok" and r["l1"] <= 1e-6 and r["cost_rel"] <= 1e-6
            assert _short_series(r["times"], 2) and r["trace"]
    assert "5e-02" in doc["summary"] and "1e-02" in doc["summary"]
    import matplotlib.image

    img = matplotlib.image.imread(str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    # the saved figures replay: same table, a documentation fragment, a plot
    table = out[out.index("problem"):out.index("\n\n", out.index("problem"))]
    rst, png2 = tmp_path / "bench.inc", tmp_path / "again.png"
    assert main(["--load", str(js), "--rst", str(rst), "--plot", str(png2)]) == 0
    again = capsys.readouterr().out
    assert table in again
    text = rst.read_text()
    assert "python -m pot_sns.bench --problems assignment,grid1d_w2" in text
    assert table.splitlines()[2].strip() in text and doc["machine"]["platform"] in text
    assert png2.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(os.listdir(tmp_path)) == sorted([js.name, png.name, rst.name, png2.name])


def test_without_matplotlib_it_says_so_before_measuring_and_still_writes_json(
        tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(report, "have_matplotlib", lambda: False)
    assert main(TINY[:4] + ["--reg", "5e-2", "--solvers", "pot_sns", "--budget", "0.5",
                            "--repeat", "1"]) == 0
    out, err = capsys.readouterr()
    assert err.index(report.NO_MATPLOTLIB) < err.index("[1/")  # up front
    assert 'pip install "pot_sns[bench]"' in err and report.NO_MATPLOTLIB in out
    assert os.listdir(tmp_path) == [cli.DEFAULT_JSON]


def test_skipped_solvers_are_listed_with_the_reason_before_and_after(tmp_path, monkeypatch,
                                                                     capsys):
    """Default solvers (regot) and requested ones (OTT-JAX) that cannot run
    here are said, with how to install them, not dropped silently."""
    real = suite.available
    why = {"regot_ssns": 'regot is not installed: pip install "pot_sns[bench]"',
           "ott": 'ott-jax is not installed: pip install "pot_sns[ott]"'}
    monkeypatch.setattr(suite, "available",
                        lambda s: (False, why[s]) if s in why else real(s))
    monkeypatch.chdir(tmp_path)
    argv = ["--problems", "gaussmix", "--n", "30", "--reg", "5e-2", "--budget", "0.3",
            "--repeat", "1", "--no-save"]
    assert main(argv) == 0  # the default solvers
    out, err = capsys.readouterr()
    line = "skipped regot_ssns: " + why["regot_ssns"]
    assert line in out and err.index(line) < err.index("[1/")
    assert "regot_ssns" not in out.split(line)[0]  # not in the table
    assert main(argv + ["--solvers", "pot_sns", "ott"]) == 0
    out, err = capsys.readouterr()
    assert "skipped ott: " + why["ott"] in out
    assert os.listdir(tmp_path) == []  # --no-save


def test_several_sizes_in_one_run():
    """``--n 5000 20000`` (.ci/gpu-check): every problem at every size."""
    assert suite.describe(["gaussmix"], [1e-2], [20, 30]) == "gaussmix n=20,30; reg in {1e-02}"
    results, _ = suite.run_suite(["gaussmix"], [5e-2], ["pot_sns"], n=[20, 30], budget=0.5,
                                 quiet=True)
    assert [(r.n, r.status) for r in results] == [(20, "ok"), (30, "ok")]


def test_notation_says_how_much_slower_and_bounds_with_inequalities():
    assert report.format_speedup((36.44, False)) == "36.4x"
    assert report.format_speedup((913.0, True)) == ">913x"
    assert report.format_speedup((0.5, False)) == "2x slower"
    assert report.format_speedup((0.736, True)) == "<1.36x slower"
    assert report.format_speedup(None) == "-"
    rs = [Result("p%d" % k, 5, 5, 1e-2, s, "ok", t, 1, 0.0, 0.0)
          for k, (a, b) in enumerate([(1.0, 2.0), (3.54, 2.0)])
          for s, t in (("pot_sns", a), ("sinkhorn", b))]
    _, lines = report.summary(rs)
    assert lines == ["reg=1e-02  pot_sns faster than sinkhorn on 1/2 problems (p0 2x); "
                     "slower on p1 (1.77x slower)",
                     "reg=1e-02  pot_sns time / POT's fastest converging method: worst 1.77 "
                     "(p0 sinkhorn 0.50, p1 sinkhorn 1.77)"]


def test_a_solver_without_an_iterate_is_said_in_the_table_and_the_plot():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rs = [Result("p", 5, 5, 1e-3, "pot_sns", "ok", 0.01, 9, 0.0, 0.0,
                 trace=[(0.005, 1e-2), (0.01, 1e-7)]),
          Result("p", 5, 5, 1e-3, "sinkhorn", "budget", 2.0, 0, math.nan, math.nan)]
    assert "budget, no iterate" in report.table(rs)
    fig, ax = plt.subplots()
    try:
        report._panel(ax, ("p", 5, 5, 1e-3), rs, {"pot_sns": "C0", "sinkhorn": "C1"}, 1e-6)
        labels = [t.get_text() for t in ax.get_legend().get_texts()]
    finally:
        plt.close(fig)
    assert labels == ["pot_sns", "sinkhorn: no iterate within its 2 s"]


@pytest.mark.parametrize("solvers", [["pot_sns"], ["pot_sns", "sinkhorn_log"]])
def test_rst_fragment_is_valid_restructuredtext(solvers):
    """No empty literal block (a single solver has no summary), no warning."""
    docutils_core = pytest.importorskip("docutils.core")
    results = [_result(s, "ok", 0.5 if s == "sinkhorn_log" else 0.01) for s in solvers]
    settings = {"tol": 1e-6, "cost_tol": 1e-6, "repeat": 3, "budget": 2.0}
    text = report.rst(results, settings, command="python -m pot_sns.bench")
    assert ("Summary:" in text) == (len(solvers) > 1)
    assert report.NOTATION[1] in text
    docutils_core.publish_doctree(text, settings_overrides={"report_level": 2,
                                                            "halt_level": 2})


@pytest.mark.parametrize("argv", [["--problems", "nope"], ["--solvers", "nope"],
                                  ["--budget", "0"], ["--busy", "0"], ["--reg", "0"],
                                  ["--n", "1"]])
def test_command_line_rejects_bad_arguments(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and argv[0] in capsys.readouterr().err


def test_table_marks_budget_and_failures():
    rs = [_result("sinkhorn_log", "budget", 2.0), _result("pot_sns", "ok", 0.01),
          Result("p", 5, 5, 1e-3, "x", "failed", math.nan, 0, math.nan, math.nan,
                 info={"error": "ValueError: bad"})]
    text = report.table(rs)
    assert ">2" in text and ">200x" in text and "failed: ValueError: bad" in text


# ---------------------------------------------------------------- other modes

def test_batch_and_unbalanced_flags_hand_the_command_line_to_their_module(monkeypatch,
                                                                          capsys):
    seen = []
    fake = types.ModuleType("pot_sns.bench.batch")
    fake.main = lambda argv: seen.append(argv) or 3
    monkeypatch.setitem(sys.modules, "pot_sns.bench.batch", fake)
    assert main(["--n", "5", "--batch", "--help"]) == 3 and seen == [["--n", "5", "--help"]]
    assert main(["batch", "--n", "5"]) == 3 and seen[-1] == ["--n", "5"]  # subcommand form
    monkeypatch.setitem(sys.modules, "pot_sns.bench.unbalanced", None)  # not there
    assert main(["--unbalanced"]) == 2
    assert "no unbalanced benchmark" in capsys.readouterr().err


def test_busy_processes_spin_until_stopped_or_their_time_limit():
    with busy.BusyProcesses(2, limit=60.0) as procs:
        assert procs.running() == 2
        pids = [p.pid for p in procs.procs]
        time.sleep(0.5)
        cpu = [_cpu_seconds(pid) for pid in pids]
    assert procs.procs == [] and all(not os.path.exists("/proc/%d" % p) for p in pids)
    if None not in cpu:
        assert min(cpu) > 0.05  # they spin, not sleep
    with busy.BusyProcesses(1, limit=0.3) as procs:
        p = procs.procs[0]
        p.wait(timeout=30)  # stopped by itself
        assert procs.running() == 0


def _cpu_seconds(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def test_busy_option_reports_quiet_and_loaded_times(tmp_path, capsys):
    js = tmp_path / "busy.json"
    assert main(["--busy", "1", "--problems", "gaussmix", "--n", "40", "--reg", "5e-2",
                 "--budget", "0.5", "--repeat", "1", "--json", str(js)]) == 0
    out = capsys.readouterr().out
    assert "quiet and loaded: gaussmix n=40 reg=5e-02; 1 busy processes" in out
    doc = json.loads(js.read_text())
    test = doc["load_tests"][0]
    (q,), (lo,) = test["quiet"], test["loaded"]
    assert q["solver"] == lo["solver"] == "pot_sns" and q["status"] == lo["status"] == "ok"
    assert "%.2fx" % (lo["time"] / q["time"]) in out
    assert test["busy"] == 1 and test["busy_at_end"] == 1


# ---------------------------------------------------------------- design figures

def test_dense_passes_per_sweep_and_per_newton_iteration_are_as_documented():
    """docs/benchmarks.rst: a sweep costs two passes (one more at the end
    of the stage: the column sums of its last point, which the first Newton
    step's evaluation reuses); with the whole plan as the Hessian block, a
    Newton step costs two passes per CG iteration plus about six."""
    p = problems.make("gaussmix", 300, 1e-3)
    d = extras.passes_per_newton(p)
    assert d["per_sweep_total"] * d["sweeps_counted"] == 2 * d["sweeps_counted"] + 1
    # every sweep at the target reg counted, scaled ones included
    assert d["sweeps_counted"] == d["n_sinkhorn"] - d["n_scaling"] > 0
    assert d["n_newton"] >= 1 and d["density"] and min(d["density"]) == 1.0
    cg_per_step = sum(d["cg_iters"]) / d["n_newton"]
    assert 0 < d["per_newton_total"] - 2 * cg_per_step <= 6.5


def test_peak_memory_is_as_documented():
    """README and docs/benchmarks.rst: about 3.1 n-by-m float64 arrays at
    n=1000, M included (M, the plan, its float32 copy and the copy's
    squares, and vectors), 2.5 past SQUARES_CACHE entries (no squares)."""
    from pot_sns.kernels.numpy import SQUARES_CACHE

    m = extras.peak_memory("gaussmix", 1000, 1e-3)
    assert 3.0 <= m["peak_arrays"] <= 3.15, "the peak changed: update the figure in the docs"
    assert 1500 ** 2 > SQUARES_CACHE
    m = extras.peak_memory("gaussmix", 1500, 1e-3)
    assert 2.5 <= m["peak_arrays"] <= 2.6, "the peak changed: update the figure in the docs"
