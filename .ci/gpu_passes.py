"""Time the backend kernels' passes over M and one SNS solve on a GPU.

Run by .ci/gpu-check. For cupy and torch-CUDA (whichever is usable), at each
n: one evaluation (plan sums + histogram), one Sinkhorn sweep (row and column
log-sum-exp), one selection, one SNS solve of the paper's random assignment
(reg = 1e-3, stopThr = 1e-6 on the marginals) and POT's sinkhorn_log time per
iteration on the same device. Medians of a few repeats, after a warm-up.
"""

import statistics
import sys
import time

import numpy as np
import ot

import pot_sns
from pot_sns.kernels import make_kernel


def backends():
    found = []
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() > 0:
            found.append(("cupy", cupy.asarray, cupy.cuda.Device().synchronize))
    except Exception as e:  # noqa: BLE001 - report and go on
        print("cupy: not usable (%s)" % e)
    try:
        import torch

        if torch.cuda.is_available():
            found.append(("torch-cuda", lambda x: torch.as_tensor(x, device="cuda"),
                          torch.cuda.synchronize))
        else:
            print("torch-cuda: torch has no CUDA device (CPU build?)")
    except ImportError:
        print("torch-cuda: torch not installed")
    return found


def timed(fn, sync, repeat=5):
    fn()
    sync()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(sizes):
    reg = 1e-3
    for name, conv, sync in backends():
        for n in sizes:
            rng = np.random.default_rng(0)
            M = rng.random((n, n))
            a = b = np.full(n, 1.0 / n)
            Md, ad, bd = conv(M), conv(a), conv(b)
            nx = ot.backend.get_backend(Md)
            k = make_kernel(nx, Md, reg)
            u = conv(rng.normal(size=n) * 0.1)
            v = conv(np.log(b))
            top = float(np.log(1.0 / n))
            t_eval = timed(lambda: k.evaluate(u, v, top), sync)
            t_sweep = timed(lambda: k.row_lse(k.col_lse(u)), sync)
            k.evaluate(u, v, top)
            t_sel = timed(lambda: k.select(float(np.exp(top - 10))), sync)
            gb = M.nbytes / 1e9
            print("%-10s n=%-6d %s  evaluate %.2f ms (%.1f GB/s of M)  sweep %.2f ms  "
                  "select %.2f ms" % (name, n, type(k).__name__, 1e3 * t_eval,
                                      gb / t_eval, 1e3 * t_sweep, 1e3 * t_sel))
            sync()
            t = time.perf_counter()
            P, log = pot_sns.sinkhorn_newton_sparse(ad, bd, Md, reg, stopThr=1e-6, log=True,
                                                    warn=False)
            sync()
            t_sns = time.perf_counter() - t
            err = float(nx.sum(nx.abs(nx.sum(P, 1) - ad)) + nx.sum(nx.abs(nx.sum(P, 0) - bd)))
            t = time.perf_counter()
            ot.sinkhorn(ad, bd, Md, reg, method="sinkhorn_log", numItermax=100, stopThr=0,
                        warn=False)
            sync()
            t_pot = (time.perf_counter() - t) / 100
            print("%-10s n=%-6d SNS %.2f s (%s, %d Sinkhorn + %d Newton, L1 err %.1e); "
                  "POT sinkhorn_log %.2f ms/iteration" % (
                      name, n, t_sns, log["status"], log["n_sinkhorn"], log["n_newton"],
                      err, 1e3 * t_pot))
            del k, P, Md
    return 0


if __name__ == "__main__":
    sys.exit(main([int(x) for x in sys.argv[1:]] or [5000, 20000]))
