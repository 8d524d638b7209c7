"""Backends: torch (CPU/CUDA), cupy, the fused CUDA source and the dense fallback.

The oracle is the numpy/scipy kernel (itself checked against POT's
``sinkhorn_log`` in test_core.py), POT's own dtype rules, and the marginal
constraints. GPU tests skip with a reason where no GPU is present; the CUDA
source still runs here through a CPU emulation (tests/cuda_emu.py).
"""

import shutil
import subprocess

import numpy as np
import ot
import pytest
import scipy.sparse as sp

import pot_sns
import pot_sns.api
from pot_sns.kernels import DenseKernel, fused, make_kernel
import pot_sns.kernels.numpy as npk
from pot_sns.kernels.numpy import NumpyKernel


def _torch():
    try:
        import torch
    except ImportError:
        return None, "torch is not installed"
    try:
        ot.backend.get_backend(torch.zeros(1))
    except Exception as e:  # e.g. POT_BACKEND_DISABLE_PYTORCH=1 (tox -e numpy)
        return None, "POT's torch backend is off: %s" % e
    return torch, ""


def _cupy():
    try:
        import cupy
    except ImportError:
        return None, ("cupy is not installed (it needs an NVIDIA GPU; .ci/install-cupy "
                      "installs it where there is one)")
    except Exception as e:  # broken CUDA install
        return None, "cupy cannot be imported: %s" % e
    try:
        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None, "cupy finds no CUDA device"
        ot.backend.get_backend(cupy.zeros(1))
    except Exception as e:
        return None, "no usable GPU for cupy: %s" % e
    return cupy, ""


# a warning leaking out of a backend kernel (e.g. torch's "sparse CSR is in
# beta") is a failure here
pytestmark = pytest.mark.filterwarnings("error")

