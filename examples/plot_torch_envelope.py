# -*- coding: utf-8 -*-
"""
=====================================================
PyTorch: ``ot.solve(method="sns")`` and its gradients
=====================================================

``ot.solve`` with torch tensors returns torch tensors. With
``method="sns"``, the value carries the exact gradients at the optimum
(envelope theorem):

- the plan, for the cost matrix :math:`\\mathbf{M}`;
- the centred dual potentials, for the weights :math:`\\mathbf{a}` and
  :math:`\\mathbf{b}`.

SNS does not backpropagate through its Newton iterations. This example
checks these gradients, and those of the ``ot.sinkhorn2`` loss, against
POT's own log-domain Sinkhorn. It then uses them to move a point cloud onto
another one by gradient descent.
"""

# License: MIT License
# sphinx_gallery_thumbnail_number = 1

import matplotlib.pyplot as plt
import numpy as np
import ot
import torch

import pot_sns  # noqa: F401  (registers method="sns" with ot.solve)

##############################################################################
# Data
# ----
#
# The source positions ``x`` and the weights require gradients. The cost
# ``M = ot.dist(x, y)`` is computed by torch, so gradients flow back from
# ``M`` to ``x``. The costs are divided by a fixed scale, so that ``reg`` is
# relative to the largest initial cost.

torch.manual_seed(0)
n, reg = 100, 1e-2
x = torch.randn(n, 2, dtype=torch.float64, requires_grad=True)
y = torch.randn(n, 2, dtype=torch.float64) * torch.tensor([1.5, 0.3]) + 2.0
a = torch.full((n,), 1.0 / n, dtype=torch.float64, requires_grad=True)
b = torch.full((n,), 1.0 / n, dtype=torch.float64, requires_grad=True)
scale = float(ot.dist(x.detach(), y).max())

##############################################################################
# Envelope gradients
# ------------------
#
# ``grad="envelope"`` attaches the gradients to ``res.value``. The
# ``backward`` call then fills ``M.grad``, ``a.grad`` and ``b.grad``, and
# through the cost also ``x.grad``. With the uniform weights used here, POT's
# default ``grad="autodiff"`` gives the same gradients. The backends page of
# this documentation explains how the two modes differ for other weights.


def solve_and_backward(**kwargs):
    for t in (x, a, b):
        t.grad = None
    M = ot.dist(x, y) / scale
    M.retain_grad()
    res = ot.solve(M, a, b, reg=reg, grad="envelope", **kwargs)
    res.value.backward()
    return res, M.grad.clone(), [t.grad.clone() for t in (x, a, b)]


res, M_grad, (x_grad, a_grad, b_grad) = solve_and_backward(method="sns")
print("status:", res.status, "| value: %.8f" % res.value.item())
print("plan is a", type(res.plan).__name__, "of dtype", res.plan.dtype)
print("max |M.grad - plan|:", (M_grad - res.plan).abs().max().item())
log_u, log_v = res.potentials
print("max |a.grad - reg * (log_u - mean)|:",
      (a_grad - reg * (log_u - log_u.mean())).abs().max().item())

##############################################################################
# The same gradients from POT
# ---------------------------
#
# POT's ``ot.solve`` without a method runs ``sinkhorn_log``. With a tight
# tolerance, its envelope gradients agree with those of SNS.

ref, M_grad_ref, (x_grad_ref, a_grad_ref, b_grad_ref) = solve_and_backward(
    tol=1e-12, max_iter=100000)
for name, g_sns, g_pot in (("M", M_grad, M_grad_ref), ("x", x_grad, x_grad_ref),
                           ("a", a_grad, a_grad_ref), ("b", b_grad, b_grad_ref)):
    print("gradient w.r.t. %s: SNS vs POT sinkhorn_log, max difference %.1e"
          % (name, (g_sns - g_pot).abs().max().item()))

##############################################################################
# The gradient of ``ot.sinkhorn2``
# --------------------------------
#
# ``ot.sinkhorn2`` returns the linear loss :math:`\langle \mathbf{M},
# \gamma^\star \rangle`. POT differentiates it by autograd through its
# iterations. With ``method="sns"`` the loss carries the exact derivative at
# the optimum instead, computed by implicit differentiation (one conjugate
# gradient solve with the plan). The two agree.


def loss_and_grad(**kwargs):
    x.grad = None
    loss = ot.sinkhorn2(a.detach(), b.detach(), ot.dist(x, y) / scale, reg, **kwargs)
    loss.backward()
    return loss.item(), x.grad.clone()


loss_sns, gx_sns = loss_and_grad(method="sns")
loss_pot, gx_pot = loss_and_grad(method="sinkhorn_log", stopThr=1e-12, numItermax=100000)
print("sinkhorn2 loss: SNS %.10f, POT sinkhorn_log %.10f" % (loss_sns, loss_pot))
print("gradient of the loss w.r.t. x: max difference %.1e (largest entry %.1e)"
      % ((gx_sns - gx_pot).abs().max().item(), gx_pot.abs().max().item()))

##############################################################################
# Moving the source cloud
# -----------------------
#
# Gradient descent on the positions ``x`` lowers the entropic OT cost to the
# target ``y``. For uniform weights, the gradient for point :math:`x_i` is
# :math:`2 a_i (x_i - T(x_i)) / \mathrm{scale}`, where :math:`T` is the
# barycentric map of the plan. A step of ``scale / (2 a_i)`` times the
# gradient would therefore send each point to its barycentric image. This
# example takes a quarter of that step. Each solve is warm-started from the
# previous potentials with ``potentials_init``.

x_path = [x.detach().numpy().copy()]
values = []
potentials = None
for it in range(25):
    x.grad = None
    M = ot.dist(x, y) / scale
    res = ot.solve(M, a.detach(), b.detach(), reg=reg, method="sns",
                   grad="envelope", potentials_init=potentials)
    res.value.backward()
    potentials = res.potentials
    values.append(res.value.item())
    with torch.no_grad():
        x -= 0.25 * scale / (2 * a.detach()[:, None]) * x.grad
    x_path.append(x.detach().numpy().copy())

x_path = np.array(x_path)
fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
axes[0].plot(x_path[:, :, 0], x_path[:, :, 1], color="C0", alpha=0.3, lw=0.8)
axes[0].scatter(*x_path[0].T, s=10, c="C0", label="x, start")
axes[0].scatter(*x_path[-1].T, s=10, c="C2", label="x, after %d steps" % (len(x_path) - 1))
axes[0].scatter(*y.numpy().T, s=10, c="C1", marker="x", label="target y")
axes[0].legend(fontsize=8)
axes[0].set_title("gradient descent with SNS envelope gradients")
axes[1].semilogy(values, ".-")
axes[1].set_xlabel("step")
axes[1].set_ylabel("entropic OT value")
axes[1].set_title("value of ot.solve(..., method='sns')")
fig.tight_layout()
plt.show()
