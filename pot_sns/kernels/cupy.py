"""cupy kernel: the fused CUDA passes of :mod:`.fused` and a cupyx CSR block.

Importing this module needs cupy (``pip install pot_sns[gpu]``); without it
:func:`pot_sns.kernels.make_kernel` never gets here, since POT only reports
the cupy backend for cupy arrays.
"""

import cupy
import cupyx.scipy.sparse

from . import fused

_MODULES = {}


class CupyLauncher:
    """Runs the kernels of :func:`fused.build_source` with ``cupy.RawModule``.

    The module is compiled (by NVRTC, cached on disk by CuPy) once per
    process, dtype, histogram size and device.
    """

    rows = fused.ROWS
    block = fused.BLOCK

    def __init__(self, dtype, n_bins, device):
        self.device = device
        key = (str(dtype), int(n_bins), device.id)
        with device:
            if key not in _MODULES:
                _MODULES[key] = cupy.RawModule(code=fused.build_source(dtype, n_bins))
            self.module = _MODULES[key]
        self._functions = {}

    def __call__(self, name, grid, args):
        with self.device:
            fn = self._functions.get(name)
            if fn is None:
                fn = self._functions[name] = self.module.get_function(name)
            fn((int(grid),), (self.block,), args)


class CupyKernel(fused.FusedKernel):
    """Kernel for cupy arrays: fused passes on the array's GPU, cupyx CSR
    mat-vecs (cuSPARSE), float32 or float64.

    Parameters
    ----------
    nx : ot.backend.CupyBackend
        POT's cupy backend.
    M : cupy.ndarray, shape (n, m)
        Cost matrix in the compute dtype.
    reg : float
        Entropic regularization.
    bin_width, n_bins : float, int
        Histogram layout used to pick sparsity thresholds.
    """

    name = "cupy"

    def __init__(self, nx, M, reg, bin_width=0.5, n_bins=120):
        launcher = CupyLauncher(M.dtype, n_bins, M.device)
        with M.device:
            super().__init__(nx, M, reg, bin_width, n_bins, cupy, cupyx.scipy.sparse,
                             launcher)