torch, TORCH_SKIP = _torch()
cupy, CUPY_SKIP = _cupy()
needs_torch = pytest.mark.skipif(torch is None, reason=TORCH_SKIP)
needs_cupy = pytest.mark.skipif(cupy is None, reason=CUPY_SKIP)
HAS_CUDA = torch is not None and torch.cuda.is_available()
DEVICES = [
    pytest.param("cpu", marks=needs_torch),
    pytest.param("cuda", marks=[needs_torch, pytest.mark.skipif(
        not HAS_CUDA, reason="torch has no CUDA device here")]),
]
# n, m, uniform, reg: square, tall, wide; Sinkhorn-easy to Newton-heavy
CASES = [(60, 60, True, 1e-2), (80, 50, False, 1e-3), (40, 90, False, 1e-1)]


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The problems here are tiny: torch's (and MKL's) thread pools only add
    latency, and on a busy 2-core CI machine a descheduled worker costs
    milliseconds per op. Results do not depend on it."""
    if torch is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def torch_dtype(dtype):
    return {np.float32: torch.float32, np.float64: torch.float64}[dtype]


def to_torch(device, dtype, *arrays):
    return [torch.tensor(np.asarray(x), dtype=torch_dtype(dtype), device=device)
            for x in arrays]


def host(x):
    if torch is not None and isinstance(x, torch.Tensor):
        return x.detach().cpu().numpy()
    if cupy is not None and isinstance(x, cupy.ndarray):
        return cupy.asnumpy(x)
    return np.asarray(x)


def marginal_error(P, a, b):
    P, a, b = host(P), host(a), host(b)
    return np.sqrt(np.sum((P.sum(1) - a) ** 2) + np.sum((P.sum(0) - b) ** 2))


def random_potentials(n, m, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=n) * 0.3, rng.normal(size=m) * 0.3


# ----------------------------------------------------------------------------
# kernels against the numpy kernel


def check_kernel_against_numpy(kernel, M, reg, conv, rtol, seed=0):
    """Every pass of ``kernel`` against :class:`NumpyKernel` on the same data.

    ``conv`` moves a numpy vector into the kernel's backend.
    """
    dtype = M.dtype
    nxn = ot.backend.get_backend(M)
    ref = NumpyKernel(nxn, M, reg, kernel.bin_width, kernel.n_bins)
    n, m = M.shape
    u, v = (x.astype(dtype) for x in random_potentials(n, m, seed))
    close = dict(rtol=rtol, atol=0)
    np.testing.assert_allclose(host(kernel.row_lse(conv(v))), ref.row_lse(v), **close)
    np.testing.assert_allclose(host(kernel.col_lse(conv(u))), ref.col_lse(u), **close)
    top = float(np.log(0.05))
    r, c, (counts, mass) = kernel.evaluate(conv(u), conv(v), top)
    r0, c0, (counts0, mass0) = ref.evaluate(u, v, top)
    np.testing.assert_allclose(host(r), r0, **close)
    np.testing.assert_allclose(host(c), c0, **close)
    assert counts.sum() == n * m
    # float32 logits (and fused multiply-adds on GPUs) can round an entry to
    # the other side of a bin edge or of tau
    slack = 0 if dtype == np.float64 else 4 + 1e-4 * n * m
    assert np.abs(counts - counts0).sum() <= slack
    np.testing.assert_allclose(mass, mass0, rtol=0, atol=10 * rtol * mass0.sum())
    # the numpy kernel flushes entries below e^LOG_FLUSH * tiny to zero
    # (no subnormals on its hot path); other kernels may keep them
    flush = np.finfo(dtype).tiny * np.exp(npk.LOG_FLUSH)
    np.testing.assert_allclose(host(kernel.P), ref.P, rtol=rtol, atol=flush)
    np.testing.assert_allclose(host(kernel.plan(conv(u), conv(v))), ref.P, rtol=rtol, atol=flush)
    rng = np.random.default_rng(seed + 1)
    x, y = rng.normal(size=m).astype(dtype), rng.normal(size=n).astype(dtype)
    for j in (6, 14, 0):  # a few kept entries, many, none (tau = inf)
        tau = np.exp(top - j * kernel.bin_width) if j else np.inf
        S, S0 = kernel.select(tau), ref.select(tau)
        assert abs(S.nnz - S0.nnz) <= slack
        dense = S0.S.toarray()
        scale = max(np.abs(dense).max(), 1e-300)
        for got, want in ((S.matvec(conv(x)), dense @ x), (S.rmatvec(conv(y)), y @ dense),
                          (S.sq_matvec(conv(x)), (dense * dense) @ x),
                          (S.sq_rmatvec(conv(y)), y @ (dense * dense))):
            got = host(got)
            assert got.dtype == dtype
            np.testing.assert_allclose(got, want, rtol=0, atol=50 * rtol * scale * (m + n))


def test_dense_fallback_kernel_matches_numpy_kernel(problem):
    _, _, M = problem(37, 23, seed=1)
    nx = ot.backend.get_backend(M)
    check_kernel_against_numpy(DenseKernel(nx, M, 1e-2), M, 1e-2, lambda x: x, 1e-12)


def test_solve_with_dense_fallback_equals_numpy(problem, monkeypatch):
    """The kernel jax and tf get, forced on numpy arrays."""
    a, b, M = problem(70, 55, seed=2)
    P0, log0 = pot_sns.sinkhorn_newton_sparse(a, b, M, 1e-3, log=True)
    made = []

    def dense_only(nx, M, reg, bin_width=0.5, n_bins=120):
        made.append(DenseKernel(nx, M, reg, bin_width, n_bins))
        return made[-1]

    monkeypatch.setattr(pot_sns.api, "make_kernel", dense_only)
    P, log = pot_sns.sinkhorn_newton_sparse(a, b, M, 1e-3, log=True)
    assert made and type(made[0]) is DenseKernel
    assert log["status"] == "converged" and log["n_newton"] > 0
    np.testing.assert_allclose(P, P0, rtol=0, atol=1e-10)
    assert marginal_error(P, a, b) < 1e-9


def test_make_kernel_picks_the_backend_kernel(problem):
    _, _, M = problem(5, 4)
    assert type(make_kernel(ot.backend.get_backend(M), M, 1.0)) is NumpyKernel
    if torch is not None:
        from pot_sns.kernels.torch import TorchKernel
        from pot_sns.kernels.torch_cpu import TorchCPUKernel

        Mt = torch.tensor(M)
        k = make_kernel(ot.backend.get_backend(Mt), Mt, 1.0)
        # CPU tensors: the numpy kernel on their memory, no copy of M
        assert type(k) is TorchCPUKernel and np.shares_memory(k._k.M, Mt.numpy())
        if HAS_CUDA:
            Mg = Mt.cuda()
            assert type(make_kernel(ot.backend.get_backend(Mg), Mg, 1.0)) is TorchKernel
    if cupy is not None:
        from pot_sns.kernels.cupy import CupyKernel

        Mc = cupy.asarray(M)
        assert type(make_kernel(ot.backend.get_backend(Mc), Mc, 1.0)) is CupyKernel


@needs_torch
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("block", ["csr", "scatter"])
def test_torch_kernel_matches_numpy_kernel(problem, device, dtype, block, monkeypatch):
    from pot_sns.kernels import torch as tk

    _, _, M = problem(41, 29, seed=3)
    M = M.astype(dtype)
    # a few rows per pass, so that the passes cross block boundaries
    monkeypatch.setitem(tk.CHUNK, torch.device(device).type, 29 * 6)
    monkeypatch.setattr(tk, "CHUNK_DEFAULT", 29 * 6)
    Mt = to_torch(device, dtype, M)[0]
    kernel = tk.TorchKernel(ot.backend.get_backend(Mt), Mt, 1e-2, block=block)
    assert kernel.rows == 6
    rtol = 1e-12 if dtype == np.float64 else 2e-5
    check_kernel_against_numpy(kernel, M, 1e-2, lambda x: to_torch(device, dtype, x)[0], rtol)


@needs_torch
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_torch_sparse_blocks_match_dense_products(device, dtype):
    from pot_sns.kernels.torch import TorchCSRBlock, TorchScatterBlock

    rng = np.random.default_rng(4)
    n, m = 23, 31
    dense = rng.random((n, m)) * (rng.random((n, m)) < 0.15)
    dense[5] = 0.0  # an empty row
    dense[:, 7] = 0.0  # an empty column
    dense = dense.astype(dtype)
    x, y = rng.normal(size=m).astype(dtype), rng.normal(size=n).astype(dtype)
    tol = 1e-13 if dtype == np.float64 else 1e-5
    for pattern in (dense, np.zeros_like(dense)):
        rows, cols = np.nonzero(pattern)  # row-major order, as select makes them
        args = [torch.tensor(rows, device=device), torch.tensor(cols, device=device),
                to_torch(device, dtype, pattern[rows, cols])[0], (n, m)]
        xt, yt = to_torch(device, dtype, x, y)
        for cls in (TorchCSRBlock, TorchScatterBlock):
            S = cls(*args)
            assert S.nnz == len(rows)
            for got, want in ((S.matvec(xt), pattern @ x), (S.rmatvec(yt), y @ pattern),
                              (S.sq_matvec(xt), (pattern ** 2) @ x),
                              (S.sq_rmatvec(yt), y @ pattern ** 2)):
                assert got.dtype == xt.dtype and got.device == xt.device
                np.testing.assert_allclose(host(got), want, rtol=0, atol=tol)


@needs_torch
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_torch_dense_block_past_dense_density(problem, device, dtype, monkeypatch):
    """Many kept entries stay in the plan buffer (zeroed below tau), with the
    products of the masked plan; few give a sparse block."""
    from pot_sns.kernels.torch import TorchDenseBlock, TorchKernel

    a, b, M = problem(300, 250, seed=5)
    u, v = (x.astype(dtype) for x in random_potentials(300, 250, 3))
    Mt, ut, vt = to_torch(device, dtype, M.astype(dtype), u, v)
    k = TorchKernel(ot.backend.get_backend(Mt), Mt, 0.05)
    k.evaluate(ut, vt, 0.0)
    P = host(k.P).astype(np.float64)
    rng = np.random.default_rng(6)
    x, y = rng.normal(size=250).astype(dtype), rng.normal(size=300).astype(dtype)
    xt, yt = to_torch(device, dtype, x, y)
    tol = 1e-12 if dtype == np.float64 else 1e-4
    for q in (0.0, 0.5):  # every entry, then half of them
        tau = float(np.quantile(P, q)) if q else 0.0
        S = k.select(tau)
        assert isinstance(S, TorchDenseBlock)
        kept = np.where(P >= tau, P, 0.0)
        assert S.nnz == np.count_nonzero(P >= tau)
        for got, want in ((S.matvec(xt), kept @ x), (S.rmatvec(yt), y @ kept),
                          (S.sq_matvec(xt), (kept ** 2) @ x),
                          (S.sq_rmatvec(yt), y @ kept ** 2)):
            assert got.dtype == xt.dtype and got.device == xt.device
            scale = float(np.abs(kept).sum(1).max() * max(np.abs(x).max(), np.abs(y).max()))
            np.testing.assert_allclose(host(got), want, rtol=0, atol=tol * scale)
    k.evaluate(ut, vt, 0.0)
    assert not isinstance(k.select(float(np.quantile(P, 0.99))), TorchDenseBlock)


@needs_torch
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kernel", ["default", "TorchKernel"])
def test_torch_solve_with_dense_hessian_equals_numpy(problem, device, kernel, monkeypatch):
    """On the CPU the default is the numpy kernel on the tensors' memory; the
    torch kernel (CUDA's) is forced here too, so that it is tested on CPU."""
    from pot_sns.kernels.torch import TorchKernel

    a, b, M = problem(400, 300, seed=21)
    P0 = pot_sns.sinkhorn_newton_sparse(a, b, M, 1e-3, stopThr=1e-11)
    if kernel == "TorchKernel":
        monkeypatch.setattr(pot_sns.api, "make_kernel",
                            lambda nx, M, reg, *args: TorchKernel(nx, M, reg, *args))
    P, log = pot_sns.sinkhorn_newton_sparse(*to_torch(device, np.float64, a, b, M), 1e-3,
                                            log=True, stopThr=1e-11)
    assert log["status"] == "converged" and 1.0 in log["density"]
    np.testing.assert_allclose(host(P), P0, rtol=0, atol=1e-11)


# ----------------------------------------------------------------------------
# the fused CUDA kernels, run on the CPU


@pytest.fixture(scope="module")
def emulated(tmp_path_factory):
    """Launchers running the CUDA source of pot_sns.kernels.fused as C on the CPU."""
    import cuda_emu

    if cuda_emu.compiler() is None:
        pytest.skip("no C compiler to emulate the CUDA kernels")
    work = str(tmp_path_factory.mktemp("cuda_emu"))
    made = {}

    def launcher(dtype, rows=4, block=8):
        # 4 rows and 8 threads per block: small matrices cross every boundary
        key = (np.dtype(dtype), rows, block)
        if key not in made:
            made[key] = cuda_emu.EmulatedLauncher(dtype, 120, rows, block, work)
        return made[key]

    return launcher


def fused_numpy_kernel(launcher, nx, M, reg, bin_width=0.5, n_bins=120):
    if n_bins != 120:
        raise AssertionError("the emulated kernels are built for 120 bins")
    return fused.FusedKernel(nx, M, reg, bin_width, n_bins, np, sp, launcher, col_rows=5)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("rows,block", [(4, 8), (2, 64)])  # 64 threads: 2 warps
def test_fused_cuda_kernels_match_numpy_kernel(problem, emulated, dtype, rows, block):
    _, _, M = problem(23, 21, seed=5)
    M = M.astype(dtype)
    launcher = emulated(dtype, rows, block)
    kernel = fused_numpy_kernel(launcher, ot.backend.get_backend(M), M, 1e-2)
    rtol = 1e-12 if dtype == np.float64 else 2e-5
    check_kernel_against_numpy(kernel, M, 1e-2, lambda x: x, rtol)
    launched = set(launcher.launches)
    assert {"sns_eval", "sns_row_lse", "sns_col_lse_part", "sns_col_lse_merge",
            "sns_mask", "sns_plan"} <= launched


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_solve_with_fused_cuda_kernels(problem, emulated, dtype, monkeypatch):
    a, b, M = problem(30, 26, seed=6)
    reg = 2e-3
    P0 = pot_sns.sinkhorn_newton_sparse(a, b, M, reg)
    made = []

    def factory(nx, M, reg, bw=0.5, nb=120):
        made.append(fused_numpy_kernel(emulated(M.dtype), nx, M, reg, bw, nb))
        return made[-1]

    monkeypatch.setattr(pot_sns.api, "make_kernel", factory)
    a, b, M = (x.astype(dtype) for x in (a, b, M))
    stop = 1e-9 if dtype == np.float64 else 1e-6
    P, log = pot_sns.sinkhorn_newton_sparse(a, b, M, reg, stopThr=stop, log=True)
    assert P.dtype == dtype and log["status"] == "converged" and log["n_newton"] > 0
    # one selection per Newton system; two reads of M per sweep, one per evaluation
    passes = made[0].passes
    assert passes["select"] == len(log["cg_iters"])
    assert passes["exp"] >= 2 * log["n_sinkhorn"] + log["n_newton"] + 1
    assert marginal_error(P, a, b) < stop
    atol = 1e-8 if dtype == np.float64 else 1e-4 * P0.max()
    np.testing.assert_allclose(P, P0, rtol=0, atol=atol)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cuda_source_compiles_with_nvcc(tmp_path, dtype):
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        pytest.skip("nvcc is not installed")
    src = tmp_path / "sns.cu"
    src.write_text(fused.build_source(dtype, 120))
    # compute_75 is the oldest target of CUDA 13; NVRTC (CuPy) sees the same source
    out = subprocess.run([nvcc, "-ptx", "-arch=compute_75", "-Werror", "all-warnings",
                          str(src), "-o", str(tmp_path / "sns.ptx")],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    ptx = (tmp_path / "sns.ptx").read_text()
    for name in ("sns_eval", "sns_row_lse", "sns_col_lse_part", "sns_col_lse_merge",
                 "sns_mask", "sns_plan"):
        assert ".entry %s(" % name in ptx


def test_build_source_rejects_unsupported_types():
    with pytest.raises(TypeError, match="float16"):
        fused.build_source(np.float16, 120)
    with pytest.raises(ValueError, match="power of two"):
        fused.build_source(np.float64, 120, block=96)


# ----------------------------------------------------------------------------
# torch through the public API


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n,m,uniform,reg", CASES)
def test_torch_plan_equals_numpy_plan(problem, device, n, m, uniform, reg):
    a, b, M = problem(n, m, seed=n + m, uniform=uniform)
    P0, log0 = pot_sns.sinkhorn_newton_sparse(a, b, M, reg, log=True)
    at, bt, Mt = to_torch(device, np.float64, a, b, M)
    P, log = pot_sns.sinkhorn_newton_sparse(at, bt, Mt, reg, log=True)
    assert isinstance(P, torch.Tensor)
    assert P.dtype == torch.float64 and P.device == Mt.device
    for key in ("log_u", "log_v", "u", "v"):
        assert isinstance(log[key], torch.Tensor) and log[key].device == Mt.device
    assert log["status"] == "converged"
    np.testing.assert_allclose(host(P), P0, rtol=0, atol=1e-8)
    assert marginal_error(P, a, b) < 1e-9
    np.testing.assert_allclose(host(log["log_u"]) - host(log["log_u"]).mean(),
                               log0["log_u"] - log0["log_u"].mean(), rtol=0, atol=1e-6 / reg)


@pytest.mark.parametrize("device", DEVICES)
def test_torch_float32_runs_in_float32(problem, device):
    a, b, M = problem(70, 60, seed=8)
    reg = 1e-2
    P64 = pot_sns.sinkhorn_newton_sparse(a, b, M, reg)
    at, bt, Mt = to_torch(device, np.float32, a, b, M)
    # float32 resolves the marginals to ~1e-7: ask for what it can give
    P, log = pot_sns.sinkhorn_newton_sparse(at, bt, Mt, reg, stopThr=1e-6, log=True)
    assert P.dtype == torch.float32 and P.device == Mt.device
    assert log["log_u"].dtype == torch.float32
    assert log["status"] == "converged"
    assert marginal_error(P, a, b) < 1e-6
    np.testing.assert_allclose(host(P), P64, rtol=0, atol=1e-4 * P64.max())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtypes", [("float64", "float64", "float32"),
                                    ("float32", "float32", "float64"),
                                    ("float32", "float64", "float32")])
