"""``ot.batch.solve_batch(..., method="sns")``: route POT's batch solver to SNS.

As for :func:`ot.solve` (see :mod:`pot_sns.plugin`), POT has no solver
registry: :func:`register` wraps :func:`ot.batch.solve_batch` and rebinds the
wrapper wherever a loaded ``ot`` module holds POT's function (``ot.batch``
and the module global of ``ot.batch._linear`` that
:func:`ot.batch.solve_sample_batch` calls, so that one gains
``method="sns"`` too). Any other method calls POT's function with the very
same arguments. :func:`unregister` puts POT's function back.
"""

import functools
import inspect
import threading

from ..plugin import _rebind, is_sns

_LOCK = threading.RLock()
_STATE = {"original": None, "wrapper": None}


def _make_wrapper(original):
    from .solve_batch import solve_batch

    sig = inspect.signature(original)
    position = list(sig.parameters).index("method")
    known = inspect.signature(solve_batch).parameters

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        method = kwargs["method"] if "method" in kwargs else (
            args[position] if len(args) > position else None)
        if not is_sns(method):
            return original(*args, **kwargs)  # POT's code, untouched
        bound = sig.bind(*args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        for name in [n for n in arguments if n not in known]:
            # an argument that a later POT adds: accepted at its default only
            if arguments.pop(name) is not sig.parameters[name].default:
                raise NotImplementedError("method='sns' does not support argument %r of "
                                          "ot.batch.solve_batch" % name)
        return solve_batch(**arguments)

    wrapper.__signature__ = sig
    wrapper.__doc__ = (original.__doc__ or "") + (
        "\n\n    .. note:: pot_sns is registered: ``method=\"sns\"`` (alias "
        "``\"sinkhorn_newton_sparse\"``, any case) runs :func:`pot_sns.solve_batch`.\n")
    wrapper.__pot_sns_original__ = original
    return wrapper


def register():
    """Give :func:`ot.batch.solve_batch` the method ``"sns"`` (idempotent).

    Returns
    -------
    None

    Examples
    --------
    >>> import ot.batch, pot_sns
    >>> pot_sns.batch.hooks.register()
    >>> ot.batch.solve_batch.__pot_sns_original__ is pot_sns.batch.hooks.pot_solve_batch()
    True
    """
    try:
        import ot.batch._linear as linear
    except ImportError:  # a POT without ot.batch (< 0.9.6): nothing to hook
        return
    with _LOCK:
        current = linear.solve_batch
        if getattr(current, "__pot_sns_original__", None) is not None:
            return
        if _STATE["original"] is not current:
            _STATE["original"], _STATE["wrapper"] = current, _make_wrapper(current)
        _rebind(current, _STATE["wrapper"])


def unregister():
    """Put POT's :func:`ot.batch.solve_batch` back everywhere (idempotent).

    Returns
    -------
    None

    Examples
    --------
    >>> import ot.batch, pot_sns
    >>> pot_sns.batch.hooks.unregister()
    >>> ot.batch.solve_batch is pot_sns.batch.hooks.pot_solve_batch()
    True
    >>> pot_sns.batch.hooks.register()
    """
    with _LOCK:
        if _STATE["wrapper"] is not None:
            _rebind(_STATE["wrapper"], _STATE["original"])


def pot_solve_batch():
    """POT's own :func:`ot.batch.solve_batch`, registered or not.

    Returns
    -------
    function : callable

    Examples
    --------
    >>> import pot_sns
    >>> pot_sns.batch.hooks.pot_solve_batch().__module__
    'ot.batch._linear'
    """
    import ot.batch._linear as linear

    with _LOCK:
        return _STATE["original"] or linear.solve_batch
