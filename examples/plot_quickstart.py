# -*- coding: utf-8 -*-
"""
========================================
Quick start: SNS next to ``ot.sinkhorn``
========================================

This example solves one small entropic OT problem between two point clouds,
with POT's :func:`ot.sinkhorn` and with
:func:`pot_sns.sinkhorn_newton_sparse`. It checks that both return the same
plan. It then lowers the regularization, so that Sinkhorn needs hundreds of
sweeps, while SNS still needs only a few dozen iterations.
"""

# License: MIT License
# sphinx_gallery_thumbnail_number = 2

import time

import matplotlib.pyplot as plt
import numpy as np
import ot
import ot.plot

import pot_sns

##############################################################################
# Data
# ----
#
# Two 2-D point clouds of different sizes with non-uniform weights. The
# squared Euclidean cost is scaled to a maximum of 1, so ``reg`` is relative
# to the largest cost.

rng = np.random.default_rng(42)
n, m = 120, 150
xs = rng.normal(size=(n, 2)) * [1.0, 0.5]
xt = np.concatenate([rng.normal(size=(m // 2, 2)) * 0.4 + [2.0, 1.0],
                     rng.normal(size=(m - m // 2, 2)) * 0.4 + [2.0, -1.0]])
# sorted by height, so that the plan shows its structure as an image
xs = xs[np.argsort(xs[:, 1])]
xt = xt[np.argsort(xt[:, 1])]
a = rng.uniform(0.5, 1.0, n)
a /= a.sum()
b = ot.unif(m)
M = ot.dist(xs, xt)
M /= M.max()

##############################################################################
# Solve with both solvers
# -----------------------
#
# Both functions take the same arguments, and with ``log=True`` both return
# the potentials and the error history. At ``reg=1e-2``, POT's default
# (kernel-domain) Sinkhorn and SNS both reach the tolerance ``stopThr=1e-9``.
# Sinkhorn converges fast at this ``reg``. SNS then keeps sweeping for as
# long as sweeps reduce the error quickly, so it may need few Newton steps,
# or none.

reg = 1e-2

t0 = time.perf_counter()
P_pot, log_pot = ot.sinkhorn(a, b, M, reg, stopThr=1e-9, numItermax=10000,
                             log=True)
t_pot = time.perf_counter() - t0

t0 = time.perf_counter()
P_sns, log_sns = pot_sns.sinkhorn_newton_sparse(a, b, M, reg, stopThr=1e-9,
                                                log=True)
t_sns = time.perf_counter() - t0


def marginal_error(P):
    return np.abs(P.sum(1) - a).sum() + np.abs(P.sum(0) - b).sum()


print("reg = %g" % reg)
print("POT sinkhorn     : %6d iterations, %.3f s, L1 marginal error %.1e"
      % (log_pot["niter"] + 1, t_pot, marginal_error(P_pot)))
print("SNS              : %6d iterations (%d Sinkhorn + %d Newton), %.3f s, "
      "L1 marginal error %.1e"
      % (log_sns["niter"], log_sns["n_sinkhorn"], log_sns["n_newton"], t_sns,
         marginal_error(P_sns)))
print("largest difference between the plans: %.1e" % np.abs(P_sns - P_pot).max())
print("<M, P>: POT %.10f, SNS %.10f" % (np.sum(M * P_pot), np.sum(M * P_sns)))

##############################################################################
# The two plans
# -------------
#
# On the left, the samples are linked by the largest entries of the SNS plan.
# The two plans on the right agree to the tolerance of the solvers.

fig, axes = plt.subplots(1, 3, figsize=(13, 4))
plt.sca(axes[0])
ot.plot.plot2D_samples_mat(xs, xt, P_sns, thr=0.1, c=[0.5, 0.5, 1])
axes[0].scatter(*xs.T, s=2000 * a, c="C0", label="source")
axes[0].scatter(*xt.T, s=10, c="C1", label="target")
axes[0].legend(loc="upper left")
axes[0].set_title("samples and SNS plan")
vmax = np.quantile(P_sns, 0.999)  # a few isolated points would dominate the max
for ax, P, name in ((axes[1], P_pot, "POT sinkhorn"), (axes[2], P_sns, "SNS")):
    ax.imshow(P, cmap="Blues", vmin=0, vmax=vmax, aspect="auto",
              interpolation="nearest")
    ax.set_title("plan, %s" % name)
    ax.set_xlabel("target index")
axes[1].set_ylabel("source index")
fig.tight_layout()

##############################################################################
# Smaller regularization
# ----------------------
#
# Sinkhorn slows down as ``reg`` decreases. At ``reg=1e-3``, the kernel
# :math:`e^{-M/\mathrm{reg}}` underflows in float64, so the log-domain
# ``method="sinkhorn_log"`` is needed. Its sweep count grows about tenfold,
# while SNS needs only a few more iterations. The error histories are
# plotted against the iteration count. An SNS iteration is either a
# Sinkhorn sweep or a Newton step; a Newton step costs about one pass over
# ``M`` plus sparse work.

reg = 1e-3
t0 = time.perf_counter()
P_pot, log_pot = ot.sinkhorn(a, b, M, reg, method="sinkhorn_log", stopThr=1e-9,
                             numItermax=10000, log=True)
t_pot = time.perf_counter() - t0

t0 = time.perf_counter()
P_sns, log_sns = pot_sns.sinkhorn_newton_sparse(a, b, M, reg, stopThr=1e-9,
                                                log=True)
t_sns = time.perf_counter() - t0

print("reg = %g" % reg)
print("POT sinkhorn_log : %6d iterations, %.3f s, L1 marginal error %.1e"
      % (log_pot["niter"] + 1, t_pot, marginal_error(P_pot)))
print("SNS              : %6d iterations, %.3f s, L1 marginal error %.1e (%s)"
      % (log_sns["niter"], t_sns, marginal_error(P_sns), log_sns["status"]))

fig, ax = plt.subplots(figsize=(6, 4))
# POT checks the error every 10 sweeps
ax.semilogy(np.arange(len(log_pot["err"])) * 10 + 1, log_pot["err"],
            label="POT sinkhorn_log")
ax.semilogy(np.arange(1, len(log_sns["err"]) + 1), log_sns["err"], ".-",
            label="SNS")
ax.axhline(1e-9, color="k", lw=0.8, ls="--", label="stopThr")
ax.set_xscale("log")
ax.set_xlabel("iteration")
ax.set_ylabel("marginal error")
ax.set_title("reg = %g" % reg)
ax.legend()
fig.tight_layout()
plt.show()
