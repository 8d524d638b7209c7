"""Benchmark of pot_sns against POT's Sinkhorn solvers, regot and OTT-JAX.

Run ``python -m pot_sns.bench --help``. The suite, the measurement protocol
(time to a target L1 marginal error and cost accuracy, medians of repeats,
time budgets) and the outputs (table, JSON, convergence plot) are described
in :mod:`pot_sns.bench.measure` and ``docs/benchmarks.rst``.
"""

from .measure import Result, reference, time_to_target
from .problems import Problem, make
from .suite import run_suite

__all__ = ["Problem", "Result", "make", "reference", "run_suite", "time_to_target"]
