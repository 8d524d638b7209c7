"""BLAS thread counts for a solve: as many as there are idle cores.

The dense kernels' mat-vecs run in BLAS (OpenBLAS for numpy wheels), whose
worker threads spin and wait for each other: when other processes hold the
cores, a mat-vec that takes 0.1 ms on an idle machine waits for a scheduler
time slice (milliseconds) instead, and a solve gets tens of times slower.
With one thread it only shares its core. So a solve samples, once, how many
threads of other processes are runnable, and caps BLAS at the cores left
(one when none is idle). BLAS itself stays single-threaded for small
mat-vecs, so the cap changes nothing on small problems, where the solve
skips the sample.

threadpoolctl (a dependency) sets the counts; without it the caps are not
applied and only this optimisation is lost.
"""

import contextlib
import os

#: smallest n-by-m (entries) for which BLAS may thread a mat-vec (OpenBLAS
#: stays single-threaded below about this size); smaller solves skip the
#: load sample
MIN_THREADED_SIZE = 1 << 18

_STATE = {}


def _blas():
    """threadpoolctl's controllers of the loaded BLAS libraries (cached), or
    an empty list without threadpoolctl."""
    if "blas" not in _STATE:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:  # optional at run time: only the caps are lost
            _STATE["blas"] = []
        else:
            ctl = ThreadpoolController().select(user_api="blas")
            _STATE["blas"] = list(ctl.lib_controllers)
    return _STATE["blas"]


def _runnable_others():
    """Threads of other processes runnable right now (Linux), or None.

    ``/proc/loadavg`` counts runnable threads system-wide, this one and
    this process's spinning BLAS workers included; those are subtracted.
    A one-minute load average would lag, and count this process's own
    earlier work as load.
    """
    try:
        with open("/proc/loadavg") as f:
            running = int(f.read().split()[3].split("/")[0])
        own = 0
        for tid in os.listdir("/proc/self/task"):
            try:
                with open("/proc/self/task/%s/stat" % tid) as f:
                    stat = f.read()
            except OSError:  # the thread ended meanwhile
                continue
            own += stat[stat.rindex(")") + 2] == "R"
    except (OSError, ValueError, IndexError):
        return None
    return max(0, running - max(own, 1))


def idle_cores():
    """Cores this process may use that no other process is running on."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    others = _runnable_others()
    if others is None:
        try:
            # the one-minute average includes this process: allow for one
            others = max(0.0, os.getloadavg()[0] - 1.0)
        except OSError:
            others = 0
    return max(1, int(cores - others))


@contextlib.contextmanager
def blas_threads(size):
    """Cap BLAS threads for a solve over an n-by-m array of ``size`` entries
    at the idle cores; restore the previous counts on exit."""
    libs = _blas() if size >= MIN_THREADED_SIZE else []
    saved = []
    if libs:
        cap = idle_cores()
        for lib in libs:
            k = lib.get_num_threads()
            if k is not None and k > cap:
                saved.append((lib, k))
                lib.set_num_threads(cap)
    try:
        yield
    finally:
        for lib, k in saved:
            lib.set_num_threads(k)
