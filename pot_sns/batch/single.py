"""One problem of a batch through the shared SNS solver.

The job was validated once, as a whole (:mod:`pot_sns.batch.problems`);
each of its problems then takes the already-checked path of
``ot.solve(..., method="sns")`` (:func:`pot_sns.api._solve_one`: support
restriction, kernel, solver), so that every improvement of the solver
applies to batches too and a batch solves each problem exactly as
``ot.solve`` does.
"""

import numpy as np
from ot.backend import get_backend

from .. import api

_NX = get_backend(np.zeros(1))

#: POT's constants in the regularisation terms of ``ot.solve``'s ``value``
KL_EPS = 1e-15
ENTROPY_EPS = 1e-16


def solve_one(nx, M, a, b, settings, numItermax=None):
    """Plan and log of one problem whose inputs were checked already.

    Parameters
    ----------
    nx : ot.backend.Backend
        Backend of ``M``, ``a``, ``b`` (detached, one dtype).
    M : array-like, shape (n, m)
        Cost.
    a, b : array-like, shape (n,), (m,)
        Weights of equal mass.
    settings : pot_sns.batch.problems.Settings
        Validated solver settings.
    numItermax : int, optional
        Overrides ``settings.numItermax`` (``grad="last_step"``).

    Returns
    -------
    P : array-like, shape (n, m)
        Plan (the best iterate when the solver did not converge).
    log : dict
        As :func:`pot_sns.sinkhorn_newton_sparse`'s ``log``.
    """
    n_iter = settings.numItermax if numItermax is None else numItermax
    # warn=False: the batch layers report non-convergence once, naming the
    # problems, instead of one warning per problem
    return api._solve_one(nx, a, b, M, settings.reg, settings.options, n_iter,
                          settings.stopThr, False, False, None)


def pair_values(M, a, b, P, reg, reg_type):
    """``value_linear`` and ``value`` of ``ot.solve`` for a numpy plan,
    term for term as POT computes them (``reg_type`` "kl" or "entropy")."""
    value_linear = _NX.sum(M * P)
    if reg_type == "entropy":
        value = value_linear + reg * _NX.sum(P * _NX.log(P + ENTROPY_EPS))
    else:
        # ot.solve adds 1e-15 * min(a) to zero weights: nothing, since min is 0
        value = value_linear + reg * _NX.kl_div(P, a[:, None] * b[None, :] + KL_EPS)
    return float(value_linear), float(value)


def solve_pair(job, i, j):
    """Solve pair ``(i, j)`` of ``job`` (numpy arrays).

    Returns
    -------
    value_linear, value : float
        ``<M, P>`` and the regularised objective, as ``ot.solve`` reports.
    status : str
        ``"converged"``, ``"max_iter"`` or ``"stalled"``.
    niter : int
        Iterations of the solver.
    err : float
        Final marginal error (NaN when none was recorded).
    """
    M, a, b = job.problem(i, j)
    s = job.settings
    P, log = solve_one(_NX, M, a, b, s)
    value_linear, value = pair_values(M, a, b, P, s.reg, s.reg_type)
    errs = log.get("err")
    err = float(errs[-1]) if errs is not None and len(errs) else np.nan
    return value_linear, value, str(log["status"]), int(log["niter"]), err
