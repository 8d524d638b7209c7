"""torch kernel: dense passes on the tensor's device and a torch sparse CSR block.

The same code runs on CPU and CUDA tensors, in float32 or float64. Dense
passes walk ``M`` in row blocks (small on CPU so the temporaries stay in
cache, large on GPUs so each launch has enough work); the only n-by-m tensors
besides ``M`` are the plan buffer and one block of scratch.
"""

import warnings

import numpy as np
import torch

from .base import HessianBlock, Kernel, row_blocks

#: kept fraction (on plans of at least DENSE_MIN_SIZE entries) above which
#: the kept entries stay in the plan buffer as a dense block
DENSE_DENSITY = 0.05
DENSE_MIN_SIZE = 1 << 16

#: entries per row block of the dense passes, by device type
CHUNK = {"cpu": 1 << 18}
CHUNK_DEFAULT = 1 << 24


def _csr(crow, col, val, shape):
    """A CSR tensor, without torch's "beta" and "invariant checks" warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        # the indices are built sorted and in range below, so skip the O(nnz) check
        return torch.sparse_csr_tensor(crow, col, val, size=shape, check_invariants=False)


def _index_dtype(n, m, nnz):
    return torch.int32 if max(n, m, nnz) < 2 ** 31 - 1 else torch.int64


def _crow(rows, n, dtype):
    crow = torch.zeros(n + 1, dtype=dtype, device=rows.device)
    crow[1:] = torch.cumsum(torch.bincount(rows, minlength=n), 0)
    return crow


class TorchCSRBlock(HessianBlock):
    """Kept plan entries as torch CSR tensors ``S`` and ``S^T``.

    Parameters
    ----------
    rows, cols : torch.Tensor of int64, shape (nnz,)
        Coordinates of the kept entries, sorted by row then column.
    vals : torch.Tensor, shape (nnz,)
        Their values.
    shape : tuple of int
        ``(n, m)``.
    """

    def __init__(self, rows, cols, vals, shape):
        n, m = shape
        self.shape = shape
        self.nnz = int(vals.shape[0])
        it = _index_dtype(n, m, self.nnz)
        self._crow, self._col = _crow(rows, n, it), cols.to(it)
        self.S = _csr(self._crow, self._col, vals, (n, m))
        # S^T in CSR: a stable sort by column keeps the rows sorted in each column
        cols_t, perm = torch.sort(cols, stable=True)
        self._ccol, self._row = _crow(cols_t, m, it), rows[perm].to(it)
        self._perm = perm
        self.ST = _csr(self._ccol, self._row, vals[perm], (m, n))

    def matvec(self, x):
        return torch.mv(self.S, x)

    def rmatvec(self, y):
        return torch.mv(self.ST, y)

    def _square(self):
        vals = self.S.values()
        sq = vals * vals
        return (_csr(self._crow, self._col, sq, self.shape),
                _csr(self._ccol, self._row, sq[self._perm], self.shape[::-1]))

    def sq_matvec(self, x):
        return torch.mv(self._sq()[0], x)

    def sq_rmatvec(self, y):
        return torch.mv(self._sq()[1], y)


class TorchScatterBlock(HessianBlock):
    """Kept plan entries as coordinates; mat-vecs by ``index_add_``.

    Used where torch has no CSR mat-vec for the device and dtype; also a
    second, independent implementation for the tests.
    """

    def __init__(self, rows, cols, vals, shape):
        self.rows, self.cols, self.vals = rows, cols, vals
        self.shape = shape
        self.nnz = int(vals.shape[0])

    def _mv(self, w, x, into, src, length):
        out = torch.zeros(length, dtype=x.dtype, device=x.device)
        return out.index_add_(0, into, w * x[src])

    def _square(self):
        return self.vals * self.vals

    def matvec(self, x):
        return self._mv(self.vals, x, self.rows, self.cols, self.shape[0])

    def rmatvec(self, y):
        return self._mv(self.vals, y, self.cols, self.rows, self.shape[1])

    def sq_matvec(self, x):
        return self._mv(self._sq(), x, self.rows, self.cols, self.shape[0])

    def sq_rmatvec(self, y):
        return self._mv(self._sq(), y, self.cols, self.rows, self.shape[1])


class TorchDenseBlock(HessianBlock):
    """Kept entries stored densely in the plan buffer (the others zeroed in
    place): BLAS/cuBLAS mat-vecs, no sparse copy. The squares for the
    preconditioner are formed block by block, with no n-by-m temporary."""

    def __init__(self, S, nnz, rows):
        self.S = S
        self.nnz = nnz
        self._rows = rows

    def matvec(self, x):
        return torch.mv(self.S, x)

    def rmatvec(self, y):
        return torch.mv(self.S.T, y)

    def sq_matvec(self, x):
        n = self.S.shape[0]
        out = torch.empty(n, dtype=x.dtype, device=x.device)
        for i0 in range(0, n, self._rows):
            B = self.S[i0:i0 + self._rows]
            torch.mv(B * B, x, out=out[i0:i0 + self._rows])
        return out

    def sq_rmatvec(self, y):
        out = torch.zeros(self.S.shape[1], dtype=y.dtype, device=y.device)
        for i0 in range(0, self.S.shape[0], self._rows):
            B = self.S[i0:i0 + self._rows]
            out += torch.mv((B * B).T, y[i0:i0 + self._rows])
        return out


_CSR_WORKS = {}


def csr_supported(device, dtype):
    """Whether ``torch.mv`` of a CSR tensor works for ``device`` and ``dtype``
    (probed once on a 2-by-2 matrix, then cached)."""
    key = (torch.device(device).type, dtype)
    if key not in _CSR_WORKS:
        try:
            rows = torch.tensor([0, 1], device=device)
            cols = torch.tensor([1, 0], device=device)
            vals = torch.tensor([2.0, 3.0], dtype=dtype, device=device)
            y = TorchCSRBlock(rows, cols, vals, (2, 2)).rmatvec(
                torch.ones(2, dtype=dtype, device=device))
            _CSR_WORKS[key] = bool((y == torch.tensor([3.0, 2.0], dtype=dtype,
                                                      device=device)).all())
        except (RuntimeError, NotImplementedError):
            _CSR_WORKS[key] = False
    return _CSR_WORKS[key]


class TorchKernel(Kernel):
    """Kernel for torch tensors on any device (CPU, CUDA).

    Parameters
    ----------
    nx : ot.backend.TorchBackend
        POT's torch backend.
    M : torch.Tensor, shape (n, m)
        Cost matrix (no autograd graph), in the compute dtype.
    reg : float
        Entropic regularization.
    bin_width, n_bins : float, int
        Histogram layout used to pick sparsity thresholds.
    block : {"csr", "scatter", None}
        Storage of the kept entries; None picks CSR on accelerators where
        torch supports its mat-vec, index scatter otherwise (and on CPU).
    """

    name = "torch"
    #: default cap on the kept fraction: past ``dense_density`` the kept
    #: entries stay in the plan buffer (no copy), so none is needed
    max_density = 1.0

    def __init__(self, nx, M, reg, bin_width=0.5, n_bins=120, block=None):
        super().__init__(nx, M.detach().contiguous(), reg, bin_width, n_bins)
        self.scale = -1.0 / reg
        self.dtype, self.device = self.M.dtype, self.M.device
        n, m = self.shape
        chunk = CHUNK.get(self.device.type, CHUNK_DEFAULT)
        self.rows = max(1, min(n, chunk // max(m, 1)))
        self.buf = torch.empty((self.rows, m), dtype=self.dtype, device=self.device)
        self.P = torch.empty_like(self.M)
        if block is None:
            # On CPU, torch's CSR mat-vec goes through threaded MKL, which spins and
            # slows down by orders of magnitude on a loaded machine; index scatter
            # does not, and the mat-vecs are O(nnz) either way.
            use_csr = self.device.type != "cpu" and csr_supported(self.device, self.dtype)
            block = "csr" if use_csr else "scatter"
        if block not in ("csr", "scatter"):
            raise ValueError("block must be 'csr' or 'scatter', got %r" % (block,))
        self.block = block

    @property
    def dense_density(self):
        """Kept fraction above which the kept entries stay in the plan
        buffer as a dense block: a sparse copy of that many entries costs
        more to build and to multiply by than dense (cu)BLAS mat-vecs. None
        for small plans."""
        n, m = self.shape
        return DENSE_DENSITY if n * m >= DENSE_MIN_SIZE else None

    def at_reg(self, reg):
        """Kernel for the same ``M`` at another reg (epsilon scaling)."""
        return TorchKernel(self.nx, self.M, reg, self.bin_width, self.n_bins, self.block)

    def _new(self, *shape, fill=None):
        if fill is None:
            return torch.empty(shape, dtype=self.dtype, device=self.device)
        return torch.full(shape, fill, dtype=self.dtype, device=self.device)

    def _blocks(self):
        return row_blocks(self.shape[0], self.rows, self.buf)

    def _logits(self, L, i0, i1, u, v):
        torch.mul(self.M[i0:i1], self.scale, out=L)
        if u is not None:
            L.add_(u[i0:i1, None])
        if v is not None:
            L.add_(v[None, :])
        return L

    def row_lse(self, v):
        self.passes["exp"] += 1
        out = self._new(self.shape[0])
        for i0, i1, L in self._blocks():
            torch.logsumexp(self._logits(L, i0, i1, None, v), 1, out=out[i0:i1])
        return out

    def col_lse(self, u):
        # logaddexp of the per-block results: -inf stays -inf, no NaN
        self.passes["exp"] += 1
        acc = self._new(self.shape[1], fill=-float("inf"))
        for i0, i1, L in self._blocks():
            torch.logaddexp(acc, torch.logsumexp(self._logits(L, i0, i1, u, None), 0),
                            out=acc)
        return acc

    def evaluate(self, u, v, top, hist=True):
        n, m = self.shape
        K, w = self.n_bins, self.bin_width
        self.passes["exp"] += 1
        r = self._new(n)
        c = self._new(m, fill=0.0)
        if hist:
            counts = torch.zeros(K + 1, dtype=torch.int64, device=self.device)
            mass = torch.zeros(K + 1, dtype=self.dtype, device=self.device)
        for i0, i1, L in self._blocks():
            self._logits(L, i0, i1, u, v)
            Pb = self.P[i0:i1]
            torch.exp(L, out=Pb)
            torch.sum(Pb, 1, out=r[i0:i1])
            c += Pb.sum(0)
            if hist:
                # bin index (top - log P) / w, clipped to [0, K]; fmax maps NaN to 0
                L.sub_(top).mul_(-1.0 / w)
                torch.fmax(L, L.new_zeros(()), out=L).clamp_(max=K)
                idx = L.to(torch.int64).view(-1)
                counts += torch.bincount(idx, minlength=K + 1)
                mass += torch.bincount(idx, weights=Pb.reshape(-1), minlength=K + 1)
        h = None
        if hist:
            h = (counts.cpu().numpy().astype(np.float64),
                 mass.cpu().numpy().astype(np.float64))
        return r, c, h

    def select(self, tau):
        n, m = self.shape
        self.passes["select"] += 1
        if self.dense_density is not None:
            keep = self.P >= tau
            kept = int(keep.sum())
            if kept > self.dense_density * n * m:
                # the buffer is written again by the next evaluate before it
                # serves as a plan: zero the dropped entries in place
                if kept < n * m:
                    self.P.masked_fill_(~keep, 0.0)
                return TorchDenseBlock(self.P, kept, self.rows)
        flatP = self.P.view(-1)
        flat = torch.nonzero(flatP >= tau).view(-1)
        rows = torch.div(flat, m, rounding_mode="floor")
        cols = flat - rows * m
        vals = flatP[flat]
        cls = TorchCSRBlock if self.block == "csr" else TorchScatterBlock
        return cls(rows, cols, vals, (n, m))

    def plan(self, u, v):
        self.passes["exp"] += 1
        out = torch.empty_like(self.M)
        for i0, i1, _ in self._blocks():
            self._logits(out[i0:i1], i0, i1, u, v).exp_()
        return out
