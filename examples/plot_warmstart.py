# -*- coding: utf-8 -*-
"""
===================================================
Warm-starting a sequence of related problems
===================================================

Applications often solve many OT problems that differ only a little: frames
of a moving point cloud, iterations of an outer optimisation, or
bootstrap resamples. The potentials of one solution are then a good starting
point for the next problem.

With a warm start, SNS skips its Sinkhorn warm-up and starts Newton steps
right away. This example tracks a rotating target cloud over a few frames.
Each frame is solved from scratch and from the previous frame's potentials,
with :func:`pot_sns.sinkhorn_newton_sparse` (``warmstart=``) and with
``ot.solve(..., method="sns")`` (``potentials_init=``).
"""

# License: MIT License
# sphinx_gallery_thumbnail_number = 1

import time

import matplotlib.pyplot as plt
import numpy as np
import ot

import pot_sns

##############################################################################
# A sequence of problems
# ----------------------
#
# The source cloud is fixed. The target cloud turns by 0.05 radians per
# frame. Every frame uses the same cost scale, so ``reg`` means the same
# thing throughout the sequence.

rng = np.random.default_rng(0)
n, n_frames, reg = 500, 12, 1e-3
x = rng.normal(size=(n, 2))
y0 = rng.normal(size=(n, 2)) * [1.0, 0.4]
a, b = ot.unif(n), ot.unif(n)


def target(frame):
    angle = 0.05 * frame
    rot = np.array([[np.cos(angle), -np.sin(angle)],
                    [np.sin(angle), np.cos(angle)]])
    return y0 @ rot.T + [1.0, 0.0]


scale = ot.dist(x, target(0)).max()
costs = [ot.dist(x, target(k)) / scale for k in range(n_frames)]

##############################################################################
# Cold and warm solves
# --------------------
#
# ``warmstart=(log_u, log_v)`` takes the potentials in the convention of
# :func:`ot.bregman.sinkhorn_log`. These are the ``log_u`` and ``log_v``
# entries of the ``log`` dictionary of the previous solve.


def timed(fun, *args, **kwargs):
    t0 = time.perf_counter()
    out = fun(*args, **kwargs)
    return out, time.perf_counter() - t0


cold, warm = [], []
previous = None
for M in costs:
    (P_cold, log_cold), t_cold = timed(
        pot_sns.sinkhorn_newton_sparse, a, b, M, reg, log=True)
    cold.append((t_cold, log_cold["niter"]))
    if previous is None:  # the first frame has nothing to start from
        P_warm, log_warm, t_warm = P_cold, log_cold, t_cold
    else:
        (P_warm, log_warm), t_warm = timed(
            pot_sns.sinkhorn_newton_sparse, a, b, M, reg, log=True,
            warmstart=previous)
    warm.append((t_warm, log_warm["niter"]))
    assert log_warm["status"] == "converged"
    # same problem, same solution: the start point only changes the path
    assert np.abs(P_warm - P_cold).max() < 1e-8
    previous = (log_warm["log_u"], log_warm["log_v"])

cold, warm = np.array(cold), np.array(warm)
print("total time, cold starts: %.3f s (%d iterations)"
      % (cold[:, 0].sum(), cold[:, 1].sum()))
print("total time, warm starts: %.3f s (%d iterations)"
      % (warm[:, 0].sum(), warm[:, 1].sum()))

##############################################################################
# Iterations and time per frame
# -----------------------------
#
# From the second frame on, the warm-started solves need far fewer
# iterations than the cold ones. They gain less in time, because most of the
# iterations saved are the warm-up's Sinkhorn sweeps, which are cheaper than
# Newton steps.

frames = np.arange(n_frames)
fig, axes = plt.subplots(1, 3, figsize=(14, 4))
axes[0].scatter(*x.T, s=4, c="C0", label="source")
for k in (0, n_frames - 1):
    axes[0].scatter(*target(k).T, s=4, c="C1" if k == 0 else "C3",
                    label="target, frame %d" % k)
axes[0].set_title("the point clouds")
axes[0].legend(loc="upper left", fontsize=8)
axes[0].set_aspect("equal")
width = 0.4
for ax, col, what in ((axes[1], 1, "iterations"), (axes[2], 0, "time (s)")):
    ax.bar(frames - width / 2, cold[:, col], width, label="cold start")
    ax.bar(frames + width / 2, warm[:, col], width, label="warm start")
    ax.set_xlabel("frame")
    ax.set_ylabel(what)
    ax.legend()
axes[1].set_title("SNS iterations per frame")
axes[2].set_title("SNS wall time per frame")
fig.tight_layout()

##############################################################################
# The same with ``ot.solve``
# --------------------------
#
# POT's :func:`ot.solve` ignores ``potentials_init`` for entropic problems.
# With ``method="sns"``, it is used as a warm start. ``res.potentials`` is
# already in the expected ``(log_u, log_v)`` form.

res = None
iterations = []
for M in costs:
    init = None if res is None else res.potentials
    res = ot.solve(M, a, b, reg=reg, method="sns", potentials_init=init)
    iterations.append(res.log["niter"])
print("ot.solve iterations per frame:", iterations)

##############################################################################
# A note on changing ``reg``
# --------------------------
#
# The potentials are divided by ``reg``: ``log_u = f / reg``. To warm-start a
# problem at ``reg_new`` from a solution at ``reg_old``, pass
# ``(log_u * reg_old / reg_new, log_v * reg_old / reg_new)``. The
# starting point then has the same dual potentials ``f`` and ``g``.

plt.show()
