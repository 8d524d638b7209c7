"""numpy/scipy kernel: the plan kept in kernel form, BLAS passes, scipy CSR blocks.

The kernel keeps one n-by-m buffer ``K`` holding the plan at reference
potentials ``(u0, v0)``: ``K_ij = exp(u0_i + v0_j - M_ij / reg)``. At any
nearby potentials ``(u, v)`` the plan is ``e^(u - u0) K e^(v - v0)`` (a
diagonal scaling), so

- a Sinkhorn half-sweep (``row_lse``/``col_lse``) is one BLAS mat-vec with
  ``K`` instead of an ``exp`` over ``M`` (about ten times cheaper); on the
  balanced dual, whole sweeps run in scaling form (:class:`ScaledSweeps`):
  the same two mat-vecs, without the log-domain shifts, exps and logs;
- the row and column sums at a line-search trial point are two mat-vecs;
- a Newton step that keeps every entry (past :attr:`NumpyKernel.dense_density`)
  runs CG on a float32 copy of the plan, made from ``K`` scaled to the
  step's point in one conversion pass (``K`` is not rescaled), and scaled
  on the fly by the following such steps while they stay near that point;
  CG mat-vecs read half the bytes (and, up to about 4 million entries, stay
  in cache); up to ``SQUARES_CACHE`` entries the squares of the copy, which
  the Jacobi preconditioner needs at every step, are stored beside it;
- a Newton step that keeps many but not all entries zeroes the others in
  its float32 copy, leaving ``K`` a plan;
- the threshold histogram is estimated on a sample of rows, scaled on the
  fly; a sparse Newton step rescales ``K`` in place to the current point
  (one pass) and copies the kept entries into a CSR matrix (one pass).

``exp`` passes over ``M`` happen only to refresh ``K``: when the potentials
drift too far from the point of the last ``exp`` pass (entries that
underflowed to 0 there could then matter), after many in-place rescalings
(rounding drift), and for the exact plan handed to the user. Every pass over
an n-by-m array is counted in :attr:`NumpyKernel.passes`, a design figure
reported by the benchmark.

Memory: ``M``, ``K`` and, in Newton steps, the float32 copy (half an n-by-m
float64 array; up to ``SQUARES_CACHE`` entries, another half for its
squares) or the CSR block (at most ``DENSE_DENSITY`` of the entries). The
plan handed to the user is ``K``. From ``SPLIT_MIN`` entries on, the copy
leaves out the last rows (a few percent), which CG reads from ``K``
itself: the bytes they free hold the solve's vectors and scratch, so that
the peak stays within ``M``, the plan and half a plan. The float32 arrays
of plans up to ``SQUARES_CACHE`` entries are kept for the thread's next
solve (:class:`ScratchPool`).
"""

import collections
import contextlib
import math
import threading
import weakref

import numpy as np
import scipy.sparse as sp

try:  # compiled CSR mat-vecs, without scipy's per-call checks (see CSRBlock)
    from scipy.sparse import _sparsetools as _SPARSETOOLS
except ImportError:  # pragma: no cover - a scipy that moved them
    _SPARSETOOLS = None

from .base import HessianBlock, Kernel, row_blocks
from .threads import blas_threads

#: entries per row block of the passes over ``M`` (temporaries stay in cache)
CHUNK = 1 << 15
#: entries per row block of the passes that write the plan in place (the exp
#: pass, the rescaling): with no temporary, a block may fill the L2 cache,
#: and fewer blocks cost fewer calls (a sixth less time per exp pass at n = 500
#: than blocks of CHUNK entries, 65 rows there; at n = 10,000 those are 3 rows)
PLAN_CHUNK = 1 << 17
#: entries per row block of the float32 conversion (a bool mask, no float temporaries)
CONVERT_CHUNK = 1 << 18
#: pass blocks of fewer rows than this make the scaled float32 conversion
#: use blocks of CONVERT_CHUNK entries (see NumpyKernel._single)
WIDE_ROWS = 16

#: kept fraction above which a Newton step is cheaper with the whole plan
#: (exact Hessian, BLAS mat-vecs on ``K``) than with a CSR copy of the kept
#: entries: building the copy costs about a dozen dense mat-vecs, and a CSR
#: mat-vec (with its transpose, through the CSC view) costs per stored entry
#: several times a dense one
DENSE_DENSITY = 0.05
#: dense kept blocks of a float64 plan are copied to float32 for CG (see
#: NumpyKernel._single)
SINGLE_HESSIAN = True
#: DENSE_DENSITY for float32 copies: their mat-vecs cost half as much
DENSE_DENSITY_SINGLE = 0.02
#: largest drift ``max|u - u0| + max|v - v0|`` at which the float32 copy of
#: ``K`` is scaled on the fly; beyond, ``K`` is rescaled first, so that no
#: entry that matters at the current point is below float32's range in the copy
SINGLE_DRIFT = 20.0
#: open range of the plan's largest row sum in which the float32 copy is used
SINGLE_RANGE = (1e-8, 1e10)
#: largest plan (entries) whose float32 copy for CG gets a stored copy of its
#: squares (the Jacobi preconditioner's, see FullBlock): while both fit in
#: cache, forming the squares at each Newton step costs ten mat-vecs over the
#: copy, and at this size the half array more costs little memory
SQUARES_CACHE = 1 << 21
#: smallest plan (entries) for dense kept blocks; small plans always use CSR
DENSE_MIN_SIZE = 1 << 16
#: in-place rescalings of an exp pass after which the plan handed to the
#: user comes from a fresh exp pass (each adds about two roundings per entry)
PLAN_RESCALES = 4
#: entries of the plan binned for the threshold histogram (a row sample above)
HIST_SAMPLE = 1 << 16
#: smallest plan (entries) whose float32 copy leaves its last rows out (see
#: NumpyKernel._copy_rows): at this size memory is what limits a solve
SPLIT_MIN = 1 << 24
#: memory (bytes) those rows free for the solve's vectors and row-block
#: scratch: a fixed part, and a part per entry of ``n + m`` (measured: about
#: 2.6 MB and 300 bytes)
SPLIT_RESERVE = (3 << 20, 400)


_MIN, _MAX = np.minimum.reduce, np.maximum.reduce


def _same(x, y):
    return x is y or (x.shape == y.shape and bool((x == y).all()))


