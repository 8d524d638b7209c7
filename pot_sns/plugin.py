r"""Hook SNS into POT: ``method="sns"`` for :func:`ot.solve`, :func:`ot.solve_sample`,
:func:`ot.sinkhorn` and :func:`ot.sinkhorn2`.

POT has no solver registry, so :func:`register` wraps the four functions and
rebinds each wrapper wherever a loaded ``ot`` module holds the original
(``ot.solve``, ``ot.solvers.solve``, the module global ``ot.solvers._linear.solve``
that :func:`ot.solve_sample` calls, ``ot.bregman.sinkhorn``, the copies imported
by ``ot.da``, ``ot.bregman._empirical``, ...). A wrapper looks at ``method``
only: anything but ``"sns"`` / ``"sinkhorn_newton_sparse"`` (any case) calls the
original function object with the very same arguments, so POT behaves exactly
as before. :func:`unregister` puts the originals back in every place that
holds a wrapper.

A ``from ot import solve`` executed before :func:`register` keeps POT's own
function; import :mod:`pot_sns` first, or call ``ot.solve`` through the module.
"""

import contextvars
import functools
import inspect
import numbers
import sys
import threading
import warnings

from ot.utils import OTResult

from . import implicit, validation
from .api import sinkhorn_newton_sparse, sinkhorn_newton_sparse2, solve_checked
from .unbalanced import routing as _unbalanced

#: Method names that select SNS (compared case-insensitively).
SNS_METHODS = ("sns", "sinkhorn_newton_sparse")

#: The POT functions that gain ``method="sns"`` (the unbalanced ones run
#: :mod:`pot_sns.unbalanced.routing`).
TARGETS = ("solve", "solve_sample", "sinkhorn", "sinkhorn2") + tuple(_unbalanced.IMPLS)

_GRAD_MODES = ("autodiff", "envelope", "detach", "last_step")

# ot.solve_sample(method="sns") runs POT's own solve_sample with method=None
# (POT rejects unknown methods before computing the cost) and this flag tells
# the ot.solve wrapper it then reaches to take the SNS branch.
_FORCE_SNS = contextvars.ContextVar("pot_sns_force_sns", default=False)

_LOCK = threading.RLock()
_ORIGINALS = {}  # target name -> POT's function object
_WRAPPERS = {}  # target name -> our wrapper (one object per session)

_NOTE = """

    .. note:: pot_sns is registered: ``method="sns"`` (alias
       ``"sinkhorn_newton_sparse"``, any case) runs the Sinkhorn-Newton-Sparse
       solver, see :func:`pot_sns.plugin.{name}`. Other methods run POT's code
       unchanged.
"""


def is_sns(method):
    """Whether ``method`` names the SNS solver.

    Parameters
    ----------
    method : object
        The ``method`` argument of a POT call.

    Returns
    -------
    sns : bool
        True for ``"sns"`` and ``"sinkhorn_newton_sparse"``, in any case.

    Examples
    --------
    >>> from pot_sns.plugin import is_sns
    >>> is_sns("SNS"), is_sns("sinkhorn_log"), is_sns(None)
    (True, False, False)
    """
    return isinstance(method, str) and method.lower() in SNS_METHODS


# ---------------------------------------------------------------------------
# ot.solve
# ---------------------------------------------------------------------------

