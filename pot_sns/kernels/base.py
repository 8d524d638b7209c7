"""The kernel contract (:class:`Kernel`, :class:`HessianBlock`) and the
generic kernel over POT's backend ``nx`` (:class:`DenseKernel`).

A kernel owns every pass over the cost matrix ``M``; the solver never touches
an n-by-m array itself. Potentials are in sinkhorn_log's units, so the plan
at ``(u, v)`` is ``P_ij = exp(u_i + v_j - M_ij / reg)``. Backend kernels
(numpy, torch, torch on the CPU, cupy) subclass :class:`Kernel` and implement
its abstract methods; :class:`DenseKernel` implements them with ``nx``
operations only (the fallback for jax and tensorflow).
"""

import abc
import contextlib

import numpy as np


def row_blocks(n, rows, buf):
    """``(i0, i1, buffer)`` for the row blocks of ``rows`` rows of an n-row
    array, with a view of ``buf`` of the block's height (the scratch space
    of the blocked passes of the numpy and torch kernels)."""
    for i0 in range(0, n, rows):
        i1 = min(i0 + rows, n)
        yield i0, i1, buf[: i1 - i0]


class HessianBlock(abc.ABC):
    """The kept entries ``S`` of the plan: the off-diagonal block of the
    sparsified Hessian, as the Newton system uses it.

    Attributes
    ----------
    nnz : int
        Number of kept entries (the density the solver reports).

    Notes
    -----
    Blocks that store ``S`` as a matrix of the kept entries build the
    element-wise square ``S o S`` (the Jacobi preconditioner's diagonal needs
    ``(S o S) x``) once, on first use: :meth:`_sq` caches what
    :meth:`_square` returns. Blocks that form the squares on the fly (dense
    blocks, where a cached square would cost more memory traffic than it
    saves) override the ``sq_*`` products instead.
    """

    nnz = 0
    _S2 = None

    @abc.abstractmethod
    def matvec(self, x):
        """``S @ x``, shape ``(n,)``."""

    @abc.abstractmethod
    def rmatvec(self, y):
        """``S^T @ y``, shape ``(m,)``."""

    @abc.abstractmethod
    def sq_matvec(self, x):
        """``(S o S) @ x``, shape ``(n,)``."""

    @abc.abstractmethod
    def sq_rmatvec(self, y):
        """``(S o S)^T @ y``, shape ``(m,)``."""

    def _square(self):
        """Build the operator(s) of ``S o S`` that the ``sq_*`` products use."""
        raise NotImplementedError("%s forms no cached square" % type(self).__name__)

    def _sq(self):
        if self._S2 is None:
            self._S2 = self._square()
        return self._S2


class DenseBlock(HessianBlock):
    """Kept entries of the plan stored as a masked dense matrix ``S``."""

    def __init__(self, nx, S, nnz):
        self.nx = nx
        self.S = S
        self.nnz = nnz

    def matvec(self, x):
        return self.nx.dot(self.S, x)

    def rmatvec(self, y):
        return self.nx.dot(y, self.S)

    def _square(self):
        return self.S * self.S

    def sq_matvec(self, x):
        return self.nx.dot(self._sq(), x)

    def sq_rmatvec(self, y):
        return self.nx.dot(y, self._sq())


