"""Conftest that runs POT's own tests with POT's balanced entropic solves routed to SNS.

``tests/parity/run_pot_tests.py`` (``tox -e pot-parity``) extracts
``test/test_bregman.py`` and ``test/test_solvers.py`` from the sdist of the
installed POT into a temporary folder, copies this file there as its
``conftest.py`` and runs pytest with ``-p pot_sns.testing`` (POT's ``nx``
fixture and ``pytest.skip_backend``). Then, during each selected test:

- ``ot.sinkhorn`` / ``ot.sinkhorn2`` (and the copies POT's modules import)
  with ``method`` "sinkhorn" or "sinkhorn_log" and ``reg > 0`` run
  ``method="sinkhorn_newton_sparse"``;
- ``ot.solve`` (also when reached from ``ot.solve_sample``) on entropic
  problems (``reg > 0``, ``c=None``, ``reg_type`` "KL"/"entropy"), balanced
  or unbalanced with ``unbalanced_type="KL"``, runs ``method="sns"``;
- ``ot.unbalanced.sinkhorn_unbalanced`` / ``..2`` (and the copy ``ot.da``
  imports) with ``method="sinkhorn"`` run ``method="sns"``;
- ``ot.da.SinkhornTransport.fit`` with ``method`` "sinkhorn" or
  "sinkhorn_log" runs with ``method="sns"`` (pot_sns's own ``fit``).

So POT's assertions judge SNS. POT's other solvers (stabilized, epsilon
scaling, greenkhorn, lazy/empirical Sinkhorn, exact OT) are not routed and
serve as the references those tests compare with. Every selected test must
route at least one solve, except the few in ``DELEGATION`` that check that
POT's errors are unchanged with pot_sns registered. The list of tests run
and excluded, with the reasons, is documented in ``docs/parity.rst``.

It is not named ``conftest.py`` here, so that ``python -m pytest tests`` does
not load it; even when loaded, it acts only on tests in its own folder.
"""

import inspect
import json
import os
from pathlib import Path

import pytest

import ot
import ot.da
from pot_sns import plugin

HERE = Path(__file__).resolve().parent

#: POT's Sinkhorn methods replaced by SNS (others stay POT's references).
ROUTED_METHODS = ("sinkhorn", "sinkhorn_log")


def _method_routed(params):
    return params.get("method") in ROUTED_METHODS


def _entropic_kl(params):
    """Entropic problems SNS solves: balanced (then unbalanced_type is unused,
    and one of its values, "KL", suffices), or unbalanced with KL penalties."""
    return (params["reg"] is not None and params["reg_type"] in ("KL", "entropy")
            and params["unbalanced_type"] == "KL")


#: POT's unbalanced Sinkhorn method replaced by SNS (ot.solve's; the
#: stabilized and translation-invariant variants stay POT's references)
ROUTED_UNBALANCED_METHODS = ("sinkhorn",)


