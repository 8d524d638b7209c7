# -*- coding: utf-8 -*-
"""
=====================================
SNS on a GPU with cupy and torch CUDA
=====================================

pot_sns runs on the GPU when its inputs live there. This example times SNS
against POT's ``sinkhorn_log`` on the same device, first with cupy arrays
and then with torch CUDA tensors.

.. note::
    This script needs an NVIDIA GPU, and cupy (``pip install
    ".[gpu]"``) or a CUDA build of torch. The documentation is built on
    machines without a GPU, so this example is shown without being run
    (its file name does not start with ``plot_``). Run it yourself with
    ``python gpu_cupy_torch.py``. It skips a library that is missing or has
    no usable GPU.

The benchmark covers the same ground in more depth:
``python -m pot_sns.bench --device cuda``.
"""

# License: MIT License

import time
import warnings

import numpy as np
import ot

import pot_sns

##############################################################################
# A problem large enough for a GPU
# --------------------------------
#
# Two 2-D Gaussian point clouds with a squared Euclidean cost scaled to
# a maximum of 1. At ``n = 5000`` the cost matrix holds 25 million entries
# (200 MB in float64). The cost is built on the host here and copied to each
# device once. The copy is not part of the timings.

n, reg = 5000, 1e-3
rng = np.random.default_rng(0)
x = rng.normal(size=(n, 2))
y = rng.normal(size=(n, 2)) * [1.0, 0.5] + [1.0, 0.5]
M_host = ot.dist(x, y)
M_host /= M_host.max()
a_host, b_host = ot.unif(n), ot.unif(n)


def marginal_error(nx, P, a, b):
    return float(nx.sum(nx.abs(nx.sum(P, 1) - a)) + nx.sum(nx.abs(nx.sum(P, 0) - b)))


def benchmark(name, a, b, M, synchronize, tol, sinkhorn_iterations=2000):
    """Time SNS and POT's sinkhorn_log on arrays that are already on the GPU."""
    nx = ot.backend.get_backend(M)
    # the first call creates the CUDA context and compiles kernels: not timed
    pot_sns.sinkhorn_newton_sparse(a, b, M, reg, numItermax=30, warn=False)
    synchronize()

    t0 = time.perf_counter()
    P, log = pot_sns.sinkhorn_newton_sparse(a, b, M, reg, stopThr=tol, log=True)
    synchronize()
    t_sns = time.perf_counter() - t0

    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sinkhorn_log will not converge
        P_pot = ot.sinkhorn(a, b, M, reg, method="sinkhorn_log",
                            numItermax=sinkhorn_iterations, stopThr=tol)
    synchronize()
    t_pot = time.perf_counter() - t0

    print("%s, n=%d, reg=%g, %s, stopThr=%g" % (name, n, reg, M.dtype, tol))
    print("  SNS              %7.2f s  %4d iterations (%d Newton)  L1 error %.1e  [%s]"
          % (t_sns, log["niter"], log["n_newton"], marginal_error(nx, P, a, b),
             log["status"]))
    print("  POT sinkhorn_log %7.2f s  %4d iterations             L1 error %.1e"
          % (t_pot, sinkhorn_iterations, marginal_error(nx, P_pot, a, b)))
    return P


##############################################################################
# cupy
# ----
#
# cupy arrays select POT's cupy backend. The plan is evaluated by fused CUDA
# kernels, and the kept entries form a ``cupyx.scipy.sparse`` CSR matrix on
# the device.

try:
    import cupy as cp

    cp.zeros(1).sum()  # fails here when no usable GPU is present
except Exception as exc:  # ImportError, or a CUDA runtime error
    print("cupy skipped:", exc)
else:
    # float32 resolves marginals to about 1e-7 of the mass: a reachable tol
    for dtype, tol in ((cp.float64, 1e-9), (cp.float32, 1e-6)):
        a, b, M = (cp.asarray(t, dtype=dtype) for t in (a_host, b_host, M_host))
        P = benchmark("cupy", a, b, M, cp.cuda.Device().synchronize, tol)
    print("the plan stays on the GPU:", type(P).__module__)

##############################################################################
# torch on CUDA
# -------------
#
# The same call with CUDA tensors. ``ot.solve(..., method="sns")`` works as
# well, and its value carries envelope gradients, as on the CPU.

try:
    import torch
    if not torch.cuda.is_available():
        raise RuntimeError("torch has no CUDA device")
except Exception as exc:
    print("torch CUDA skipped:", exc)
else:
    device = torch.device("cuda")
    for dtype, tol in ((torch.float64, 1e-9), (torch.float32, 1e-6)):
        a, b, M = (torch.as_tensor(t, dtype=dtype, device=device)
                   for t in (a_host, b_host, M_host))
        P = benchmark("torch", a, b, M, torch.cuda.synchronize, tol)

    M = torch.as_tensor(M_host, device=device).requires_grad_()
    res = ot.solve(M, reg=reg, method="sns", grad="envelope")
    res.value.backward()
    print("ot.solve on", res.plan.device, "| status", res.status,
          "| max |M.grad - plan| =", float((M.grad - res.plan).abs().max()))

##############################################################################
# Reading the numbers
# -------------------
#
# - A float32 problem runs in float32 end to end, so it is solved here to
#   ``stopThr=1e-6``. With a threshold below float32's resolution, SNS
#   detects that the error no longer improves, stops with status
#   ``"stalled"`` and warns.
# - For small problems, kernel launches and the few scalars read back per
#   iteration (line search, conjugate gradient, threshold) dominate, so the
#   GPU pays off on large problems.
# - :doc:`../backends` explains memory use and the other GPU notes.
