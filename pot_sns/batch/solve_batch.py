"""``solve_batch``: POT's :func:`ot.batch.solve_batch` with every problem solved by SNS."""

import warnings

import numpy as np
from ot.utils import OTResult

from .. import implicit, validation
from ..plugin import SNS_METHODS, is_sns
from .problems import check_rows, check_settings
from .single import ENTROPY_EPS, solve_one

#: ``grad`` modes of :func:`ot.batch.solve_batch`
GRADS = ("detach", "autodiff", "last_step", "envelope")


def solve_batch(M, reg=None, a=None, b=None, max_iter=1000, tol=1e-5, method="sns",
                inner_iter=1, inner_reg=1e-3, reg_type="entropy", grad="envelope", **kwargs):
    r"""Solve a batch of entropic OT problems with SNS, as :func:`ot.batch.solve_batch`.

    Same arguments, conventions and result as POT's
    :func:`ot.batch.solve_batch` (``ot.batch.solve_batch(..., method="sns")``
    runs this function once pot_sns is imported): for each ``k``,

    .. math::
        \mathbf{T}_k = \mathop{\arg \min}_\mathbf{T} \quad
        \langle \mathbf{T}, \mathbf{M}_k \rangle_F + \mathrm{reg} \cdot R(\mathbf{T})
        \quad \text{s.t.} \ \mathbf{T} \mathbf{1} = \mathbf{a}_k, \
        \mathbf{T}^T \mathbf{1} = \mathbf{b}_k, \ \mathbf{T} \geq 0

    Each problem goes through the solver of ``ot.solve(..., method="sns")``
    (in a loop: SNS's sparse Newton steps differ from one problem to the
    next); the inputs are checked once, for the whole batch.

    Parameters
    ----------
    M : array-like, shape (B, n, m)
        Cost matrices (numpy, torch, ..., or nested lists).
    reg : float
        Regularization, > 0 (SNS solves entropic OT only).
    a : array-like, shape (B, n) or (n,), optional
        Source weights (None: uniform); a 1-D ``a`` is shared by all problems.
        Zero weights are allowed.
    b : array-like, shape (B, m) or (m,), optional
        Target weights, each ``b[k]`` of the mass of ``a[k]``.
    max_iter : int, optional
        Iteration budget of each problem.
    tol : float, optional
        Each problem stops when the 2-norm of its marginal violation is below
        ``tol`` (POT's default 1e-5; POT checks the row marginals only).
    method : str, optional
        ``"sns"`` or ``"sinkhorn_newton_sparse"`` (any case).
    inner_iter, inner_reg : optional
        Ignored (POT's proximal method only).
    reg_type : {"entropy", "KL"}, optional
        Regularization :math:`R` of ``value``: ``"entropy"``,
        :math:`\sum T \log T`, or ``"KL"``, :math:`\mathrm{KL}(T | a b^T)`
        (any case); POT's formulas term for term (a zero weight gives 0, not
        NaN, in the KL term).
    grad : {"envelope", "detach", "autodiff", "last_step"}, optional
        Gradients (torch): ``"envelope"`` (default) and ``"detach"`` as in
        POT (the plan is detached; ``value_linear`` and ``value`` follow
        ``M``); ``"last_step"`` as in POT's batch solver: ``max_iter - 1`` SNS
        iterations, then one log-domain Sinkhorn step through which all
        outputs are differentiable (its formulas term for term); ``"autodiff"``: SNS does not record its Newton
        steps, so ``value`` gets the exact gradients at the optimum (the
        plan w.r.t. ``M``, the centred dual potentials w.r.t. ``a``, ``b``)
        and ``value_linear`` the exact gradient of
        :math:`\langle M, T^\star\rangle` (implicit differentiation), which
        POT's autodiff converges to; the plan is detached.
    **kwargs
        SNS options (:class:`pot_sns.SNSOptions`).

    Returns
    -------
    res : ot.utils.OTResult
        ``plan`` (B, n, m), ``value`` and ``value_linear`` (B,),
        ``potentials`` ``(log_u, log_v)`` of shapes (B, n), (B, m) (POT's
        log-scalings), ``status`` (``"converged"`` when every problem did),
        ``log`` with ``n_iter`` (largest), and per problem ``niter``,
        ``status`` and ``err``. Arrays in the backend and dtype of ``M``.

    Raises
    ------
    ValueError, TypeError
        Before any solve, naming the argument (``M``, ``a[k]``, ``reg``,
        ``grad``, ...).

    Warns
    -----
    UserWarning
        Once, naming the problems that did not converge.

    Examples
    --------
    >>> import numpy as np, pot_sns
    >>> M = np.array([[[0., 1.], [1., 0.]], [[0., 2.], [2., 0.]]])
    >>> res = pot_sns.solve_batch(M, reg=1.0)
    >>> res.plan.shape, res.value_linear.round(6)
    ((2, 2, 2), array([0.268941, 0.238406]))
    """
    if not is_sns(method):
        raise ValueError("method must be one of %s (any case) for pot_sns.solve_batch, got %r; "
                         "POT's own methods are in ot.batch.solve_batch"
                         % (", ".join(map(repr, SNS_METHODS)), method))
    if reg is None or (not isinstance(reg, bool) and isinstance(reg, (int, float)) and reg == 0):
        raise ValueError("reg must be a number > 0: method='sns' solves entropic OT, got "
                         "reg=%r (use POT's method='proximal' for exact OT)" % (reg,))
    if grad not in GRADS:
        raise ValueError("grad must be one of %s, got %r" % (", ".join(map(repr, GRADS)), grad))
    s = check_settings(reg, reg_type, max_iter, tol, kwargs, "solve_batch", ("max_iter", "tol"))
    if grad == "last_step" and s.numItermax < 2:
        raise ValueError("max_iter must be >= 2 with grad='last_step', got %r" % (max_iter,))
    nx, M0, a0, b0 = _batch_arrays(M, a, b)
    M1, a1, b1 = _detached_common(nx, M0, a0, b0)
    n_iter = s.numItermax - 1 if grad == "last_step" else s.numItermax
    plans, us, vs, logs = [], [], [], []
    for k in range(M1.shape[0]):
        P, lg = solve_one(nx, M1[k], a1[k], b1[k], s, n_iter)
        plans.append(P)
        us.append(lg["log_u"])
        vs.append(lg["log_v"])
        logs.append(lg)
    T, u, v = nx.stack(plans, 0), nx.stack(us, 0), nx.stack(vs, 0)
    value_linear, value, T, u, v = _outputs(nx, (M0, a0, b0), (M1, a1, b1), T, u, v, s, grad)
    status = [str(lg["status"]) for lg in logs]
    _warn(status, s)
    log = {"n_iter": max(int(lg["niter"]) for lg in logs),
           "niter": [int(lg["niter"]) for lg in logs], "status": status,
           "err": [float(lg["err"][-1]) if len(lg["err"]) else np.nan for lg in logs]}
    return OTResult(potentials=(u, v), value=value, value_linear=value_linear, plan=T,
                    status="converged" if all(x == "converged" for x in status)
                    else "not_converged", backend=nx, log=log)


