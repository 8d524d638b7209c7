"""Generic kernel over POT's backend ``nx``: correct everywhere, dense, slower.

Backend-specific kernels (numpy, torch, cupy) subclass :class:`DenseKernel`
and override the passes they can do faster. The contract, used by
:mod:`pot_sns.solver`:

- ``row_lse(v)``: ``logsumexp_j(v_j - M_ij / reg)``, shape ``(n,)``;
- ``col_lse(u)``: ``logsumexp_i(u_i - M_ij / reg)``, shape ``(m,)``;
- ``evaluate(u, v, top)``: forms the plan ``P = exp(u_i + v_j - M_ij/reg)``
  in the kernel's buffer and returns its row sums, column sums and a host
  (numpy) histogram ``(counts, mass)`` of ``log P`` in bins of width
  ``bin_width`` below ``top`` (bin ``k`` holds ``top - (k+1)w < log P <=
  top - k w``; the last bin holds everything lower);
- ``select(tau)``: the entries ``P_ij >= tau`` of the buffer as a sparse block
  with ``matvec``, ``rmatvec``, ``sq_matvec``, ``sq_rmatvec`` and ``nnz``;
- ``plan(u, v)``: a new dense plan array for the user;
- ``errstate()``: a context that keeps floating point warnings of the
  internal passes (overflow in a rejected trial step) from leaking;
- ``at_reg(reg)``: a kernel for the same ``M`` at another regularisation,
  used only for ``row_lse``/``col_lse`` (the epsilon-scaling warm-up).

Optional attributes the solver reads when present: ``max_density`` (the
default cap on the kept fraction) and ``dense_density`` (kept fraction from
which ``select(0)``, the whole plan, is the cheaper Hessian block).
"""

import contextlib

import numpy as np


def row_blocks(n, rows, buf):
    """``(i0, i1, buffer)`` for the row blocks of ``rows`` rows of an n-row
    array, with a view of ``buf`` of the block's height (the scratch space
    of the blocked passes of the numpy and torch kernels)."""
    for i0 in range(0, n, rows):
        i1 = min(i0 + rows, n)
        yield i0, i1, buf[: i1 - i0]


class DenseBlock:
    """Kept entries of the plan stored as a masked dense matrix."""

    def __init__(self, nx, S, nnz):
        self.nx = nx
        self.S = S
        self.nnz = nnz
        self._S2 = None

    def matvec(self, x):
        return self.nx.dot(self.S, x)

    def rmatvec(self, y):
        return self.nx.dot(y, self.S)

    def _sq(self):
        if self._S2 is None:
            self._S2 = self.S * self.S
        return self._S2

    def sq_matvec(self, x):
        return self.nx.dot(self._sq(), x)

    def sq_rmatvec(self, y):
        return self.nx.dot(y, self._sq())


class DenseKernel:
    """Kernel written only with ``nx`` operations (fallback for jax, tf).

    It keeps ``-M / reg`` and the plan as two dense arrays, and computes the
    threshold histogram on the host.
    """

    name = "dense"
    #: default cap on the kept fraction of the plan (``SNSOptions.max_density=None``):
    #: this kernel copies every kept entry into a masked dense block
    max_density = 0.25
    #: kept fraction from which ``select(0)`` (the whole plan) is the cheaper
    #: Hessian block; None: never
    dense_density = None

    def __init__(self, nx, M, reg, bin_width=0.5, n_bins=120):
        self.nx = nx
        self.M = M
        self.reg = reg
        self.shape = tuple(M.shape)
        self.bin_width = float(bin_width)
        self.n_bins = int(n_bins)
        self.Mr = -M / reg
        self.P = None
        self._logP = None

    def errstate(self):
        return contextlib.nullcontext()

    def at_reg(self, reg):
        """Kernel for the same ``M`` at regularisation ``reg``. This generic
        one sweeps with dense ``nx`` passes; backend kernels may return a
        faster one of their own kind."""
        return DenseKernel(self.nx, self.M, reg, self.bin_width, self.n_bins)

    def row_lse(self, v):
        return self.nx.logsumexp(self.Mr + v[None, :], axis=1)

    def col_lse(self, u):
        return self.nx.logsumexp(self.Mr + u[:, None], axis=0)

    def evaluate(self, u, v, top, hist=True):
        nx = self.nx
        logP = self.Mr + u[:, None] + v[None, :]
        self.P = nx.exp(logP)
        r = nx.sum(self.P, 1)
        c = nx.sum(self.P, 0)
        h = None
        if hist:
            h = self.histogram(nx.to_numpy(logP), nx.to_numpy(self.P), top)
        return r, c, h

    def histogram(self, logP, P, top):
        """Host histogram ``(counts, mass)`` of ``log P`` (numpy arrays)."""
        K = self.n_bins
        t = (top - logP.ravel()) / self.bin_width
        np.clip(t, 0, K, out=t)
        idx = t.astype(np.intp)
        counts = np.bincount(idx, minlength=K + 1).astype(np.float64)
        mass = np.bincount(idx, weights=P.ravel().astype(np.float64), minlength=K + 1)
        return counts, mass

    def select(self, tau):
        nx = self.nx
        keep = self.P >= tau
        S = nx.where(keep, self.P, 0 * self.P)
        return DenseBlock(nx, S, int(nx.to_numpy(nx.sum(keep * 1))))

    def plan(self, u, v):
        return self.nx.exp(self.Mr + u[:, None] + v[None, :])
