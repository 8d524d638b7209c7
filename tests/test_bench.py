"""The benchmark: problems, the time-to-target protocol, and the command line
end to end on a tiny suite (a valid table, JSON and plot). Speed is never
asserted here: the benchmark measures it."""

import json
import math

import numpy as np
import ot
import pytest

from pot_sns.bench import extras, problems, report
from pot_sns.bench.__main__ import main
from pot_sns.bench.measure import Result, l1_error, reference, speedup, time_to_target
from pot_sns.bench.runners import Device, Run, available, make_runner

try:
    import torch
except ImportError:
    torch = None


# ---------------------------------------------------------------- problems

@pytest.mark.parametrize("name", list(problems.FAMILIES))
def test_problems_are_normalised_balanced_and_reproducible(name):
    p = problems.make(name, 30, 1e-2, seed=3)
    assert p.M.shape == (30, 30) and p.a.shape == (30,) and p.b.shape == (30,)
    assert p.M.max() == pytest.approx(1.0) and p.M.min() >= 0
    assert np.all(p.a > 0) and np.all(p.b > 0)
    assert p.a.sum() == pytest.approx(1.0) and p.b.sum() == pytest.approx(1.0)
    q = problems.make(name, 30, 1e-2, seed=3)
    np.testing.assert_array_equal(p.M, q.M)


def test_default_sizes_and_labels():
    assert problems.make("assignment").M.shape == (500, 500)
    assert problems.make("gaussmix", 20).label == "gaussmix n=20 reg=1e-03"
    assert set(problems.SUITE) < set(problems.FAMILIES)
    assert problems.format_reg(1 / 1200) == "1/1200"
    with pytest.raises(ValueError, match="problems"):
        problems.make("nope")


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
        P[0, 0] += tol * self.excess  # L1 error = tol * excess
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
    assert res.l1 <= 1e-6 and len(res.times) == 3 and res.time == pytest.approx(0.01)


def test_timed_calls_run_together_in_one_child_after_a_warm_up():
    """Every call runs in a forked child (no solver state reaches this
    process); the timed ones share one child, after an untimed warm-up."""
    import os

    p = _prob()
    runner = make_runner("pot_sns", Device("cpu"))
    real = runner._run
    seen = []

    def spy(prob, tol, max_iter):
        out = real(prob, tol, max_iter)
        seen.append(os.getpid())  # in the child: lost, unless run here
        out.info["pids"] = list(seen)
        return out

    runner._run = spy
    ref_cost, _ = reference(p)
    res = time_to_target(runner, p, ref_cost, 1e-6, 1e-6, budget=5.0, repeat=3)
    assert res.ok and len(res.times) == 3 and seen == []  # nothing ran here
    assert res.info["pids"][0] != os.getpid()  # the search call, forked
    assert runner.timeout is None  # restored
    # the timed calls, here without isolation: a warm-up, then three
    runner.timeout = None
    walls = runner.timed(p, 1e-6, 1000, 3, 5.0, 0.01)
    assert len(walls) == 3 and seen == [os.getpid()] * 4
    seen.clear()
    assert len(runner.timed(p, 1e-6, 1000, 2, 5.0, 2.0)) == 2 and len(seen) == 2  # slow: none


def test_time_to_target_reports_budget_and_failure():
    p = _prob()
    cost = float(np.sum(p.M * np.outer(p.a, p.b)))
    res = time_to_target(FakeRunner(p, 8.0, "max_iter"), p, cost, 1e-6, 1.0, 1.0)
    assert res.status == "budget" and res.tries == 1
    res = time_to_target(FakeRunner(p, 8.0, "failed"), p, cost, 1e-6, 1.0, 1.0)
    assert res.status == "failed" and res.info["error"] == "boom"


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


@pytest.mark.skipif(torch is None, reason="torch is not installed")
def test_torch_device_runs_pot_sns_and_sinkhorn_log_there():
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

def test_command_line_tiny_suite_writes_table_json_and_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    js, png = tmp_path / "bench.json", tmp_path / "bench.png"
    rc = main(["--problems", "assignment,grid1d_w2", "--n", "40", "--reg", "5e-2", "1e-2",
               "--solvers", "pot_sns", "sinkhorn", "sinkhorn_log", "--budget", "0.5",
               "--repeat", "2", "--json", str(js), "--plot", str(png)])
    assert rc == 0
    out, err = capsys.readouterr()
    assert "problem" in out and "vs sinkhorn_log" in out and "pot_sns" in out
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
            assert len(r["times"]) == 2 and r["trace"]
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


@pytest.mark.parametrize("solvers", [["pot_sns"], ["pot_sns", "sinkhorn_log"]])
def test_rst_fragment_is_valid_restructuredtext(solvers):
    """No empty literal block (a single solver has no summary), no warning."""
    docutils_core = pytest.importorskip("docutils.core")
    results = [_result(s, "ok", 0.5 if s == "sinkhorn_log" else 0.01) for s in solvers]
    settings = {"tol": 1e-6, "cost_tol": 1e-6, "repeat": 3, "budget": 2.0}
    text = report.rst(results, settings, command="python -m pot_sns.bench")
    assert ("Summary:" in text) == (len(solvers) > 1)
    docutils_core.publish_doctree(text, settings_overrides={"report_level": 2,
                                                            "halt_level": 2})


def test_command_line_rejects_bad_arguments():
    with pytest.raises(SystemExit):
        main(["--problems", "nope"])
    with pytest.raises(SystemExit):
        main(["--solvers", "nope"])
    with pytest.raises(SystemExit):
        main(["--budget", "0"])


def test_table_marks_budget_and_failures():
    rs = [_result("sinkhorn_log", "budget", 2.0), _result("pot_sns", "ok", 0.01),
          Result("p", 5, 5, 1e-3, "x", "failed", math.nan, 0, math.nan, math.nan,
                 info={"error": "ValueError: bad"})]
    text = report.table(rs)
    assert ">2" in text and "≥200x" in text and "failed: ValueError: bad" in text


# ---------------------------------------------------------------- design figures

def test_dense_passes_are_counted_per_newton_iteration():
    p = problems.make("gaussmix", 60, 1e-3)
    d = extras.passes_per_newton(p)
    assert d["n_newton"] >= 1
    assert d["per_newton_total"] > 0 and 0 < d["per_sweep_total"] <= 4


def test_peak_memory_stays_within_four_dense_arrays():
    m = extras.peak_memory("gaussmix", 300, 1e-3)
    assert 1.0 < m["peak_arrays"] <= 4.0
