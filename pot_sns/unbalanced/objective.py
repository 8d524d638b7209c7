r"""The dual of entropic OT with KL marginal penalties, for :mod:`pot_sns.solver`.

The primal problem (POT's :func:`ot.unbalanced.sinkhorn_unbalanced`) is

.. math::
    \min_{P \geq 0} \ \langle P, M \rangle + \varepsilon R(P)
    + \rho_a \mathrm{KL}(P 1 | a) + \rho_b \mathrm{KL}(P^T 1 | b)

with the generalized KL, and ``R(P) = KL(P | a b^T)`` (``reg_type="kl"``)
or ``sum P (log P - 1)`` (``"entropy"``). With dual potentials ``f, g`` the
optimal plan is ``P_ij = c_ij exp((f_i + g_j - M_ij) / eps)`` (``c = a b^T``
or ones). In the solver's units (:mod:`pot_sns.objective`)
``P_ij = exp(u_i + v_j - M_ij / eps)`` with

    u = f / eps + o_a,     o_a = log a (KL) or 0 (entropy),

and the dual divided by ``eps`` is ``psi_a(u) + psi_b(v) - sum P`` with

    psi_a(u) = -(rho_a / eps) <a, exp(-(eps / rho_a) (u - o_a)) - 1>.

Its derivatives give the objective's pieces:

- target ``t_a(u) = a exp(-(eps / rho_a)(u - o_a))`` (the row sums the plan
  must have: ``P 1 = a exp(-f / rho_a)`` at the optimum);
- curvature ``h_a = (eps / rho_a) t_a`` (> 0: unlike the balanced dual the
  negative Hessian is definite, the Newton systems better conditioned);
- Sinkhorn update ``u = k (log a - lse) + (1 - k) o_a``,
  ``k = rho_a / (rho_a + eps)``: the balanced update damped towards ``o_a``.

``rho = inf`` is a hard marginal: ``k = 1``, ``t_a = a``, ``h_a = 0`` and
``psi_a(u) = <u, a>`` (the balanced terms), so semi-relaxed problems
(``inf`` on one side) use the same class.
"""

import math

from ..objective import Objective


def expm1(nx, x):
    """``exp(x) - 1`` in backend ``nx`` without cancellation near 0.

    POT's backends have no ``expm1``; the array libraries all do.

    Parameters
    ----------
    nx : ot.backend.Backend
        Backend of ``x``.
    x : array-like
        Exponents.

    Returns
    -------
    y : array-like
        ``expm1(x)``, same backend, dtype and device.

    Examples
    --------
    >>> import numpy as np
    >>> from ot.backend import get_backend
    >>> x = np.array([1e-12, 1.0])
    >>> expm1(get_backend(x), x)
    array([1.00000000e-12, 1.71828183e+00])
    """
    name = nx.__name__
    if name == "numpy":
        import numpy as np

        return np.expm1(x)
    if name == "torch":
        import torch

        return torch.expm1(x)
    if name == "cupy":  # pragma: no cover - needs a GPU
        import cupy

        return cupy.expm1(x)
    if name == "jax":  # pragma: no cover - optional backend
        import jax.numpy as jnp

        return jnp.expm1(x)
    if name == "tf":  # pragma: no cover - optional backend
        import tensorflow as tf

        return tf.math.expm1(x)
    # unknown backend: series near 0 (relative error < 1e-14 for |x| < 1e-3)
    small = nx.abs(x) < 1e-3
    series = x * (1 + x / 2 * (1 + x / 3 * (1 + x / 4)))
    return nx.where(small, series, nx.exp(x) - 1)