def solve_sns(M, a=None, b=None, reg=None, c=None, reg_type="KL", unbalanced=None,
              unbalanced_type="KL", method="sns", n_threads=1, max_iter=None,
              plan_init=None, potentials_init=None, tol=None, verbose=False,
              grad="autodiff"):
    r"""The ``method="sns"`` branch of :func:`ot.solve`: balanced entropic OT.

    Solves

    .. math::
        \min_\mathbf{T} \quad \langle \mathbf{T}, \mathbf{M} \rangle_F
        + \lambda R(\mathbf{T})
        \quad \text{s.t.} \ \mathbf{T} \mathbf{1} = \mathbf{a}, \
        \mathbf{T}^T \mathbf{1} = \mathbf{b}, \ \mathbf{T} \geq 0

    with :math:`R(\mathbf{T}) = \mathrm{KL}(\mathbf{T} | \mathbf{a}\mathbf{b}^T)`
    (``reg_type="KL"``) or :math:`\sum_{ij} T_{ij}\log T_{ij}`
    (``reg_type="entropy"``) by :func:`pot_sns.sinkhorn_newton_sparse`. Both
    have the same optimal plan; ``value`` differs as in POT. Called by
    ``ot.solve(..., method="sns")``; the arguments are those of
    :func:`ot.solve`.

    Parameters
    ----------
    M : array-like, shape (dim_a, dim_b)
        Cost matrix.
    a, b : array-like, shape (dim_a,), (dim_b,), optional
        Weights with equal mass; ``None`` means uniform.
    reg : float
        Regularization weight, > 0 (``None`` or 0, exact OT, is not what SNS
        solves: use ``method=None``).
    c : None
        A custom reference measure is not supported.
    reg_type : {"KL", "entropy"}, optional
        Regularization term (any case).
    unbalanced : None
        Only balanced OT is supported.
    unbalanced_type : str
        Ignored, as in POT, since ``unbalanced`` is None.
    method : str
        ``"sns"`` or ``"sinkhorn_newton_sparse"``.
    n_threads : int
        Ignored (as by POT's Sinkhorn solvers).
    max_iter : int, optional
        Iteration budget (Sinkhorn sweeps and Newton steps together),
        default 1000 as POT.
    plan_init : None
        Ignored, as by POT's Sinkhorn branch.
    potentials_init : tuple of arrays, optional
        ``(log_u, log_v)``, e.g. ``res.potentials`` of a previous solve: used
        as a warm start (POT's Sinkhorn branch ignores it).
    tol : float, optional
        Stop when the 2-norm of the marginal violation is below ``tol``,
        default 1e-9 as POT.
    verbose : bool, optional
        Print the SNS progress table.
    grad : {"autodiff", "envelope", "detach", "last_step"}, optional
        Gradients of ``value`` (torch, jax, tensorflow):

        - ``"envelope"``: as POT's envelope mode, ``value`` gets the
          gradients ``plan`` w.r.t. ``M`` and
          ``reg * (log_u - mean(log_u))``, ``reg * (log_v - mean(log_v))``
          w.r.t. ``a`` and ``b``; other outputs are detached.
        - ``"autodiff"``: SNS does not backpropagate through its Newton
          iterations; ``value`` gets the exact gradient at the optimum
          instead: ``plan`` w.r.t. ``M`` and the centred dual potentials
          w.r.t. ``a`` and ``b`` (``f = reg * (log_u - log a)``,
          ``g = reg * (log_v - log b)`` for ``"KL"``, ``reg * log_u``,
          ``reg * log_v`` for ``"entropy"``), which is what POT's autodiff
          converges to. ``value_linear`` gets the exact gradient of
          ``<M, plan>`` at the optimum when ``M``, ``a`` or ``b`` records
          gradients (torch; implicit differentiation, one CG solve, see
          :mod:`pot_sns.implicit`). ``plan`` is detached.
        - ``"detach"``: no gradients.
        - ``"last_step"``: as POT, ``max_iter - 1`` iterations without
          gradients, then one log-domain Sinkhorn step through which all
          outputs are differentiable.

    Returns
    -------
    res : ot.utils.OTResult
        ``plan``, ``value``, ``value_linear`` (computed exactly as POT does),
        ``potentials=(log_u, log_v)``, ``status`` (``"converged"``,
        ``"max_iter"`` or ``"stalled"``) and ``log``, the SNS diagnostics of
        :func:`pot_sns.sinkhorn_newton_sparse`.

    Raises
    ------
    ValueError
        ``reg`` is None or 0, ``b`` has several histograms, unknown ``grad``,
        or an invalid argument (named in the message).
    NotImplementedError
        ``unbalanced``, ``c``, or a ``reg_type`` other than ``"KL"`` /
        ``"entropy"``: SNS does not solve these problems, and no other
        solver is run in its place.

    Notes
    -----
    Gradients w.r.t. the weights are defined up to a constant (the masses
    must stay equal), hence the centring. For ``"KL"`` with non-uniform
    weights POT's envelope formula differs from the exact gradient by
    ``reg * (log a - mean(log a))``; ``grad="envelope"`` reproduces POT and
    ``grad="autodiff"`` the exact gradient.

    Examples
    --------
    >>> import numpy as np, ot, pot_sns
    >>> M = np.array([[0., 1.], [1., 0.]])
    >>> res = ot.solve(M, reg=1.0, method="sns")
    >>> res.plan
    array([[0.36552929, 0.13447071],
           [0.13447071, 0.36552929]])
    """
    if unbalanced is not None:  # unbalanced entropic OT: pot_sns.unbalanced
        return _unbalanced.solve_unbalanced_sns(
            M, a, b, reg, c, reg_type, unbalanced, unbalanced_type, method, n_threads,
            max_iter, plan_init, potentials_init, tol, verbose, grad)
    _check_supported(reg, c, reg_type, unbalanced, grad)
    if max_iter is None:
        max_iter = 1000
    if tol is None:
        tol = 1e-9
    max_iter, tol = validation.check_iteration_args(max_iter, tol, ("max_iter", "tol"))
    if grad == "last_step" and max_iter < 2:
        raise ValueError(
            "max_iter must be >= 2 with grad='last_step' (method='sns' runs max_iter - 1 "
            "iterations, then one differentiable Sinkhorn step), got %r" % max_iter)
    n_iter = max_iter - 1 if grad == "last_step" else max_iter
    p = validation.check_problem(
        a, b, M, reg, n_iter, tol, potentials_init,
        names={"numItermax": "max_iter", "stopThr": "tol", "warmstart": "potentials_init"},
        caller="ot.solve")
    if p.n_hists:
        raise ValueError("b must be a 1-D weight vector of shape (%d,) for ot.solve, got "
                         "shape %s (use ot.sinkhorn2 for several histograms)"
                         % (p.M.shape[1], tuple(p.b.shape)))
    nx, reg = p.nx, p.reg
    M0, a0, b0 = p.M, p.a, p.b  # the caller's arrays, which may require gradients
    M, a, b = nx.detach(M0, a0, b0)

    plan, log = solve_checked(p, verbose=verbose, warn=True)
    potentials = (log["log_u"], log["log_v"])

    if grad == "last_step":
        # the same differentiable step as POT's, from the SNS potentials
        loga = nx.log(a0)
        logb = nx.log(b0)
        v = logb - nx.logsumexp(-M0 / reg + potentials[0][:, None], 0)
        u = loga - nx.logsumexp(-M0 / reg + potentials[1][None, :], 1)
        plan = nx.exp(-M0 / reg + u[:, None] + v[None, :])
        potentials = (u, v)
        log["niter"] = max_iter
        log["log_u"] = u
        log["log_v"] = v
        log["u"] = nx.exp(u)
        log["v"] = nx.exp(v)

    # value and value_linear: POT's formulas, term for term
    value_linear = nx.sum(M * plan)
    if reg_type.lower() == "entropy":
        value = value_linear + reg * nx.sum(plan * nx.log(plan + 1e-16))
    else:
        if nx.any(a == 0) or nx.any(b == 0):
            a = a + 1e-15 * nx.min(a)
            b = b + 1e-15 * nx.min(b)
            print("Warning: a or b has 0 mass, adding small mass to avoid NaN in KL "
                  "divergence.")
        value = value_linear + reg * nx.kl_div(plan, a[:, None] * b[None, :] + 1e-15)

    if grad in ("envelope", "autodiff") and nx.__name__ not in ("numpy", "cupy"):
        # numpy and cupy carry no gradients (their set_gradients is a no-op):
        # skip the O(nm) work of the exact potentials there
        grads = _value_gradients(nx, M, plan, potentials, reg, reg_type, grad)
        value = nx.set_gradients(value, (M0, a0, b0), grads)
    if grad == "autodiff" and implicit.requires_grad(M0, a0, b0):
        gM, ga, gb = implicit.linear_loss_gradients(nx, M, plan, reg)
        value_linear = implicit.attach(nx, value_linear, [(M0, gM), (a0, ga), (b0, gb)])

    return OTResult(potentials=potentials, value=value, value_linear=value_linear,
                    plan=plan, status=log["status"], backend=nx, log=log)


