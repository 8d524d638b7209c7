"""Fused GPU passes over ``M``: the CUDA source and the code that drives it.

Each pass of the SNS kernel reads ``M`` once and keeps everything else in
registers or shared memory:

- ``sns_eval`` (one per Newton step and per line-search trial): the plan
  entries ``exp(u_i + v_j - M_ij/reg)``, their row sums, per-block column sums
  and the histogram of ``log P``, in a single read of ``M`` and no n-by-m
  write (the plan is recomputed only where needed);
- ``sns_row_lse`` / ``sns_col_lse_part`` (one per Sinkhorn half-sweep): an
  online log-sum-exp, one read of ``M`` instead of the max-then-sum two;
- ``sns_mask`` (one per Newton step): the kept entries for the chosen
  threshold, as a byte mask for a device ``flatnonzero``;
- ``sns_plan``: the plan for the user, one read and one write.

So a Newton step whose line search tries ``k`` steps reads ``M`` ``k + 1``
times (``k`` evaluations, the accepted one serving the next step, and one
selection), a Sinkhorn sweep reads it twice, and the final plan once (plus
one write).

:class:`FusedKernel` is written over an array module ``xp`` (cupy), a sparse
module (``cupyx.scipy.sparse``) and a launcher that runs a kernel of the
source by name; :mod:`pot_sns.kernels.cupy` binds them to CuPy. Keeping those
three pluggable lets the tests run the very same CUDA source and driver on
a CPU (``tests/cuda_emu.py`` compiles the source as C with a thread per CUDA
thread), where no GPU is available.
"""

import math

import numpy as np

from .base import HessianBlock, Kernel

#: rows of ``M`` per thread block (kept in registers, compile-time)
ROWS = 16
#: threads per block (a power of two, compile-time)
BLOCK = 256
#: rows per block of the column log-sum-exp (run-time)
COL_ROWS = 64

_TYPES = {
    np.dtype(np.float32): (
        "typedef float T;\n"
        "#define EXP(x) expf(x)\n#define LOG(x) logf(x)\n"
        "#define FMAX(x, y) fmaxf(x, y)\n#define FMIN(x, y) fminf(x, y)\n"
        "#define LOWEST (-3.40282347e+38f)\n"
    ),
    np.dtype(np.float64): (
        "typedef double T;\n"
        "#define EXP(x) exp(x)\n#define LOG(x) log(x)\n"
        "#define FMAX(x, y) fmax(x, y)\n#define FMIN(x, y) fmin(x, y)\n"
        "#define LOWEST (-1.7976931348623157e+308)\n"
    ),
}

