"""Dual objectives driven by the SNS iteration (:mod:`pot_sns.solver`).

Potentials are kept in units of ``reg`` (``u = f / reg``, ``v = g / reg``,
sinkhorn_log's ``log_u``, ``log_v``) and the plan is always
``P_ij = exp(u_i + v_j - M_ij / reg)``: the kernels compute its row sums
``r = P 1`` and column sums ``c = P^T 1``. Every objective is a concave dual
of the form

.. math::
    D(u, v) = \\psi_a(u) + \\psi_b(v) - \\sum_{ij} P_{ij}

(divided by ``reg``), so that

- its gradient is ``(t_a(u) - r, t_b(v) - c)`` with the *targets*
  ``t_a = psi_a'`` and ``t_b = psi_b'``: the marginals the plan must have;
- its negative Hessian is ``[[diag(r + h_a), P], [P^T, diag(c + h_b)]]``
  with the *curvatures* ``h_a = -psi_a''``, ``h_b = -psi_b''`` (zero for
  the balanced dual, whose marginals are fixed);
- a Sinkhorn half-sweep maximises ``D`` in ``u`` exactly, given
  ``lse_i = log sum_j exp(v_j - M_ij / reg)``.

The solver only calls the methods of :class:`Objective`, so the balanced dual
(here) and the unbalanced ones (:mod:`pot_sns.unbalanced`) share one Newton
loop.
"""

import math


