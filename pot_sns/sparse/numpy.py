"""numpy/scipy kernel: chunked passes over ``M`` and a scipy.sparse CSR block.

Every dense pass walks ``M`` in row blocks of about ``CHUNK`` entries, so the
temporaries stay in cache and the only n-by-m array besides ``M`` is the plan.
"""

import numpy as np
import scipy.sparse as sp

from .base import DenseKernel

CHUNK = 1 << 15


class CSRBlock:
    """Kept plan entries as a scipy CSR matrix."""

    def __init__(self, S):
        self.S = S
        self.ST = S.T.tocsr()
        self.nnz = S.nnz
        self._S2 = None

    def matvec(self, x):
        return self.S @ x

    def rmatvec(self, y):
        return self.ST @ y

    def _sq(self):
        if self._S2 is None:
            self._S2 = self.S.multiply(self.S).tocsr()
        return self._S2

    def sq_matvec(self, x):
        return self._sq() @ x

    def sq_rmatvec(self, y):
        return self._sq().T @ y


class NumpyKernel(DenseKernel):
    """Kernel for numpy arrays (CPU)."""

    name = "numpy"

    def __init__(self, nx, M, reg, bin_width=0.5, n_bins=120):
        self.nx = nx
        self.M = np.ascontiguousarray(M)
        self.reg = reg
        self.scale = -1.0 / reg
        self.shape = self.M.shape
        self.bin_width = float(bin_width)
        self.n_bins = int(n_bins)
        n, m = self.shape
        self.rows = max(1, CHUNK // max(m, 1))
        self.buf = np.empty((min(self.rows, n), m), dtype=self.M.dtype)
        self.P = np.empty_like(self.M)

    def errstate(self):
        return np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore")

    def _blocks(self):
        n = self.shape[0]
        for i0 in range(0, n, self.rows):
            i1 = min(i0 + self.rows, n)
            yield i0, i1, self.buf[: i1 - i0]

    def _logits(self, L, i0, i1, u, v):
        np.multiply(self.M[i0:i1], self.scale, out=L)
        if u is not None:
            L += u[i0:i1, None]
        if v is not None:
            L += v[None, :]
        return L

    def row_lse(self, v):
        out = np.empty(self.shape[0], dtype=self.M.dtype)
        for i0, i1, L in self._blocks():
            self._logits(L, i0, i1, None, v)
            mx = L.max(axis=1)
            mx[~np.isfinite(mx)] = 0.0
            L -= mx[:, None]
            np.exp(L, out=L)
            out[i0:i1] = np.log(L.sum(axis=1)) + mx
        return out

    def col_lse(self, u):
        m = self.shape[1]
        mx = np.full(m, -np.inf, dtype=self.M.dtype)
        s = np.zeros(m, dtype=self.M.dtype)
        for i0, i1, L in self._blocks():
            self._logits(L, i0, i1, u, None)
            bmx = np.maximum(mx, L.max(axis=0))
            safe = np.where(np.isfinite(bmx), bmx, 0.0)
            s *= np.exp(mx - safe)
            L -= safe[None, :]
            np.exp(L, out=L)
            s += L.sum(axis=0)
            mx = bmx
        return np.log(s) + np.where(np.isfinite(mx), mx, 0.0)

    def evaluate(self, u, v, top, hist=True):
        n, m = self.shape
        K, w = self.n_bins, self.bin_width
        r = np.empty(n, dtype=self.M.dtype)
        c = np.zeros(m, dtype=self.M.dtype)
        counts = np.zeros(K + 1)
        mass = np.zeros(K + 1)
        low = top - K * w
        for i0, i1, L in self._blocks():
            self._logits(L, i0, i1, u, v)
            Pb = self.P[i0:i1]
            np.exp(L, out=Pb)
            r[i0:i1] = Pb.sum(axis=1)
            c += Pb.sum(axis=0)
            if hist:
                # Entries below the lowest bin edge are only counted, never
                # binned: at small reg they are the vast majority.
                sel = L > low
                Ls = L[sel]
                t = (top - Ls) * (1.0 / w)
                np.clip(t, 0, K - 1, out=t)
                idx = t.astype(np.intp)
                counts += np.bincount(idx, minlength=K + 1)
                mass += np.bincount(idx, weights=Pb[sel], minlength=K + 1)
                nlow = Pb.size - Ls.size
                if nlow:
                    counts[K] += nlow
                    mass[K] += max(float(r[i0:i1].sum()) - float(Pb[sel].sum()), 0.0)
        return r, c, ((counts, mass) if hist else None)

    def select(self, tau):
        n, m = self.shape
        flat = np.flatnonzero(self.P >= tau)
        rows, cols = np.divmod(flat, m)
        data = self.P.ravel()[flat]
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=n), out=indptr[1:])
        S = sp.csr_matrix((data, cols, indptr), shape=(n, m))
        return CSRBlock(S)

    def plan(self, u, v):
        out = np.empty_like(self.M)
        for i0, i1, L in self._blocks():
            self._logits(L, i0, i1, u, v)
            np.exp(L, out=out[i0:i1])
        return out
