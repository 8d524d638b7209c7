"""Many OT problems at once: batches, distance matrices, Dask clusters.

- :func:`solve_batch`: POT's :func:`ot.batch.solve_batch` with SNS.
- :func:`pairwise`, :func:`pairwise_samples`: the matrix of OT costs between
  two collections of histograms (or point clouds), in this process or on a
  ``dask.distributed`` cluster, with checkpoints.

Modules: :mod:`~pot_sns.batch.problems` (job description, checks,
fingerprint), :mod:`~pot_sns.batch.single` (one problem through the shared
solver), :mod:`~pot_sns.batch.local` and :mod:`~pot_sns.batch.cluster`
(runners), :mod:`~pot_sns.batch.checkpoint`, :mod:`~pot_sns.batch.results`,
:mod:`~pot_sns.batch.progress`, :mod:`~pot_sns.batch.blas`,
:mod:`~pot_sns.batch.hooks` (``ot.batch.solve_batch(method="sns")``).
"""

from .pairwise import pairwise, pairwise_samples
from .solve_batch import solve_batch

__all__ = ["solve_batch", "pairwise", "pairwise_samples"]