class UnbalancedObjective(Objective):
    """Dual of entropic OT with KL penalties on the marginals.

    Parameters
    ----------
    nx : ot.backend.Backend
        Backend of the weights.
    a, b : array-like, shapes (n,), (m,)
        Positive weights (any masses), in the compute dtype.
    reg : float
        Entropic regularization ``eps`` > 0.
    reg_m : tuple of float
        ``(rho_a, rho_b)``, each > 0 or ``inf`` (hard marginal).
    kl : bool, optional
        True for ``reg_type="kl"`` (offsets ``o = log a, log b``), False for
        ``"entropy"`` (offsets 0).

    Examples
    --------
    The row update maximizes the dual in ``u``: its gradient vanishes there.

    >>> import numpy as np
    >>> from ot.backend import get_backend
    >>> a, b = np.array([.5, .5]), np.array([.2, .7])
    >>> obj = UnbalancedObjective(get_backend(a), a, b, 0.1, (1.0, 1.0))
    >>> lse = np.array([0.3, -0.2])
    >>> u = obj.row_update(lse)
    >>> bool(np.allclose(obj.row_target(u), np.exp(u + lse)))
    True
    """

    def __init__(self, nx, a, b, reg, reg_m, kl=True):
        self.nx, self.a, self.b, self.reg = nx, a, b, float(reg)
        self.reg_m = tuple(float(r) for r in reg_m)
        self.kl = bool(kl)
        self.loga, self.logb = nx.log(a), nx.log(b)
        ma, mb = float(nx.sum(a)), float(nx.sum(b))
        self.mass = max(ma, mb)
        # The optimal marginals are a exp(-f/rho_a), b exp(-g/rho_b): they can
        # exceed the weights when the masses differ; the margin lifts the top
        # edge of the sparsity histogram above them (entries beyond it only
        # land in its first bin, always kept).
        self.top = (math.log(max(float(nx.max(a)), float(nx.max(b))))
                    + abs(math.log(ma / mb)) + 1.0)
        self._set_reg(self.reg)

    def _set_reg(self, reg):
        self.reg = float(reg)
        # s = eps / rho (0 for a hard marginal), k = rho / (rho + eps) = 1 / (1 + s)
        self.sa, self.sb = (0.0 if math.isinf(r) else self.reg / r for r in self.reg_m)
        self.ka, self.kb = 1.0 / (1.0 + self.sa), 1.0 / (1.0 + self.sb)

    def _offsets(self):
        return (self.loga, self.logb) if self.kl else (None, None)

    def start(self):
        # f = g = 0: P = c exp(-M / eps), the reference plan
        oa, ob = self._offsets()
        if oa is None:
            return self.a * 0, self.b * 0
        return oa, ob

    def at_reg(self, reg):
        new = object.__new__(UnbalancedObjective)
        new.__dict__.update(self.__dict__)
        new._set_reg(reg)
        return new

    def rescale(self, u, v, ratio):
        # same f = eps (u - o) at the new eps: u' = (u - o) * ratio + o
        oa, ob = self._offsets()
        if oa is None:
            return u * ratio, v * ratio
        return (u - oa) * ratio + oa, (v - ob) * ratio + ob

    def _update(self, logw, offset, k, lse):
        if k == 1.0:
            return logw - lse
        if offset is None:
            return k * (logw - lse)
        return k * (logw - lse) + (1.0 - k) * offset

    def row_update(self, lse):
        return self._update(self.loga, self._offsets()[0], self.ka, lse)

    def col_update(self, lse):
        return self._update(self.logb, self._offsets()[1], self.kb, lse)

    def _target(self, w, logw, offset, s, x):
        if s == 0.0:
            return w
        shifted = x if offset is None else x - offset
        # one exp of a sum: a * exp(...) would give 0 * inf = NaN on overflow
        return self.nx.exp(logw - s * shifted)

    def row_target(self, u):
        return self._target(self.a, self.loga, self._offsets()[0], self.sa, u)

    def col_target(self, v):
        return self._target(self.b, self.logb, self._offsets()[1], self.sb, v)

    def curvature(self, u, v):
        ha = None if self.sa == 0.0 else self.sa * self.row_target(u)
        hb = None if self.sb == 0.0 else self.sb * self.col_target(v)
        return ha, hb

    def _gain(self, w, t_x, s, dx, t):
        nx = self.nx
        if s == 0.0:
            return t * float(nx.dot(dx, w))
        # psi(x + t dx) - psi(x) = -(1/s) <t(x), expm1(-s t dx)>, exact near t = 0
        return -float(nx.dot(t_x, expm1(nx, (-s * t) * dx))) / s

    def gain(self, u, v, du, dv, t):
        return (self._gain(self.a, self.row_target(u), self.sa, du, t)
                + self._gain(self.b, self.col_target(v), self.sb, dv, t))

    def translate(self, u, v):
        """The best ``(u + lam, v - lam)``: the dual's exact maximum along the
        direction ``(1, -1)``, which leaves the plan unchanged.

        Along it only the marginal terms move:
        ``d/dlam = sum t_a(u + lam) - sum t_b(v - lam)
        = A exp(-s_a lam) - B exp(s_b lam)``, zero at
        ``lam = log(A / B) / (s_a + s_b)`` (``s = reg / rho``). This is the
        direction the curvature of the dual is smallest in (``s`` times the
        mass, a near-null direction when ``rho >> reg``) and where Sinkhorn
        and a damped Newton step crawl: when the masses differ the potentials
        must move by about ``rho / reg`` along it. O(n + m); no pass over the
        plan. Identity when both marginals are hard.

        Parameters
        ----------
        u, v : array-like
            Potentials.

        Returns
        -------
        u, v : array-like
            Translated potentials (the same plan, a higher dual).

        Examples
        --------
        >>> import numpy as np
        >>> from ot.backend import get_backend
        >>> from pot_sns.unbalanced.objective import UnbalancedObjective
        >>> a, b = np.array([.5, .5]), np.array([.2, .7])
        >>> obj = UnbalancedObjective(get_backend(a), a, b, 0.1, (1.0, 1.0))
        >>> u, v = obj.translate(np.zeros(2), np.zeros(2))
        >>> bool(np.isclose(obj.row_target(u).sum(), obj.col_target(v).sum()))
        True
        """
        s = self.sa + self.sb
        if s == 0.0:
            return u, v
        nx = self.nx
        ta, tb = float(nx.sum(self.row_target(u))), float(nx.sum(self.col_target(v)))
        if not (ta > 0 and tb > 0 and math.isfinite(ta) and math.isfinite(tb)):
            return u, v
        lam = math.log(ta / tb) / s
        return u + lam, v - lam

    def dual_potentials(self, u, v):
        """POT's potentials ``(f / eps, g / eps)`` (``logu``, ``logv`` of
        :func:`ot.unbalanced.sinkhorn_unbalanced`) from the solver's ``(u, v)``.

        Parameters
        ----------
        u, v : array-like
            The solver's potentials (the plan is ``exp(u + v - M / reg)``).

        Returns
        -------
        logu, logv : array-like
            POT's potentials (the KL form's ``log a``, ``log b`` removed).

        Examples
        --------
        >>> import numpy as np
        >>> from ot.backend import get_backend
        >>> from pot_sns.unbalanced.objective import UnbalancedObjective
        >>> a, b = np.array([.5, .5]), np.array([.2, .7])
        >>> obj = UnbalancedObjective(get_backend(a), a, b, 0.1, (1.0, 1.0))
        >>> logu, logv = obj.dual_potentials(np.zeros(2), np.zeros(2))
        >>> bool(np.allclose(logu, -np.log(a)))
        True
        """
        oa, ob = self._offsets()
        if oa is None:
            return u, v
        return u - oa, v - ob

    def solver_potentials(self, logu, logv):
        """The solver's ``(u, v)`` from POT's ``(f / eps, g / eps)`` (a warm start).

        Parameters
        ----------
        logu, logv : array-like
            POT's potentials, as in :meth:`dual_potentials`.

        Returns
        -------
        u, v : array-like
            The solver's potentials.

        Examples
        --------
        >>> import numpy as np
        >>> from ot.backend import get_backend
        >>> from pot_sns.unbalanced.objective import UnbalancedObjective
        >>> a, b = np.array([.5, .5]), np.array([.2, .7])
        >>> obj = UnbalancedObjective(get_backend(a), a, b, 0.1, (1.0, 1.0))
        >>> u, v = obj.solver_potentials(*obj.dual_potentials(np.ones(2), np.ones(2)))
        >>> bool(np.allclose(u, 1.0) and np.allclose(v, 1.0))
        True
        """
        oa, ob = self._offsets()
        if oa is None:
            return logu, logv
        return logu + oa, logv + ob