#: Tests that run: (file, test name) -> predicate on the parametrization, or None for all.
SELECTED = {
    ("test_bregman.py", "test_sinkhorn"): None,
    ("test_bregman.py", "test_convergence_warning"): _method_routed,
    ("test_bregman.py", "test_not_implemented_method"): None,
    ("test_bregman.py", "test_sinkhorn_multi_b"): _method_routed,
    ("test_bregman.py", "test_sinkhorn_backends"): None,
    ("test_bregman.py", "test_sinkhorn2_backends"): None,
    ("test_bregman.py", "test_sinkhorn_empty"): None,
    ("test_bregman.py", "test_sinkhorn_variants"): None,
    ("test_bregman.py", "test_sinkhorn_variants_dtype_device"): _method_routed,
    ("test_bregman.py", "test_sinkhorn2_variants_dtype_device"): _method_routed,
    ("test_bregman.py", "test_sinkhorn_variants_multi_b"): None,
    ("test_bregman.py", "test_sinkhorn2_variants_multi_b"): None,
    ("test_bregman.py", "test_sinkhorn_variants_log"): None,
    ("test_bregman.py", "test_sinkhorn_variants_log_multib"): None,
    ("test_bregman.py", "test_sinkhorn_warmstart"): None,
    ("test_bregman.py", "test_stabilized_vs_sinkhorn_multidim"): None,
    ("test_bregman.py", "test_implemented_methods"): None,
    ("test_bregman.py", "test_screenkhorn"): None,
    ("test_bregman.py", "test_empirical_sinkhorn"): None,
    ("test_bregman.py", "test_lazy_empirical_sinkhorn"): None,
    ("test_bregman.py", "test_empirical_sinkhorn_divergence"): None,
    ("test_bregman.py", "test_empirical_sinkhorn_divergence_gradient"): None,
    ("test_bregman.py", "test_sinkhorn2_gradients"): None,
    ("test_bregman.py", "test_empirical_sinkhorn_warmstart"): None,
    ("test_bregman.py", "test_empirical_sinkhorn_divergence_warmstart"): None,
    ("test_bregman.py", "test_free_support_sinkhorn_barycenter"): None,
    ("test_solvers.py", "test_solve"): None,
    ("test_solvers.py", "test_solve_last_step"): None,
    ("test_solvers.py", "test_solve_detach"): None,
    ("test_solvers.py", "test_solve_envelope"): None,
    ("test_solvers.py", "test_solve_grid"): _entropic_kl,
    ("test_solvers.py", "test_solve_not_implemented"): None,
    ("test_solvers.py", "test_solve_sample_lazy"): None,
    ("test_solvers.py", "test_zero_mass_solvers"): None,
    ("test_solvers.py", "test_solve_sample_debias"): lambda p: p["reg"] is not None,
    ("test_solvers.py", "test_solvers_bad_method"): None,
    ("test_solvers.py", "test_solve_bary_sample"): _entropic_kl,
    ("test_da.py", "test_sinkhorn_transport_class"): None,
    ("test_da.py", "test_unbalanced_sinkhorn_transport_class"): None,
    ("test_da.py", "test_log_da"):
        lambda p: p["class_to_test"].__name__ == "SinkhornTransport",
}

#: Selected tests that make no entropic solve: they check that POT's own
#: errors are unchanged while pot_sns is registered.
DELEGATION = {
    ("test_bregman.py", "test_not_implemented_method"),
    ("test_solvers.py", "test_solve_not_implemented"),
    ("test_solvers.py", "test_solvers_bad_method"),
}

#: Tests that exercise a routed solve but are not run, and why (see docs/parity.rst).
EXCLUDED = {
    ("test_bregman.py", "test_sinkhorn_stabilization"):
        "reg=1e-5 with costs up to 9801 (M/reg ~ 1e9): POT's sinkhorn_log and "
        "sinkhorn_stabilized both return a loss of 0 (the plan underflows; the exact OT "
        "loss is 99.3), so the test compares two degenerate results",
}


_ROUTED = {}  # test id -> number of solves routed to SNS


def pytest_sessionfinish(session, exitstatus):
    # POT_SNS_PARITY_REPORT=<file>: which tests routed how many solves (JSON),
    # to review the selection against a new POT release
    path = os.environ.get("POT_SNS_PARITY_REPORT")
    if path and _ROUTED:
        Path(path).write_text(json.dumps(_ROUTED, indent=1, sort_keys=True))


def _in_parity_dir(node):
    return Path(str(node.path)).resolve().parent == HERE


def _key(item):
    return (Path(str(item.path)).name, getattr(item, "originalname", None) or item.name)