class Objective:
    """The contract of a dual objective (balanced: :class:`BalancedObjective`).

    Attributes
    ----------
    nx : ot.backend.Backend
        Backend of the arrays.
    reg : float
        Regularization the objective is written for.
    mass : float
        Scale of the marginals (tolerances and sparsity budgets are relative
        to it).
    top : float
        Log of an upper bound of the plan's entries near the optimum (top edge
        of the threshold histogram, see :mod:`pot_sns.sparsity`).

    Examples
    --------
    Every objective answers the same questions; the balanced one:

    >>> import numpy as np
    >>> from ot.backend import get_backend
    >>> from pot_sns.objective import BalancedObjective, Objective
    >>> a = np.array([.25, .75])
    >>> obj = BalancedObjective(get_backend(a), a, a, 0.1)
    >>> isinstance(obj, Objective), obj.row_target(np.zeros(2)), obj.curvature(a, a)
    (True, array([0.25, 0.75]), (None, None))
    """

    nx = None
    reg = None
    mass = 1.0
    top = 0.0

    def scaling_targets(self):
        """``(a, b)`` when a half-sweep sets the plan's sums to fixed
        weights (``u = log a - lse``: the balanced dual), else None.

        Kernels may then run Sinkhorn sweeps in scaling form,
        ``e^u = a / (K e^v)`` (see :meth:`Kernel.scaled_sweeps
        <pot_sns.kernels.base.Kernel.scaled_sweeps>`).

        Examples
        --------
        >>> import numpy as np
        >>> from ot.backend import get_backend
        >>> from pot_sns.objective import BalancedObjective
        >>> a = np.array([.25, .75])
        >>> BalancedObjective(get_backend(a), a, a, 0.1).scaling_targets()
        (array([0.25, 0.75]), array([0.25, 0.75]))
        """
        return None

    def start(self):
        """Initial potentials without a warm start.

        Returns
        -------
        u, v : array-like, shapes (n,), (m,)
            Start of the warm-up.

        Examples
        --------
        >>> import numpy as np
        >>> from ot.backend import get_backend
        >>> from pot_sns.objective import BalancedObjective
        >>> a = np.array([.25, .75])
        >>> obj = BalancedObjective(get_backend(a), a, a, 0.1)
        >>> obj.start()
        (array([0., 0.]), array([0., 0.]))
        """
        raise NotImplementedError

    def at_reg(self, reg):
        """The same objective at another regularization (epsilon scaling).

        Parameters
        ----------
        reg : float
            Regularization of the stage.

        Returns
        -------
        objective : Objective
            Marginal terms written for ``reg``.

        Examples
        --------
        >>> import numpy as np
        >>> from ot.backend import get_backend
        >>> from pot_sns.objective import BalancedObjective
        >>> a = np.array([.25, .75])
        >>> obj = BalancedObjective(get_backend(a), a, a, 0.1)
        >>> obj.at_reg(1.0).mass
        1.0
        """
        raise NotImplementedError

    def rescale(self, u, v, ratio):
        """Potentials at ``self.reg`` from those at ``ratio * self.reg``.

        Parameters
        ----------
        u, v : array-like
            Potentials in units of ``ratio * self.reg``.
        ratio : float
            Old regularization over the new one.

        Returns
        -------
        u, v : array-like
            The same dual potentials ``f, g`` in units of ``self.reg``.

        Examples
        --------
        >>> import numpy as np
        >>> from ot.backend import get_backend
        >>> from pot_sns.objective import BalancedObjective
        >>> a = np.array([.25, .75])
        >>> obj = BalancedObjective(get_backend(a), a, a, 0.1)
        >>> obj.rescale(np.ones(2), np.ones(2), 4.0)[0]
        array([4., 4.])
        """
        raise NotImplementedError

    def row_update(self, lse):
        """The ``u`` that maximises the dual for fixed ``v`` (half a Sinkhorn sweep).

        Parameters
        ----------
        lse : array-like, shape (n,)
            ``log sum_j exp(v_j - M_ij / reg)``.

        Returns
        -------
        u : array-like, shape (n,)
            New row potentials.

        Examples
        --------
        >>> import numpy as np
        >>> from ot.backend import get_backend
        >>> from pot_sns.objective import BalancedObjective
        >>> a = np.array([.25, .75])
        >>> obj = BalancedObjective(get_backend(a), a, a, 0.1)
        >>> np.allclose(np.exp(obj.row_update(np.zeros(2))), a)
        True
        """
        raise NotImplementedError

    def col_update(self, lse):
        """The ``v`` that maximises the dual for fixed ``u`` (half a Sinkhorn sweep).

        Parameters
        ----------
        lse : array-like, shape (m,)
            ``log sum_i exp(u_i - M_ij / reg)``.

        Returns
        -------
        v : array-like, shape (m,)
            New column potentials.

        Examples
        --------
        >>> import numpy as np
        >>> from ot.backend import get_backend
        >>> from pot_sns.objective import BalancedObjective
        >>> a = np.array([.25, .75])
        >>> obj = BalancedObjective(get_backend(a), a, a, 0.1)
        >>> np.allclose(np.exp(obj.col_update(np.zeros(2))), a)
        True
        """
        raise NotImplementedError

    def row_target(self, u):
        """``t_a(u)``: the row sums the plan must have at ``u``.

        Parameters
        ----------
        u : array-like, shape (n,)
            Row potentials.

        Returns
        -------
        t_a : array-like, shape (n,)
            Target row sums (the gradient is ``t_a - P 1``).

        Examples
        --------
        >>> import numpy as np
        >>> from ot.backend import get_backend
        >>> from pot_sns.objective import BalancedObjective
        >>> a = np.array([.25, .75])
        >>> obj = BalancedObjective(get_backend(a), a, a, 0.1)
        >>> obj.row_target(np.zeros(2))
        array([0.25, 0.75])
        """
        raise NotImplementedError

    def col_target(self, v):
        """``t_b(v)``: the column sums the plan must have at ``v``.

        Parameters
        ----------
        v : array-like, shape (m,)
            Column potentials.

        Returns
        -------
        t_b : array-like, shape (m,)
            Target column sums (the gradient is ``t_b - P^T 1``).

        Examples
        --------
        >>> import numpy as np
        >>> from ot.backend import get_backend
        >>> from pot_sns.objective import BalancedObjective
        >>> a = np.array([.25, .75])
        >>> obj = BalancedObjective(get_backend(a), a, a, 0.1)
        >>> obj.col_target(np.zeros(2))
        array([0.25, 0.75])
        """
        raise NotImplementedError

    def curvature(self, u, v):
        """Marginal terms of the negative Hessian's diagonal.

        Parameters
        ----------
        u, v : array-like
            Potentials.

        Returns
        -------
        h_a, h_b : array-like or None
            ``-psi_a''(u)``, ``-psi_b''(v)``; ``(None, None)`` when both are zero.

        Examples
        --------
        >>> import numpy as np
        >>> from ot.backend import get_backend
        >>> from pot_sns.objective import BalancedObjective
        >>> a = np.array([.25, .75])
        >>> obj = BalancedObjective(get_backend(a), a, a, 0.1)
        >>> obj.curvature(np.zeros(2), np.zeros(2))
        (None, None)
        """
        raise NotImplementedError

    def gain(self, u, v, du, dv, t):
        """Rise of the marginal terms along a step, without cancellation.

        Parameters
        ----------
        u, v : array-like
            Start point.
        du, dv : array-like
            Direction.
        t : float
            Step length.

        Returns
        -------
        gain : float
            ``psi_a(u + t du) + psi_b(v + t dv) - psi_a(u) - psi_b(v)``.

        Examples
        --------
        >>> import numpy as np
        >>> from ot.backend import get_backend
        >>> from pot_sns.objective import BalancedObjective
        >>> a = np.array([.25, .75])
        >>> obj = BalancedObjective(get_backend(a), a, a, 0.1)
        >>> float(obj.gain(np.zeros(2), np.zeros(2), np.ones(2), np.zeros(2), 0.5))
        0.5
        """
        raise NotImplementedError

    def translate(self, u, v):
        """The dual's exact maximum along ``(1, -1)``, which leaves the plan
        unchanged.

        Only the marginal terms move along that direction. The balanced dual
        is constant there (equal masses), so the default returns its
        arguments themselves; the unbalanced duals are strictly concave there
        but barely curved when ``reg_m >> reg``, where Sinkhorn sweeps and
        damped Newton steps crawl along it: they solve it in closed form.

        Parameters
        ----------
        u, v : array-like
            Potentials.

        Returns
        -------
        u, v : array-like
            Potentials of the same plan with the highest dual (the very
            objects passed in when nothing moves).

        Examples
        --------
        >>> import numpy as np
        >>> from ot.backend import get_backend
        >>> from pot_sns.objective import BalancedObjective
        >>> a = np.array([.25, .75])
        >>> obj = BalancedObjective(get_backend(a), a, a, 0.1)
        >>> u = np.zeros(2)
        >>> obj.translate(u, u)[0] is u
        True
        """
        return u, v