def _check_supported(reg, c, reg_type, unbalanced, grad):
    """Refuse, with what SNS supports, the problems it does not solve."""
    if reg is None or (isinstance(reg, numbers.Real) and not isinstance(reg, bool)
                       and reg == 0):
        raise ValueError(
            "method='sns' solves entropic OT and needs reg > 0, got reg=%r; for exact OT "
            "use ot.solve without method (network simplex)" % (reg,))
    if unbalanced is not None:
        raise NotImplementedError(
            "method='sns' solves balanced entropic OT only (unbalanced=None), got "
            "unbalanced=%r; use method=None or 'sinkhorn' for POT's unbalanced solvers"
            % (unbalanced,))
    if c is not None:
        raise NotImplementedError(
            "method='sns' uses POT's default reference measure (c=None: a b^T for "
            "reg_type='KL', ones for 'entropy'); a custom c is not supported")
    if not isinstance(reg_type, str) or reg_type.lower() not in ("kl", "entropy"):
        raise NotImplementedError(
            "method='sns' supports reg_type 'KL' or 'entropy', got reg_type=%r"
            % (reg_type,))
    if grad not in _GRAD_MODES:
        raise ValueError("grad must be one of %s, got %r" % (", ".join(map(repr, _GRAD_MODES)),
                                                             grad))