def test_torch_mixed_dtypes_follow_pot(problem, device, dtypes):
    a, b, M = problem(12, 9, seed=9)
    args = [torch.tensor(x, dtype=getattr(torch, d), device=device)
            for x, d in zip((a, b, M), dtypes)]
    ref = ot.sinkhorn(*args, 0.5, method="sinkhorn_log", stopThr=1e-7)
    P = pot_sns.sinkhorn_newton_sparse(*args, 0.5, stopThr=1e-6)
    assert P.dtype == ref.dtype and P.device == ref.device
    np.testing.assert_allclose(host(P), host(ref), rtol=0, atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_torch_inputs_requiring_grad_give_detached_plans(problem, device):
    """The plan and potentials carry no graph; the loss carries the gradients
    at the optimum, in the inputs' device and dtype (their values:
    tests/test_plugin.py)."""
    a, b, M = problem(20, 15, seed=10)
    at, bt, Mt = to_torch(device, np.float64, a, b, M)
    ag, bg, Mg = (x.clone().requires_grad_(True) for x in (at, bt, Mt))
    P, log = pot_sns.sinkhorn_newton_sparse(ag, bg, Mg, 1e-2, log=True)
    for out in (P, log["log_u"], log["log_v"]):
        assert not out.requires_grad and out.grad_fn is None
    np.testing.assert_allclose(host(P), host(pot_sns.sinkhorn_newton_sparse(at, bt, Mt, 1e-2)),
                               rtol=0, atol=1e-14)
    assert Mg.grad is None and ag.grad is None
    loss = pot_sns.sinkhorn_newton_sparse2(ag, bg, Mg, 1e-2)
    loss.backward()
    for x in (ag, bg, Mg):
        assert x.grad.device == x.device and x.grad.dtype == x.dtype
        assert bool(torch.isfinite(x.grad).all())


@pytest.mark.parametrize("device", DEVICES)
def test_torch_several_histograms(problem, device):
    a, b, M = problem(40, 35, seed=11)
    B = np.random.default_rng(0).random((35, 3))
    B /= B.sum(0)
    # converged well below the tolerance: the two backends may stop at
    # different iterations
    ref, log0 = pot_sns.sinkhorn_newton_sparse(a, B, M, 1e-2, log=True, stopThr=1e-12)
    at, Bt, Mt = to_torch(device, np.float64, a, B, M)
    res, log = pot_sns.sinkhorn_newton_sparse(at, Bt, Mt, 1e-2, log=True, stopThr=1e-12)
    assert isinstance(res, torch.Tensor) and res.shape == (3,) and res.device == Mt.device
    np.testing.assert_allclose(host(res), ref, rtol=0, atol=1e-10)
    assert log["log_u"].shape == (40, 3) and log["log_u"].device == Mt.device
    res2 = pot_sns.sinkhorn_newton_sparse2(at, Bt, Mt, 1e-2, stopThr=1e-12)
    np.testing.assert_allclose(host(res2), ref, rtol=0, atol=1e-10)


@pytest.mark.parametrize("device", DEVICES)
def test_torch_zero_weights(problem, device):
    a, b, M = problem(30, 25, seed=12)
    a[[0, 7, 8]] = 0.0
    b[[3, 24]] = 0.0
    a /= a.sum()
    b /= b.sum()
    # converged well below the compared tolerance: numpy's kernel-domain sweeps
    # and torch's log-domain ones round differently, so their paths differ
    P0, log0 = pot_sns.sinkhorn_newton_sparse(a, b, M, 1e-2, log=True, stopThr=1e-12)
    at, bt, Mt = to_torch(device, np.float64, a, b, M)
    P, log = pot_sns.sinkhorn_newton_sparse(at, bt, Mt, 1e-2, log=True, stopThr=1e-12)
    assert P.shape == (30, 25) and P.device == Mt.device and P.dtype == torch.float64
    Ph = host(P)
    assert np.all(Ph[[0, 7, 8]] == 0) and np.all(Ph[:, [3, 24]] == 0)
    np.testing.assert_allclose(Ph, P0, rtol=0, atol=1e-10)
    assert marginal_error(P, a, b) < 1e-9
    assert np.all(np.isneginf(host(log["log_u"])[[0, 7, 8]]))


@pytest.mark.parametrize("device", DEVICES)
def test_torch_loss_and_host_warmstart(problem, device):
    a, b, M = problem(50, 45, seed=13)
    loss0, log0 = pot_sns.sinkhorn_newton_sparse2(a, b, M, 1e-3, log=True)
    at, bt, Mt = to_torch(device, np.float64, a, b, M)
    loss = pot_sns.sinkhorn_newton_sparse2(at, bt, Mt, 1e-3)
    assert isinstance(loss, torch.Tensor) and loss.device == Mt.device
    assert float(loss) == pytest.approx(float(loss0), abs=1e-10)
    # numpy potentials warm-start a torch problem (on its device)
    P, log = pot_sns.sinkhorn_newton_sparse(at, bt, Mt, 1e-3, log=True,
                                            warmstart=(log0["log_u"], log0["log_v"]))
    assert log["n_sinkhorn"] == 0 and log["n_newton"] <= 2
    assert P.device == Mt.device
    assert marginal_error(P, a, b) < 1e-9


# ----------------------------------------------------------------------------
# jax (dense fallback), cupy


def test_jax_uses_the_dense_fallback(problem):
    jax = pytest.importorskip("jax", reason="jax is not installed (optional)")
    jnp = pytest.importorskip("jax.numpy")
    a, b, M = problem(40, 30, seed=14)
    P0 = pot_sns.sinkhorn_newton_sparse(a, b, M, 1e-2)
    x64 = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    try:
        aj, bj, Mj = (jnp.asarray(x) for x in (a, b, M))
        assert type(make_kernel(ot.backend.get_backend(Mj), Mj, 1e-2)) is DenseKernel
        P = pot_sns.sinkhorn_newton_sparse(aj, bj, Mj, 1e-2)
        assert isinstance(P, jax.Array) and P.dtype == jnp.float64
        np.testing.assert_allclose(np.asarray(P), P0, rtol=0, atol=1e-8)
        P32 = pot_sns.sinkhorn_newton_sparse(*(x.astype(jnp.float32) for x in (aj, bj, Mj)),
                                             1e-2, stopThr=1e-6)
        assert P32.dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(P32), P0, rtol=0, atol=1e-4 * P0.max())
    finally:
        jax.config.update("jax_enable_x64", x64)