class BalancedObjective(Objective):
    """The dual of balanced entropic OT: ``psi_a(u) = <u, a>``.

    Its targets are the weights themselves and its curvature is zero; the
    negative Hessian is singular along ``(1, -1)`` (the solver shifts it).

    Parameters
    ----------
    nx : ot.backend.Backend
        Backend of the weights.
    a, b : array-like, shapes (n,), (m,)
        Positive weights of equal mass.
    reg : float
        Regularization.

    Examples
    --------
    A Sinkhorn half-sweep is ``row_update`` of the row log-sum-exps:

    >>> import numpy as np
    >>> from ot.backend import get_backend
    >>> from pot_sns.objective import BalancedObjective
    >>> a = np.array([.5, .5])
    >>> obj = BalancedObjective(get_backend(a), a, a, 1.0)
    >>> np.allclose(np.exp(obj.row_update(np.zeros(2))), a)
    True
    """

    def __init__(self, nx, a, b, reg):
        self.nx, self.a, self.b, self.reg = nx, a, b, reg
        self.loga, self.logb = nx.log(a), nx.log(b)
        self.mass = float(nx.sum(a))
        self.top = math.log(max(float(nx.max(a)), float(nx.max(b))))

    def start(self):
        return self.a * 0, self.b * 0

    def at_reg(self, reg):
        # the weights' terms do not depend on reg: the same object serves
        return self

    def rescale(self, u, v, ratio):
        return u * ratio, v * ratio

    def scaling_targets(self):
        return self.a, self.b

    def row_update(self, lse):
        return self.loga - lse

    def col_update(self, lse):
        return self.logb - lse

    def row_target(self, u):
        return self.a

    def col_target(self, v):
        return self.b

    def curvature(self, u, v):
        return None, None

    def gain(self, u, v, du, dv, t):
        nx = self.nx
        return t * (float(nx.dot(du, self.a)) + float(nx.dot(dv, self.b)))