def pytest_collection_modifyitems(config, items):
    if os.environ.get("POT_SNS_PARITY_ALL"):
        return  # maintainers: run every test of the files, routed, to review the lists
    keep, drop = [], []
    for item in items:
        if not _in_parity_dir(item):
            keep.append(item)
            continue
        key = _key(item)
        if key not in SELECTED:
            drop.append(item)
            continue
        rule = SELECTED[key]
        params = getattr(getattr(item, "callspec", None), "params", {})
        (keep if rule is None or rule(params) else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item._pot_sns_call_report = report


def _positive(reg):
    try:
        return reg is not None and float(reg) > 0
    except (TypeError, ValueError):
        return False


def _route_solve(wrapper, calls):
    sig = inspect.signature(wrapper)

    def routed(*args, **kwargs):
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        arg = bound.arguments
        reg_type, ub_type = arg["reg_type"], arg["unbalanced_type"]
        if (_positive(arg["reg"]) and arg["c"] is None
                and (arg["unbalanced"] is None
                     or (isinstance(ub_type, str) and ub_type.lower() == "kl"))
                and isinstance(reg_type, str) and reg_type.lower() in ("kl", "entropy")
                and arg["method"] in (None,) + ROUTED_METHODS):
            calls.append("solve")
            arg["method"] = "sns"
            return wrapper(**arg)
        return wrapper(*args, **kwargs)

    return routed


def _route_sinkhorn(wrapper, calls):
    sig = inspect.signature(wrapper)

    def routed(*args, **kwargs):
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        arg = dict(bound.arguments)
        extra = arg.pop("kwargs", {})
        method = arg["method"]
        # extra keywords belong to other solvers (SNS would reject them)
        if (isinstance(method, str) and method.lower() in ROUTED_METHODS
                and _positive(arg["reg"]) and not extra):
            calls.append(wrapper.__name__)
            arg["method"] = "sinkhorn_newton_sparse"
            return wrapper(**arg)
        return wrapper(*args, **kwargs)

    return routed


def _route_unbalanced(wrapper, calls):
    sig = inspect.signature(wrapper)

    def routed(*args, **kwargs):
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        arg = dict(bound.arguments)
        extra = arg.pop("kwargs", {})
        method = arg["method"]
        if (isinstance(method, str) and method.lower() in ROUTED_UNBALANCED_METHODS
                and _positive(arg["reg"]) and not extra):
            calls.append(wrapper.__name__)
            arg["method"] = "sns"
            return wrapper(**arg)
        return wrapper(*args, **kwargs)

    return routed


def _route_da_fit(fit, calls):
    """``SinkhornTransport.fit`` with POT's Sinkhorn methods runs pot_sns's
    ``fit`` (``method="sns"``): SNS with the continuous map in the log domain
    and the semi-supervised mode's forbidden pairs handled."""
    def routed(self, *args, **kwargs):
        if self.method in ROUTED_METHODS:
            calls.append("SinkhornTransport.fit")
            self.method = "sns"
        return fit(self, *args, **kwargs)

    return routed


@pytest.fixture(autouse=True)
def route_to_sns(request, monkeypatch):
    """Route the balanced entropic solves of one POT test to SNS; check that
    a passing test did route at least one."""
    if not _in_parity_dir(request.node):
        yield None
        return
    if not plugin.is_registered():
        pytest.fail("pot_sns is not registered with POT: nothing would be routed")
    calls = []
    for name, make in (("solve", _route_solve), ("sinkhorn", _route_sinkhorn),
                       ("sinkhorn2", _route_sinkhorn),
                       ("sinkhorn_unbalanced", _route_unbalanced),
                       ("sinkhorn_unbalanced2", _route_unbalanced)):
        wrapper = getattr(ot, name)
        router = make(wrapper, calls)
        for module, attr in plugin._places(wrapper):
            monkeypatch.setattr(module, attr, router)
    monkeypatch.setattr(ot.da.SinkhornTransport, "fit",
                        _route_da_fit(ot.da.SinkhornTransport.fit, calls))
    yield calls
    _ROUTED[request.node.nodeid] = len(calls)
    report = getattr(request.node, "_pot_sns_call_report", None)
    key = _key(request.node)
    if report is not None and report.passed and not calls and key not in DELEGATION \
            and not os.environ.get("POT_SNS_PARITY_ALL"):
        pytest.fail("%s::%s passed without any solve routed to SNS: it does not test SNS"
                    % key)
