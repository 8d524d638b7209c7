"""Unbalanced entropic OT (KL marginal penalties) with the SNS solver.

- :func:`sinkhorn_newton_sparse_unbalanced`,
  :func:`sinkhorn_newton_sparse_unbalanced2`: the solvers, with the
  arguments of :func:`ot.unbalanced.sinkhorn_unbalanced` (``api``);
- :class:`~pot_sns.unbalanced.objective.UnbalancedObjective`: the dual the
  shared Newton loop (:mod:`pot_sns.solver`) maximizes (``objective``);
- ``routing``: ``method="sns"`` in ``ot.solve(..., unbalanced=...)``,
  :func:`ot.unbalanced.sinkhorn_unbalanced` and ``ot.da``'s Sinkhorn
  transports;
- ``gradients``: exact gradients at the optimum; ``validation``: the
  argument checks.
"""

from .api import sinkhorn_newton_sparse_unbalanced, sinkhorn_newton_sparse_unbalanced2

__all__ = ["sinkhorn_newton_sparse_unbalanced", "sinkhorn_newton_sparse_unbalanced2"]