def _drift(x, x0):
    """``max |x - x0|`` (inf for NaN)."""
    d = x - x0
    hi, lo = float(_MAX(d)), float(_MIN(d))
    return max(hi, -lo) if hi == hi and lo == lo else math.inf


#: the plan's entries are flushed to zero below ``e^LOG_FLUSH`` times the
#: dtype's smallest normal number (see :func:`exp_flushed`)
LOG_FLUSH = 4.0


def flush_below(x, floor, mask):
    """Zero the entries of ``x`` (non-negative or NaN) below ``floor`` in
    place; ``mask`` is bool scratch of ``x``'s shape. NaN stays NaN."""
    np.greater_equal(x, floor, out=mask)
    np.multiply(x, mask, out=x)


def exp_flushed(L, out, lo, mask, lmin=None):
    """``out = exp(L)`` with the entries whose logit is at or below ``lo``
    set to 0; ``mask`` is bool scratch, and ``L`` may be clamped in place.
    Returns ``out`` and the smallest logit (NaN when there is a NaN), or
    ``lmin`` when given (a lower bound on the logits, no reduction then);
    its exponential bounds the nonzero entries of ``out`` from below when it
    is above ``lo``.

    numpy's float64 ``exp`` leaves its vector path for arguments whose result
    is subnormal or underflows (below about -707.7): each such entry costs
    about 45 times a normal one (6 times when the result is 0), and at small
    reg most logits can be there. Clamped logits stay on the vector path, and
    the results that would have been subnormal (or zero) are zero, so no
    subnormal reaches the BLAS mat-vecs either (they cost a microcode assist
    per operand on many CPUs). With ``lo`` a few units above ``log(tiny)``,
    this is an underflow at a slightly higher threshold: every bound on
    underflowed entries still holds. Blocks with no logit at or below ``lo``
    (most, past the warm-up) take the plain ``exp``: the check costs a
    seventh of it, the clamp and mask three times that.
    """
    if lmin is None:
        lmin = float(L.min()) if L.size else math.inf
    if lmin > lo:  # False for NaN: the masked path keeps NaN
        return np.exp(L, out=out), lmin
    np.maximum(L, lo, out=L)
    np.greater(L, lo, out=mask)
    np.exp(L, out=out)
    np.multiply(out, mask, out=out)
    return out, lmin


class ScratchPool:
    """This thread's float32 scratch arrays of the Newton steps (the plan's
    float32 copy and its squares), kept between solves up to
    :data:`SQUARES_CACHE` entries each.

    On an easy problem the page faults of two fresh arrays of n = 1000 (8 MB)
    cost a tenth of the solve on a virtual machine; a loop of solves reuses
    them. A kernel takes an array (no other kernel can have it meanwhile) and
    gives it back when its solve hands out the plan; one never given back is
    freed with its kernel. At most 16 MB per thread stay allocated.
    """

    def __init__(self):
        self._local = threading.local()

    def _free(self):
        free = getattr(self._local, "free", None)
        if free is None:
            free = self._local.free = {}
        return free

    def take(self, slot, shape):
        size = shape[0] * shape[1]
        flat = self._free().pop(slot, None)
        if flat is None or flat.size < size or size > SQUARES_CACHE:
            flat = np.empty(size, dtype=np.float32)
        return flat[:size].reshape(shape)

    def clear(self):
        """Free this thread's kept arrays."""
        self._free().clear()

    def give_back(self, slot, array):
        if array is not None:
            flat = array.base if array.base is not None else array.reshape(-1)
            if flat.size <= SQUARES_CACHE:
                self._free()[slot] = flat


_SCRATCH = ScratchPool()


def clear_scratch():
    """Free the float32 scratch this thread keeps between solves (see
    :class:`ScratchPool`)."""
    _SCRATCH.clear()


class SharedBuffer:
    """The n-by-m buffer ``K`` of the kernels of one ``M``.

    The epsilon-scaling stages (kernels from ``at_reg``) and the kernel at
    the target reg run one after another; each taking a fresh n-by-m array
    would cost an allocation and its page faults (tens of milliseconds per
    200 MB, seconds for fresh memory on some virtual machines) and, while an
    earlier stage is still referenced, memory. A kernel that takes the
    buffer makes its previous holder forget it (that one takes it back, with
    a new exp pass, if it is used again). A buffer handed to the user (the
    plan) is detached: no kernel writes to it again.
    """

    def __init__(self):
        self._array = None
        self._holder = None  # weak reference to the kernel whose K it is

    def take(self, kernel, like):
        prev = self._holder() if self._holder is not None else None
        if prev is not None and prev is not kernel:
            prev._forget_K()
        if self._array is None:
            self._array = np.empty_like(like)
        self._holder = weakref.ref(kernel)
        return self._array

    def detach(self, array):
        if self._array is array:
            self._array = self._holder = None


class LazyHistogram:
    """Histogram ``(counts, mass)`` of ``log P`` at given potentials, computed
    on first use: line-search trials that are rejected never pay for it."""

    def __init__(self, kernel, u, v, top, total):
        self._args = (kernel, u, v, top, total)
        self._value = None

    def _get(self):
        if self._value is None:
            kernel, u, v, top, total = self._args
            self._value = kernel._histogram(u, v, top, total)
            self._args = None
        return self._value

    def __iter__(self):
        return iter(self._get())

    def __getitem__(self, i):
        return self._get()[i]

    def __len__(self):
        return 2


class CSRBlock(HessianBlock):
    """Kept plan entries as a scipy CSR matrix ``S``; ``S^T`` products use the
    CSC view of the same arrays and ``S o S`` shares its index arrays.

    The products call scipy's compiled CSR/CSC mat-vec routines directly when
    scipy has them (``scipy.sparse._sparsetools``): on the small systems of
    many-problem jobs (n of a few hundred), the checks and dispatch of
    ``S @ x`` cost several times the product itself, and CG runs hundreds of
    them per problem.
    """

    def __init__(self, S):
        self.S = S
        self.nnz = S.nnz
        self._ST = None

    def _mv(self, data, x, transpose):
        n, m = self.S.shape
        if _SPARSETOOLS is not None and x.dtype == data.dtype:
            S = self.S
            if transpose:
                out = np.zeros(m, dtype=x.dtype)
                _SPARSETOOLS.csc_matvec(m, n, S.indptr, S.indices, data, x, out)
            else:
                out = np.zeros(n, dtype=x.dtype)
                _SPARSETOOLS.csr_matvec(n, m, S.indptr, S.indices, data, x, out)
            return out
        A = self.S if data is self.S.data else self._sq()
        if not transpose:
            return A @ x
        if A is self.S:
            if self._ST is None:
                self._ST = A.T
            return self._ST @ x
        return A.T @ x

    def matvec(self, x):
        return self._mv(self.S.data, x, False)

    def rmatvec(self, y):
        return self._mv(self.S.data, y, True)

    def _square(self):
        S = self.S
        return sp.csr_matrix((S.data * S.data, S.indices, S.indptr), shape=S.shape)

    def sq_matvec(self, x):
        return self._mv(self._sq().data, x, False)

    def sq_rmatvec(self, y):
        return self._mv(self._sq().data, y, True)


