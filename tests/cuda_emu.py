"""Run the CUDA source of :mod:`pot_sns.kernels.fused` on a CPU.

The kernels are written in the common subset of CUDA C++ and C, so they
compile with a C compiler once a few CUDA names are defined: a block runs as
``block`` POSIX threads that share the ``__shared__`` arrays and meet at a
barrier in ``__syncthreads()``; atomics take a lock; blocks run one after the
other. Every launch checks that each argument has the exact C type of the
kernel's parameter (array dtype, numpy scalar type), as a GPU launch through
CuPy would need, so a wrong dtype fails here instead of silently on a GPU.
"""

import ctypes
import os
import re
import shutil
import subprocess

import numpy as np

from pot_sns.kernels.fused import build_source

PRELUDE = r"""
#include <math.h>
#include <pthread.h>
#include <stdlib.h>

#define KERNEL static
#define DEVICE static inline
#define __shared__ static
#define __restrict__ __restrict
#define __syncthreads() pthread_barrier_wait(&emu_barrier)

typedef struct { int x, y, z; } emu_dim3;
static __thread emu_dim3 threadIdx;
static emu_dim3 blockIdx, blockDim, gridDim;
static pthread_barrier_t emu_barrier;
static pthread_mutex_t emu_lock = PTHREAD_MUTEX_INITIALIZER;

#define EMU_ATOMIC(NAME, TYPE) \
    static TYPE NAME(TYPE* p, TYPE v) { \
        pthread_mutex_lock(&emu_lock); TYPE old = *p; *p = old + v; \
        pthread_mutex_unlock(&emu_lock); return old; }
EMU_ATOMIC(emu_add_u32, unsigned int)
EMU_ATOMIC(emu_add_u64, unsigned long long)
EMU_ATOMIC(emu_add_f32, float)
EMU_ATOMIC(emu_add_f64, double)
#define atomicAdd(p, v) _Generic((p), unsigned int*: emu_add_u32, \
    unsigned long long*: emu_add_u64, float*: emu_add_f32, double*: emu_add_f64)((p), (v))
"""

_CTYPES = {
    "long long": (ctypes.c_longlong, np.int64),
    "int": (ctypes.c_int, np.int32),
    "double": (ctypes.c_double, np.float64),
    "float": (ctypes.c_float, np.float32),
}
_POINTEES = {
    "double": np.float64, "float": np.float32, "unsigned long long": np.uint64,
    "unsigned char": np.uint8, "unsigned int": np.uint32,
}


def compiler():
    return shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")


def _signatures(source):
    sigs = {}
    for name, params in re.findall(r"KERNEL\s+void\s+(\w+)\s*\(([^)]*)\)", source):
        out = []
        for p in params.split(","):
            words = p.replace("*", " * ").replace("__restrict__", " ").split()
            pname = words[-1]
            ctype = " ".join(w for w in words[:-1] if w not in ("const", "*"))
            out.append((ctype, "*" in words, pname))
        sigs[name] = out
    return sigs


def _wrappers(sigs):
    code = []
    for name, params in sigs.items():
        decl = ["%s%s %s" % (t, "*" if ptr else "", p) for t, ptr, p in params]
        names = [p for _, _, p in params]
        code.append("typedef struct { %s; } emu_a_%s;" % ("; ".join(decl), name))
        code.append("typedef struct { emu_a_%s* a; int tid; } emu_t_%s;" % (name, name))
        code.append(
            "static void* emu_run_%s(void* p) { emu_t_%s* q = (emu_t_%s*)p; "
            "threadIdx.x = q->tid; %s(%s); return NULL; }"
            % (name, name, name, name, ", ".join("q->a->" + p for p in names)))
        code.append(
            "int launch_%s(int grid, int block, %s) {\n"
            "  emu_a_%s a = { %s };\n"
            "  pthread_t *th = malloc(block * sizeof(pthread_t));\n"
            "  emu_t_%s *q = malloc(block * sizeof(emu_t_%s));\n"
            "  blockDim.x = block; gridDim.x = grid;\n"
            "  pthread_barrier_init(&emu_barrier, NULL, block);\n"
            "  for (int b = 0; b < grid; ++b) {\n"
            "    blockIdx.x = b;\n"
            "    for (int t = 0; t < block; ++t) { q[t].a = &a; q[t].tid = t;\n"
            "      if (pthread_create(&th[t], NULL, emu_run_%s, &q[t])) return 1; }\n"
            "    for (int t = 0; t < block; ++t) pthread_join(th[t], NULL);\n"
            "  }\n"
            "  pthread_barrier_destroy(&emu_barrier); free(th); free(q);\n"
            "  return 0;\n}"
            % (name, ", ".join(decl), name, ", ".join(names), name, name, name))
    return "\n".join(code)


class EmulatedLauncher:
    """``launcher(name, grid, args)`` for :class:`pot_sns.kernels.fused.FusedKernel`
    that runs the kernels on the CPU.

    Parameters
    ----------
    dtype : numpy dtype
        float32 or float64 (the kernels' ``T``).
    n_bins : int
        Histogram bins (``NBINS``).
    rows, block : int
        Rows per block and threads per block, small so that tests cross block
        boundaries with small matrices.
    workdir : str
        Folder for the generated C file and library.
    """

    def __init__(self, dtype, n_bins, rows, block, workdir):
        self.dtype = np.dtype(dtype)
        self.rows, self.block = rows, block
        source = build_source(self.dtype, n_bins, rows=rows, block=block)
        self.sigs = _signatures(source)
        tname = "double" if self.dtype == np.float64 else "float"
        base = os.path.join(workdir, "emu_%s_%d_%d_%d" % (tname, n_bins, rows, block))
        with open(base + ".c", "w") as f:
            f.write(PRELUDE + source + "\n" + _wrappers(self.sigs) + "\n")
        subprocess.run([compiler(), "-std=gnu11", "-O1", "-shared", "-fPIC", "-pthread",
                        "-Wall", "-Werror", "-Wno-unknown-pragmas",
                        base + ".c", "-o", base + ".so", "-lm"],
                       check=True, capture_output=True, text=True)
        self.lib = ctypes.CDLL(base + ".so")
        self.launches = []
        for name, params in self.sigs.items():
            fn = getattr(self.lib, "launch_" + name)
            fn.restype = ctypes.c_int
            fn.argtypes = [ctypes.c_int, ctypes.c_int] + [
                ctypes.c_void_p if ptr else self._scalar(t)[0] for t, ptr, _ in params]

    def _scalar(self, ctype):
        if ctype == "T":
            ctype = "double" if self.dtype == np.float64 else "float"
        return _CTYPES[ctype]

    def _pointee(self, ctype):
        return self.dtype.type if ctype == "T" else _POINTEES[ctype]

    def __call__(self, name, grid, args):
        params = self.sigs[name]
        assert len(args) == len(params), (name, len(args), len(params))
        cargs = []
        for (ctype, ptr, pname), x in zip(params, args):
            if ptr:
                want = self._pointee(ctype)
                assert isinstance(x, np.ndarray), (name, pname, type(x))
                assert x.dtype == want, (name, pname, x.dtype, want)
                assert x.flags.c_contiguous, (name, pname)
                cargs.append(x.ctypes.data)
            else:
                want = self._scalar(ctype)[1]
                assert type(x) is want, (name, pname, type(x), want)
                cargs.append(x)
        assert int(grid) >= 1
        self.launches.append(name)
        rc = getattr(self.lib, "launch_" + name)(int(grid), self.block, *cargs)
        assert rc == 0, "thread creation failed"
