"""Per-problem results of a job, chunking, and the non-convergence report.

Results are kept by *position* (see :class:`pot_sns.batch.problems.PairLayout`),
so chunks from a checkpoint, from this process and from Dask workers fill the
same arrays, whatever their size or origin.
"""

import math
import warnings

import numpy as np

#: Fields of a chunk result (and of a checkpoint file), with their dtypes.
FIELDS = {"positions": np.int64, "value_linear": np.float64, "value": np.float64,
          "status": "U16", "niter": np.int64, "err": np.float64}

#: Largest automatic chunk (problems per task and per checkpoint file).
MAX_CHUNK = 256


def auto_chunk_size(n_todo, n_threads=1):
    """Problems per chunk: several chunks per thread (load balance, and
    little lost when a worker dies), at most :data:`MAX_CHUNK` (a chunk of
    small problems then takes seconds: far above Dask's ~1 ms per task, and
    a checkpoint file every few seconds)."""
    per_thread = 8 if n_threads > 1 else 20
    return int(min(MAX_CHUNK, max(1, math.ceil(n_todo / (per_thread * max(1, n_threads))))))


def split(positions, size):
    """``positions`` in consecutive chunks of ``size``."""
    return [positions[k:k + size] for k in range(0, len(positions), size)]


class ResultStore:
    """The results of every problem of a job, filled chunk by chunk."""

    def __init__(self, layout):
        self.layout = layout
        n = layout.n_pairs
        self.data = {k: np.zeros(n, dtype=t) for k, t in FIELDS.items() if k != "positions"}
        self.data["value_linear"][:] = np.nan
        self.data["value"][:] = np.nan
        self.done = np.zeros(n, dtype=bool)

    def fill(self, chunk):
        """Store a chunk (dict of :data:`FIELDS`)."""
        p = chunk["positions"]
        for k in self.data:
            self.data[k][p] = chunk[k]
        self.done[p] = True

    def missing(self):
        """Positions not solved yet."""
        return np.flatnonzero(~self.done)

    def matrix(self, field):
        """``(n_rows, n_cols)`` array of ``field``, symmetric when the layout is."""
        lay = self.layout
        rows, cols = lay.pairs(np.arange(lay.n_pairs))
        values = self.data[field]
        out = np.zeros((lay.n_rows, lay.n_cols), dtype=values.dtype)
        out[rows, cols] = values
        if lay.symmetric:
            out[cols, rows] = values
        return out

    def warn_failures(self, caller, settings, stacklevel=3):
        """One warning naming the pairs that did not converge."""
        bad = np.flatnonzero(self.data["status"] != "converged")
        if len(bad) == 0:
            return
        rows, cols = self.layout.pairs(bad)
        shown = ", ".join("(%d, %d) [%s]" % (i, j, s) for i, j, s in
                          zip(rows[:10], cols[:10], self.data["status"][bad[:10]]))
        more = "" if len(bad) <= 10 else ", ... (%d more)" % (len(bad) - 10)
        warnings.warn(
            "%s: %d of %d problems did not converge to stopThr=%g within numItermax=%d: "
            "pairs %s%s. Their values come from the solver's best iterate; increase "
            "numItermax or reg, or loosen stopThr (log=True gives the status of each pair)."
            % (caller, len(bad), self.layout.n_pairs, settings.stopThr, settings.numItermax,
               shown, more), UserWarning, stacklevel=stacklevel)