class FullBlock(HessianBlock):
    """Kept entries stored densely (the plan buffer or its float32 copy):
    BLAS mat-vecs. With scalings ``eu``, ``ev`` the block is
    ``diag(eu) K diag(ev)`` (the plan at the current point, from ``K`` at its
    reference point). Vectors are cast to ``K``'s dtype before a product, so
    that a float32 ``K`` is never upcast; results come back in the vector's
    dtype. The squares ``K o K`` (their entries below the normal range
    zeroed) are ``squares`` when given, else formed block by block at each
    use (past the cache, reading a stored copy costs as much as forming it)."""

    def __init__(self, K, rows, nnz, eu=None, ev=None, squares=None):
        self.S = K
        self.nnz = nnz
        self._rows = rows
        self._eu, self._ev = eu, ev
        self._Q = squares
        self._dt = K.dtype
        self._sq_floor = K.dtype.type(math.sqrt(float(np.finfo(K.dtype).tiny)))
        self._scratch = None  # row-block buffers of _squares

    def _in(self, x, scale):
        if scale is not None:
            x = scale * x
        return x.astype(self._dt, copy=False)

    def _out(self, y, scale, like):
        y = y.astype(like.dtype, copy=False)
        return y if scale is None else scale * y

    def matvec(self, x):
        return self._out(self.S @ self._in(x, self._ev), self._eu, x)

    def rmatvec(self, y):
        return self._out(self._in(y, self._eu) @ self.S, self._ev, y)

    def _squares(self, i0):
        """``B o B`` for the row block of ``K`` at ``i0``. Entries below the
        square root of the smallest normal number are zeroed first: their
        squares would be subnormal (slow to make and to multiply by), and
        they only feed the Jacobi preconditioner's diagonal."""
        B = self.S[i0:i0 + self._rows]
        k = B.shape[0]
        if self._scratch is None:
            self._scratch = (np.empty((self._rows,) + B.shape[1:], dtype=self._dt),
                             np.empty((self._rows,) + B.shape[1:], dtype=bool))
        Q, mask = self._scratch[0][:k], self._scratch[1][:k]
        np.greater_equal(B, self._sq_floor, out=mask)
        np.multiply(B, mask, out=Q)
        return np.multiply(Q, Q, out=Q)

    def sq_matvec(self, x):
        eu, ev = self._eu, self._ev
        x32 = self._in(x, None if ev is None else ev * ev)
        if self._Q is not None:
            out = self._Q @ x32
        else:
            n = self.S.shape[0]
            out = np.empty(n, dtype=self._dt)
            for i0 in range(0, n, self._rows):
                out[i0:i0 + self._rows] = self._squares(i0) @ x32
        return self._out(out, None if eu is None else eu * eu, x)

    def sq_rmatvec(self, y):
        eu, ev = self._eu, self._ev
        y32 = self._in(y, None if eu is None else eu * eu)
        if self._Q is not None:
            out = y32 @ self._Q
        else:
            n = self.S.shape[0]
            out = 0
            for i0 in range(0, n, self._rows):
                out = out + y32[i0:i0 + self._rows] @ self._squares(i0)
        return self._out(np.asarray(out), None if ev is None else ev * ev, y)


class RowSplit(HessianBlock):
    """A block whose first rows are the block ``top`` and the others ``tail``
    (the float32 copy of a large plan and the rows it leaves out, see
    :meth:`NumpyKernel._copy_rows`)."""

    def __init__(self, top, tail, rows, nnz):
        self.top, self.tail = top, tail
        self._rows = rows  # rows of top
        self.nnz = nnz

    def matvec(self, x):
        return np.concatenate((self.top.matvec(x), self.tail.matvec(x)))

    def rmatvec(self, y):
        k = self._rows
        return self.top.rmatvec(y[:k]) + self.tail.rmatvec(y[k:])

    def sq_matvec(self, x):
        return np.concatenate((self.top.sq_matvec(x), self.tail.sq_matvec(x)))

    def sq_rmatvec(self, y):
        k = self._rows
        return self.top.sq_rmatvec(y[:k]) + self.tail.sq_rmatvec(y[k:])


class SweepStop(collections.namedtuple("SweepStop", "version a b u v eu ev s r")):
    """Where scaled sweeps stopped: the kernel's ``version`` then, their
    targets ``(a, b)``, the potentials ``(u, v)`` they handed out, their
    scalings ``(eu, ev)`` there and their last mat-vecs ``s = K^T eu``,
    ``r = K ev`` (None before the first sweep). Arrays only: a reference
    to the sweeps would make a cycle that keeps a stage kernel's scratch
    alive."""

    def at(self, kernel, targets, u, v):
        """Whether it is ``(u, v)`` toward ``targets``, ``K`` unchanged since."""
        return (self.version == kernel._version and _same(self.u, u) and _same(self.v, v)
                and _same(self.a, targets[0]) and _same(self.b, targets[1]))

    def sums(self, kernel, u, v):
        """The plan's row and column sums there, when it is ``(u, v)``
        (else None)."""
        if self.r is None or self.s is None or not self.at(kernel, (self.a, self.b), u, v):
            return None
        return self.eu * self.r, self.ev * self.s