# Written in the common subset of CUDA C++ and C99 (no templates, overloads,
# references or warp intrinsics) so that the CPU emulator compiles it as is.
KERNELS = r"""
#ifndef KERNEL
#define KERNEL extern "C" __global__
#endif
#ifndef DEVICE
#define DEVICE __device__ __forceinline__
#endif

/* Sum of x over the block; every thread gets the result. */
DEVICE T block_sum(T x, T* red)
{
    const int t = threadIdx.x;
    red[t] = x;
    __syncthreads();
    for (int s = BLOCK / 2; s > 0; s >>= 1) {
        if (t < s) red[t] += red[t + s];
        __syncthreads();
    }
    x = red[0];
    __syncthreads();
    return x;
}

/* Online log-sum-exp: (mx, s) stands for mx + log(s); empty is (LOWEST, 0).
   NaN inputs propagate through s. */
DEVICE void lse_push(T* mx, T* s, const T l)
{
    if (l > *mx) {
        *s = *s * EXP(*mx - l) + (T)1;
        *mx = l;
    } else {
        *s += EXP(l - *mx);
    }
}

DEVICE void lse_merge(T* mx, T* s, const T mx2, const T s2)
{
    const T top = FMAX(*mx, mx2);
    *s = *s * EXP(*mx - top) + s2 * EXP(mx2 - top);
    *mx = top;
}

DEVICE void block_lse(T* mx, T* s, T* redm, T* reds)
{
    const int t = threadIdx.x;
    redm[t] = *mx;
    reds[t] = *s;
    __syncthreads();
    for (int st = BLOCK / 2; st > 0; st >>= 1) {
        if (t < st) {
            T a = redm[t], b = reds[t];
            lse_merge(&a, &b, redm[t + st], reds[t + st]);
            redm[t] = a;
            reds[t] = b;
        }
        __syncthreads();
    }
    *mx = redm[0];
    *s = reds[0];
    __syncthreads();
}

/* out_i = log sum_j exp(scale * M_ij + w_j); block b owns rows [b*ROWS, b*ROWS+ROWS). */
KERNEL void sns_row_lse(const T* __restrict__ M, const T* __restrict__ w,
                        const long long n, const long long m, const T scale,
                        T* __restrict__ out)
{
    __shared__ T redm[BLOCK];
    __shared__ T reds[BLOCK];
    const long long i0 = (long long)blockIdx.x * ROWS;
    const int rows = (n - i0 < ROWS) ? (int)(n - i0) : ROWS;
    T mx[ROWS];
    T s[ROWS];
#pragma unroll
    for (int k = 0; k < ROWS; ++k) {
        mx[k] = LOWEST;
        s[k] = (T)0;
    }
    for (long long j = threadIdx.x; j < m; j += BLOCK) {
        const T wj = w[j];
#pragma unroll
        for (int k = 0; k < ROWS; ++k) {
            if (k < rows) lse_push(&mx[k], &s[k], M[(i0 + k) * m + j] * scale + wj);
        }
    }
#pragma unroll
    for (int k = 0; k < ROWS; ++k) {
        block_lse(&mx[k], &s[k], redm, reds);
        if (threadIdx.x == 0 && k < rows) out[i0 + k] = mx[k] + LOG(s[k]);
    }
}

/* Partial column log-sum-exp of scale * M_ij + w_i over the rows
   [b*rpb, b*rpb+rpb) of block b, as (pm, ps) pairs of shape (blocks, m). */
KERNEL void sns_col_lse_part(const T* __restrict__ M, const T* __restrict__ w,
                             const long long n, const long long m, const T scale,
                             const int rpb, T* __restrict__ pm, T* __restrict__ ps)
{
    const long long i0 = (long long)blockIdx.x * rpb;
    const int rows = (n - i0 < rpb) ? (int)(n - i0) : rpb;
    for (long long j = threadIdx.x; j < m; j += BLOCK) {
        T mx = LOWEST;
        T s = (T)0;
        for (int k = 0; k < rows; ++k) lse_push(&mx, &s, M[(i0 + k) * m + j] * scale + w[i0 + k]);
        pm[(long long)blockIdx.x * m + j] = mx;
        ps[(long long)blockIdx.x * m + j] = s;
    }
}

/* out_j = merge of the nb partial pairs of column j (fixed order: deterministic). */
KERNEL void sns_col_lse_merge(const T* __restrict__ pm, const T* __restrict__ ps,
                              const long long nb, const long long m, T* __restrict__ out)
{
    const long long j = (long long)blockIdx.x * BLOCK + threadIdx.x;
    if (j < m) {
        T mx = LOWEST;
        T s = (T)0;
        for (long long b = 0; b < nb; ++b) lse_merge(&mx, &s, pm[b * m + j], ps[b * m + j]);
        out[j] = mx + LOG(s);
    }
}

/* One read of M: row sums r (exact per block, no atomics), column sums per
   block in cpart (blocks, m), and when hist != 0 the histogram of
   l = log P: bin k < NBINS holds top - (k+1)/inv_w < l <= top - k/inv_w,
   bin NBINS everything at or below low = top - NBINS/inv_w. */
KERNEL void sns_eval(const T* __restrict__ M, const T* __restrict__ u, const T* __restrict__ v,
                     const long long n, const long long m, const T scale,
                     const T top, const T inv_w, const T low, const int hist,
                     T* __restrict__ r, T* __restrict__ cpart,
                     unsigned long long* __restrict__ counts, double* __restrict__ mass)
{
    __shared__ T red[BLOCK];
    /* one histogram per warp: fewer threads contend for a shared bin */
    __shared__ unsigned int hcount[HSLOTS][NBINS + 1];
    __shared__ T hmass[HSLOTS][NBINS + 1];
    const int t = threadIdx.x;
    const int slot = t / 32;
    const long long i0 = (long long)blockIdx.x * ROWS;
    const int rows = (n - i0 < ROWS) ? (int)(n - i0) : ROWS;
    for (int k = t; k < HSLOTS * (NBINS + 1); k += BLOCK) {
        hcount[k / (NBINS + 1)][k % (NBINS + 1)] = 0u;
        hmass[k / (NBINS + 1)][k % (NBINS + 1)] = (T)0;
    }
    __syncthreads();
    T racc[ROWS];
#pragma unroll
    for (int k = 0; k < ROWS; ++k) racc[k] = (T)0;
    /* the lowest bin takes most entries at small reg: count it in registers */
    unsigned int nlow = 0u;
    T mlow = (T)0;
    for (long long j = t; j < m; j += BLOCK) {
        const T vj = v[j];
        T cacc = (T)0;
#pragma unroll
        for (int k = 0; k < ROWS; ++k) {
            if (k < rows) {
                const long long i = i0 + k;
                const T l = M[i * m + j] * scale + u[i] + vj;
                const T p = EXP(l);
                racc[k] += p;
                cacc += p;
                if (hist) {
                    if (l > low) {
                        /* FMAX maps NaN to 0; the clamp keeps rounding in range */
                        const int bin = (int)FMIN(FMAX((top - l) * inv_w, (T)0), (T)(NBINS - 1));
                        atomicAdd(&hcount[slot][bin], 1u);
                        atomicAdd(&hmass[slot][bin], p);
                    } else {
                        nlow += 1u;
                        mlow += p;
                    }
                }
            }
        }
        cpart[(long long)blockIdx.x * m + j] = cacc;
    }
#pragma unroll
    for (int k = 0; k < ROWS; ++k) {
        const T s = block_sum(racc[k], red);
        if (t == 0 && k < rows) r[i0 + k] = s;
    }
    if (hist) {
        atomicAdd(&hcount[slot][NBINS], nlow);
        atomicAdd(&hmass[slot][NBINS], mlow);
        __syncthreads();
        for (int k = t; k <= NBINS; k += BLOCK) {
            unsigned long long cnt = 0ull;
            double ms = 0.0;
            for (int h = 0; h < HSLOTS; ++h) {
                cnt += hcount[h][k];
                ms += (double)hmass[h][k];
            }
            if (cnt != 0ull) {
                atomicAdd(&counts[k], cnt);
                atomicAdd(&mass[k], ms);
            }
        }
    }
}

/* keep_ij = (scale * M_ij + u_i + v_j >= lt), the same logits as sns_eval. */
KERNEL void sns_mask(const T* __restrict__ M, const T* __restrict__ u, const T* __restrict__ v,
                     const long long n, const long long m, const T scale, const T lt,
                     unsigned char* __restrict__ keep)
{
    const long long i0 = (long long)blockIdx.x * ROWS;
    const int rows = (n - i0 < ROWS) ? (int)(n - i0) : ROWS;
    for (long long j = threadIdx.x; j < m; j += BLOCK) {
        const T vj = v[j];
        for (int k = 0; k < rows; ++k) {
            const long long i = i0 + k;
            keep[i * m + j] = (M[i * m + j] * scale + u[i] + vj >= lt) ? 1 : 0;
        }
    }
}

/* P_ij = exp(scale * M_ij + u_i + v_j). */
KERNEL void sns_plan(const T* __restrict__ M, const T* __restrict__ u, const T* __restrict__ v,
                     const long long n, const long long m, const T scale,
                     T* __restrict__ P)
{
    const long long i0 = (long long)blockIdx.x * ROWS;
    const int rows = (n - i0 < ROWS) ? (int)(n - i0) : ROWS;
    for (long long j = threadIdx.x; j < m; j += BLOCK) {
        const T vj = v[j];
        for (int k = 0; k < rows; ++k) {
            const long long i = i0 + k;
            P[i * m + j] = EXP(M[i * m + j] * scale + u[i] + vj);
        }
    }
}
"""