def _value_gradients(nx, M, plan, potentials, reg, reg_type, grad):
    """Gradients of ``value`` w.r.t. ``(M, a, b)`` at the optimum."""
    log_u, log_v = potentials
    if grad == "autodiff" and reg_type.lower() == "kl":
        # KL's dual potentials f = reg (log_u - log a), g = reg (log_v - log b),
        # written as soft c-transforms: equal at the optimum, and finite where
        # a weight is zero (log a = -inf there)
        f = -reg * nx.logsumexp(log_v[None, :] - M / reg, 1)
        g = -reg * nx.logsumexp(log_u[:, None] - M / reg, 0)
    else:
        f, g = reg * log_u, reg * log_v
    f = f - nx.mean(f)
    g = g - nx.mean(g)
    if any(bool(nx.any(nx.isnan(x))) or bool(nx.any(nx.isinf(x))) for x in (f, g)):
        warnings.warn(
            "the gradients of value w.r.t. a and b are not finite: a weight is zero and "
            "reg_type=%r (or grad='envelope') has an infinite derivative there; use "
            "reg_type='KL' with grad='autodiff' for finite gradients" % (reg_type,),
            UserWarning, stacklevel=4)
    return plan, f, g


# ---------------------------------------------------------------------------
# ot.solve_sample, ot.sinkhorn, ot.sinkhorn2
# ---------------------------------------------------------------------------

def _solve_sample_sns(original, arguments):
    """``ot.solve_sample(..., method="sns")``: POT's own dense path (cost by
    :func:`ot.dist`, scaler, debiasing) with the solve done by SNS."""
    if arguments.get("lazy"):
        raise NotImplementedError(
            "method='sns' solves with the dense cost matrix ot.dist(X_a, X_b); "
            "lazy=True is not supported")
    arguments = dict(arguments, method=None, lazy=False)
    token = _FORCE_SNS.set(True)
    try:
        return original(**arguments)
    finally:
        _FORCE_SNS.reset(token)


def sinkhorn_sns(a, b, M, reg, method="sns", numItermax=1000, stopThr=1e-9,
                 verbose=False, log=False, warn=True, warmstart=None, **kwargs):
    """``ot.sinkhorn(..., method="sinkhorn_newton_sparse")`` (or ``"sns"``).

    Parameters
    ----------
    a, b, M, reg, numItermax, stopThr, verbose, log, warn, warmstart
        As in :func:`ot.sinkhorn`; see :func:`pot_sns.sinkhorn_newton_sparse`.
    method : str
        ``"sns"`` or ``"sinkhorn_newton_sparse"`` (any case).
    **kwargs
        SNS options (:class:`pot_sns.SNSOptions`); unknown names raise
        ``TypeError``.

    Returns
    -------
    gamma : array-like, shape (dim_a, dim_b)
        Optimal plan (losses when ``b`` has several histograms).
    log : dict
        Only when ``log=True``.

    Examples
    --------
    >>> import ot, pot_sns
    >>> ot.sinkhorn([.5, .5], [.5, .5], [[0., 1.], [1., 0.]], 1, method="sns")
    array([[0.36552929, 0.13447071],
           [0.13447071, 0.36552929]])
    """
    return sinkhorn_newton_sparse(a, b, M, reg, numItermax=numItermax, stopThr=stopThr,
                                  verbose=verbose, log=log, warn=warn,
                                  warmstart=warmstart, **kwargs)


