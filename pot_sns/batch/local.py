"""The in-process runner: the chunks of a job, one after the other."""

import numpy as np

from .results import FIELDS
from .single import solve_pair


def solve_chunk(job, positions, on_problem=None):
    """Solve the problems of ``job`` at ``positions``.

    Parameters
    ----------
    job : HistogramJob or SampleJob
        Validated job.
    positions : ndarray of int
        Positions of its pairs.
    on_problem : callable, optional
        Called with 1 after each problem (progress).

    Returns
    -------
    chunk : dict of ndarray
        The :data:`FIELDS`, one entry per position.
    """
    positions = np.asarray(positions, dtype=np.int64)
    rows, cols = job.layout.pairs(positions)
    out = {k: np.empty(len(positions), dtype=t) for k, t in FIELDS.items()}
    out["positions"][:] = positions
    for k, (i, j) in enumerate(zip(rows.tolist(), cols.tolist())):
        (out["value_linear"][k], out["value"][k], out["status"][k], out["niter"][k],
         out["err"][k]) = solve_pair(job, i, j)
        if on_problem is not None:
            on_problem(1)
    return out


def run_chunks(job, chunks, sink, bar):
    """Solve ``chunks`` here, handing each finished chunk to ``sink``
    (checkpoint, results) before starting the next one.

    Parameters
    ----------
    job : HistogramJob or SampleJob
        Validated job.
    chunks : list of ndarray
        Positions of each chunk.
    sink : callable
        Called with each chunk result.
    bar : pot_sns.batch.progress.Bar
        Updated after each problem.
    """
    for positions in chunks:
        sink(solve_chunk(job, positions, bar.update))