def build_source(dtype, n_bins, rows=ROWS, block=BLOCK):
    """CUDA source of the fused kernels for one dtype and histogram size.

    Parameters
    ----------
    dtype : numpy dtype
        float32 or float64.
    n_bins : int
        Histogram bins above the lowest one (``NBINS``).
    rows, block : int
        Rows of ``M`` per block and threads per block (a power of two).

    Returns
    -------
    str
    """
    dtype = np.dtype(dtype)
    if dtype not in _TYPES:
        raise TypeError("the fused kernels support float32 and float64, got %s" % dtype)
    if block < 1 or block & (block - 1):
        raise ValueError("block must be a power of two, got %d" % block)
    head = _TYPES[dtype] + (
        "#define NBINS %d\n#define ROWS %d\n#define BLOCK %d\n#define HSLOTS %d\n"
        % (int(n_bins), int(rows), int(block), (int(block) + 31) // 32))
    return head + KERNELS


class FusedBlock(HessianBlock):
    """Kept plan entries as CSR matrices ``S`` and ``S^T`` of a sparse module
    with scipy's interface (``cupyx.scipy.sparse`` on GPUs)."""

    def __init__(self, xp, sparse, rows, cols, vals, shape):
        n, m = shape
        self.xp = xp
        self.shape = shape
        self.nnz = int(vals.shape[0])
        if self.nnz == 0:
            self.S = self.ST = None
            return
        if self.nnz >= 2 ** 31 - 1:
            # cupyx CSR matrices index with int32
            raise MemoryError(
                "%d kept plan entries exceed the int32 indices of cupyx CSR matrices; "
                "lower the SNS option max_density" % self.nnz)
        # coordinates arrive sorted by row (flatnonzero), as CSR wants them
        indptr = xp.zeros(n + 1, dtype=xp.int32)
        indptr[1:] = xp.cumsum(xp.bincount(rows, minlength=n))
        self.S = sparse.csr_matrix((vals, cols.astype(xp.int32), indptr), shape=shape)
        self.ST = self.S.T.tocsr()
        self._sparse = sparse

    def _zeros(self, k, like):
        return self.xp.zeros(k, dtype=like.dtype)

    def matvec(self, x):
        return self._zeros(self.shape[0], x) if self.S is None else self.S @ x

    def rmatvec(self, y):
        return self._zeros(self.shape[1], y) if self.S is None else self.ST @ y

    def _square(self):
        csr = self._sparse.csr_matrix
        S, ST = self.S, self.ST
        return (csr((S.data * S.data, S.indices, S.indptr), shape=S.shape),
                csr((ST.data * ST.data, ST.indices, ST.indptr), shape=ST.shape))

    def sq_matvec(self, x):
        return self._zeros(self.shape[0], x) if self.S is None else self._sq()[0] @ x

    def sq_rmatvec(self, y):
        return self._zeros(self.shape[1], y) if self.S is None else self._sq()[1] @ y


class FusedKernel(Kernel):
    """Kernel driving the fused passes of :data:`KERNELS`.

    Parameters
    ----------
    nx : ot.backend.Backend
        POT backend of the arrays.
    M : array, shape (n, m)
        Cost matrix in the compute dtype (float32 or float64).
    reg : float
        Entropic regularization.
    bin_width, n_bins : float, int
        Histogram layout used to pick sparsity thresholds.
    xp : module
        Array module of ``M`` (cupy).
    sparse : module
        Sparse matrices with scipy's interface (``cupyx.scipy.sparse``).
    launcher : callable
        ``launcher(name, grid, args)`` runs kernel ``name`` of the source built
        by :func:`build_source` (with ``launcher.rows`` rows and
        ``launcher.block`` threads per block) on ``grid`` blocks. Scalars in
        ``args`` are numpy scalars of the kernel's parameter types.
    col_rows : int
        Rows per block of the column log-sum-exp.

    Notes
    -----
    The plan is not stored by :meth:`evaluate`; :attr:`P` recomputes it, on
    first access, at the potentials of the last evaluation.
    """

    name = "fused"

    def __init__(self, nx, M, reg, bin_width, n_bins, xp, sparse, launcher,
                 col_rows=COL_ROWS):
        super().__init__(nx, xp.ascontiguousarray(M), reg, bin_width, n_bins)
        self.xp = xp
        self.sparse = sparse
        self.launch = launcher
        self.dtype = np.dtype(self.M.dtype)
        if self.dtype not in _TYPES:
            raise TypeError("M must be float32 or float64 here, got %s" % self.dtype)
        n, m = self.shape
        self.rows, self.block, self.col_rows = launcher.rows, launcher.block, int(col_rows)
        self.grid = -(-n // self.rows)
        self.col_grid = -(-n // self.col_rows)
        self._n, self._m = np.int64(n), np.int64(m)
        self._scale = self._t(-1.0 / reg)
        self._cpart = xp.empty((self.grid, m), dtype=self.dtype)
        self._last = None
        self._P = None

    def _t(self, x):
        """``x`` as a scalar of the compute type (passed by value)."""
        return self.dtype.type(x)

    def _vec(self, x):
        return self.xp.ascontiguousarray(x, dtype=self.dtype)

    def at_reg(self, reg):
        """Kernel for the same ``M`` at another reg (the epsilon-scaling
        warm-up), on the same device and launcher, counting its passes in
        this kernel's :attr:`passes`."""
        import contextlib

        dev = getattr(self.M, "device", None)
        with dev if hasattr(dev, "__enter__") else contextlib.nullcontext():
            k = FusedKernel(self.nx, self.M, reg, self.bin_width, self.n_bins, self.xp,
                            self.sparse, self.launch, self.col_rows)
        k.passes = self.passes
        return k

    def errstate(self):
        # host-side numpy only; device kernels never warn
        return np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore")

    @property
    def P(self):
        """Plan at the potentials of the last :meth:`evaluate`."""
        if self._P is None and self._last is not None:
            self._P = self.plan(*self._last)
        return self._P

    def row_lse(self, v):
        self.passes["exp"] += 1
        out = self.xp.empty(self.shape[0], dtype=self.dtype)
        self.launch("sns_row_lse", self.grid,
                    (self.M, self._vec(v), self._n, self._m, self._scale, out))
        return out

    def col_lse(self, u):
        self.passes["exp"] += 1
        xp, m = self.xp, self.shape[1]
        pm = xp.empty((self.col_grid, m), dtype=self.dtype)
        ps = xp.empty((self.col_grid, m), dtype=self.dtype)
        self.launch("sns_col_lse_part", self.col_grid,
                    (self.M, self._vec(u), self._n, self._m, self._scale,
                     np.int32(self.col_rows), pm, ps))
        out = xp.empty(m, dtype=self.dtype)
        self.launch("sns_col_lse_merge", -(-m // self.block),
                    (pm, ps, np.int64(self.col_grid), self._m, out))
        return out

    def evaluate(self, u, v, top, hist=True):
        self.passes["exp"] += 1
        xp = self.xp
        n, m = self.shape
        K, w = self.n_bins, self.bin_width
        u, v = self._vec(u), self._vec(v)
        r = xp.empty(n, dtype=self.dtype)
        counts = xp.zeros(K + 1, dtype=xp.uint64)
        mass = xp.zeros(K + 1, dtype=xp.float64)
        self.launch("sns_eval", self.grid,
                    (self.M, u, v, self._n, self._m, self._scale,
                     self._t(top), self._t(1.0 / w), self._t(top - K * w),
                     np.int32(1 if hist else 0), r, self._cpart, counts, mass))
        c = self._cpart.sum(axis=0)
        self._last, self._P = (u, v), None
        h = None
        if hist:
            h = (self.nx.to_numpy(counts).astype(np.float64), self.nx.to_numpy(mass))
        return r, c, h

    def select(self, tau):
        self.passes["select"] += 1
        xp = self.xp
        n, m = self.shape
        u, v = self._last
        keep = xp.empty((n, m), dtype=xp.uint8)
        lt = math.log(tau) if tau > 0 else -math.inf
        self.launch("sns_mask", self.grid,
                    (self.M, u, v, self._n, self._m, self._scale, self._t(lt), keep))
        flat = xp.flatnonzero(keep)
        del keep
        rows = flat // m
        cols = flat - rows * m
        # values of the kept entries only: O(nnz), no second pass over M
        vals = xp.exp(self.M.reshape(-1)[flat] * self._scale + u[rows] + v[cols])
        return FusedBlock(xp, self.sparse, rows, cols, vals, (n, m))

    def plan(self, u, v):
        self.passes["exp"] += 1
        out = self.xp.empty(self.shape, dtype=self.dtype)
        self.launch("sns_plan", self.grid,
                    (self.M, self._vec(u), self._vec(v), self._n, self._m, self._scale, out))
        return out