def sinkhorn2_sns(a, b, M, reg, method="sns", numItermax=1000, stopThr=1e-9,
                  verbose=False, log=False, warn=False, warmstart=None, **kwargs):
    """``ot.sinkhorn2(..., method="sinkhorn_newton_sparse")`` (or ``"sns"``).

    With torch inputs that record gradients the loss carries the exact
    gradient of ``<M, P*>`` at the optimum (see
    :func:`pot_sns.sinkhorn_newton_sparse2`).

    Parameters
    ----------
    a, b, M, reg, numItermax, stopThr, verbose, log, warn, warmstart
        As in :func:`ot.sinkhorn2`; see :func:`pot_sns.sinkhorn_newton_sparse2`.
    method : str
        ``"sns"`` or ``"sinkhorn_newton_sparse"`` (any case).
    **kwargs
        SNS options (:class:`pot_sns.SNSOptions`).

    Returns
    -------
    W : float or array-like, shape (n_hists,)
        Linear loss ``<P, M>`` (one per histogram of ``b``).
    log : dict
        Only when ``log=True``.

    Examples
    --------
    >>> import ot, pot_sns
    >>> loss = ot.sinkhorn2([.5, .5], [.5, .5], [[0., 1.], [1., 0.]], 1, method="sns")
    >>> round(float(loss), 8)
    0.26894142
    """
    return sinkhorn_newton_sparse2(a, b, M, reg, numItermax=numItermax, stopThr=stopThr,
                                   verbose=verbose, log=log, warn=warn,
                                   warmstart=warmstart, **kwargs)


_IMPLS = {"solve": solve_sns, "sinkhorn": sinkhorn_sns, "sinkhorn2": sinkhorn2_sns,
          **_unbalanced.IMPLS}


def _bind(original, sig, impl, args, kwargs):
    """Arguments of a call to ``original`` as keywords for ``impl``, with
    POT's defaults. A parameter that a later POT adds and SNS does not know
    is accepted only at its default value."""
    bound = sig.bind(*args, **kwargs)
    bound.apply_defaults()
    arguments = dict(bound.arguments)
    for p in sig.parameters.values():
        if p.kind is p.VAR_KEYWORD:
            arguments.update(arguments.pop(p.name, {}))
    if impl is None:
        return arguments
    known = inspect.signature(impl).parameters
    if not any(q.kind is q.VAR_KEYWORD for q in known.values()):
        for name in [n for n in arguments if n not in known]:
            value = arguments.pop(name)
            if value is not sig.parameters[name].default:
                raise NotImplementedError(
                    "method='sns' does not support argument %r of %s" % (name, original.__name__))
    return arguments


def _make_wrapper(name, original):
    sig = inspect.signature(original)
    params = list(sig.parameters)
    position = params.index("method")  # POT's four functions all take `method`
    impl = _IMPLS.get(name)
    forced = name == "solve"  # only ot.solve follows the solve_sample flag

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        method = kwargs["method"] if "method" in kwargs else (
            args[position] if len(args) > position else None)
        if not is_sns(method) and not (forced and method is None and _FORCE_SNS.get()):
            return original(*args, **kwargs)
        arguments = _bind(original, sig, impl, args, kwargs)
        if impl is None:
            return _solve_sample_sns(original, arguments)
        return impl(**arguments)

    wrapper.__signature__ = sig
    wrapper.__doc__ = (original.__doc__ or "") + _NOTE.format(name=impl.__name__ if impl
                                                              else "solve_sns")
    wrapper.__pot_sns_original__ = original
    return wrapper


# ---------------------------------------------------------------------------
# registration
# ---------------------------------------------------------------------------

