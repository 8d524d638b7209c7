"""The unbalanced benchmark (pot_sns.bench.unbalanced) on a small grid."""

import json

import numpy as np
import pytest

from pot_sns.bench import unbalanced as bench
from pot_sns.unbalanced.residual import optimality_residual


def test_bench_json(tmp_path, capsys):
    out = tmp_path / "unbalanced.json"
    rc = bench.main(["--n", "30", "--m", "40", "--reg", "1e-2", "--reg-m", "0.5",
                     "--repeat", "1", "--pot-iter", "2000",
                     "--pot-methods", "sinkhorn,sinkhorn_stabilized", "--json", str(out)])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert "load_average" in doc["machine"] or "cpu_count" in doc["machine"]
    rows = doc["results"]
    sns = [e for e in rows if e["solver"] == "sns"]
    assert {e["reg_type"] for e in sns} == {"kl", "entropy"}
    for e in sns:
        assert e["status"] == "ok" and e["converged"] and e["residual"] <= 1e-6
    pot = [e for e in rows if e["solver"].startswith("pot ")]
    assert len(pot) == 4 and all("mass" in e and e["status"] in ("ok", "failed") for e in pot)
    ott = [e for e in rows if e["solver"] == "ott-jax"]
    assert len(ott) == 1 and ("skipped" in ott[0] or "seconds" in ott[0])
    assert "sns" in capsys.readouterr().out


def test_judge_reports_a_wrong_plan_as_failed():
    a, b, M = bench.clouds(20, 25)
    import pot_sns

    P = pot_sns.sinkhorn_newton_sparse_unbalanced(a, b, M, 0.05, 1.0, stopThr=1e-12)
    ref = float(P.sum())
    ok = bench.judge(P, ref, (a, b, M), 0.05, 1.0, "kl", fail=1e-2)
    assert ok["status"] == "ok" and ok["residual"] == pytest.approx(
        optimality_residual(M, P, a, b, 0.05, 1.0))
    assert bench.judge(P * 1e-6, ref, (a, b, M), 0.05, 1.0, "kl", 1e-2)["status"] == "failed"
    bad = P.copy()
    bad[0, 0] = np.nan
    assert bench.judge(bad, ref, (a, b, M), 0.05, 1.0, "kl", 1e-2) == {
        "mass": pytest.approx(np.nan, nan_ok=True), "residual": None, "status": "failed"}


def test_bench_rejects_bad_options():
    with pytest.raises(SystemExit):
        bench.main(["--solvers", "sns,magic"])
    with pytest.raises(SystemExit):
        bench.main(["--reg", "-1"])