def _batch_arrays(M, a, b):
    """One backend for ``M``, ``a``, ``b``; shapes and values checked (O(B(n + m))
    on host copies of the weights, one reduction pair over ``M``)."""
    nx, a, b, M = validation.as_arrays(a, b, M)
    shape = tuple(M.shape)
    if len(shape) != 3 or 0 in shape:
        raise ValueError("M must be a non-empty 3-D array of shape (B, n, m) (one cost matrix "
                         "per problem), got shape %s" % (shape,))
    B, n, m = shape
    host = {}
    for name, w, size in (("a", a, n), ("b", b, m)):
        if w is None:
            w = validation.uniform_weights(nx, size, M[0])
        if len(w.shape) == 1:
            w = nx.stack([w] * B, 0)  # one histogram shared by the batch
        if tuple(w.shape) != (B, size):
            raise ValueError("%s must have shape (%d, %d) or (%d,) to match M of shape %s, got "
                             "shape %s" % (name, B, size, size, shape, tuple(w.shape)))
        host[name] = nx.to_numpy(nx.detach(w))
        if host[name].dtype.kind not in "biuf":
            raise TypeError("%s must hold real numbers, got dtype %s" % (name, host[name].dtype))
        if name == "a":
            a = w
        else:
            b = w
    kind = nx.to_numpy(M[:1, :1, :1]).dtype.kind
    if kind not in "biuf":
        raise TypeError("M must hold real numbers, got dtype %s" % nx.to_numpy(M[:1, :1, :1]).dtype)
    ma = check_rows(host["a"], "a", n, "M", shape)
    mb = check_rows(host["b"], "b", m, "M", shape)
    rtol = validation.mass_tolerance(host["a"].dtype, host["b"].dtype)
    dev = np.abs(mb - ma) / ma
    if (dev > rtol).any():
        k = int(np.argmax(dev))
        raise ValueError("b[%d] must have the mass of a[%d] (balanced OT): sum(a[%d])=%.10g, "
                         "sum(b[%d])=%.10g" % (k, k, k, ma[k], k, mb[k]))
    validation.check_cost_values(nx, M, "M")
    return nx, M, a, b