class Kernel(abc.ABC):
    """The contract between the SNS solver and a backend kernel.

    Parameters
    ----------
    nx : ot.backend.Backend
        POT backend of the arrays.
    M : array, shape (n, m)
        Cost matrix, in the compute dtype, as the kernel stores it
        (subclasses pass their contiguous or detached copy).
    reg : float
        Entropic regularization.
    bin_width, n_bins : float, int
        Layout of the threshold histogram of :meth:`evaluate`.

    Attributes
    ----------
    nx, M, reg, shape, bin_width, n_bins
        As given (``shape`` a tuple of ints).
    name : str
        Short name (benchmark reports).
    max_density : float
        Default cap on the kept fraction of the plan
        (``SNSOptions.max_density=None``).
    dense_density : float or None
        Kept fraction from which ``select(0)``, the whole plan, is the
        cheaper Hessian block; None: never. Subclasses may compute it.
    passes : dict
        Passes over n-by-m arrays so far, by kind (keys
        :attr:`pass_kinds`): a design figure reported by the benchmark.
    P : array or None
        The plan at the potentials of the last :meth:`evaluate` (None
        before any).
    """

    name = "kernel"
    max_density = 0.25
    dense_density = None
    pass_kinds = ("exp", "select")
    P = None

    def __init__(self, nx, M, reg, bin_width=0.5, n_bins=120):
        self.nx = nx
        self.M = M
        self.reg = reg
        self.shape = tuple(int(s) for s in M.shape)
        self.bin_width = float(bin_width)
        self.n_bins = int(n_bins)
        self.passes = dict.fromkeys(self.pass_kinds, 0)

    _cost_range = None

    def cost_range(self):
        """``(min, max)`` of ``M`` as floats: two reductions on first use,
        then kept (``M`` does not change)."""
        if self._cost_range is None:
            M = self.nx.detach(self.M)
            self._cost_range = (float(self.nx.min(M)), float(self.nx.max(M)))
        return self._cost_range

    def set_cost_range(self, lo, hi):
        """Take ``(min, max)`` of ``M`` from a scan made before (the input
        check's): :meth:`cost_range` then costs no pass."""
        self._cost_range = (float(lo), float(hi))

    def errstate(self):
        """The context the solver runs the kernel's passes in: it keeps the
        floating point warnings of the internal passes (overflow in a
        rejected line-search trial) from leaking, and may set per-solve
        resources (the numpy kernel caps BLAS threads at the idle cores)."""
        return contextlib.nullcontext()

    @abc.abstractmethod
    def at_reg(self, reg):
        """A kernel for the same ``M`` at regularization ``reg``, used only
        for :meth:`row_lse` and :meth:`col_lse` (the epsilon-scaling warm-up)."""

    @abc.abstractmethod
    def row_lse(self, v):
        """``logsumexp_j(v_j - M_ij / reg)``, shape ``(n,)``."""

    @abc.abstractmethod
    def col_lse(self, u):
        """``logsumexp_i(u_i - M_ij / reg)``, shape ``(m,)``."""

    def scaled_sweeps(self, targets, u, v, col=None):
        """Sinkhorn sweeps in scaling form from ``(u, v)``, or None.

        ``targets`` is ``(a, b)``, from
        :meth:`pot_sns.objective.Objective.scaling_targets` (an objective
        without them runs log-domain sweeps only); ``col``, when given, is
        :meth:`col_lse` at ``u``. A kernel that holds the plan in kernel
        form may return an object whose ``sweep()`` does one sweep (``v``
        then ``u``, as :func:`pot_sns.warmup.sweeps`) and returns its error
        (at the point it reaches), or None when the sweep would leave the
        range where the kernel form is exact (the object is then
        unchanged), and whose ``potentials()`` returns ``(u, v)``. The
        default: None (log-domain half-sweeps only).
        """
        return None

    @abc.abstractmethod
    def evaluate(self, u, v, top, hist=True):
        """Row sums, column sums and threshold histogram of the plan at ``(u, v)``.

        Returns
        -------
        r, c : arrays, shapes (n,), (m,)
            ``P 1`` and ``P^T 1``.
        hist : pair of ndarray or None
            Host (numpy) ``(counts, mass)`` of ``log P`` in ``n_bins + 1``
            bins of width ``bin_width`` below ``top``: bin ``k`` holds
            ``top - (k+1) w < log P <= top - k w``, the last bin everything
            lower. None when ``hist`` is false. It may be computed lazily.
        """

    @abc.abstractmethod
    def select(self, tau):
        """The entries ``P_ij >= tau`` of the plan at the last evaluated
        potentials, as a :class:`HessianBlock` (``tau = 0``: every entry)."""

    @abc.abstractmethod
    def plan(self, u, v):
        """A new dense plan array at ``(u, v)`` for the user."""


class DenseKernel(Kernel):
    """Kernel written only with ``nx`` operations (fallback for jax, tf).

    It keeps ``-M / reg`` and the plan as two dense arrays, and computes the
    threshold histogram on the host.
    """

    name = "dense"
    #: this kernel copies every kept entry into a masked dense block
    max_density = 0.25

    def __init__(self, nx, M, reg, bin_width=0.5, n_bins=120):
        super().__init__(nx, M, reg, bin_width, n_bins)
        self.Mr = -M / reg

    def at_reg(self, reg):
        """Kernel for the same ``M`` at regularisation ``reg``: dense ``nx``
        passes, sharing this kernel's pass counts."""
        k = DenseKernel(self.nx, self.M, reg, self.bin_width, self.n_bins)
        k.passes = self.passes
        return k

    def row_lse(self, v):
        self.passes["exp"] += 1
        return self.nx.logsumexp(self.Mr + v[None, :], axis=1)

    def col_lse(self, u):
        self.passes["exp"] += 1
        return self.nx.logsumexp(self.Mr + u[:, None], axis=0)

    def evaluate(self, u, v, top, hist=True):
        nx = self.nx
        self.passes["exp"] += 1
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
        self.passes["select"] += 1
        keep = self.P >= tau
        S = nx.where(keep, self.P, 0 * self.P)
        return DenseBlock(nx, S, int(nx.to_numpy(nx.sum(keep * 1))))

    def plan(self, u, v):
        self.passes["exp"] += 1
        return self.nx.exp(self.Mr + u[:, None] + v[None, :])
