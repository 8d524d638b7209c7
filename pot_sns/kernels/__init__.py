"""Backend kernels: the dense passes over ``M`` and the sparse Hessian block.

This package is the only place that knows about a concrete array library.
:func:`make_kernel` picks the kernel that fits POT's backend ``nx``.

The contract (:class:`~pot_sns.kernels.base.Kernel`, written in code there):

- fields ``nx``, ``M``, ``reg``, ``shape``, ``bin_width``, ``n_bins``,
  ``name``, ``max_density`` (default cap on the kept fraction),
  ``dense_density`` (kept fraction from which the whole plan is the cheaper
  Hessian block, or None), ``passes`` (passes over n-by-m arrays by kind)
  and ``P`` (the plan at the last evaluated potentials);
- ``row_lse(v)``, ``col_lse(u)``: the log-sum-exp half-sweeps of Sinkhorn;
  optionally ``scaled_sweeps(targets, u, v)``: whole sweeps in scaling form
  (None by default; the numpy kernel's do POT's two mat-vecs per sweep);
- ``evaluate(u, v, top, hist=True) -> (r, c, hist)``: the plan's row and
  column sums and the host histogram ``(counts, mass)`` of ``log P``;
- ``select(tau)``: the entries ``P_ij >= tau`` as a
  :class:`~pot_sns.kernels.base.HessianBlock` (``matvec``, ``rmatvec``,
  ``sq_matvec``, ``sq_rmatvec``, ``nnz``);
- ``plan(u, v)``, ``errstate()``, ``at_reg(reg)``.

Kernels, all direct subclasses of ``Kernel``:

- :class:`~pot_sns.kernels.numpy.NumpyKernel` (numpy; the plan kept in
  kernel form, BLAS mat-vecs, scipy CSR blocks);
- :class:`~pot_sns.kernels.torch_cpu.TorchCPUKernel` (torch CPU tensors: an
  adapter that runs a ``NumpyKernel`` on the tensors' memory);
- :class:`~pot_sns.kernels.torch.TorchKernel` (torch on CUDA, and CPU
  dtypes numpy lacks);
- :class:`~pot_sns.kernels.cupy.CupyKernel`, a
  :class:`~pot_sns.kernels.fused.FusedKernel` (fused CUDA passes);
- :class:`~pot_sns.kernels.base.DenseKernel` (``nx`` operations only: jax,
  tensorflow).
"""

from .base import DenseKernel, HessianBlock, Kernel
from .numpy import NumpyKernel


def make_kernel(nx, M, reg, bin_width=0.5, n_bins=120):
    """Return the kernel object for backend ``nx`` and cost matrix ``M``.

    Parameters
    ----------
    nx : ot.backend.Backend
        POT backend of the inputs.
    M : array-like, shape (n, m)
        Cost matrix, already in the compute dtype.
    reg : float
        Entropic regularization.
    bin_width, n_bins : float, int
        Histogram layout used to pick sparsity thresholds.

    Returns
    -------
    kernel : Kernel
        The backend's kernel, or the generic :class:`DenseKernel`.
    """
    name = nx.__name__
    if name == "numpy":
        return NumpyKernel(nx, M, reg, bin_width, n_bins)
    if name == "torch":
        try:
            from .torch import TorchKernel
            from .torch_cpu import DTYPES, TorchCPUKernel
        except ImportError:
            pass
        else:
            if M.device.type == "cpu" and M.dtype in DTYPES:
                return TorchCPUKernel(nx, M, reg, bin_width, n_bins)
            return TorchKernel(nx, M, reg, bin_width, n_bins)
    if name == "cupy":
        try:
            from .cupy import CupyKernel
        except ImportError:
            pass
        else:
            return CupyKernel(nx, M, reg, bin_width, n_bins)
    return DenseKernel(nx, M, reg, bin_width, n_bins)


__all__ = ["make_kernel", "Kernel", "HessianBlock", "DenseKernel"]
