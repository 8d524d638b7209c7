"""Backend kernels: the dense passes over ``M`` and the sparse Hessian block.

This package is the only place that knows about a concrete array library.
:func:`make_kernel` picks the kernel that fits POT's backend ``nx``.
"""

from .base import DenseKernel


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
    kernel : DenseKernel
        A :class:`DenseKernel` or a backend-specific subclass.
    """
    name = nx.__name__
    if name == "numpy":
        from .numpy import NumpyKernel

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


__all__ = ["make_kernel", "DenseKernel"]