@needs_cupy
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cupy_kernel_matches_numpy_kernel(problem, dtype):
    from pot_sns.kernels.cupy import CupyKernel

    _, _, M = problem(300, 170, seed=15)  # several blocks of 16 rows, 256 threads
    M = M.astype(dtype)
    Mc = cupy.asarray(M)
    kernel = CupyKernel(ot.backend.get_backend(Mc), Mc, 1e-2)
    rtol = 1e-12 if dtype == np.float64 else 2e-5
    check_kernel_against_numpy(kernel, M, 1e-2, cupy.asarray, rtol)


@needs_cupy
@pytest.mark.parametrize("n,m,uniform,reg", CASES)
def test_cupy_plan_equals_numpy_plan(problem, n, m, uniform, reg):
    a, b, M = problem(n, m, seed=n + m, uniform=uniform)
    P0 = pot_sns.sinkhorn_newton_sparse(a, b, M, reg)
    ac, bc, Mc = (cupy.asarray(x) for x in (a, b, M))
    P, log = pot_sns.sinkhorn_newton_sparse(ac, bc, Mc, reg, log=True)
    assert isinstance(P, cupy.ndarray) and P.dtype == np.float64
    assert P.device == Mc.device and isinstance(log["log_u"], cupy.ndarray)
    assert log["status"] == "converged"
    np.testing.assert_allclose(host(P), P0, rtol=0, atol=1e-8)
    assert marginal_error(P, a, b) < 1e-9