class ScaledSweeps:
    """Sinkhorn sweeps in scaling form on a kernel's buffer ``K``.

    ``K`` is the plan at the reference potentials ``(u0, v0)`` of its last
    exp pass; the sweeps carry ``e^(u - u0)`` and ``e^(v - v0)`` and do
    what POT's ``sinkhorn`` does per iteration: two mat-vecs and two
    divisions. The log-domain half-sweeps (:meth:`NumpyKernel.row_lse`)
    compute the same potentials, up to rounding, through a dozen more
    vector operations (shifts, exps, logs) per half-sweep: a sweep of a
    solve at n = 500 takes about 0.10 ms instead of 0.14.

    Each sweep checks, from the extremes of the sums alone when it can,
    what the log-domain half-sweeps check: sums finite and large enough to
    be exact, and potentials within the kernel's drift of the exp pass. A
    sweep that fails a check changes nothing.

    A sweep's error is measured at the point it reaches: its column sums
    ``e^v * (K^T e^u)``, whose mat-vec is the next sweep's first half
    (``col``, the column log-sum-exp at ``u``, saves the first one). The
    sums there are also the kernel's :meth:`NumpyKernel.evaluate` at the
    potentials :meth:`potentials` returns.
    """

    def __init__(self, kernel, targets, u, v, col=None):
        self._k = kernel
        self.a, self.b = targets
        self._ends = [(float(w.min()), float(w.max())) for w in targets]
        self._lo, self._hi = math.exp(-kernel._drift), math.exp(kernel._drift)
        stop = kernel._stop
        if stop is not None and stop.at(kernel, targets, u, v):
            # go on where the kernel's last scaled sweeps stopped
            self.eu, self.ev, self._s, self._r = stop.eu, stop.ev, stop.s, stop.r
            return
        self.eu = np.exp(u - kernel._u0)
        self.ev = np.exp(v - kernel._v0)
        # K^T e^u at the current point; with col = log(sum_i e^(u_i - M_ij/reg)),
        # it is e^(col + v0)
        self._s = None if col is None else np.exp(col + kernel._v0)
        self._r = None  # K e^v there (the row sums are e^u times it)

    def _scaling(self, w, ends, s):
        """``w / s``, or None when the sums ``s`` lost mass, are not finite,
        or make a potential drift too far."""
        # the ufuncs' reduce, not the methods: a sweep is a few microseconds
        # of work besides its mat-vecs, and each method call costs one more
        lo, hi = float(_MIN(s)), float(_MAX(s))
        if not self._k._ok_ends(lo, hi):
            return None
        x = w / s
        if not (ends[1] / lo <= self._hi and ends[0] / hi >= self._lo):
            # the bound from the extremes failed: the exact extremes decide
            if not (float(_MAX(x)) <= self._hi and float(_MIN(x)) >= self._lo):
                return None
        return x

    def sweep(self):
        """One sweep; its error (the marginal violation at the point it
        reaches), or None (nothing changed)."""
        K = self._k._K
        passes = self._k.passes
        s = self._s
        if s is None:
            s = self.eu @ K
            passes["matvec"] += 1
        ev = self._scaling(self.b, self._ends[1], s)
        if ev is None:
            return None
        r = K @ ev
        eu = self._scaling(self.a, self._ends[0], r)
        if eu is None:
            return None
        s = eu @ K
        passes["matvec"] += 2
        d = ev * s
        d -= self.b
        err = math.sqrt(d @ d)
        if not err < math.inf:  # the next sweep's checks would fail
            return None
        self.eu, self.ev, self._s, self._r = eu, ev, s, r
        return err

    def potentials(self):
        """``(u, v)`` of the last sweep."""
        k = self._k
        u = np.log(self.eu)
        u += k._u0
        v = np.log(self.ev)
        v += k._v0
        k._hint_u, k._hint_v = u, v
        k._stop = SweepStop(k._version, self.a, self.b, u, v, self.eu, self.ev,
                            self._s, self._r)
        return u, v


