"""Choice of the sparsity threshold from a histogram of ``log P`` (O(nm), no sort)."""

import math

import numpy as np


def pick_threshold(hist, top, bin_width, budget, max_nnz):
    """Pick the plan threshold ``tau`` of the sparsified Hessian.

    Parameters
    ----------
    hist : tuple of ndarray
        ``(counts, mass)`` per bin of ``log P`` (see :mod:`pot_sns.kernels.base`).
    top : float
        Upper edge of bin 0, in log-plan units.
    bin_width : float
        Bin width.
    budget : tuple
        ``("mass", delta)``: keep the fewest bins whose dropped mass is at most
        ``delta``; ``("count", k)``: keep the most bins holding at most ``k``
        entries.
    max_nnz : int
        Cap on the number of kept entries.

    Returns
    -------
    tau : float
        Keep the entries ``P_ij >= tau``.
    kept : int
        Number of entries in the kept bins.
    dropped : float
        Mass of the entries below ``tau``.
    """
    counts, mass = hist
    K = len(counts) - 1
    kept = np.concatenate(([0.0], np.cumsum(counts[:K])))  # kept[j]: bins < j
    dropped = np.concatenate((np.cumsum(mass[::-1])[::-1], [0.0]))[: K + 1]  # bins >= j
    kind, value = budget
    if kind == "mass":
        ok = np.flatnonzero(dropped <= value)
        j = int(ok[0]) if ok.size else K
    else:
        j = K
    # the count cap (or the "count" budget) wins over the mass rule
    cap = min(max_nnz, value) if kind == "count" else max_nnz
    allowed = np.flatnonzero(kept <= cap)
    j = min(j, int(allowed[-1]))
    j = max(j, 0)
    tau = math.exp(top - j * bin_width) if j > 0 else math.inf
    return tau, int(kept[j]), float(dropped[j])