@needs_cupy
def test_cupy_float32_zero_weights_and_histograms(problem):
    a, b, M = problem(60, 50, seed=16)
    P64 = pot_sns.sinkhorn_newton_sparse(a, b, M, 1e-2)
    a32, b32, M32 = (cupy.asarray(x, dtype=cupy.float32) for x in (a, b, M))
    P, log = pot_sns.sinkhorn_newton_sparse(a32, b32, M32, 1e-2, stopThr=1e-6, log=True)
    assert P.dtype == np.float32 and log["status"] == "converged"
    assert marginal_error(P, a, b) < 1e-6
    np.testing.assert_allclose(host(P), P64, rtol=0, atol=1e-4 * P64.max())
    az = a.copy()
    az[[1, 2]] = 0
    az /= az.sum()
    Pz0 = pot_sns.sinkhorn_newton_sparse(az, b, M, 1e-2)
    Pz = pot_sns.sinkhorn_newton_sparse(cupy.asarray(az), cupy.asarray(b), cupy.asarray(M), 1e-2)
    np.testing.assert_allclose(host(Pz), Pz0, rtol=0, atol=1e-10)
    B = np.random.default_rng(1).random((50, 2))
    B /= B.sum(0)
    ref = pot_sns.sinkhorn_newton_sparse(a, B, M, 1e-2)
    res = pot_sns.sinkhorn_newton_sparse(cupy.asarray(a), cupy.asarray(B), cupy.asarray(M), 1e-2)
    assert isinstance(res, cupy.ndarray)
    np.testing.assert_allclose(host(res), ref, rtol=0, atol=1e-10)


@needs_cupy
@needs_torch
@pytest.mark.skipif(not HAS_CUDA, reason="torch has no CUDA device here")
def test_cupy_and_torch_cuda_agree(problem):
    a, b, M = problem(120, 100, seed=17)
    Pc = pot_sns.sinkhorn_newton_sparse(*(cupy.asarray(x) for x in (a, b, M)), 1e-3)
    Pt = pot_sns.sinkhorn_newton_sparse(*to_torch("cuda", np.float64, a, b, M), 1e-3)
    np.testing.assert_allclose(host(Pc), host(Pt), rtol=0, atol=1e-8)