def _places(obj):
    """``(module, attribute)`` of every loaded ``ot`` module holding ``obj``."""
    found = []
    for modname, module in sorted(list(sys.modules.items()), key=lambda kv: kv[0]):
        if module is None or not (modname == "ot" or modname.startswith("ot.")):
            continue
        namespace = getattr(module, "__dict__", None)
        if not namespace:
            continue
        for attr, value in list(namespace.items()):
            if value is obj:
                found.append((module, attr))
    return found


def _rebind(old, new):
    for module, attr in _places(old):
        setattr(module, attr, new)


def register():
    """Make ``method="sns"`` available in :func:`ot.solve`, :func:`ot.solve_sample`,
    :func:`ot.sinkhorn` and :func:`ot.sinkhorn2` (done by ``import pot_sns``).

    Idempotent. Every call with another method runs POT's original function.

    Examples
    --------
    >>> import ot, pot_sns
    >>> pot_sns.register()
    >>> ot.solve.__wrapped__ is pot_sns.plugin.pot_function("solve")
    True
    """
    import ot

    with _LOCK:
        for name in TARGETS:
            current = getattr(ot, name)
            if getattr(current, "__pot_sns_original__", None) is not None:
                continue  # already registered
            if name not in _ORIGINALS or _ORIGINALS[name] is not current:
                _ORIGINALS[name] = current
                _WRAPPERS[name] = _make_wrapper(name, current)
            _rebind(current, _WRAPPERS[name])
        _unbalanced.register_da()
    from .batch import hooks as batch_hooks  # ot.batch.solve_batch(method="sns")
    batch_hooks.register()


def unregister():
    """Undo :func:`register`: POT's original functions are back in every place
    (``ot.solve``, ``ot.solvers._linear.solve``, ``ot.bregman.sinkhorn``, ...).

    Idempotent; :func:`register` can be called again afterwards.

    Examples
    --------
    >>> import ot, pot_sns
    >>> pot_sns.unregister()
    >>> ot.solve is pot_sns.plugin.pot_function("solve")
    True
    >>> pot_sns.register()
    >>> ot.solve is pot_sns.plugin.pot_function("solve")
    False
    """
    with _LOCK:
        for name, wrapper in _WRAPPERS.items():
            _rebind(wrapper, _ORIGINALS[name])
        _unbalanced.unregister_da()
    from .batch import hooks as batch_hooks
    batch_hooks.unregister()


def is_registered():
    """Whether ``method="sns"`` is currently available in POT.

    Returns
    -------
    registered : bool
        True when ``ot.solve`` is the pot_sns wrapper.

    Examples
    --------
    >>> import pot_sns
    >>> pot_sns.plugin.is_registered()
    True
    """
    import ot

    return getattr(ot.solve, "__pot_sns_original__", None) is not None


def pot_function(name):
    """POT's own function behind a wrapper.

    Parameters
    ----------
    name : {"solve", "solve_sample", "sinkhorn", "sinkhorn2"}
        Name of the function in :mod:`ot`.

    Returns
    -------
    function : callable
        The function POT defines (``ot.solvers._linear.solve`` for
        ``"solve"``), whether or not pot_sns is registered.

    Examples
    --------
    >>> import ot, pot_sns
    >>> ot.solve.__wrapped__ is pot_sns.plugin.pot_function("solve")
    True
    """
    import ot

    with _LOCK:
        if name in _ORIGINALS:
            return _ORIGINALS[name]
        if name not in TARGETS:
            raise ValueError("name must be one of %s, got %r" % (TARGETS, name))
        return getattr(ot, name)


def places(name):
    """Where the current ``ot.<name>`` object is bound.

    Parameters
    ----------
    name : {"solve", "solve_sample", "sinkhorn", "sinkhorn2"}
        Name of the function in :mod:`ot`.

    Returns
    -------
    places : list of str
        ``"module.attribute"`` for every loaded ``ot`` module holding it.

    Examples
    --------
    >>> import pot_sns
    >>> "ot.solvers._linear.solve" in pot_sns.plugin.places("solve")
    True
    """
    import ot

    return ["%s.%s" % (m.__name__, attr) for m, attr in _places(getattr(ot, name))]
