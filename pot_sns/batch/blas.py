"""One BLAS thread while a task runs on a worker.

Each Dask worker thread solves one problem at a time; a multi-threaded BLAS
underneath would make every worker fight the others for the cores (see
``docs/batch.rst``). The limit is process-wide (it is a setting of the BLAS
library), so concurrent tasks of one worker process share it: the first task
to start sets it, the last one to finish restores the previous setting.
"""

import threading
from contextlib import contextmanager

_LOCK = threading.Lock()
_STATE = {"count": 0, "limiter": None, "controller": None}


def _controller():
    """One ``ThreadpoolController`` per process: finding the loaded BLAS
    libraries takes milliseconds, limiting them through it microseconds."""
    if _STATE["controller"] is None:
        from threadpoolctl import ThreadpoolController

        _STATE["controller"] = ThreadpoolController()
    return _STATE["controller"]


@contextmanager
def one_blas_thread():
    """Context manager: BLAS (OpenBLAS, MKL, BLIS) limited to one thread.

    Needs :mod:`threadpoolctl` (a dependency of the ``dask`` extra); without
    it nothing is changed (Dask's nannies already start workers with
    ``OMP_NUM_THREADS=1`` and ``OPENBLAS_NUM_THREADS=1``).

    Yields
    ------
    None

    Examples
    --------
    >>> from pot_sns.batch.blas import one_blas_thread
    >>> with one_blas_thread():
    ...     pass
    """
    with _LOCK:
        if _STATE["count"] == 0:
            try:
                controller = _controller()
            except ImportError:
                _STATE["limiter"] = None
            else:
                _STATE["limiter"] = controller.limit(limits=1, user_api="blas")
        _STATE["count"] += 1
    try:
        yield
    finally:
        with _LOCK:
            _STATE["count"] -= 1
            if _STATE["count"] == 0 and _STATE["limiter"] is not None:
                _STATE["limiter"].restore_original_limits()
                _STATE["limiter"] = None