def _detached_common(nx, M, a, b):
    """Detached copies in POT's common float dtype (as ``ot.solve``)."""
    M, a, b = nx.detach(M, a, b)
    probe = M[:1, 0, 0] * 0 + a[:1, 0] * 0 + b[:1, 0] * 0
    if not nx.is_floating_point(probe):
        probe = probe * 1.0
    dtype = nx.dtype_device(probe)[0]
    return tuple(x if nx.dtype_device(x)[0] == dtype else x + probe[:1] for x in (M, a, b))


def _outputs(nx, given, detached, T, u, v, s, grad):
    """``value_linear`` and ``value`` by POT's batch formulas, with the
    gradients of ``grad``; returns them with the plan and potentials."""
    M0, a0, b0 = given
    M1, a1, b1 = detached
    reg = s.reg
    if grad == "last_step":
        # POT's batch last step, term for term, from the SNS potentials: u
        # then v differentiable in M, a, b, and the plan exp(K + u + v) with
        # K itself detached (as ot.batch does; ot.solve differs there)
        K = -M0 / reg
        u = nx.log(a0) - nx.logsumexp(K + v[:, None, :], axis=2)
        v = nx.log(b0) - nx.logsumexp(K + u[:, :, None], axis=1)
        T = nx.exp(nx.detach(K) + u[:, :, None] + v[:, None, :])
    Mv, av, bv = (M0, a0, b0) if grad in ("envelope", "last_step") else (M1, a1, b1)
    value_linear = nx.sum(Mv * T, axis=(1, 2))
    if s.reg_type == "entropy":
        value = value_linear + reg * nx.sum(T * nx.log(T + ENTROPY_EPS), axis=(1, 2))
    else:
        ref = av[:, :, None] * bv[:, None, :]
        # where a weight is zero the plan is too: 0 log 0 = 0 (POT: NaN)
        ref = nx.where(ref > 0, ref, nx.ones(ref.shape, type_as=ref))
        value = value_linear + reg * nx.sum(T * nx.log(T / ref + ENTROPY_EPS), axis=(1, 2))
    if grad == "autodiff" and implicit.requires_grad(M0, a0, b0):
        value = _attach(nx, value, given, _value_gradients(nx, M1, a1, T, u, v, reg,
                                                           s.reg_type))
        value_linear = _attach(nx, value_linear, given, _linear_gradients(nx, M1, T, reg))
    return value_linear, value, T, u, v


def _value_gradients(nx, M, a, T, u, v, reg, reg_type):
    """Gradients of the regularised value at the optimum w.r.t. (M, a, b):
    the plan and the centred dual potentials (soft c-transforms, finite
    where a weight is zero)."""
    if reg_type == "entropy":  # the entropy term adds reg * log(a), reg * log(b)
        f, g = reg * u, reg * v
    else:
        f = -reg * nx.logsumexp(v[:, None, :] - M / reg, axis=2)
        g = -reg * nx.logsumexp(u[:, :, None] - M / reg, axis=1)
    f = f - nx.mean(f, axis=1)[:, None]
    g = g - nx.mean(g, axis=1)[:, None]
    if not (np.isfinite(nx.to_numpy(f)).all() and np.isfinite(nx.to_numpy(g)).all()):
        warnings.warn("solve_batch: the gradients of value w.r.t. a and b are not finite (a "
                      "zero weight with reg_type='entropy'); use reg_type='KL' for finite "
                      "gradients", UserWarning, stacklevel=4)
    return T, f, g


def _linear_gradients(nx, M, T, reg):
    """Exact gradients of ``<M, T*>`` per problem (implicit differentiation)."""
    grads = [implicit.linear_loss_gradients(nx, M[k], T[k], reg) for k in range(M.shape[0])]
    return tuple(nx.stack([g[i] for g in grads], 0) for i in range(3))


def _attach(nx, value, inputs, grads):
    """``value`` (B,) with the gradients ``grads`` w.r.t. ``inputs`` for
    autograd: ``x - detach(x)`` is zero but has the identity derivative,
    so the sum below leaves ``value`` unchanged and routes ``grads``."""
    for x, g in zip(inputs, grads):
        if getattr(x, "requires_grad", False):
            axes = tuple(range(1, len(g.shape)))
            value = value + nx.sum((x - nx.detach(x)) * nx.detach(g), axis=axes)
    return value


def _warn(status, s):
    bad = [k for k, x in enumerate(status) if x != "converged"]
    if bad:
        shown = ", ".join("%d [%s]" % (k, status[k]) for k in bad[:10])
        more = "" if len(bad) <= 10 else ", ... (%d more)" % (len(bad) - 10)
        warnings.warn("solve_batch: %d of %d problems did not converge to tol=%g within "
                      "max_iter=%d: problems %s%s; increase max_iter or reg"
                      % (len(bad), len(status), s.stopThr, s.numItermax, shown, more),
                      UserWarning, stacklevel=3)