class NumpyKernel(Kernel):
    """Kernel for numpy arrays (CPU).

    Parameters
    ----------
    nx : ot.backend.NumpyBackend
        POT's numpy backend.
    M : ndarray, shape (n, m)
        Cost matrix in the compute dtype.
    reg : float
        Entropic regularization.
    bin_width, n_bins : float, int
        Histogram layout used to pick sparsity thresholds.
    """

    name = "numpy"
    #: kinds of passes over n-by-m arrays counted in ``passes`` (see module doc)
    pass_kinds = ("exp", "matvec", "rescale", "histogram", "select", "cg", "single")
    #: default cap on the kept fraction (``SNSOptions.max_density=None``):
    #: dense kept blocks live in the plan buffer, so no cap is needed
    max_density = 1.0

    @property
    def dense_density(self):
        """Kept fraction above which the solver should keep every entry: the
        exact Hessian in the plan buffer (or its float32 copy), BLAS mat-vecs,
        no sparse copy (a CSR mat-vec costs about as much per stored entry as
        several dense ones, and building it much more). None for small plans."""
        n, m = self.shape
        if n * m < DENSE_MIN_SIZE:
            return None
        return DENSE_DENSITY_SINGLE if self._use_single() else DENSE_DENSITY

    def __init__(self, nx, M, reg, bin_width=0.5, n_bins=120):
        super().__init__(nx, np.ascontiguousarray(M), reg, bin_width, n_bins)
        self.scale = -1.0 / reg
        n, m = self.shape
        self.rows = max(1, CHUNK // max(m, 1))
        self.buf = np.empty((min(self.rows, n), m), dtype=self.M.dtype)
        self._plan_rows = max(self.rows, PLAN_CHUNK // max(m, 1))
        # bool scratch of the blocks of either kind (np.empty: its pages cost
        # nothing until a masked block touches them)
        self._maskbuf = np.empty((min(self._plan_rows, n), m), dtype=bool)
        fi = np.finfo(self.M.dtype)
        self._tiny = float(fi.tiny)
        self._lo = math.log(self._tiny) + LOG_FLUSH  # see exp_flushed
        self._kfloor = 0.0  # lower bound on the nonzero entries of K
        # Largest drift of the potentials (per entry, in log units) from the
        # last exp pass: entries of K that underflowed there (or in a later
        # rescaling) stay below tiny * e^(6 D) = sqrt(tiny) at any point the
        # kernel form is used for; sums above _smin are then exact to eps.
        self._drift = -math.log(float(fi.tiny)) / 12.0
        self._log_smin = (math.log(max(n, m)) + math.log(float(fi.tiny)) + 6 * self._drift
                          - math.log(float(fi.eps)))
        self._smin = math.exp(self._log_smin)
        self._max_rescale = 24
        self._K = None
        self._pool = SharedBuffer()  # where K comes from
        self._handed = False  # K was returned by P (see plan)
        self._u0 = self._v0 = None  # reference potentials of K
        self._ua = self._va = None  # potentials of the last exp pass
        self._rescaled = 0  # in-place rescalings since the last exp pass
        self._masked = False  # K holds a masked plan (see select)
        self._version = 0  # bumped whenever K's entries change
        self._hbuf = None  # scratch of _histogram
        self._ones_v = None  # see _ones
        self._K32 = None  # float32 copy of the plan for CG (see _single)
        self._K32sq = None  # squares of that copy for the preconditioner
        self._cbuf = None  # scratch of the scaled conversion on wide plans
        self._k32_at = None  # (threshold, u, v) the copy was made at
        self._hint_u = self._hint_v = None  # last potentials seen
        self._point = None  # (u, v) of the last evaluate
        self._stop = None  # SweepStop of the last ScaledSweeps
        self._rmax = 0.0  # largest row sum there

    def at_reg(self, reg):
        """A kernel for the same ``M`` at another regularisation (epsilon
        scaling), sharing this kernel's buffer ``K`` (see :class:`SharedBuffer`)."""
        k = NumpyKernel(self.nx, self.M, reg, self.bin_width, self.n_bins)
        k._pool = self._pool
        k._cost_range = self._cost_range
        return k

    def _forget_K(self):
        """Drop ``K`` (taken by another kernel, or handed to the user)."""
        self._K = None
        self._u0 = self._v0 = self._ua = self._va = None
        self._masked = False
        self._version += 1

    # ------------------------------------------------------------------ utils
    @contextlib.contextmanager
    def errstate(self):
        """No floating point warnings, and BLAS threads capped at the idle
        cores (see :mod:`.threads`): the solver runs its passes in here."""
        with np.errstate(over="ignore", under="ignore", invalid="ignore", divide="ignore"):
            with blas_threads(self.shape[0] * self.shape[1]):
                yield

    def _blocks(self):
        return row_blocks(self.shape[0], self.rows, self.buf)

    def _plan_blocks(self):
        """Row blocks ``(i0, i1, Kb)`` of ``K`` for the passes that write it
        in place (``Kb`` is their scratch: no copy of ``M`` is made)."""
        n, rows, K = self.shape[0], self._plan_rows, self._K
        return ((i0, min(i0 + rows, n), K[i0:i0 + rows]) for i0 in range(0, n, rows))

    def _mask(self, L):
        """Bool scratch of the shape of row block ``L``."""
        return self._maskbuf[: L.shape[0]]

    def _logits(self, L, i0, i1, u, v):
        np.multiply(self.M[i0:i1], self.scale, out=L)
        if u is not None:
            L += u[i0:i1, None]
        if v is not None:
            L += v[None, :]
        return L

    def _near(self, u=None, v=None):
        """Whether the kernel form of K is exact enough at ``(u, v)``."""
        if self._K is None or self._masked:
            return False
        return ((u is None or _drift(u, self._ua) <= self._drift)
                and (v is None or _drift(v, self._va) <= self._drift))

    def _ok_sums(self, s):
        """Sums large enough for their log to be accurate (no lost mass),
        finite and not NaN."""
        return s.size == 0 or self._ok_ends(float(s.min()), float(s.max()))

    def _ok_ends(self, lo, hi):
        """:meth:`_ok_sums` from the sums' extremes (False for NaN)."""
        return lo > self._smin and hi < math.inf

    def _exp_pass(self, u, v, rows=True, cols=True):
        """``K = exp(u + v - M/reg)`` (the plan at ``(u, v)``); its row and
        column sums (None for those not asked for)."""
        n, m = self.shape
        if self._K is None:
            self._K = self._pool.take(self, self.M)
            self._handed = False
        r = np.empty(n, dtype=self.M.dtype) if rows else None
        c = np.zeros(m, dtype=self.M.dtype) if cols else None
        ones = self._ones()
        lmin = math.inf
        # zero potentials (the start of a solve) add nothing: two passes
        # saved, a third of the pass outside the exp
        uz = u if u is not None and u.any() else None
        vz = v if v is not None and v.any() else None
        known = None
        if uz is None and vz is None and self._cost_range is not None:
            # the smallest logit is the largest cost's (less a margin for
            # the rounding of M's dtype): no minimum per block
            x = self._cost_range[1] * self.scale
            known = x - 1e-6 * abs(x) - 1e-300
        for i0, i1, Kb in self._plan_blocks():
            self._logits(Kb, i0, i1, uz, vz)
            _, lb = exp_flushed(Kb, Kb, self._lo, self._mask(Kb), known)
            lmin = min(lmin, lb)
            # sums as BLAS mat-vecs: half the time of numpy's reductions
            if rows:
                np.dot(Kb, ones[:m], out=r[i0:i1])
            if cols:
                c += ones[: i1 - i0] @ Kb
        self._u0 = self._ua = u
        self._v0 = self._va = v
        # no nonzero entry of K is below: the rescalings that follow flush
        # subnormals only when this bound says some could appear
        self._kfloor = math.exp(min(max(self._lo, lmin), 0.0)) if lmin == lmin else 0.0
        self._rescaled = 0
        self._masked = False
        self._version += 1
        self.passes["exp"] += 1
        return r, c

    def _ones(self):
        """Ones in the compute dtype, as many as the longer side."""
        if self._ones_v is None:
            self._ones_v = np.ones(max(self.shape), dtype=self.M.dtype)
        return self._ones_v

    def _zeros(self, k):
        return np.zeros(k, dtype=self.M.dtype)

    # ---------------------------------------------------- Sinkhorn half-sweeps
    def _shifted(self, x, x0, xa):
        """``(exp(x - x0 - h), h)`` with ``h = max(x - x0)``, or None when
        the kernel form is not exact enough at ``x`` (see :meth:`_near`).
        In a run of sweeps ``K`` is where its last exp pass left it
        (``xa is x0``): one difference serves the test and the scaling."""
        if self._K is None or self._masked:
            return None
        d = x - x0
        h = float(d.max())
        da = d if xa is x0 else x - xa
        hi = h if xa is x0 else float(da.max())
        # False for NaN
        if not (hi <= self._drift and float(da.min()) >= -self._drift):
            return None
        d -= h
        return np.exp(d, out=d), h

    def _lse(self, s, h, x0):
        """``log(s) + h - x0`` (None when the sums lost mass or are not finite)."""
        if not self._ok_sums(s):
            return None
        out = np.log(s)
        out += h
        out -= x0
        return out

    def row_lse(self, v):
        self._hint_v = v
        w = self._shifted(v, self._v0, self._va)
        if w is not None:
            lse = self._lse(self._K @ w[0], w[1], self._u0)
            self.passes["matvec"] += 1
            if lse is not None:
                return lse
        # refresh K at the latest potentials: the plan there has column sums b
        u = self._hint_u if self._hint_u is not None else self._zeros(self.shape[0])
        r, _ = self._exp_pass(u, v, cols=False)
        if self._ok_sums(r):
            return np.log(r) - u
        return self._stable_row_lse(v)

    def col_lse(self, u):
        self._hint_u = u
        w = self._shifted(u, self._u0, self._ua)
        if w is not None:
            lse = self._lse(w[0] @ self._K, w[1], self._v0)
            self.passes["matvec"] += 1
            if lse is not None:
                return lse
        v = self._hint_v if self._hint_v is not None else self._zeros(self.shape[1])
        _, c = self._exp_pass(u, v, rows=False)
        if self._ok_sums(c):
            return np.log(c) - v
        return self._stable_col_lse(u)

    def scaled_sweeps(self, targets, u, v, col=None):
        """Sweeps ``e^v = b / (K^T e^u)``, ``e^u = a / (K e^v)`` on ``K``
        as its last exp pass left it (see :class:`ScaledSweeps`), from
        ``(u, v)`` near that pass; None otherwise. The sweeps that handed
        out ``(u, v)`` go on where they stopped (their column sums there
        are the next sweep's first half)."""
        if (self._u0 is not self._ua or self._v0 is not self._va
                or u is None or v is None or not self._near(u, v)):
            return None
        return ScaledSweeps(self, targets, u, v, col)

    def _stable_row_lse(self, v):
        """Max-shifted log-sum-exp over ``M`` (rows whose terms all underflow)."""
        out = np.empty(self.shape[0], dtype=self.M.dtype)
        for i0, i1, L in self._blocks():
            self._logits(L, i0, i1, None, v)
            mx = L.max(axis=1)
            mx[~np.isfinite(mx)] = 0.0
            L -= mx[:, None]
            exp_flushed(L, L, self._lo, self._mask(L))
            out[i0:i1] = np.log(L.sum(axis=1)) + mx
        self.passes["exp"] += 1
        return out

    def _stable_col_lse(self, u):
        m = self.shape[1]
        mx = np.full(m, -np.inf, dtype=self.M.dtype)
        s = np.zeros(m, dtype=self.M.dtype)
        for i0, i1, L in self._blocks():
            self._logits(L, i0, i1, u, None)
            bmx = np.maximum(mx, L.max(axis=0))
            safe = np.where(np.isfinite(bmx), bmx, 0.0)
            s *= np.exp(mx - safe)
            L -= safe[None, :]
            exp_flushed(L, L, self._lo, self._mask(L))
            s += L.sum(axis=0)
            mx = bmx
        self.passes["exp"] += 1
        return np.log(s) + np.where(np.isfinite(mx), mx, 0.0)

    # ------------------------------------------------------------ Newton passes
    def evaluate(self, u, v, top, hist=True):
        self._hint_u, self._hint_v = u, v
        self._point = (u, v)
        r = c = None
        # where scaled sweeps stopped, their last mat-vecs give the sums
        known = None if self._stop is None else self._stop.sums(self, u, v)
        if known is not None:
            r, c = known
        elif self._near(u, v):
            eu = np.exp(u - self._u0)
            ev = np.exp(v - self._v0)
            r = eu * (self._K @ ev)
            c = ev * (eu @ self._K)
            self.passes["matvec"] += 2
            if not (np.all(np.isfinite(r)) and np.all(np.isfinite(c))):
                r = None
        if r is None:
            r, c = self._exp_pass(u, v)
        self._rmax = float(np.max(r)) if r.size else 0.0
        return r, c, (LazyHistogram(self, u, v, top, float(r.sum())) if hist else None)

    def _holds(self, u, v):
        """Whether ``K`` is the (unmasked) plan at ``(u, v)``."""
        return (self._K is not None and not self._masked and _same(self._u0, u)
                and _same(self._v0, v))

    def _rescalable(self, u, v):
        """Whether scaling ``K`` gives the plan at ``(u, v)`` exactly enough."""
        return self._rescaled < self._max_rescale and self._near(u, v)

    def _materialize(self, u, v, exact=False):
        """Make ``K`` the plan at ``(u, v)``: rescale in place, or an exp pass."""
        if self._holds(u, v) and (not exact or self._rescaled == 0):
            return
        if exact or not self._rescalable(u, v):
            self._exp_pass(u, v, rows=False, cols=False)
            return
        eu = np.exp(u - self._u0)
        ev = np.exp(v - self._v0)
        # entries scaled below the normal range would be subnormal: underflow
        # them, unless the bound on the smallest nonzero entry says none is
        self._kfloor *= float(np.min(eu)) * float(np.min(ev)) * (1 - 1e-9)
        flush = not self._kfloor >= self._tiny
        for i0, i1, Kb in self._plan_blocks():
            Kb *= ev[None, :]
            Kb *= eu[i0:i1, None]
            if flush:
                flush_below(Kb, self._tiny, self._mask(Kb))
        if flush:
            self._kfloor = self._tiny
        self._u0, self._v0 = u, v
        self._rescaled += 1
        self._version += 1
        self.passes["rescale"] += 1

    def _histogram(self, u, v, top, total=None):
        """Histogram ``(counts, mass)`` of ``log P`` at ``(u, v)``.

        Exact up to ``HIST_SAMPLE`` entries; above, it is estimated from a
        systematic sample of rows (every ``k``-th), counts scaled by ``n`` over
        the sampled rows and mass by the total mass over theirs: the threshold
        it serves is a heuristic choice, and the exact histogram would cost
        more than the rest of a Newton step.
        """
        n, m = self.shape
        K, w = self.n_bins, self.bin_width
        counts = np.zeros(K + 1)
        mass = np.zeros(K + 1)
        low = top - K * w
        stride = max(1, -(-n * m // HIST_SAMPLE)) if total is not None else 1
        eu = ev = None
        if not self._holds(u, v):
            if stride > 1 and self._rescalable(u, v):
                # the sampled rows scaled to (u, v) as _materialize would
                # scale them: a pass over the sample, not over K
                eu, ev = np.exp(u - self._u0), np.exp(v - self._v0)
            else:
                self._materialize(u, v)
        P = self._K
        stride = min(stride, n)
        rows = range(0, n, stride)
        L = self.buf
        sampled = 0.0
        for i in range(0, len(rows), L.shape[0]):
            idx_rows = rows[i:i + L.shape[0]]
            i0, i1 = idx_rows.start, idx_rows[-1] + 1
            Lb = L[: len(idx_rows)]
            np.multiply(self.M[i0:i1:stride], self.scale, out=Lb)
            Lb += u[i0:i1:stride, None]
            Lb += v[None, :]
            Pb = P[i0:i1:stride]
            if eu is not None:
                Pb = np.multiply(Pb, ev[None, :], out=self._hist_rows(Lb.shape))
                Pb *= eu[i0:i1:stride, None]
            # Entries below the lowest bin edge are only counted, never
            # binned: at small reg they are the vast majority.
            sel = Lb > low
            Ls = Lb[sel]
            t = (top - Ls) * (1.0 / w)
            np.clip(t, 0, K - 1, out=t)
            idx = t.astype(np.intp)
            counts += np.bincount(idx, minlength=K + 1)
            ps = Pb[sel]
            mass += np.bincount(idx, weights=ps, minlength=K + 1)
            rowmass = float(Pb.sum())
            sampled += rowmass
            nlow = Pb.size - Ls.size
            if nlow:
                counts[K] += nlow
                mass[K] += max(rowmass - float(ps.sum()), 0.0)
        if stride > 1:
            counts *= n / float(len(rows))
            if sampled > 0:
                mass *= total / sampled
        self.passes["histogram"] += 1.0 / stride
        return counts, mass

    def _hist_rows(self, shape):
        """Scratch for the scaled rows of the histogram's sample."""
        if self._hbuf is None:
            self._hbuf = np.empty(self.buf.shape, dtype=self.M.dtype)
        return self._hbuf[: shape[0]]

    @property
    def P(self):
        """The plan at the last evaluated potentials (the buffer ``K``).

        A rescaling of the last exp pass when it is near (each costs two
        roundings per entry, a fraction of an exp pass: on easy problems the
        whole solve is a few sweeps and this pass is a third of it), a fresh
        exp pass after :data:`PLAN_RESCALES` rescalings."""
        if self._point is None:
            return None
        self._materialize(*self._point, exact=self._rescaled >= PLAN_RESCALES)
        self._release_single()  # the solve is over
        self._handed = True  # plan() must not write over it, nor another kernel
        self._pool.detach(self._K)
        return self._K

    def _release_single(self):
        """Give the float32 scratch back to the pool (the solve is over)."""
        _SCRATCH.give_back("K32", self._K32)
        _SCRATCH.give_back("K32sq", self._K32sq)
        self._K32 = self._K32sq = self._k32_at = self._cbuf = None

    def _single(self, u, v, tau=0.0):
        """A float32 copy of the plan at ``(u, v)`` with the entries below
        ``tau`` zeroed, for the CG mat-vecs of a Newton step; returns it with
        the potentials it was made at.

        The copy is made from ``K`` scaled to ``(u, v)`` on the way (``K``
        itself stays where it is: no pass rescales it). With every entry kept
        (``tau = 0``), it is kept and scaled on the fly by later Newton steps
        while their point is within ``SINGLE_DRIFT`` of its own (a run of
        steps shares one copy).

        CG mat-vecs are memory-bound: a float32 block halves the bytes read
        per pass, and keeps an n-by-m block of up to 4 million entries in a
        32 MB cache. The Hessian is an approximation already (sparsified,
        shifted, solved inexactly); its float32 rounding (relative 6e-8)
        leaves the Newton step accurate to far below CG's tolerance, while the
        gradient and the line search stay in float64.

        Entries below float32's smallest normal number are zeroed too:
        scaled on the fly by at most ``e^SINGLE_DRIFT`` they stay below
        1e-29, while the row sums the copy serves exceed ``SINGLE_RANGE[0]``;
        as float32 subnormals they would slow every mat-vec over them.
        Up to ``SQUARES_CACHE`` entries, the squares the Jacobi
        preconditioner needs are stored beside the copy (see :attr:`_K32sq`).
        """
        tau = float(tau)
        at = self._k32_at
        if at is not None and at[0] == tau:
            u32, v32 = at[1], at[2]
            if tau == 0.0 and _drift(u, u32) + _drift(v, v32) <= SINGLE_DRIFT:
                return self._K32, u32, v32
            if _same(u32, u) and _same(v32, v):
                return self._K32, u32, v32
        m = self.shape[1]
        n = self._copy_rows()
        if self._K32 is None:
            self._K32 = _SCRATCH.take("K32", (n, m))
        if self._K32sq is None and n * m <= SQUARES_CACHE:
            self._K32sq = _SCRATCH.take("K32sq", (n, m))
        K, K32, Q = self._K, self._K32, self._K32sq
        tiny32 = np.finfo(np.float32).tiny
        sq_floor = np.float32(math.sqrt(float(tiny32)))
        scaled = not (_same(self._u0, u) and _same(self._v0, v))
        # blocks larger than the passes' keep the per-block overhead low on
        # wide plans (6 rows per pass block at m = 5000: about 58 -> 45 ms
        # per scaled copy at n = m = 5000); scaled, they need their own
        # scratch of K's dtype, only worth its memory there
        rows, scratch = max(self.rows, CONVERT_CHUNK // max(m, 1)), None
        if scaled:
            eu, ev = np.exp(u - self._u0), np.exp(v - self._v0)
            if self.rows >= WIDE_ROWS:
                rows, scratch = self.rows, self.buf
            else:
                if self._cbuf is None:
                    self._cbuf = np.empty((min(rows, n), m), dtype=self.M.dtype)
                scratch = self._cbuf
        mask = np.empty((min(rows, n), m), dtype=bool)
        for i0, i1, mb in row_blocks(n, rows, mask):
            Kb = K[i0:i1]
            if scaled:
                # in K's dtype, in the order _materialize scales K
                Kb = np.multiply(Kb, ev[None, :], out=scratch[: i1 - i0])
                Kb *= eu[i0:i1, None]
            Cb = K32[i0:i1]
            Cb[...] = Kb
            if tau > 0:
                # in K's dtype: keep exactly the entries >= tau
                np.greater_equal(Kb, tau, out=mb)
                np.multiply(Cb, mb, out=Cb)
            # float32 compare and multiply: a third of the cost in float64
            np.greater_equal(Cb, tiny32, out=mb)
            np.multiply(Cb, mb, out=Cb)
            if Q is not None:
                # squares below float32's normal range would be subnormal
                np.greater_equal(Cb, sq_floor, out=mb)
                Qb = np.multiply(Cb, mb, out=Q[i0:i1])
                np.multiply(Qb, Qb, out=Qb)
        self._k32_at = (tau, u, v)
        self.passes["single"] += 1
        return K32, u, v

    def _copy_rows(self):
        """Rows of the float32 copy: all of them, except on plans of at least
        ``SPLIT_MIN`` entries, where the last rows, as many as hold
        ``SPLIT_RESERVE`` in float32, stay out (CG reads them from ``K``;
        they are a few percent of the rows, so their float64 reads cost
        that much of a mat-vec, where the copy's bytes would raise the
        solve's peak above ``M``, the plan and half a plan)."""
        n, m = self.shape
        if n * m < SPLIT_MIN:
            return n
        fixed, per = SPLIT_RESERVE
        tail = -(-(fixed + per * (n + m)) // (4 * m))
        return n - tail if 2 * tail < n else n

    def _with_tail(self, top, nnz, u, v, tau=0.0):
        """``top`` (a block of the float32 copy's rows) with the rows the
        copy leaves out: those of ``K`` scaled to ``(u, v)`` on the fly, or,
        with ``tau > 0`` (``K`` then holds the plan at ``(u, v)``), a CSR
        copy of their entries ``>= tau``."""
        k = top.S.shape[0]
        if k == self.shape[0]:
            return top
        if tau > 0:
            tail = self._csr(tau, k)
        else:
            tail = FullBlock(self._K[k:], self.rows, 0, np.exp(u[k:] - self._u0[k:]),
                             np.exp(v - self._v0))
        return RowSplit(top, tail, k, nnz)

    def _use_single(self):
        # Entries of K are at most the largest row sum times e^SINGLE_DRIFT,
        # and the preconditioner squares them: within SINGLE_RANGE, float32
        # holds the entries and squares that matter.
        lo, hi = SINGLE_RANGE
        return self.M.dtype == np.float64 and SINGLE_HESSIAN and lo < self._rmax < hi

    def select(self, tau):
        n, m = self.shape
        u, v = self._point
        if tau <= 0 and self._near(u, v):
            # every entry: K (or its float32 copy) scaled on the fly, no pass
            # over K here
            if not self._use_single():
                return FullBlock(self._K, self.rows, n * m, np.exp(u - self._u0),
                                 np.exp(v - self._v0))
            K32, u32, v32 = self._single(u, v)
            k = K32.shape[0]
            top = FullBlock(K32, self.rows, n * m, np.exp(u[:k] - u32[:k]), np.exp(v - v32),
                            squares=self._K32sq)
            return self._with_tail(top, n * m, u, v)
        self._materialize(u, v)
        K = self._K
        self.passes["select"] += 1
        if n * m >= DENSE_MIN_SIZE:
            kept = 0
            for i0, i1, _ in self._blocks():
                kept += int(np.count_nonzero(K[i0:i1] >= tau))
            if kept > self.dense_density * n * m:
                if self._use_single():
                    cut = tau if kept < n * m else 0.0
                    K32, _, _ = self._single(u, v, cut)
                    top = FullBlock(K32, self.rows, kept, squares=self._K32sq)
                    return self._with_tail(top, kept, u, v, cut)
                # Many entries kept: zero the others in place and use BLAS
                # mat-vecs on the buffer. K is no longer a plan until the next
                # exp pass refreshes it.
                if kept < n * m:
                    for i0, i1, _ in self._blocks():
                        Kb = K[i0:i1]
                        Kb[Kb < tau] = 0.0
                    self._masked = True
                    self._version += 1
                    self.passes["select"] += 1
                return FullBlock(K, self.rows, kept)
        return self._csr(tau)

    def _csr(self, tau, start=0):
        """The entries ``>= tau`` of ``K``'s rows from ``start`` on, as a CSR
        block."""
        K = self._K
        m = self.shape[1]
        n = self.shape[0] - start
        indptr = np.zeros(n + 1, dtype=np.int64)
        cols, vals = [], []
        for i0, i1, _ in row_blocks(n, self.rows, self.buf):
            Kb = K[start + i0:start + i1]
            keep = Kb >= tau
            np.cumsum(np.count_nonzero(keep, axis=1), out=indptr[i0 + 1:i1 + 1])
            indptr[i0 + 1:i1 + 1] += indptr[i0]
            cols.append(np.nonzero(keep)[1])
            vals.append(Kb[keep])
        nnz = int(indptr[-1])
        itype = np.int32 if max(m, nnz) < 2 ** 31 - 1 else np.int64
        indices = np.concatenate(cols).astype(itype, copy=False) if cols else np.zeros(0, itype)
        data = np.concatenate(vals) if vals else np.zeros(0, K.dtype)
        S = sp.csr_matrix((data, indices, indptr.astype(itype, copy=False)), shape=(n, m))
        return CSRBlock(S)

    def plan(self, u, v):
        """A new plan array at ``(u, v)`` for the user.

        The plan is the last thing a solve asks for, and at large n memory
        is what limits it: the float32 copy is released first, and the buffer
        ``K`` itself becomes the plan unless :attr:`P` handed it out already.
        The kernel then forgets ``K`` (a later pass allocates a new one), so
        the plan costs no memory beyond the kernel's.
        """
        self._release_single()
        if self._K is not None and not self._handed:
            out = self._K
            self._pool.detach(out)
            self._forget_K()
        else:
            out = np.empty_like(self.M)
        for i0, i1, L in self._blocks():
            exp_flushed(self._logits(L, i0, i1, u, v), out[i0:i1], self._lo, self._mask(L))
        return out
