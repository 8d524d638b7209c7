"""Pytest plugin: a POT-style ``nx`` fixture over the installed, usable backends.

Load it from a top-level ``conftest.py``::

    pytest_plugins = ["pot_sns.testing"]

or on the command line with ``pytest -p pot_sns.testing``. It provides

- ``nx``: a fixture parametrized over POT's backends (numpy, torch, jax,
  cupy, tensorflow) that are importable *and* work here. A backend that POT
  detects but cannot use (typically cupy installed on a machine without a
  GPU) becomes a skipped parameter with the reason, instead of an error at
  collection;
- ``pytest.skip_arg`` and ``pytest.skip_backend``, the decorators POT's own
  test-suite uses (``@pytest.skip_backend("jax")``), so that POT's test files
  run unchanged;
- the backend settings POT's tests expect: float64 enabled in jax, numpy
  behaviour for tensorflow tensors.

Importing it imports :mod:`pot_sns`, which registers ``method="sns"`` with
POT; calls with any other method are unaffected, so the fixture can serve any
project that tests code over POT's backends.
"""

import functools

import numpy as np
import pytest

__all__ = ["usable_backends", "skip_arg", "skip_backend", "nx"]


def _configure_backends():
    """Settings POT's tests rely on; each only if that library is installed."""
    from ot import backend

    if backend.jax:
        backend.jax.config.update("jax_enable_x64", True)
    if backend.tf:
        try:
            from tensorflow.python.ops.numpy_ops import np_config

            np_config.enable_numpy_behavior()
        except ImportError:  # pragma: no cover - depends on the tf release
            pass


def _probe(nx):
    """Run a tiny computation: instantiating is not enough (a cupy without a
    usable GPU may fail only on the first kernel launch)."""
    x = nx.from_numpy(np.arange(3.0))
    total = float(nx.to_numpy(nx.sum(nx.exp(x * 0))))
    if total != 3.0:
        raise RuntimeError("a probe computation returned %r instead of 3.0" % total)


@functools.lru_cache(maxsize=None)
def usable_backends():
    """POT's backends detected in this environment, with their status.

    Returns
    -------
    tuple of (name, backend or None, reason)
        ``backend`` is the POT backend instance when it works, ``None``
        otherwise, and then ``reason`` says why (e.g. cupy without a GPU).

    Examples
    --------
    >>> from pot_sns.testing import usable_backends
    >>> name, nx, reason = usable_backends()[0]
    >>> name, nx.__name__, reason
    ('numpy', 'numpy', '')
    """
    from ot.backend import _get_backend_instance, get_available_backend_implementations

    out = []
    for impl in get_available_backend_implementations():
        # the class body sets __name__ = "numpy", "torch", ... (type.__name__ wins
        # on the class itself)
        name = vars(impl).get("__name__", impl.__name__)
        try:
            nx = _get_backend_instance(impl)
            _probe(nx)
        except Exception as err:  # any failure means: not usable here
            out.append((name, None, "POT backend %r is installed but not usable here: %s: %s"
                        % (name, type(err).__name__, str(err).splitlines()[0] if str(err)
                           else "")))
        else:
            out.append((name, nx, ""))
    return tuple(out)


def _backend_params():
    params = []
    for name, nx, reason in usable_backends():
        if nx is None:
            params.append(pytest.param(None, id=name, marks=pytest.mark.skip(reason=reason)))
        else:
            params.append(pytest.param(nx, id=name))
    return params


def skip_arg(arg, value, reason=None, getter=lambda x: x):
    """Decorator: skip a test when its arguments ``arg`` equal ``value``.

    Parameters
    ----------
    arg : str or tuple of str
        Name(s) of the test's (fixture or parametrized) arguments.
    value : object or tuple
        Value(s) that trigger the skip, one per name.
    reason : str, optional
        Skip message.
    getter : callable or tuple of callables, optional
        Applied to each argument before the comparison (``str`` turns a
        backend into its name).

    Returns
    -------
    decorator : callable
        Wraps a test function; the wrapped test calls :func:`pytest.skip`
        when every named argument matches.

    Examples
    --------
    >>> @skip_arg(("nx", "method"), ("jax", "greenkhorn"), getter=str)
    ... def test_method(nx, method):
    ...     pass
    """
    names = tuple(arg) if isinstance(arg, (tuple, list)) else (arg,)
    if len(names) > 1 and isinstance(value, (tuple, list)):
        values = tuple(value)
    else:
        values = (value,)
    getters = tuple(getter) if isinstance(getter, (tuple, list)) else (getter,) * len(names)
    if not len(names) == len(values) == len(getters):
        raise ValueError("skip_arg needs one value and one getter per argument name, got "
                         "%d names, %d values, %d getters"
                         % (len(names), len(values), len(getters)))
    if reason is None:
        reason = "skipped for %s" % ", ".join(
            "%s=%r" % (n, v) for n, v in zip(names, values))

    def decorator(function):
        @functools.wraps(function)
        def wrapped(*args, **kwargs):
            if all(n in kwargs and g(kwargs[n]) == v for n, v, g in zip(names, values, getters)):
                pytest.skip(reason)
            return function(*args, **kwargs)

        return wrapped

    return decorator


#: ``@skip_backend("jax")`` skips a test for one value of its ``nx`` fixture.
skip_backend = functools.partial(skip_arg, "nx", getter=str)


@pytest.fixture(params=_backend_params())
def nx(request):
    """A POT backend (``ot.backend.Backend``): each usable one in turn."""
    return request.param


def pytest_configure(config):
    # POT's test files apply these decorators at import time
    if not hasattr(pytest, "skip_arg"):
        pytest.skip_arg = skip_arg
    if not hasattr(pytest, "skip_backend"):
        pytest.skip_backend = skip_backend
    _configure_backends()


def pytest_report_header(config):
    lines = []
    for name, nx, reason in usable_backends():
        lines.append("%s: %s" % (name, "usable" if nx is not None else reason))
    return "pot_sns.testing backends: " + "; ".join(lines)
